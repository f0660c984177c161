// The RESP commands that drop-in clients need beyond strings, hashes and sets (issue 17):
// SETNX, APPEND, logical databases, MULTI/EXEC/DISCARD/WATCH, pub/sub and keyspace
// notifications, CONFIG, sorted sets, and the clear refusals (scripting, SWAPDB). Replies are
// Redis 7.0's; tests/clients/redis-cli compares the same commands with a real redis-server.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "daemon/resp.h"
#include "daemon/resp_commands.h"

namespace sessiond::daemon::resp {
namespace {

constexpr std::string_view kOk = "+OK\r\n";
constexpr std::string_view kNil = "$-1\r\n";
constexpr std::string_view kQueued = "+QUEUED\r\n";

class RespTxTest : public ::testing::Test {
 protected:
  RespTxTest() : table_(options(), clock_, nullptr), commands_(table_, clock_, info()) {
    client_.deliver = [this](std::string_view m) { messages_.emplace_back(m); };
  }

  static storage::TableOptions options() {
    storage::TableOptions o;
    o.shard_count = 4;
    return o;
  }
  NodeInfo info() {
    NodeInfo i;
    i.connected_clients = &connected_;
    i.port = 6379;
    i.idle_timeout_ms = 300'000;
    i.max_connections = 10'000;
    return i;
  }

  std::string run(std::vector<std::string_view> args, ClientState& client) {
    std::string out;
    commands_.execute(args, client, &out);
    return out;
  }
  std::string run(std::vector<std::string_view> args) { return run(std::move(args), client_); }
  // The same through execute_all, as the server runs a pipelined read.
  std::string run_all(const std::vector<std::vector<std::string_view>>& commands,
                      ClientState& client) {
    std::string out;
    commands_.execute_all(commands, client, &out);
    return out;
  }

  storage::ManualClock clock_;
  storage::SessionTable table_;
  std::atomic<std::uint64_t> connected_{1};
  Commands commands_;
  ClientState client_;
  std::vector<std::string> messages_;  // what client_'s subscriptions received
};

std::string bulk(std::string_view s) {
  std::string out;
  append_bulk(&out, s);
  return out;
}

std::string message(std::string_view channel, std::string_view payload) {
  std::string out;
  append_array_header(&out, 3);
  append_bulk(&out, "message");
  append_bulk(&out, channel);
  append_bulk(&out, payload);
  return out;
}

std::string pmessage(std::string_view pattern, std::string_view channel, std::string_view payload) {
  std::string out;
  append_array_header(&out, 4);
  append_bulk(&out, "pmessage");
  append_bulk(&out, pattern);
  append_bulk(&out, channel);
  append_bulk(&out, payload);
  return out;
}

TEST_F(RespTxTest, SetnxAndAppend) {
  EXPECT_EQ(run({"SETNX", "k", "a"}), ":1\r\n");
  EXPECT_EQ(run({"SETNX", "k", "b"}), ":0\r\n");
  EXPECT_EQ(run({"GET", "k"}), bulk("a"));
  EXPECT_EQ(run({"PEXPIRE", "k", "5000"}), ":1\r\n");
  EXPECT_EQ(run({"APPEND", "k", "bc"}), ":3\r\n");
  EXPECT_EQ(run({"GET", "k"}), bulk("abc"));
  EXPECT_EQ(run({"PTTL", "k"}), ":5000\r\n");  // APPEND keeps the TTL
  EXPECT_EQ(run({"APPEND", "new", "xy"}), ":2\r\n");
  EXPECT_EQ(run({"SADD", "s", "m"}), ":1\r\n");
  EXPECT_EQ(run({"APPEND", "s", "x"}),
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
  EXPECT_EQ(run({"SETNX", "k"}), "-ERR wrong number of arguments for 'setnx' command\r\n");
}

TEST_F(RespTxTest, DatabasesAreSeparateNamespaces) {
  ClientState other;
  EXPECT_EQ(run({"SET", "k", "zero"}), kOk);
  EXPECT_EQ(run({"SELECT", "1"}, other), kOk);
  EXPECT_EQ(run({"GET", "k"}, other), kNil);
  EXPECT_EQ(run({"SET", "k", "one"}, other), kOk);
  EXPECT_EQ(run({"HSET", "h", "f", "v"}, other), ":1\r\n");
  EXPECT_EQ(run({"GET", "k"}), bulk("zero"));
  EXPECT_EQ(run({"GET", "k"}, other), bulk("one"));
  // Pipelined GETs and SETs (batched) use the connection's database too.
  EXPECT_EQ(run_all({{"SET", "p", "1"}, {"SET", "q", "2"}, {"GET", "p"}, {"GET", "k"}}, other),
            "+OK\r\n+OK\r\n" + bulk("1") + bulk("one"));
  EXPECT_EQ(run({"EXISTS", "p"}), ":0\r\n");
  EXPECT_EQ(run({"DBSIZE"}, other), ":4\r\n");
  EXPECT_EQ(run({"KEYS", "*"}), "*1\r\n" + bulk("k"));
  EXPECT_NE(run({"CLIENT", "INFO"}, other).find(" db=1 "), std::string::npos);
  // FLUSHDB empties the selected database only; FLUSHALL every one.
  EXPECT_EQ(run({"FLUSHDB"}, other), kOk);
  EXPECT_EQ(run({"DBSIZE"}, other), ":0\r\n");
  EXPECT_EQ(run({"GET", "k"}), bulk("zero"));
  EXPECT_EQ(run({"SET", "k", "again"}, other), kOk);
  EXPECT_EQ(run({"SELECT", "15"}), kOk);
  EXPECT_EQ(run({"SET", "k", "fifteen"}), kOk);
  EXPECT_EQ(run({"FLUSHALL"}), kOk);
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_EQ(run({"SELECT", "16"}), "-ERR DB index is out of range\r\n");
  EXPECT_EQ(run({"SELECT", "-1"}), "-ERR DB index is out of range\r\n");
  EXPECT_EQ(run({"SWAPDB", "0", "1"}).substr(0, 28), "-ERR SWAPDB is not supported");
}

TEST_F(RespTxTest, SelectIsRefusedInACluster) {
  NodeInfo i = info();
  i.cluster = true;
  Commands clustered(table_, clock_, i);
  std::string out;
  clustered.execute(std::vector<std::string_view>{"SELECT", "1"}, client_, &out);
  EXPECT_EQ(out, "-ERR SELECT is not allowed in cluster mode\r\n");
  out.clear();
  clustered.execute(std::vector<std::string_view>{"SELECT", "0"}, client_, &out);
  EXPECT_EQ(out, kOk);
}

TEST_F(RespTxTest, MultiQueuesAndExecRunsInOrder) {
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"SET", "a", "1"}), kQueued);
  EXPECT_EQ(run({"SADD", "a", "x"}), kQueued);  // fails at EXEC time, not now
  EXPECT_EQ(run({"GET", "a"}), kQueued);
  EXPECT_EQ(run({"MULTI"}), "-ERR MULTI calls can not be nested\r\n");
  EXPECT_EQ(run({"WATCH", "a"}), "-ERR WATCH inside MULTI is not allowed\r\n");
  EXPECT_EQ(run({"EXISTS", "a"}, client_), kQueued);
  ClientState other;
  EXPECT_EQ(run({"GET", "a"}, other), kNil);  // nothing ran yet
  EXPECT_EQ(run({"EXEC"}),
            "*4\r\n+OK\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n" +
                bulk("1") + ":1\r\n");
  EXPECT_EQ(run({"EXEC"}), "-ERR EXEC without MULTI\r\n");
  EXPECT_EQ(run({"DISCARD"}), "-ERR DISCARD without MULTI\r\n");
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"SET", "a", "2"}), kQueued);
  EXPECT_EQ(run({"DISCARD"}), kOk);
  EXPECT_EQ(run({"GET", "a"}), bulk("1"));
  // Pipelined: nothing batched while in MULTI.
  EXPECT_EQ(run_all({{"MULTI"}, {"SET", "b", "1"}, {"GET", "b"}, {"EXEC"}}, client_),
            "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n" + bulk("1"));
}

TEST_F(RespTxTest, AnErrorWhileQueuingAbortsExec) {
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"SET", "a", "1"}), kQueued);
  EXPECT_EQ(run({"NOSUCH", "x"}).substr(0, 25), "-ERR unknown command 'NOS");
  EXPECT_EQ(run({"SET", "a"}), "-ERR wrong number of arguments for 'set' command\r\n");
  EXPECT_EQ(run({"EXEC"}), "-EXECABORT Transaction discarded because of previous errors.\r\n");
  EXPECT_EQ(run({"GET", "a"}), kNil);
  EXPECT_FALSE(client_.in_multi);
  // A script inside MULTI is refused clearly, and aborts it too.
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"EVAL", "return 1", "0"}).substr(0, 34), "-ERR sessiond does not run scripts");
  EXPECT_EQ(run({"EXEC"}), "-EXECABORT Transaction discarded because of previous errors.\r\n");
}

// A transaction is bounded: the 10,001st queued command is refused and EXEC aborts.
TEST_F(RespTxTest, ATransactionHoldsAtMostTenThousandCommands) {
  EXPECT_EQ(run({"MULTI"}), kOk);
  for (int i = 0; i < 10'000; ++i) ASSERT_EQ(run({"SET", "q", "v"}), kQueued) << i;
  EXPECT_EQ(run({"SET", "q", "v"}),
            "-ERR a transaction holds at most 10000 commands and 16 MiB in sessiond\r\n");
  EXPECT_EQ(run({"EXEC"}), "-EXECABORT Transaction discarded because of previous errors.\r\n");
  EXPECT_EQ(run({"EXISTS", "q"}), ":0\r\n");
  // And 16 MiB of arguments: the 16th MiB-sized value passes it.
  const std::string mib(1u << 20, 'x');
  EXPECT_EQ(run({"MULTI"}), kOk);
  for (int i = 0; i < 15; ++i) ASSERT_EQ(run({"SET", "q", mib}), kQueued) << i;  // 15 MiB and a bit
  EXPECT_EQ(run({"SET", "q", mib}).substr(0, 38), "-ERR a transaction holds at most 10000");
  EXPECT_EQ(run({"EXEC"}), "-EXECABORT Transaction discarded because of previous errors.\r\n");
}

TEST_F(RespTxTest, WatchFailsExecWhenAKeyChangesOrExpires) {
  ClientState other;
  EXPECT_EQ(run({"SET", "w", "1"}), kOk);
  EXPECT_EQ(run({"WATCH", "w", "absent"}), kOk);
  EXPECT_EQ(run({"SET", "w", "2"}, other), kOk);
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"SET", "w", "mine"}), kQueued);
  EXPECT_EQ(run({"EXEC"}), "*-1\r\n");
  EXPECT_EQ(run({"GET", "w"}), bulk("2"));
  // EXEC unwatched: the next transaction runs.
  EXPECT_EQ(run({"SET", "w", "3"}, other), kOk);
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"SET", "w", "mine"}), kQueued);
  EXPECT_EQ(run({"EXEC"}), "*1\r\n+OK\r\n");
  // A key that did not exist and was created (then deleted) counts as changed.
  EXPECT_EQ(run({"WATCH", "absent"}), kOk);
  EXPECT_EQ(run({"SET", "absent", "x"}, other), kOk);
  EXPECT_EQ(run({"DEL", "absent"}, other), ":1\r\n");
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"EXEC"}), "*-1\r\n");
  // An expiry of a watched key counts too.
  EXPECT_EQ(run({"SET", "t", "v", "PX", "100"}), kOk);
  EXPECT_EQ(run({"WATCH", "t"}), kOk);
  clock_.advance_ms(200);
  EXPECT_EQ(run({"GET", "t"}, other), kNil);  // the read finds it expired
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"EXEC"}), "*-1\r\n");
  // UNWATCH forgets; a watch in another database is of another key.
  EXPECT_EQ(run({"WATCH", "w"}), kOk);
  EXPECT_EQ(run({"UNWATCH"}), kOk);
  EXPECT_EQ(run({"SET", "w", "4"}, other), kOk);
  EXPECT_EQ(run({"WATCH", "w"}), kOk);
  EXPECT_EQ(run({"SELECT", "2"}, other), kOk);
  EXPECT_EQ(run({"SET", "w", "db2"}, other), kOk);
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"GET", "w"}), kQueued);
  EXPECT_EQ(run({"EXEC"}), "*1\r\n" + bulk("4"));
}

// EXEC runs every queued command, but its reply stays near the reply limit: reads past it
// answer an error in place of their value.
TEST_F(RespTxTest, ExecRepliesAreBoundedButEveryCommandRuns) {
  NodeInfo i = info();
  i.max_reply_bytes = 10'000;
  Commands limited(table_, clock_, i);
  auto exec = [&](std::vector<std::string_view> args) {
    std::string out;
    limited.execute(args, client_, &out);
    return out;
  };
  const std::string big(4'000, 'v');
  EXPECT_EQ(exec({"SET", "big", big}), kOk);
  EXPECT_EQ(exec({"MULTI"}), kOk);
  for (int n = 0; n < 100; ++n) EXPECT_EQ(exec({"GET", "big"}), kQueued);
  EXPECT_EQ(exec({"SET", "after", "1"}), kQueued);
  const std::string reply = exec({"EXEC"});
  EXPECT_LT(reply.size(), 10'000u + 4'100u + 100 * 80u);
  EXPECT_EQ(reply.rfind("*101\r\n" + bulk(big) + bulk(big) + bulk(big), 0), 0u);
  EXPECT_NE(reply.find("-ERR reply dropped: the transaction's replies passed --max-output-bytes"),
            std::string::npos);
  EXPECT_EQ(reply.substr(reply.size() - 5), kOk);  // the last write ran and said so
  EXPECT_EQ(exec({"GET", "after"}), bulk("1"));
}

TEST_F(RespTxTest, WatchesEndWithTheirConnection) {
  {
    ClientState gone;
    EXPECT_EQ(run({"WATCH", "k"}, gone), kOk);
  }  // its registration goes with it: a write to k must not touch freed memory (ASan)
  EXPECT_EQ(run({"SET", "k", "v"}), kOk);
  EXPECT_EQ(run({"WATCH", "k"}), kOk);
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"EXEC"}), "*0\r\n");
}

// EXEC is atomic for other clients: a reader outside any transaction never sees the two keys a
// transaction sets apart. Without the transactions' lock, the reader sees a != b (the second
// SET not yet applied) within a few hundred rounds.
TEST_F(RespTxTest, ExecIsAtomicForOtherClients) {
  constexpr int kRounds = 3000;
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  // The two values of an MGET reply ("" for a nil).
  auto values = [](std::string_view reply) {
    std::vector<std::string> out;
    std::size_t p = reply.find("\r\n") + 2;
    while (p < reply.size()) {
      const std::size_t eol = reply.find("\r\n", p);
      const long len = std::stol(std::string(reply.substr(p + 1, eol - p - 1)));
      if (len < 0) {
        out.emplace_back();
        p = eol + 2;
      } else {
        out.emplace_back(reply.substr(eol + 2, static_cast<std::size_t>(len)));
        p = eol + 2 + static_cast<std::size_t>(len) + 2;
      }
    }
    return out;
  };
  std::thread reader([&] {
    ClientState client;
    int reads = 0;
    while (!done.load() || reads < 100) {
      std::string out;
      commands_.execute(std::vector<std::string_view>{"MGET", "a", "b"}, client, &out);
      const std::vector<std::string> ab = values(out);
      if (ab.size() != 2 || ab[0] != ab[1]) torn.fetch_add(1);
      ++reads;
    }
  });
  ClientState writer;
  for (int i = 0; i < kRounds; ++i) {
    const std::string v = std::to_string(i);
    const std::vector<std::vector<std::string_view>> tx{
        {"MULTI"}, {"SET", "a", v}, {"SET", "b", v}, {"EXEC"}};
    std::string out;
    commands_.execute_all(tx, writer, &out);
    ASSERT_EQ(out, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n");
  }
  done.store(true);
  reader.join();
  EXPECT_EQ(torn.load(), 0);
}

TEST_F(RespTxTest, PublishReachesChannelAndPatternSubscribers) {
  EXPECT_EQ(run({"SUBSCRIBE", "news", "sport"}), "*3\r\n" + bulk("subscribe") + bulk("news") +
                                                     ":1\r\n" + "*3\r\n" + bulk("subscribe") +
                                                     bulk("sport") + ":2\r\n");
  EXPECT_EQ(run({"PSUBSCRIBE", "n*"}), "*3\r\n" + bulk("psubscribe") + bulk("n*") + ":3\r\n");
  ClientState publisher;
  EXPECT_EQ(run({"PUBLISH", "news", "hello"}, publisher), ":2\r\n");
  EXPECT_EQ(run({"PUBLISH", "weather", "rain"}, publisher), ":0\r\n");
  ASSERT_EQ(messages_.size(), 2u);
  EXPECT_EQ(messages_[0], message("news", "hello"));
  EXPECT_EQ(messages_[1], pmessage("n*", "news", "hello"));
  // Subscribed mode: only (P)(UN)SUBSCRIBE, PING and QUIT.
  EXPECT_EQ(run({"GET", "k"}),
            "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
            "RESET are allowed in this context\r\n");
  EXPECT_EQ(run({"PING"}), "*2\r\n" + bulk("pong") + bulk(""));
  EXPECT_EQ(run({"UNSUBSCRIBE"}), "*3\r\n" + bulk("unsubscribe") + bulk("news") + ":2\r\n" +
                                      "*3\r\n" + bulk("unsubscribe") + bulk("sport") + ":1\r\n");
  EXPECT_EQ(run({"UNSUBSCRIBE"}), "*3\r\n" + bulk("unsubscribe") + kNil.data() + ":1\r\n");
  EXPECT_EQ(run({"PUNSUBSCRIBE", "n*"}), "*3\r\n" + bulk("punsubscribe") + bulk("n*") + ":0\r\n");
  EXPECT_EQ(run({"GET", "k"}), kNil);  // out of subscribed mode
  EXPECT_EQ(run({"PUBLISH", "news", "again"}, publisher), ":0\r\n");
  {
    ClientState brief;
    brief.deliver = [](std::string_view) {};
    EXPECT_EQ(run({"SUBSCRIBE", "news"}, brief).substr(0, 4), "*3\r\n");
    EXPECT_EQ(run({"PUBLISH", "news", "x"}, publisher), ":1\r\n");
  }  // a connection's subscriptions end with it
  EXPECT_EQ(run({"PUBLISH", "news", "x"}, publisher), ":0\r\n");
}

// Patterns are matched against every published channel, so a connection's subscriptions are
// bounded in number and length.
TEST_F(RespTxTest, SubscriptionsAreBounded) {
  const std::string long_pattern(kMaxKeyBytes + 65, '*');
  EXPECT_EQ(run({"PSUBSCRIBE", "ok*", long_pattern}),
            "*3\r\n" + bulk("psubscribe") + bulk("ok*") + ":1\r\n" +
                "-ERR a channel or pattern is at most 1088 bytes in sessiond\r\n");
  std::vector<std::string> names;
  for (int i = 0; i < 10'000; ++i) names.push_back("c" + std::to_string(i));
  std::vector<std::string_view> args{"SUBSCRIBE"};
  args.insert(args.end(), names.begin(), names.end());
  const std::string reply = run(args);
  EXPECT_NE(reply.find(":10000\r\n"), std::string::npos);
  EXPECT_EQ(reply.substr(reply.size() - 89),
            "-ERR a connection holds at most 10000 subscriptions (channels and patterns) in "
            "sessiond\r\n");
  EXPECT_EQ(run({"UNSUBSCRIBE", "c0"}).substr(0, 4), "*3\r\n");
  EXPECT_EQ(run({"SUBSCRIBE", "again"}),
            "*3\r\n" + bulk("subscribe") + bulk("again") + ":10000\r\n");
}

TEST_F(RespTxTest, KeyspaceNotificationsAsSpringSessionAsksForThem) {
  EXPECT_EQ(run({"CONFIG", "GET", "notify-keyspace-events"}),
            "*2\r\n" + bulk("notify-keyspace-events") + bulk(""));
  ClientState app;
  EXPECT_EQ(run({"SET", "before", "v"}, app), kOk);
  EXPECT_EQ(run({"PSUBSCRIBE", "__keyevent@*__:*"}).substr(0, 4), "*3\r\n");
  EXPECT_EQ(run({"DEL", "before"}, app), ":1\r\n");
  EXPECT_TRUE(messages_.empty());  // off until configured
  EXPECT_EQ(run({"CONFIG", "SET", "notify-keyspace-events", "Egxn"}, app), kOk);
  EXPECT_EQ(run({"CONFIG", "GET", "notify-keyspace-events"}, app),
            "*2\r\n" + bulk("notify-keyspace-events") + bulk("gxnE"));
  const std::string pattern = "__keyevent@*__:*";
  EXPECT_EQ(run({"HSET", "spring:session:sessions:1", "a", "b"}, app), ":1\r\n");  // new
  EXPECT_EQ(run({"PEXPIRE", "spring:session:sessions:1", "100"}, app), ":1\r\n");  // expire
  EXPECT_EQ(run({"SET", "x", "1"}, app), kOk);                                     // new
  EXPECT_EQ(run({"DEL", "x", "nothing"}, app), ":1\r\n");                          // del
  EXPECT_EQ(run({"SELECT", "3"}, app), kOk);
  EXPECT_EQ(run({"SET", "y", "1", "PX", "50"}, app), kOk);  // new, expire in db 3
  clock_.advance_ms(200);
  EXPECT_EQ(table_.expire_due(), 2u);  // expired, found by the expirer
  const std::vector<std::string> want{
      pmessage(pattern, "__keyevent@0__:new", "spring:session:sessions:1"),
      pmessage(pattern, "__keyevent@0__:expire", "spring:session:sessions:1"),
      pmessage(pattern, "__keyevent@0__:new", "x"),
      pmessage(pattern, "__keyevent@0__:del", "x"),
      pmessage(pattern, "__keyevent@3__:new", "y"),
      pmessage(pattern, "__keyevent@3__:expire", "y"),
  };
  ASSERT_EQ(messages_.size(), want.size() + 2);
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_EQ(messages_[i], want[i]) << i;
  // The two expiries, in the expirer's order.
  std::vector<std::string> expired(messages_.end() - 2, messages_.end());
  std::sort(expired.begin(), expired.end());
  EXPECT_EQ(expired[0], pmessage(pattern, "__keyevent@0__:expired", "spring:session:sessions:1"));
  EXPECT_EQ(expired[1], pmessage(pattern, "__keyevent@3__:expired", "y"));
  // Keyspace channels (K) carry the event as the message.
  messages_.clear();
  EXPECT_EQ(run({"CONFIG", "SET", "notify-keyspace-events", "K$"}, app), kOk);
  EXPECT_EQ(run({"PSUBSCRIBE", "__keyspace@3__:*"}).substr(0, 4), "*3\r\n");
  EXPECT_EQ(run({"SET", "z", "1"}, app), kOk);
  ASSERT_EQ(messages_.size(), 1u);
  EXPECT_EQ(messages_[0], pmessage("__keyspace@3__:*", "__keyspace@3__:z", "set"));
}

TEST_F(RespTxTest, ConfigGetAndSet) {
  EXPECT_EQ(
      run({"CONFIG", "GET", "maxmemory*"}),
      "*4\r\n" + bulk("maxmemory") + bulk("0") + bulk("maxmemory-policy") + bulk("noeviction"));
  EXPECT_EQ(run({"CONFIG", "GET", "databases", "timeout"}),
            "*4\r\n" + bulk("databases") + bulk("16") + bulk("timeout") + bulk("300"));
  EXPECT_EQ(run({"CONFIG", "GET", "nothing"}), "*0\r\n");
  EXPECT_EQ(run({"CONFIG", "SET", "notify-keyspace-events", "KEA"}), kOk);
  EXPECT_EQ(run({"CONFIG", "GET", "notify-keyspace-events"}),
            "*2\r\n" + bulk("notify-keyspace-events") + bulk("AKE"));
  EXPECT_EQ(run({"CONFIG", "SET", "notify-keyspace-events", "Q"}),
            "-ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - "
            "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.\r\n");
  EXPECT_EQ(run({"CONFIG", "SET", "foo", "1"}),
            "-ERR Unknown option or number of arguments for CONFIG SET - 'foo'\r\n");
  EXPECT_EQ(run({"CONFIG", "SET", "maxmemory", "1"}).substr(0, 68),
            "-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - ");
  // A failed CONFIG SET changes nothing.
  EXPECT_EQ(run({"CONFIG", "SET", "notify-keyspace-events", "", "maxmemory", "1"}).substr(0, 5),
            "-ERR ");
  EXPECT_EQ(run({"CONFIG", "GET", "notify-keyspace-events"}),
            "*2\r\n" + bulk("notify-keyspace-events") + bulk("AKE"));
  EXPECT_EQ(run({"CONFIG", "SET", "notify-keyspace-events"}),
            "-ERR wrong number of arguments for 'config|set' command\r\n");
  EXPECT_EQ(run({"CONFIG", "REWRITE"}), "-ERR The server is running without a config file\r\n");
}

TEST_F(RespTxTest, SortedSetsAsSpringSessionUsesThem) {
  EXPECT_EQ(run({"ZADD", "exp", "1700000060000", "s1", "1700000000000", "s2", "1.5", "s3"}),
            ":3\r\n");
  EXPECT_EQ(run({"TYPE", "exp"}), "+zset\r\n");
  EXPECT_EQ(run({"ZRANGEBYSCORE", "exp", "0", "1700000030000", "LIMIT", "0", "100"}),
            "*2\r\n" + bulk("s3") + bulk("s2"));
  EXPECT_EQ(run({"ZRANGEBYSCORE", "exp", "-inf", "+inf", "WITHSCORES"}),
            "*6\r\n" + bulk("s3") + bulk("1.5") + bulk("s2") + bulk("1700000000000") + bulk("s1") +
                bulk("1700000060000"));
  EXPECT_EQ(run({"ZREVRANGEBYSCORE", "exp", "+inf", "(1.5", "LIMIT", "1", "-1"}),
            "*1\r\n" + bulk("s2"));
  EXPECT_EQ(run({"ZADD", "exp", "XX", "CH", "2", "s3", "9", "nope"}), ":1\r\n");
  EXPECT_EQ(run({"ZSCORE", "exp", "s3"}), bulk("2"));
  EXPECT_EQ(run({"ZADD", "exp", "INCR", "0.5", "s3"}), bulk("2.5"));
  EXPECT_EQ(run({"ZADD", "exp", "NX", "INCR", "1", "s3"}), kNil);
  EXPECT_EQ(run({"ZADD", "exp", "0.1", "tiny"}), ":1\r\n");
  EXPECT_EQ(run({"ZSCORE", "exp", "tiny"}), bulk("0.10000000000000001"));
  EXPECT_EQ(run({"ZCARD", "exp"}), ":4\r\n");
  // The same score again changes nothing: no write, so a WATCH of the key holds.
  EXPECT_EQ(run({"WATCH", "exp"}), kOk);
  EXPECT_EQ(run({"ZADD", "exp", "CH", "0.1", "tiny"}), ":0\r\n");
  EXPECT_EQ(run({"ZADD", "exp", "INCR", "0", "tiny"}), bulk("0.10000000000000001"));
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_EQ(run({"EXEC"}), "*0\r\n");
  EXPECT_EQ(run({"ZREM", "exp", "s1", "s2", "nope"}), ":2\r\n");
  EXPECT_EQ(run({"ZRANGEBYSCORE", "exp", "x", "1"}), "-ERR min or max is not a float\r\n");
  EXPECT_EQ(run({"ZADD", "exp", "abc", "m"}), "-ERR value is not a valid float\r\n");
  EXPECT_EQ(run({"ZADD", "exp", "NX", "XX", "1", "m"}),
            "-ERR XX and NX options at the same time are not compatible\r\n");
  EXPECT_EQ(run({"ZADD", "exp", "INCR", "1", "a", "2", "b"}),
            "-ERR INCR option supports a single increment-element pair\r\n");
  EXPECT_EQ(run({"ZADD", "exp", "inf", "m"}), ":1\r\n");
  EXPECT_EQ(run({"ZADD", "exp", "INCR", "-inf", "m"}),
            "-ERR resulting score is not a number (NaN)\r\n");
  EXPECT_EQ(run({"ZREM", "exp", "s3", "tiny", "m"}), ":3\r\n");
  EXPECT_EQ(run({"EXISTS", "exp"}), ":0\r\n");  // the last member took the key with it
  EXPECT_EQ(run({"SET", "str", "v"}), kOk);
  EXPECT_EQ(run({"ZADD", "str", "1", "m"}),
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
}

TEST_F(RespTxTest, SetGroupLeavesTransactionsAndSubscribersAlone) {
  SetGroup group(commands_);
  const std::vector<std::vector<std::string_view>> sets{{"SET", "k", "1"}};
  std::string out;
  EXPECT_EQ(run({"MULTI"}), kOk);
  EXPECT_FALSE(group.add(sets, client_, &out));  // queued by execute_all instead
  EXPECT_EQ(run({"DISCARD"}), kOk);
  EXPECT_EQ(run({"SUBSCRIBE", "c"}).substr(0, 4), "*3\r\n");
  EXPECT_FALSE(group.add(sets, client_, &out));
  EXPECT_EQ(run({"UNSUBSCRIBE"}).substr(0, 4), "*3\r\n");
  ClientState db5;
  EXPECT_EQ(run({"SELECT", "5"}, db5), kOk);
  EXPECT_TRUE(group.add(sets, db5, &out));
  group.run();
  EXPECT_EQ(out, kOk);
  EXPECT_EQ(run({"GET", "k"}), kNil);
  EXPECT_EQ(run({"GET", "k"}, db5), bulk("1"));
}

}  // namespace
}  // namespace sessiond::daemon::resp
