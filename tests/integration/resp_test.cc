// The RESP listener of a real sessiond process, over plain sockets: what a kill -9 leaves of
// acknowledged writes, protocol errors and limits that close a connection, a port in use, and
// the connection limit. Command semantics are compared with a real Redis by
// tests/clients/redis-cli.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/resp_conn.h"
#include "tests/integration/test_node.h"

namespace sessiond::testing {
namespace {

using namespace std::chrono_literals;
using Conn = RespConn;

std::unique_ptr<TestNode> start_node(const TempDir& dir, std::vector<std::string> extra = {}) {
  TestNode::Options options;
  options.data_dir = dir.path() / "data";
  options.extra_args = {"--resp-port", "0"};
  options.extra_args.insert(options.extra_args.end(), extra.begin(), extra.end());
  std::string error;
  auto node = TestNode::start(options, &error);
  EXPECT_TRUE(node) << error;
  return node;
}

// Every write a pipelining client saw acknowledged is there after kill -9 and a restart
// (async durability: the WAL reaches the OS before the reply), TTLs included.
TEST(RespDaemon, AcknowledgedWritesSurviveKillNine) {
  TempDir dir;
  constexpr int kKeys = 500;
  {
    auto node = start_node(dir);
    ASSERT_TRUE(node);
    Conn conn(resp_address(*node));
    ASSERT_TRUE(conn.connected());
    std::string pipeline;
    for (int i = 0; i < kKeys; ++i) {
      pipeline +=
          Conn::encode({"SET", "sess:" + std::to_string(i), "v" + std::to_string(i), "EX", "3600"});
    }
    pipeline += Conn::encode({"HSET", "user:1", "name", "alice", "role", "admin"});
    pipeline += Conn::encode({"SADD", "idx:alice", "sess:1", "sess:2"});
    pipeline += Conn::encode({"DEL", "sess:0"});
    conn.send_raw(pipeline);
    for (int i = 0; i < kKeys; ++i) ASSERT_EQ(conn.reply(), "+OK") << i;
    ASSERT_EQ(conn.reply(), ":2");
    ASSERT_EQ(conn.reply(), ":2");
    ASSERT_EQ(conn.reply(), ":1");
    node->kill_hard();
  }
  auto node = start_node(dir);
  ASSERT_TRUE(node);
  Conn conn(resp_address(*node));
  ASSERT_TRUE(conn.connected());
  EXPECT_EQ(conn.call({"DBSIZE"}), ":" + std::to_string(kKeys - 1 + 2));
  EXPECT_EQ(conn.call({"GET", "sess:0"}), "$nil");
  for (int i = 1; i < kKeys; ++i) {
    ASSERT_EQ(conn.call({"GET", "sess:" + std::to_string(i)}), "$v" + std::to_string(i)) << i;
  }
  const std::string ttl = conn.call({"TTL", "sess:7"});
  ASSERT_EQ(ttl[0], ':');
  EXPECT_GT(std::stol(ttl.substr(1)), 3500);
  EXPECT_LE(std::stol(ttl.substr(1)), 3600);
  EXPECT_EQ(conn.call({"HGETALL", "user:1"}), "*4 $name $alice $role $admin");
  EXPECT_EQ(conn.call({"SMEMBERS", "idx:alice"}), "*2 $sess:1 $sess:2");
}

TEST(RespDaemon, ProtocolErrorsAnswerThenClose) {
  TempDir dir;
  auto node = start_node(dir);
  ASSERT_TRUE(node);
  const std::string address = resp_address(*node);
  {
    Conn conn(address);
    conn.send_raw("PING\r\n*1\r\n$99999999999\r\n");  // a bulk over the limit: never awaited
    EXPECT_EQ(conn.reply(), "+PONG");
    EXPECT_EQ(conn.reply(), "-ERR Protocol error: invalid bulk length");
    EXPECT_TRUE(conn.closed_by_server());
  }
  {
    Conn conn(address);
    conn.send_raw("*2\r\n$4\r\nECHO\r\n$3\r\nabcXY");  // bulk not followed by CRLF
    EXPECT_EQ(conn.reply().value_or("(closed)").rfind("-ERR Protocol error", 0), 0u);
    EXPECT_TRUE(conn.closed_by_server());
  }
  {
    Conn conn(address);  // unknown commands and wrong arity do not close
    EXPECT_EQ(conn.call({"NOPE"}), "-ERR unknown command 'NOPE', with args beginning with: ");
    EXPECT_EQ(conn.call({"GET"}), "-ERR wrong number of arguments for 'get' command");
    EXPECT_EQ(conn.call({"QUIT"}), "+OK");
    EXPECT_TRUE(conn.closed_by_server());
  }
  Conn conn(address);  // the node is still serving
  EXPECT_EQ(conn.call({"PING"}), "+PONG");
}

TEST(RespDaemon, ConnectionLimitAnswersLikeRedis) {
  TempDir dir;
  auto node = start_node(dir, {"--max-connections", "2"});
  ASSERT_TRUE(node);
  const std::string address = resp_address(*node);
  Conn a(address), b(address);
  ASSERT_EQ(a.call({"PING"}), "+PONG");
  ASSERT_EQ(b.call({"PING"}), "+PONG");
  Conn c(address);
  EXPECT_EQ(c.reply(), "-ERR max number of clients reached");
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_EQ(a.call({"PING"}), "+PONG");
}

TEST(RespDaemon, PortInUseIsAClearStartFailure) {
  TempDir dir;
  auto first = start_node(dir);
  ASSERT_TRUE(first);
  const std::string address = resp_address(*first);
  const std::string port = address.substr(address.rfind(':') + 1);
  TempDir other;
  TestNode::Options options;
  options.data_dir = other.path() / "data";
  options.extra_args = {"--resp-port", port};
  std::string error;
  auto second = TestNode::start(options, &error);
  EXPECT_FALSE(second);
  EXPECT_NE(error.find("cannot listen on 127.0.0.1:" + port), std::string::npos) << error;
}

// With secrets configured: HELLO before AUTH answers NOAUTH as Redis 7 does, HELLO ... AUTH
// authenticates, and the third wrong password on a connection (AUTH or HELLO ... AUTH) is
// answered and then closes it, with nothing pipelined behind it executed. Failures are logged.
TEST(RespDaemon, HelloNeedsAuthAndThreeFailedAuthsCloseTheConnection) {
  TempDir dir;
  auto node = start_node(dir, {"--app-secret", "app-secret-1"});
  ASSERT_TRUE(node);
  const std::string address = resp_address(*node);
  const std::string wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.";
  {
    Conn conn(address);
    ASSERT_TRUE(conn.connected());
    EXPECT_EQ(conn.call({"HELLO", "2"}),
              "-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
              "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
              "select the RESP protocol version at the same time");
    EXPECT_EQ(conn.call({"HELLO", "2", "AUTH", "default", "guess-1"}), wrongpass);
    EXPECT_EQ(conn.call({"AUTH", "guess-2"}), wrongpass);
    EXPECT_EQ(conn.call({"PING"}), "-NOAUTH Authentication required.");  // still open
    conn.send_raw(Conn::encode({"AUTH", "default", "guess-3"}) +
                  Conn::encode({"AUTH", "app-secret-1"}) + Conn::encode({"SET", "k", "v"}));
    EXPECT_EQ(conn.reply(), wrongpass);
    EXPECT_EQ(conn.reply(), std::nullopt);  // closed: neither the AUTH nor the SET ran
  }
  Conn conn(address);
  ASSERT_TRUE(conn.connected());
  const std::string hello = conn.call({"HELLO", "2", "AUTH", "default", "app-secret-1"});
  EXPECT_EQ(hello.substr(0, 3), "*14") << hello;
  EXPECT_EQ(conn.call({"GET", "k"}), "$nil");  // the SET behind the third failure never ran
  // The node writes the line at once; the test's log reader may not have read it yet.
  EXPECT_TRUE(node->wait_for_log("1 failed AUTH attempt, latest from 127.0.0.1", 10s))
      << node->log();
}

// A transaction acknowledged by EXEC, in database 4, is whole after kill -9 and a restart, and
// stays in its database.
TEST(RespDaemon, AnAcknowledgedTransactionSurvivesKillNine) {
  TempDir dir;
  {
    auto node = start_node(dir);
    ASSERT_TRUE(node);
    Conn conn(resp_address(*node));
    ASSERT_TRUE(conn.connected());
    std::string pipeline = Conn::encode({"SELECT", "4"}) + Conn::encode({"MULTI"});
    pipeline += Conn::encode({"SET", "tx:a", "1", "EX", "3600"});
    pipeline += Conn::encode({"HSET", "tx:h", "f", "v"});
    pipeline += Conn::encode({"ZADD", "tx:z", "1700000000000", "s1"});
    pipeline += Conn::encode({"EXEC"});
    conn.send_raw(pipeline);
    ASSERT_EQ(conn.reply(), "+OK");
    ASSERT_EQ(conn.reply(), "+OK");
    for (int i = 0; i < 3; ++i) ASSERT_EQ(conn.reply(), "+QUEUED") << i;
    ASSERT_EQ(conn.reply(), "*3 +OK :1 :1");
    node->kill_hard();
  }
  auto node = start_node(dir);
  ASSERT_TRUE(node);
  Conn conn(resp_address(*node));
  ASSERT_TRUE(conn.connected());
  EXPECT_EQ(conn.call({"EXISTS", "tx:a", "tx:h", "tx:z"}), ":0");  // not in database 0
  EXPECT_EQ(conn.call({"SELECT", "4"}), "+OK");
  EXPECT_EQ(conn.call({"GET", "tx:a"}), "$1");
  EXPECT_EQ(conn.call({"HGET", "tx:h", "f"}), "$v");
  EXPECT_EQ(conn.call({"ZRANGEBYSCORE", "tx:z", "-inf", "+inf", "WITHSCORES"}),
            "*2 $s1 $1700000000000");
}

// A subscriber gets messages while it waits on a read, and keyspace events of keys that expire,
// past --idle-timeout-ms (which closes other idle connections, not subscribers).
TEST(RespDaemon, SubscribersGetMessagesAndOutliveTheIdleTimeout) {
  TempDir dir;
  auto node = start_node(dir, {"--idle-timeout-ms", "300", "--expiry-interval-ms", "20"});
  ASSERT_TRUE(node);
  const std::string address = resp_address(*node);
  Conn subscriber(address), idle(address);
  ASSERT_TRUE(subscriber.connected() && idle.connected());
  EXPECT_EQ(subscriber.call({"SUBSCRIBE", "news"}), "*3 $subscribe $news :1");
  EXPECT_EQ(subscriber.call({"PSUBSCRIBE", "__keyevent@*__:expired"}),
            "*3 $psubscribe $__keyevent@*__:expired :2");
  EXPECT_EQ(idle.call({"PING"}), "+PONG");
  EXPECT_TRUE(idle.closed_by_server());  // the idle timeout passed (within the 10 s read)
  Conn publisher(address);
  ASSERT_TRUE(publisher.connected());
  EXPECT_EQ(publisher.call({"CONFIG", "SET", "notify-keyspace-events", "Ex"}), "+OK");
  EXPECT_EQ(publisher.call({"PUBLISH", "news", "hello"}), ":1");
  EXPECT_EQ(subscriber.reply(), "*3 $message $news $hello");
  EXPECT_EQ(publisher.call({"SET", "brief", "v", "PX", "50"}), "+OK");
  EXPECT_EQ(subscriber.reply(),
            "*4 $pmessage $__keyevent@*__:expired $__keyevent@0__:expired $brief");
  EXPECT_EQ(subscriber.call({"PING"}), "*2 $pong $");
  EXPECT_EQ(subscriber.call({"GET", "x"}).substr(0, 20), "-ERR Can't execute '");
  EXPECT_EQ(subscriber.call({"UNSUBSCRIBE"}), "*3 $unsubscribe $news :1");
  EXPECT_EQ(subscriber.call({"PUNSUBSCRIBE"}), "*3 $punsubscribe $__keyevent@*__:expired :0");
  EXPECT_EQ(subscriber.call({"GET", "x"}), "$nil");
}

// A subscriber that never reads is disconnected once its messages pile up (32 MiB waiting, or
// the kernel taking none of them for --send-timeout-ms), not buffered without end; the node
// goes on serving.
TEST(RespDaemon, ASubscriberThatNeverReadsIsDisconnected) {
  TempDir dir;
  auto node = start_node(dir, {"--send-timeout-ms", "60000"});  // the 32 MiB limit acts first
  ASSERT_TRUE(node);
  const std::string address = resp_address(*node);
  Conn subscriber(address), publisher(address);
  ASSERT_TRUE(subscriber.connected() && publisher.connected());
  int small = 4096;
  setsockopt(subscriber.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  EXPECT_EQ(subscriber.call({"SUBSCRIBE", "firehose"}), "*3 $subscribe $firehose :1");
  const std::string payload(512 * 1024, 'x');
  int published = 0;
  std::string last;
  for (; published < 400; ++published) {  // at most 200 MiB
    last = publisher.call({"PUBLISH", "firehose", payload});
    if (last == ":0") break;
    ASSERT_EQ(last, ":1") << published;
  }
  EXPECT_EQ(last, ":0") << "the subscriber was never disconnected";
  EXPECT_LT(published, 200);  // 32 MiB of messages plus what the socket buffers hold
  EXPECT_EQ(publisher.call({"PING"}), "+PONG");
  // The test reads the node's log through a pipe on a thread of its own: wait for the line.
  EXPECT_TRUE(node->wait_for_log("closing the RESP subscriber", std::chrono::seconds(10)))
      << node->log();
}

}  // namespace
}  // namespace sessiond::testing
