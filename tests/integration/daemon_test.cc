// The daemon at the protocol level: real sessiond processes on loopback, spoken to with raw
// frames (the client library has its own tests), including every kind of bad input.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "protocol/frame.h"
#include "protocol/sessiond.pb.h"
#include "raw_conn.h"
#include "test_node.h"

namespace sessiond {
namespace {

using namespace std::chrono_literals;
using protocol::Opcode;
using testing::TempDir;
using testing::TestNode;
using Clock = std::chrono::steady_clock;

using testing::Conn;
using testing::error_message;
using testing::parse;
using testing::Response;

class DaemonTest : public ::testing::Test {
 protected:
  std::unique_ptr<TestNode> start(std::vector<std::string> extra = {},
                                  std::string durability = "async") {
    TestNode::Options o;
    o.data_dir = dir_.path() / "data";
    o.durability = std::move(durability);
    o.extra_args = std::move(extra);
    std::string error;
    auto node = TestNode::start(o, &error);
    EXPECT_NE(node, nullptr) << error;
    return node;
  }
  // A created session's id, via CREATE.
  std::string create(Conn& c, const std::string& user, std::uint32_t rid) {
    wire::CreateRequest req;
    req.set_user_id(user);
    auto* f = req.add_fields();
    f->set_name("cart");
    f->set_value("[" + std::to_string(rid) + "]");
    c.send(Opcode::kCreate, req, rid);
    auto r = c.read();
    EXPECT_TRUE(r.has_value());
    if (!r) return {};
    EXPECT_EQ(r->status, StatusCode::kOk) << error_message(*r);
    return parse<wire::CreateResponse>(*r).session().id();
  }
  // Whether the node still answers PING on a fresh connection.
  static bool answers_ping(const TestNode& node) {
    Conn c(node.address());
    if (!c.connected()) return false;
    c.send(Opcode::kPing, wire::PingRequest(), 1);
    auto r = c.read();
    return r && r->status == StatusCode::kOk;
  }

  TempDir dir_;
};

TEST_F(DaemonTest, EveryOperationOverTheWire) {
  auto node = start();
  ASSERT_NE(node, nullptr);
  Conn c(node->address());
  ASSERT_TRUE(c.connected());

  wire::PingRequest ping;
  ping.set_payload("hello");
  c.send(Opcode::kPing, ping, 1);
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->request_id, 1u);
  EXPECT_EQ(parse<wire::PingResponse>(*r).payload(), "hello");
  // The version comes from project(sessiond VERSION ...) in CMakeLists.txt.
  EXPECT_EQ(parse<wire::PingResponse>(*r).server(), "sessiond/" SESSIOND_PROJECT_VERSION);

  const std::string id = create(c, "alice", 2);
  ASSERT_EQ(id.size(), 32u);

  wire::GetRequest get;
  get.set_id(id);
  get.set_touch(true);
  get.mutable_record_access()->set_ip("203.0.113.7");
  c.send(Opcode::kGet, get, 3);
  r = c.read();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, StatusCode::kOk) << error_message(*r);
  auto session = parse<wire::GetResponse>(*r).session();
  EXPECT_EQ(session.user_id(), "alice");
  ASSERT_EQ(session.fields_size(), 1);
  EXPECT_EQ(session.fields(0).value(), "[2]");
  EXPECT_EQ(session.timeouts().idle_ms(), 30u * 60 * 1000);  // the ecommerce default

  wire::UpdateRequest update;
  update.set_id(id);
  auto* set = update.add_set();
  set->set_name("role");
  set->set_value("admin");
  update.add_remove("cart");
  *update.mutable_expected_version() = session.version();
  c.send(Opcode::kUpdate, update, 4);
  r = c.read();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, StatusCode::kOk) << error_message(*r);
  c.send(Opcode::kUpdate, update, 5);  // the same expected version is now stale
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, StatusCode::kVersionConflict);

  wire::TouchRequest touch;
  touch.set_id(id);
  c.send(Opcode::kTouch, touch, 6);
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, StatusCode::kOk);

  wire::AccessLogRequest log;
  log.set_id(id);
  c.send(Opcode::kAccessLog, log, 7);
  r = c.read();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, StatusCode::kOk);
  auto entries = parse<wire::AccessLogResponse>(*r);
  ASSERT_EQ(entries.entries_size(), 1);
  EXPECT_EQ(entries.entries(0).ip(), "203.0.113.7");

  wire::RegenerateRequest regen;
  regen.set_id(id);
  regen.set_user_id("alice");
  c.send(Opcode::kRegenerate, regen, 8);
  r = c.read();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, StatusCode::kOk) << error_message(*r);
  const std::string new_id = parse<wire::RegenerateResponse>(*r).session().id();
  EXPECT_NE(new_id, id);
  get.set_id(id);
  c.send(Opcode::kGet, get, 9);
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, StatusCode::kNotFound);  // the old id is useless after login

  const std::string second = create(c, "alice", 10);
  wire::ListUserRequest list;
  list.set_user_id("alice");
  c.send(Opcode::kListUser, list, 11);
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(parse<wire::ListUserResponse>(*r).sessions_size(), 2);

  wire::RevokeUserRequest revoke;
  revoke.set_user_id("alice");
  revoke.set_keep_id(second);
  c.send(Opcode::kRevokeUser, revoke, 12);
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(parse<wire::RevokeUserResponse>(*r).revoked(), 1u);

  wire::DestroyRequest destroy;
  destroy.set_id(second);
  c.send(Opcode::kDestroy, destroy, 13);
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, StatusCode::kOk);
  c.send(Opcode::kDestroy, destroy, 14);
  r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, StatusCode::kNotFound);

  c.send(Opcode::kStats, wire::StatsRequest(), 15);
  r = c.read();
  ASSERT_TRUE(r);
  auto stats = parse<wire::StatsResponse>(*r);
  EXPECT_EQ(stats.sessions(), 0u);
  EXPECT_EQ(stats.creates(), 2u);
  EXPECT_GE(stats.connections(), 1u);

  c.send(Opcode::kTopology, wire::TopologyRequest(), 16);
  r = c.read();
  ASSERT_TRUE(r);
  auto topo = parse<wire::TopologyResponse>(*r);
  ASSERT_EQ(topo.nodes_size(), 1);
  EXPECT_EQ(topo.nodes(0).address(), node->address());

  EXPECT_EQ(node->terminate(), 0);
}

TEST_F(DaemonTest, PipelinesTenThousandRequestsOnOneConnection) {
  auto node = start();
  ASSERT_NE(node, nullptr);
  Conn c(node->address());
  std::string burst;
  for (std::uint32_t i = 0; i < 10'000; ++i) {
    protocol::FrameHeader h;
    h.opcode = static_cast<std::uint16_t>(i % 2 ? Opcode::kPing : Opcode::kCreate);
    h.request_id = i;
    if (i % 2) {
      ASSERT_TRUE(protocol::append_frame(h, wire::PingRequest(), &burst).ok());
    } else {
      wire::CreateRequest req;
      req.set_user_id("u" + std::to_string(i % 7));
      ASSERT_TRUE(protocol::append_frame(h, req, &burst).ok());
    }
  }
  std::thread sender([&] { c.send_raw(burst); });
  for (std::uint32_t i = 0; i < 10'000; ++i) {
    auto r = c.read();
    ASSERT_TRUE(r) << "response " << i << " missing";
    ASSERT_EQ(r->request_id, i) << "responses out of order";
    ASSERT_EQ(r->status, StatusCode::kOk);
  }
  sender.join();
  Conn s(node->address());
  s.send(Opcode::kStats, wire::StatsRequest(), 1);
  auto r = s.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(parse<wire::StatsResponse>(*r).sessions(), 5'000u);
}

TEST_F(DaemonTest, PipelinedCreatesAreAnsweredInOrderWithBadOnesAlone) {
  // Consecutive CREATEs share one RocksDB write; each still gets its own answer, in order.
  auto node = start();
  ASSERT_NE(node, nullptr);
  Conn c(node->address());
  std::string burst;
  for (std::uint32_t i = 0; i < 200; ++i) {
    protocol::FrameHeader h;
    h.opcode = static_cast<std::uint16_t>(Opcode::kCreate);
    h.request_id = i;
    wire::CreateRequest req;
    req.set_user_id("carol");
    if (i == 50) req.mutable_timeouts()->set_idle_ms(~0ull);  // out of range
    if (i == 120) req.add_fields()->set_name("");             // empty field name
    ASSERT_TRUE(protocol::append_frame(h, req, &burst).ok());
  }
  c.send_raw(burst);
  for (std::uint32_t i = 0; i < 200; ++i) {
    auto r = c.read();
    ASSERT_TRUE(r) << i;
    ASSERT_EQ(r->request_id, i);
    EXPECT_EQ(r->status, i == 50 || i == 120 ? StatusCode::kInvalidArgument : StatusCode::kOk) << i;
  }
  wire::ListUserRequest list;
  list.set_user_id("carol");
  c.send(Opcode::kListUser, list, 1000);
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(parse<wire::ListUserResponse>(*r).sessions_size(), 198);
}

TEST_F(DaemonTest, SixtyFourConcurrentClients) {
  auto node = start();
  ASSERT_NE(node, nullptr);
  std::atomic<int> failures{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 64; ++t) {
    clients.emplace_back([&, t] {
      Conn c(node->address());
      if (!c.connected()) return void(++failures);
      for (std::uint32_t i = 0; i < 50; ++i) {
        wire::CreateRequest req;
        req.set_user_id("client-" + std::to_string(t));
        c.send(Opcode::kCreate, req, i);
        auto r = c.read();
        if (!r || r->status != StatusCode::kOk || r->request_id != i) return void(++failures);
        wire::GetRequest get;
        get.set_id(parse<wire::CreateResponse>(*r).session().id());
        c.send(Opcode::kGet, get, i);
        r = c.read();
        if (!r || r->status != StatusCode::kOk) return void(++failures);
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  Conn s(node->address());
  s.send(Opcode::kStats, wire::StatsRequest(), 1);
  auto r = s.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(parse<wire::StatsResponse>(*r).sessions(), 64u * 50);
}

TEST_F(DaemonTest, KilledNodeKeepsEveryAcknowledgedCreate) {
  std::vector<std::string> acknowledged;
  {
    auto node = start({}, "async");
    ASSERT_NE(node, nullptr);
    Conn c(node->address());
    for (std::uint32_t i = 0; i < 500; ++i) acknowledged.push_back(create(c, "bob", i));
    node->kill_hard();
  }
  auto node = start({}, "async");
  ASSERT_NE(node, nullptr);
  EXPECT_NE(node->log().find("recovered 500 sessions"), std::string::npos) << node->log();
  Conn c(node->address());
  for (std::size_t i = 0; i < acknowledged.size(); ++i) {
    wire::GetRequest get;
    get.set_id(acknowledged[i]);
    c.send(Opcode::kGet, get, static_cast<std::uint32_t>(i));
    auto r = c.read();
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, StatusCode::kOk) << "acknowledged session " << i << " lost";
    EXPECT_EQ(parse<wire::GetResponse>(*r).session().fields(0).value(),
              "[" + std::to_string(i) + "]");
  }
}

TEST_F(DaemonTest, BadInputGetsAClearAnswerAndTheNodeServesOthers) {
  auto node = start({"--frame-timeout-ms", "300", "--max-frame-bytes", "65536"});
  ASSERT_NE(node, nullptr);

  {  // oversized frame: TOO_LARGE from the header alone, then closed
    Conn c(node->address());
    protocol::FrameHeader h;
    h.opcode = static_cast<std::uint16_t>(Opcode::kCreate);
    h.request_id = 7;
    h.body_length = 0xffffffff;
    std::string raw(protocol::kHeaderSize, '\0');
    protocol::encode_header(h, reinterpret_cast<std::uint8_t*>(raw.data()));
    c.send_raw(raw);
    auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, StatusCode::kTooLarge);
    EXPECT_EQ(r->request_id, 7u);
    EXPECT_TRUE(c.closed_by_server());
  }
  {  // unknown opcode: answered, and the connection goes on
    Conn c(node->address());
    std::string raw;
    protocol::FrameHeader h;
    h.opcode = 4242;
    h.request_id = 1;
    ASSERT_TRUE(protocol::append_frame(h, wire::PingRequest(), &raw).ok());
    c.send_raw(raw);
    auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, StatusCode::kInvalidArgument);
    EXPECT_NE(error_message(*r).find("4242"), std::string::npos);
    c.send(Opcode::kPing, wire::PingRequest(), 2);
    r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, StatusCode::kOk);
  }
  {  // unparsable body, a wrong-sized id, a value over the frame limit
    Conn c(node->address());
    std::string raw(protocol::kHeaderSize, '\0');
    protocol::FrameHeader h;
    h.opcode = static_cast<std::uint16_t>(Opcode::kCreate);
    h.request_id = 3;
    h.body_length = 5;
    protocol::encode_header(h, reinterpret_cast<std::uint8_t*>(raw.data()));
    raw += std::string("\xff\xff\xff\xff\x0f", 5);
    c.send_raw(raw);
    auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, StatusCode::kInvalidArgument);
    EXPECT_NE(error_message(*r).find("CREATE"), std::string::npos);

    wire::GetRequest get;
    get.set_id("short");
    c.send(Opcode::kGet, get, 4);
    r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, StatusCode::kInvalidArgument);

    wire::CreateRequest big;
    auto* f = big.add_fields();
    f->set_name("blob");
    f->set_value(std::string(100'000, 'x'));  // over --max-frame-bytes 65536
    c.send(Opcode::kCreate, big, 5);
    r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, StatusCode::kTooLarge);
  }
  {  // another protocol: told, then closed
    Conn c(node->address());
    c.send_raw("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, StatusCode::kInvalidArgument);
    EXPECT_TRUE(c.closed_by_server());
  }
  {  // half a frame, then silence: closed after --frame-timeout-ms
    Conn c(node->address());
    c.send_raw(std::string("SD\x01\x00\x01\x00", 6));
    EXPECT_TRUE(c.closed_by_server(5s));
  }
  EXPECT_TRUE(answers_ping(*node));
  Conn s(node->address());
  s.send(Opcode::kStats, wire::StatsRequest(), 1);
  auto r = s.read();
  ASSERT_TRUE(r);
  const auto stats = parse<wire::StatsResponse>(*r);
  EXPECT_GE(stats.protocol_errors(), 4u);
  EXPECT_EQ(stats.connection_timeouts(), 1u);  // the stalled half frame
}

TEST_F(DaemonTest, ConnectionsOverTheLimitAreToldAndClosed) {
  auto node = start({"--max-connections", "20"});
  ASSERT_NE(node, nullptr);
  std::vector<std::unique_ptr<Conn>> held;
  for (int i = 0; i < 20; ++i) {
    held.push_back(std::make_unique<Conn>(node->address()));
    held.back()->send(Opcode::kPing, wire::PingRequest(), 1);
    ASSERT_TRUE(held.back()->read());  // served, so counted
  }
  Conn extra(node->address());
  auto r = extra.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, StatusCode::kOverloaded);
  EXPECT_TRUE(extra.closed_by_server());
  held.front()->send(Opcode::kStats, wire::StatsRequest(), 2);  // the others are still served
  r = held.front()->read();
  ASSERT_TRUE(r);
  EXPECT_EQ(parse<wire::StatsResponse>(*r).connections_refused(), 1u);
}

TEST_F(DaemonTest, TenThousandConnectionsAtOnce) {
  // This process needs a descriptor per connection too: raise the soft limit to the hard one.
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
  std::size_t wanted = 10'000;
  if (limit.rlim_cur < wanted + 200) {
    wanted = limit.rlim_cur > 1200 ? limit.rlim_cur - 200 : 1000;
    std::printf("[   info   ] the descriptor limit is %llu: holding %zu connections\n",
                static_cast<unsigned long long>(limit.rlim_cur), wanted);
  }
  auto node = start();
  ASSERT_NE(node, nullptr);
  std::vector<std::unique_ptr<Conn>> conns;
  for (std::size_t i = 0; i < wanted; ++i) {
    conns.push_back(std::make_unique<Conn>(node->address()));
    ASSERT_TRUE(conns.back()->connected()) << "connection " << i;
  }
  for (std::size_t i = 0; i < conns.size(); ++i) {
    conns[i]->send(Opcode::kPing, wire::PingRequest(), static_cast<std::uint32_t>(i));
  }
  std::size_t answered = 0;
  for (auto& c : conns) answered += c->read() ? 1 : 0;
  EXPECT_EQ(answered, conns.size());
  // Ask on a connection already held: an extra one could be over the default limit.
  conns.front()->send(Opcode::kStats, wire::StatsRequest(), 1);
  auto r = conns.front()->read();
  ASSERT_TRUE(r);
  EXPECT_GE(parse<wire::StatsResponse>(*r).connections(), conns.size());
}

TEST_F(DaemonTest, SecondInstanceOnTheSameDataDirectoryFailsAtOnce) {
  auto node = start();
  ASSERT_NE(node, nullptr);
  auto second = testing::run_process(
      SESSIOND_DAEMON_PATH, {"--listen", "127.0.0.1:0", "--admin-listen", "off", "--data-dir",
                             (dir_.path() / "data").string()});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("in use by another process"), std::string::npos) << second.err;
  EXPECT_EQ(second.err.find("not writable"), std::string::npos) << second.err;
  EXPECT_TRUE(answers_ping(*node));
}

// A data directory the node's user may not write is reported as such, not as "in use by
// another process" (RocksDB says "lock" in both cases): a fresh empty one, and one holding a
// database. Root ignores mode bits, so as root the node runs as nobody (setpriv).
TEST_F(DaemonTest, DataDirectoryThatIsNotWritableSaysSo) {
  std::string program = SESSIOND_DAEMON_PATH;
  std::vector<std::string> args;
  uid_t uid = ::geteuid();
  if (uid == 0) {
    if (::access("/usr/bin/setpriv", X_OK) != 0) {
      GTEST_SKIP() << "running as root without /usr/bin/setpriv: root writes a mode 0555 "
                      "directory, and there is no simple way to run the node as another user";
    }
    program = "/usr/bin/setpriv";
    args = {"--reuid=65534", "--regid=65534", "--clear-groups", SESSIOND_DAEMON_PATH};
    uid = 65534;
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);  // mkdtemp made it 0700
  }
  const auto refused_as_not_writable = [&](const std::string& data) {
    auto run = args;
    run.insert(run.end(), {"--listen", "127.0.0.1:0", "--admin-listen", "off", "--data-dir", data});
    const auto result = testing::run_process(program, run);
    EXPECT_EQ(result.exit_code, 1) << result.err;
    EXPECT_NE(result.err.find("data directory " + data + " is not writable by this user (uid " +
                              std::to_string(uid) + ")"),
              std::string::npos)
        << result.err;
    EXPECT_EQ(result.err.find("in use by another process"), std::string::npos) << result.err;
  };
  const std::string fresh = (dir_.path() / "fresh").string();
  ASSERT_EQ(::mkdir(fresh.c_str(), 0555), 0);
  ASSERT_EQ(::chmod(fresh.c_str(), 0555), 0);  // whatever the umask
  refused_as_not_writable(fresh);

  {
    auto node = start();  // makes a database in dir_/data
    ASSERT_NE(node, nullptr);
    EXPECT_EQ(node->terminate(), 0);
  }
  const std::string existing = (dir_.path() / "data").string();
  ASSERT_EQ(::chmod(existing.c_str(), 0555), 0);
  refused_as_not_writable(existing);
  ::chmod(fresh.c_str(), 0755);  // so that TempDir can remove them when not root
  ::chmod(existing.c_str(), 0755);
}

TEST_F(DaemonTest, HelpListsEveryOptionAndBadFlagsAreUsageErrors) {
  auto help = testing::run_process(SESSIOND_DAEMON_PATH, {"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--listen", "--data-dir", "--durability", "--threads", "--config",
                           "--max-frame-bytes", "--idle-timeout-ms", "--frame-timeout-ms"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
  EXPECT_NE(help.out.find("127.0.0.1:7400"), std::string::npos);  // defaults are shown
  auto version = testing::run_process(SESSIOND_DAEMON_PATH, {"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out, "sessiond " SESSIOND_PROJECT_VERSION " (protocol 1)\n");
  auto bad = testing::run_process(SESSIOND_DAEMON_PATH, {"--durability", "fast"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("durability"), std::string::npos) << bad.err;
  auto bad_listen = testing::run_process(SESSIOND_DAEMON_PATH, {"--listen", "nowhere"});
  EXPECT_EQ(bad_listen.exit_code, 2);
  EXPECT_NE(bad_listen.err.find("--listen: 'nowhere' is not HOST:PORT"), std::string::npos)
      << bad_listen.err;
  for (const char* flag : {"--signed-ids", "--id-key-file", "--hijack-policy",
                           "--hijack-max-speed-kmh", "--hijack-max-ips", "--preset-policy"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
  auto bad_policy =
      testing::run_process(SESSIOND_DAEMON_PATH, {"--preset-policy", "finance:hijack=ban"});
  EXPECT_EQ(bad_policy.exit_code, 2);
  EXPECT_NE(bad_policy.err.find("--preset-policy 'finance:hijack=ban'"), std::string::npos)
      << bad_policy.err;
  auto bad_mode = testing::run_process(SESSIOND_DAEMON_PATH, {"--signed-ids", "some"});
  EXPECT_EQ(bad_mode.exit_code, 2);
}

TEST_F(DaemonTest, ConfigFileSetsOptionsAndFlagsOverrideIt) {
  const auto config = dir_.path() / "sessiond.toml";
  {
    std::FILE* f = std::fopen(config.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(
        "default-preset = \"finance\"\nthreads = 1\n"
        "preset-policy = [\"finance:signed-ids=off\", \"media:hijack=destroy\"]\n",
        f);
    std::fclose(f);
  }
  auto node = start({"--config", config.string()});
  ASSERT_NE(node, nullptr);
  Conn c(node->address());
  const std::string id = create(c, "", 1);
  wire::GetRequest get;
  get.set_id(id);
  c.send(Opcode::kGet, get, 2);
  auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(parse<wire::GetResponse>(*r).session().timeouts().idle_ms(), 10u * 60 * 1000);
  EXPECT_EQ(id.size(), 32u);  // the file's preset-policy turned finance's signed ids off
  // The file said 1 thread; the command line (TestNode passes --threads 2) wins.
  EXPECT_NE(node->log().find("2 worker threads"), std::string::npos) << node->log();
}

// A config file that sets a role's secret must be readable and writable by its owner only,
// as the id key file: otherwise the node refuses to start (exit 1) and says how to fix it. A
// config file without secrets is accepted whatever its mode.
TEST_F(DaemonTest, ConfigFileWithSecretsMustBeOwnerOnly) {
  const auto config = dir_.path() / "sessiond.toml";
  const auto write_config = [&](const char* text, mode_t mode) {
    std::FILE* f = std::fopen(config.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(text, f);
    std::fclose(f);
    ASSERT_EQ(::chmod(config.c_str(), mode), 0);
  };
  const std::string data = (dir_.path() / "data").string();
  for (mode_t mode : {0644, 0660, 0602}) {
    ASSERT_NO_FATAL_FAILURE(write_config("admin-secret = \"s3cret-admin\"\n", mode));
    const auto refused = testing::run_process(
        SESSIOND_DAEMON_PATH,
        {"--config", config.string(), "--listen", "127.0.0.1:0", "--data-dir", data});
    EXPECT_EQ(refused.exit_code, 1) << std::oct << mode << " " << refused.err;
    EXPECT_NE(refused.err.find("cannot start: the config file " + config.string() +
                               " is readable or writable by others than its owner; chmod 600 it"),
              std::string::npos)
        << refused.err;
  }
  ASSERT_NO_FATAL_FAILURE(write_config("admin-secret = \"s3cret-admin\"\n", 0600));
  {
    auto node = start({"--config", config.string()});
    ASSERT_NE(node, nullptr);
    EXPECT_NE(node->log().find("authentication on"), std::string::npos) << node->log();
  }
  ASSERT_NO_FATAL_FAILURE(write_config("threads = 1\n", 0666));
  auto node = start({"--config", config.string()});
  ASSERT_NE(node, nullptr);
  EXPECT_TRUE(answers_ping(*node));
}

// What the node logs about failed AUTHs: "N failed AUTH attempts[ in the last S s], latest
// from PEER" lines, as (N, peer) pairs.
std::vector<std::pair<std::uint64_t, std::string>> auth_failure_lines(const std::string& log) {
  static const std::regex line(
      R"((\d+) failed AUTH attempts?(?: in the last [0-9.]+ s)?, latest from (\S+))");
  std::vector<std::pair<std::uint64_t, std::string>> out;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator();
       ++it) {
    out.emplace_back(std::stoull((*it)[1].str()), (*it)[2].str());
  }
  return out;
}

// Waits (with a deadline) for `done`, polling: the condition, not the pause, ends the wait.
template <typename Condition>
bool eventually(Condition done, std::chrono::milliseconds patience) {
  const auto deadline = Clock::now() + patience;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// Wrong secrets: the third on a connection is answered and closes it, even with more guesses
// (and the right secret) pipelined behind it; every failure is counted in STATS; the log gets
// at most about a line a second, and its lines together count every failure.
TEST_F(DaemonTest, FailedAuthsAreCountedLoggedRateLimitedAndCloseTheConnection) {
  auto node = start({"--app-secret", "app-secret-1", "--admin-secret", "admin-secret-1"});
  ASSERT_NE(node, nullptr);
  const auto started = Clock::now();
  std::uint64_t failures = 0;
  const auto auth_request = [](const std::string& secret, std::uint32_t rid) {
    wire::AuthRequest req;
    req.set_secret(secret);
    std::string out;
    protocol::FrameHeader h;
    h.opcode = static_cast<std::uint16_t>(Opcode::kAuth);
    h.request_id = rid;
    EXPECT_TRUE(protocol::append_frame(h, req, &out).ok());
    return out;
  };
  {
    Conn c(node->address());
    ASSERT_TRUE(c.connected());
    std::string pipeline;
    for (std::uint32_t rid = 1; rid <= 3; ++rid) pipeline += auth_request("guess", rid);
    pipeline += auth_request("app-secret-1", 4);
    c.send_raw(pipeline);
    for (std::uint32_t rid = 1; rid <= 3; ++rid) {
      auto r = c.read();
      ASSERT_TRUE(r) << rid;
      EXPECT_EQ(r->request_id, rid);
      EXPECT_EQ(r->status, StatusCode::kUnauthenticated);
      if (rid == 3) {
        EXPECT_NE(error_message(*r).find("closing the connection after 3 failed AUTHs"),
                  std::string::npos)
            << error_message(*r);
      }
    }
    failures += 3;
    EXPECT_FALSE(c.read(5s)) << "the AUTH after the third failure was answered";
    EXPECT_TRUE(c.closed_by_server());
  }
  ASSERT_TRUE(eventually([&] { return !auth_failure_lines(node->log()).empty(); }, 10s))
      << node->log();
  EXPECT_EQ(auth_failure_lines(node->log()).front(),
            (std::pair<std::uint64_t, std::string>{1, "127.0.0.1"}));

  // A burst from many connections: counted in full, logged in few lines.
  for (int i = 0; i < 30; ++i) {
    Conn c(node->address());
    ASSERT_TRUE(c.connected());
    c.send_raw(auth_request("guess-a", 1) + auth_request("guess-b", 2) +
               auth_request("guess-c", 3));
    for (int k = 0; k < 3; ++k) ASSERT_TRUE(c.read()) << i;
    EXPECT_TRUE(c.closed_by_server());
    failures += 3;
  }
  // One more failure at a time until a line reports those held back (the next line comes a
  // second after the previous one).
  for (;;) {
    Conn c(node->address());
    ASSERT_TRUE(c.connected());
    c.send_raw(auth_request("guess-late", 1));
    ASSERT_TRUE(c.read());
    ++failures;
    if (eventually([&] { return auth_failure_lines(node->log()).size() >= 2; }, 200ms)) break;
    ASSERT_LT(Clock::now() - started, 15s) << node->log();
  }
  const auto lines = auth_failure_lines(node->log());
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started);
  EXPECT_LE(lines.size(), static_cast<std::size_t>(seconds.count()) + 2) << node->log();
  EXPECT_GT(lines.back().first, 1u) << node->log();  // it counts the failures held back
  std::uint64_t logged = 0;
  for (const auto& [count, peer] : lines) {
    logged += count;
    EXPECT_EQ(peer, "127.0.0.1");
  }
  EXPECT_EQ(logged, failures) << node->log();

  // Two typos and then the right secret: still in, and STATS (admin) counts every failure.
  Conn admin(node->address());
  admin.send_raw(auth_request("typo-1", 1) + auth_request("typo-2", 2) +
                 auth_request("admin-secret-1", 3));
  for (std::uint32_t rid = 1; rid <= 3; ++rid) {
    auto r = admin.read();
    ASSERT_TRUE(r) << rid;
    EXPECT_EQ(r->status, rid == 3 ? StatusCode::kOk : StatusCode::kUnauthenticated);
  }
  failures += 2;
  admin.send(Opcode::kStats, wire::StatsRequest(), 4);
  auto r = admin.read();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, StatusCode::kOk) << error_message(*r);
  EXPECT_EQ(parse<wire::StatsResponse>(*r).auth_failures(), failures);
}

}  // namespace
}  // namespace sessiond

namespace sessiond {
namespace {

// A CREATE or REGENERATE retried with its request id after a lost answer is answered with the
// first answer, not run twice; an id reused for another request is refused (DESIGN §6).
TEST_F(DaemonTest, RetriedRequestIdsAreAnsweredNotRunTwice) {
  auto node = start();
  ASSERT_TRUE(node);
  wire::CreateRequest req;
  req.set_user_id("alice");
  req.set_request_id(std::string(16, 'r'));
  req.set_epoch(0);
  std::string first_id;
  for (int attempt = 0; attempt < 3; ++attempt) {
    Conn c(node->address());  // a new connection each time, as a client that lost its own
    req.set_epoch(static_cast<std::uint64_t>(attempt));  // the epoch may differ on a retry
    c.send(Opcode::kCreate, req, 1);
    auto r = c.read();
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, StatusCode::kOk) << error_message(*r);
    const std::string id = parse<wire::CreateResponse>(*r).session().id();
    if (attempt == 0) first_id = id;
    EXPECT_EQ(id, first_id);
  }
  Conn c(node->address());
  c.send(
      Opcode::kListUser,
      [] {
        wire::ListUserRequest l;
        l.set_user_id("alice");
        return l;
      }(),
      2);
  auto listed = c.read();
  ASSERT_TRUE(listed);
  EXPECT_EQ(parse<wire::ListUserResponse>(*listed).sessions_size(), 1);
  // The same id with another request: refused, nothing created.
  req.set_user_id("mallory");
  c.send(Opcode::kCreate, req, 3);
  auto reused = c.read();
  ASSERT_TRUE(reused);
  EXPECT_EQ(reused->status, StatusCode::kInvalidArgument);
  // REGENERATE: the retry gets the new id, although the old one is gone.
  wire::RegenerateRequest regen;
  regen.set_id(first_id);
  regen.set_request_id(std::string(16, 'g'));
  c.send(Opcode::kRegenerate, regen, 4);
  auto once = c.read();
  ASSERT_TRUE(once);
  ASSERT_EQ(once->status, StatusCode::kOk);
  c.send(Opcode::kRegenerate, regen, 5);
  auto twice = c.read();
  ASSERT_TRUE(twice);
  ASSERT_EQ(twice->status, StatusCode::kOk);
  EXPECT_EQ(parse<wire::RegenerateResponse>(*twice).session().id(),
            parse<wire::RegenerateResponse>(*once).session().id());
  // Without a request id, a second REGENERATE of the ended id is NOT_FOUND, as before.
  regen.clear_request_id();
  c.send(Opcode::kRegenerate, regen, 6);
  auto plain = c.read();
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->status, StatusCode::kNotFound);
}

}  // namespace
}  // namespace sessiond
