// The client library and sessctl against real sessiond processes on free loopback ports.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "sessiond/client.h"
#include "sessiond/tokens.h"
#include "test_node.h"

#ifndef SESSCTL_PATH
#error "SESSCTL_PATH must name the sessctl binary"
#endif

namespace sessiond {
namespace {

using namespace std::chrono_literals;
using testing::ProcessResult;
using testing::TempDir;
using testing::TestNode;
using Clock = std::chrono::steady_clock;

// Option builders: designated initializers that leave members out trip gcc's
// -Wmissing-field-initializers.
CreateOptions create_with(std::string user, std::vector<FieldValue> fields = {},
                          std::optional<Timeouts> timeouts = std::nullopt) {
  CreateOptions options;
  options.user_id = std::move(user);
  options.fields = std::move(fields);
  options.timeouts = timeouts;
  return options;
}

GetOptions touching() {
  GetOptions options;
  options.touch = true;
  return options;
}

TestNode::Options node_options(std::filesystem::path data_dir, std::string listen = "127.0.0.1:0") {
  TestNode::Options options;
  options.data_dir = std::move(data_dir);
  options.listen = std::move(listen);
  return options;
}

class ClientIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    node_ = TestNode::start(node_options(dir_.path() / "data"), &error);
    ASSERT_NE(node_, nullptr) << error;
  }

  Client::Options options(std::size_t pool_size = 2) const {
    Client::Options o;
    o.address = node_->address();
    o.pool_size = pool_size;
    o.timeout = 10s;
    return o;
  }

  ProcessResult sessctl(std::vector<std::string> args) const {
    args.insert(args.begin(), {"--addr", node_->address()});
    return testing::run_process(SESSCTL_PATH, args);
  }

  TempDir dir_;
  std::unique_ptr<TestNode> node_;
};

std::string json_id(const std::string& json) {
  static const std::regex kId(R"re("id":"([A-Za-z0-9_-]{43}|[A-Za-z0-9_-]{64})")re");
  std::smatch match;
  return std::regex_search(json, match, kId) ? std::string(match[1]) : std::string();
}

TEST_F(ClientIntegration, EveryOperationThroughTheLibrary) {
  Client client(options());

  auto ping = client.ping("hi");
  ASSERT_TRUE(ping.ok()) << ping.status().ToString();
  EXPECT_EQ(ping->payload, "hi");
  EXPECT_EQ(ping->protocol_version, 1u);

  CreateOptions create;
  create.user_id = "alice";
  create.fields = {{"cart", "3 items"}, {"role", "admin"}};
  create.preset = Preset::kFinance;
  auto created = client.create(create);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_TRUE(is_valid_session_id(created->id));
  EXPECT_GT(created->deadline_ms, created->created_at_ms);

  auto session = client.get(created->id);
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  EXPECT_EQ(session->id, created->id);
  EXPECT_EQ(session->user_id, "alice");
  ASSERT_NE(session->field("cart"), nullptr);
  EXPECT_EQ(session->field("cart")->value, "3 items");
  EXPECT_EQ(session->timeouts, (Timeouts{10 * 60'000, 30 * 60'000}));

  auto updated = client.update(created->id, [] {
    UpdateOptions options;
    options.set = {{"cart", "4 items"}, {"theme", "dark"}};
    options.remove = {"role"};
    return options;
  }());
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();
  session = client.get(created->id);
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->field("cart")->value, "4 items");
  EXPECT_EQ(session->field("theme")->value, "dark");
  EXPECT_EQ(session->field("role"), nullptr);

  // A write with a stale expected version is refused.
  UpdateOptions stale;
  stale.set = {{"cart", "never"}};
  stale.expected_version = Version{1, 0};
  EXPECT_EQ(client.update(created->id, stale).code(), StatusCode::kVersionConflict);
  UpdateOptions current;
  current.set = {{"cart", "5 items"}};
  current.expected_version = updated->version;
  EXPECT_TRUE(client.update(created->id, current).ok());

  auto touched = client.touch(created->id);
  ASSERT_TRUE(touched.ok()) << touched.status().ToString();
  EXPECT_GE(touched->last_access_ms, session->last_access_ms);

  GetOptions with_access;
  with_access.touch = true;
  AccessEntry access;
  access.ip = "203.0.113.7";
  access.user_agent_hash = 42;
  with_access.record_access = access;
  ASSERT_TRUE(client.get(created->id, with_access).ok());
  auto log = client.access_log(created->id);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_FALSE(log->empty());
  EXPECT_EQ(log->back().ip, "203.0.113.7");
  EXPECT_EQ(log->back().user_agent_hash, 42u);

  auto second = client.create(create_with("alice"));
  ASSERT_TRUE(second.ok());
  auto listed = client.list_user("alice");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 2u);
  // Oldest first; sessions made within one millisecond (this test's ops can all take less, and
  // did) come in the order of their ids.
  EXPECT_EQ(std::set<std::string>({(*listed)[0].id, (*listed)[1].id}),
            std::set<std::string>({created->id, second->id}));
  EXPECT_LE((*listed)[0].created_at_ms, (*listed)[1].created_at_ms);
  if ((*listed)[0].created_at_ms < (*listed)[1].created_at_ms) {
    EXPECT_EQ((*listed)[0].id, created->id);
  }

  auto regenerated = client.regenerate(created->id, [] {
    RegenerateOptions options;
    options.user_id = "alice";
    return options;
  }());
  ASSERT_TRUE(regenerated.ok()) << regenerated.status().ToString();
  EXPECT_NE(regenerated->id, created->id);
  EXPECT_EQ(client.get(created->id).code(), StatusCode::kNotFound);
  auto moved = client.get(regenerated->id);
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(moved->field("cart")->value, "5 items");

  auto revoked = client.revoke_user("alice", regenerated->id);
  ASSERT_TRUE(revoked.ok()) << revoked.status().ToString();
  EXPECT_EQ(*revoked, 1u);
  EXPECT_EQ(client.get(second->id).code(), StatusCode::kNotFound);
  EXPECT_TRUE(client.get(regenerated->id).ok());

  auto stats = client.stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_GE(stats->creates, 2u);
  EXPECT_GE(stats->regenerates, 1u);

  EXPECT_TRUE(client.destroy(regenerated->id).ok());
  EXPECT_EQ(client.get(regenerated->id).code(), StatusCode::kNotFound);
  EXPECT_EQ(client.destroy(regenerated->id).code(), StatusCode::kNotFound);
  EXPECT_EQ(client.touch(regenerated->id).code(), StatusCode::kNotFound);
}

TEST_F(ClientIntegration, ContextBoundSessionRefusesAnotherContext) {
  Client client(options());
  CreateOptions create;
  create.context = ClientContext{"198.51.100.1", 7};
  auto created = client.create(create);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  GetOptions same;
  same.expect_context = ClientContext{"198.51.100.1", 7};
  auto bound = client.get(created->id, same);
  ASSERT_TRUE(bound.ok()) << bound.status().ToString();
  ASSERT_TRUE(bound->context.has_value());
  EXPECT_EQ(bound->context->ip, "198.51.100.1");
  GetOptions other;
  other.expect_context = ClientContext{"192.0.2.9", 7};
  EXPECT_EQ(client.get(created->id, other).code(), StatusCode::kContextMismatch);
}

TEST_F(ClientIntegration, IdleSessionExpires) {
  Client client(options());
  auto created = client.create(create_with("", {}, Timeouts{200, 0}));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_TRUE(client.get(created->id).ok());
  // Wait for the condition (the session gone), with a deadline.
  const auto deadline = Clock::now() + 10s;
  StatusCode code = StatusCode::kOk;
  while (Clock::now() < deadline) {
    code = client.get(created->id).code();
    if (code != StatusCode::kOk) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(code == StatusCode::kNotFound || code == StatusCode::kExpired)
      << status_code_name(code);
}

TEST_F(ClientIntegration, PipelinesTenThousandGetsOnOneConnection) {
  Client client(options(/*pool_size=*/1));
  std::vector<std::string> created;
  for (int i = 0; i < 100; ++i) {
    auto meta = client.create(create_with("", {{"n", std::to_string(i)}}));
    ASSERT_TRUE(meta.ok()) << meta.status().ToString();
    created.push_back(meta->id);
  }
  std::vector<std::string> ids;
  for (int i = 0; i < 10'000; ++i) ids.push_back(created[static_cast<std::size_t>(i) % 100]);
  auto results = client.get_many(ids);
  ASSERT_EQ(results.size(), ids.size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].status().ToString();
    ASSERT_EQ(results[i]->id, ids[i]);
    ASSERT_EQ(results[i]->field("n")->value, std::to_string(i % 100));
  }
  auto stats = client.stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->connections, 1u);
}

TEST_F(ClientIntegration, AsyncCallsCompleteOnceEach) {
  Client client(options());
  constexpr int kCalls = 2'000;
  std::atomic<int> ok{0};
  std::atomic<int> done{0};
  std::promise<void> all;
  for (int i = 0; i < kCalls; ++i) {
    client.async_create(create_with("async"), [&](Result<SessionMeta> result) {
      if (result.ok()) ok.fetch_add(1);
      if (done.fetch_add(1) + 1 == kCalls) all.set_value();
    });
  }
  ASSERT_EQ(all.get_future().wait_for(30s), std::future_status::ready);
  EXPECT_EQ(ok.load(), kCalls);
  auto listed = client.list_user("async");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), static_cast<std::size_t>(kCalls));
}

TEST_F(ClientIntegration, SixtyFourConcurrentClients) {
  constexpr int kClients = 64;
  constexpr int kRounds = 20;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      Client client(options(1));
      for (int r = 0; r < kRounds; ++r) {
        const std::string value = std::to_string(c) + "/" + std::to_string(r);
        auto meta = client.create(create_with("user" + std::to_string(c), {{"v", value}}));
        if (!meta.ok()) {
          failures.fetch_add(1);
          continue;
        }
        auto session = client.get(meta->id, touching());
        if (!session.ok() || session->field("v") == nullptr ||
            session->field("v")->value != value) {
          failures.fetch_add(1);
        }
        if (!client.destroy(meta->id).ok()) failures.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(ClientIntegration, CallToAStoppedNodeFailsAtItsDeadline) {
  Client::Options o = options();
  o.timeout = 300ms;
  Client client(o);
  ASSERT_TRUE(client.ping().ok());
  ASSERT_EQ(::kill(node_->pid(), SIGSTOP), 0);
  const auto start = Clock::now();
  auto ping = client.ping();
  const auto elapsed = Clock::now() - start;
  ::kill(node_->pid(), SIGCONT);
  EXPECT_EQ(ping.code(), StatusCode::kUnavailable);
  EXPECT_NE(ping.status().message().find("no answer"), std::string::npos)
      << ping.status().ToString();
  EXPECT_GE(elapsed, 290ms);
  EXPECT_LT(elapsed, 3s);
  EXPECT_TRUE(client.ping().ok());  // the connection still works once the node runs again
}

TEST_F(ClientIntegration, CallTimeoutGivesOneCallItsOwnDeadline) {
  std::atomic<bool> long_done{false};  // before the client: its callback may run at ~Client
  Client::Options o = options();
  o.timeout = 5s;  // the client's default: far longer than the call below may take
  Client client(o);
  ASSERT_TRUE(client.ping().ok());
  ASSERT_EQ(::kill(node_->pid(), SIGSTOP), 0);
  // A call with the long default is outstanding first; the short one made after it must still
  // fail at its own, earlier deadline.
  client.async_ping("slow", [&](Result<PingResult>) { long_done = true; });
  const auto start = Clock::now();
  Result<PingResult> ping = Status::Internal("not called");
  {
    Client::CallTimeout quick(200ms);
    ping = client.ping();
  }
  const auto elapsed = Clock::now() - start;
  EXPECT_EQ(ping.code(), StatusCode::kUnavailable);
  EXPECT_NE(ping.status().message().find("within 200 ms"), std::string::npos)
      << ping.status().ToString();
  EXPECT_GE(elapsed, 190ms);
  EXPECT_LT(elapsed, 2s);
  EXPECT_FALSE(long_done.load());  // the default deadline still applies to the other call
  ::kill(node_->pid(), SIGCONT);
  EXPECT_TRUE(client.ping().ok());
}

TEST_F(ClientIntegration, ReconnectsAfterKillAndRestartAndAcknowledgedCreatesSurvive) {
  Client client(options());
  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) {
    auto meta = client.create(create_with("", {{"i", std::to_string(i)}}));
    ASSERT_TRUE(meta.ok()) << meta.status().ToString();
    ids.push_back(meta->id);
  }
  const std::string address = node_->address();
  node_->kill_hard();
  std::string error;
  node_ = TestNode::start(node_options(dir_.path() / "data", address), &error);
  ASSERT_NE(node_, nullptr) << error;

  // The same client: its connections died with the node; idempotent reads reconnect.
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto session = client.get(ids[i]);
    ASSERT_TRUE(session.ok()) << i << ": " << session.status().ToString();
    EXPECT_EQ(session->field("i")->value, std::to_string(i));
  }
}

TEST_F(ClientIntegration, SessctlEveryCommandAndExitCodes) {
  auto created = sessctl({"--json", "create", "--user", "carol", "--field", "cart=2", "--field",
                          "note=a=b", "--preset", "media"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string id = json_id(created.out);
  ASSERT_FALSE(id.empty()) << created.out;

  auto got = sessctl({"--json", "get", id});
  EXPECT_EQ(got.exit_code, 0) << got.err;
  EXPECT_NE(got.out.find(R"("fields":{"cart":"2","note":"a=b"})"), std::string::npos) << got.out;
  EXPECT_NE(got.out.find(R"("user_id":"carol")"), std::string::npos) << got.out;

  auto human = sessctl({"get", "--touch", id});
  EXPECT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("cart = 2"), std::string::npos) << human.out;

  EXPECT_EQ(sessctl({"update", id, "--set", "cart=3", "--remove", "note"}).exit_code, 0);
  got = sessctl({"--json", "get", id});
  EXPECT_NE(got.out.find(R"("fields":{"cart":"3"})"), std::string::npos) << got.out;

  EXPECT_EQ(sessctl({"touch", id}).exit_code, 0);
  auto listed = sessctl({"--json", "list-user", "carol"});
  EXPECT_EQ(listed.exit_code, 0);
  EXPECT_EQ(json_id(listed.out), id);
  EXPECT_EQ(sessctl({"--json", "access-log", id}).exit_code, 0);

  auto regenerated = sessctl({"--json", "regenerate", id, "--user", "dave"});
  ASSERT_EQ(regenerated.exit_code, 0) << regenerated.err;
  const std::string new_id = json_id(regenerated.out);
  ASSERT_FALSE(new_id.empty());
  auto old = sessctl({"--json", "get", id});
  EXPECT_EQ(old.exit_code, 1);
  EXPECT_NE(old.out.find(R"("code":"NOT_FOUND")"), std::string::npos) << old.out;

  auto other = sessctl({"--json", "create", "--user", "dave", "--idle-ms", "60000"});
  ASSERT_EQ(other.exit_code, 0);
  auto revoked = sessctl({"--json", "revoke-user", "dave", "--keep", new_id});
  EXPECT_EQ(revoked.exit_code, 0);
  EXPECT_NE(revoked.out.find(R"("revoked":1)"), std::string::npos) << revoked.out;
  EXPECT_EQ(sessctl({"get", json_id(other.out)}).exit_code, 1);

  auto stats = sessctl({"--json", "stats"});
  EXPECT_EQ(stats.exit_code, 0);
  EXPECT_NE(stats.out.find(R"("creates":)"), std::string::npos) << stats.out;
  auto ping = sessctl({"ping"});
  EXPECT_EQ(ping.exit_code, 0);
  EXPECT_NE(ping.out.find("pong"), std::string::npos);

  EXPECT_EQ(sessctl({"destroy", new_id}).exit_code, 0);
  EXPECT_EQ(sessctl({"destroy", new_id}).exit_code, 1);

  // Usage errors: 2.
  EXPECT_EQ(sessctl({"get", "not-an-id"}).exit_code, 2);
  EXPECT_EQ(sessctl({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(sessctl({"create", "--field", "novalue"}).exit_code, 2);
  EXPECT_EQ(sessctl({"create", "--preset", "finance", "--idle-ms", "5"}).exit_code, 2);
  EXPECT_EQ(testing::run_process(SESSCTL_PATH, {}).exit_code, 2);
}

TEST_F(ClientIntegration, TopologyThroughTheLibraryAndSessctl) {
  Client client(options());
  auto topology = client.topology();
  ASSERT_TRUE(topology.ok()) << topology.status().ToString();
  EXPECT_EQ(topology->source, node_->address());
  ASSERT_EQ(topology->nodes.size(), 1u);  // a node without a cluster lists itself alone
  EXPECT_EQ(topology->nodes[0].address, node_->address());

  auto printed = sessctl({"--json", "topology"});
  EXPECT_EQ(printed.exit_code, 0) << printed.err;
  EXPECT_NE(printed.out.find("\"address\":\"" + node_->address() + "\""), std::string::npos)
      << printed.out;
  // Seeds: one that refuses connections, then the node.
  auto seeded = testing::run_process(
      SESSCTL_PATH, {"--addr", "127.0.0.1:1," + node_->address(), "create", "--user", "dave"});
  EXPECT_EQ(seeded.exit_code, 0) << seeded.err;
}

TEST(Sessctl, SaysItsVersion) {
  auto result = testing::run_process(SESSCTL_PATH, {"--version"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "sessctl " SESSIOND_PROJECT_VERSION " (protocol 1)\n");
}

TEST(SessctlUnreachable, ExitsThreeWhenNoNodeListens) {
  // A loopback port that is bound but not listening: connections to it are refused, and no
  // other test's node can take it meanwhile (a stopped node's port could be handed to a node of
  // a test running in parallel).
  const int holder = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(holder, 0);
  sockaddr_in bound{};
  bound.sin_family = AF_INET;
  bound.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof bound;
  ASSERT_EQ(::bind(holder, reinterpret_cast<sockaddr*>(&bound), sizeof bound), 0);
  ASSERT_EQ(::getsockname(holder, reinterpret_cast<sockaddr*>(&bound), &length), 0);
  const std::string address = "127.0.0.1:" + std::to_string(ntohs(bound.sin_port));
  auto result = testing::run_process(SESSCTL_PATH, {"--addr", address, "--json", "ping"});
  ::close(holder);
  EXPECT_EQ(result.exit_code, 3) << result.out << result.err;
  EXPECT_NE(result.out.find(R"("code":"UNAVAILABLE")"), std::string::npos) << result.out;
}

}  // namespace
}  // namespace sessiond

namespace sessiond {
namespace {

// A node started with extra flags (the security settings of issue 5).
// Binding from sessctl: a finance session bound to a prefix is destroyed by a read from outside
// it (the finance preset's context policy), and the mismatch is counted.
TEST_F(ClientIntegration, SessctlBindsAndChecksTheContext) {
  auto created = sessctl({"--json", "create", "--user", "ivan", "--preset", "finance", "--bind-ip",
                          "203.0.113.0/24", "--bind-ua-hash", "77"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string id = json_id(created.out);
  ASSERT_EQ(id.size(), kSignedSessionIdTextLength) << created.out;
  auto inside =
      sessctl({"--json", "get", id, "--expect-ip", "203.0.113.9", "--expect-ua-hash", "77"});
  EXPECT_EQ(inside.exit_code, 0) << inside.err;
  EXPECT_NE(inside.out.find(R"("context":{"ip":"203.0.113.0/24","user_agent_hash":77})"),
            std::string::npos)
      << inside.out;
  auto outside = sessctl({"get", id, "--expect-ip", "198.51.100.1", "--expect-ua-hash", "77"});
  EXPECT_EQ(outside.exit_code, 4) << outside.err;
  EXPECT_NE(outside.err.find("CONTEXT_MISMATCH"), std::string::npos) << outside.err;
  EXPECT_NE(outside.err.find("destroyed"), std::string::npos) << outside.err;
  EXPECT_EQ(sessctl({"get", id}).exit_code, 1);
  Client client(options());
  auto stats = client.stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->context_mismatches, 1u);
}

class ConfiguredNode : public ::testing::Test {
 protected:
  // Starts the node; the test fails (and node_ stays null) when it does not come up.
  void start(std::vector<std::string> extra_args) {
    TestNode::Options o = node_options(dir_.path() / "data");
    o.extra_args = std::move(extra_args);
    std::string error;
    node_ = TestNode::start(o, &error);
    ASSERT_NE(node_, nullptr) << error;
  }
  Client::Options client_options(std::string secret = {}) const {
    Client::Options co;
    co.address = node_->address();
    co.timeout = 10s;
    co.secret = std::move(secret);
    return co;
  }
  TempDir dir_;
  std::unique_ptr<TestNode> node_;
};

// The per-user session limit of a real node, through the client library and sessctl.
TEST_F(ConfiguredNode, SessionsPerUserAreLimited) {
  ASSERT_NO_FATAL_FAILURE(start({"--max-sessions-per-user", "2", "--user-limit-policy", "refuse"}));
  Client client(client_options());
  ASSERT_TRUE(client.create(create_with("alice")).ok());
  ASSERT_TRUE(client.create(create_with("alice")).ok());
  auto refused = client.create(create_with("alice"));
  EXPECT_EQ(refused.status().code(), StatusCode::kForbidden) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("the limit is 2"), std::string::npos);
  auto listed = client.list_user("alice");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 2u);
  // sessctl reports the refusal with its "other refusal" exit code.
  auto out =
      testing::run_process(SESSCTL_PATH, {"--addr", node_->address(), "create", "--user", "alice"});
  EXPECT_EQ(out.exit_code, 4) << out.err;
}

// Federated sessions on a real node: service tokens live and die with their master session.
TEST_F(ClientIntegration, FederatedServiceTokensFollowTheirMaster) {
  Client client(options());
  auto federation = Federation::create(std::string(32, 'f'));
  ASSERT_TRUE(federation.ok());
  auto master = client.create(create_with("alice"));
  ASSERT_TRUE(master.ok());
  auto billing = federation->grant(client, master->id, "billing");
  auto mail = federation->grant(client, master->id, "mail");
  ASSERT_TRUE(billing.ok() && mail.ok()) << billing.status().ToString();
  EXPECT_EQ(*federation->validate(client, *billing, "billing"), master->id);
  EXPECT_EQ(*federation->validate(client, *mail, "mail"), master->id);
  EXPECT_EQ(client.get(master->id)->field(Federation::kServicesField)->value, "billing,mail");
  // Another service's token, a tampered one, another key's: refused before sessiond is asked.
  EXPECT_EQ(federation->validate(client, *billing, "mail").status().code(),
            StatusCode::kUnauthenticated);
  std::string tampered = *billing;
  tampered[tampered.size() - 2] = tampered[tampered.size() - 2] == 'A' ? 'B' : 'A';
  EXPECT_EQ(federation->validate(client, tampered, "billing").status().code(),
            StatusCode::kUnauthenticated);
  auto other = Federation::create(std::string(32, 'o'));
  EXPECT_EQ(other->validate(client, *billing, "billing").status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(federation->grant(client, master->id, "a,b").status().code(),
            StatusCode::kInvalidArgument);
  // Withdrawing one service ends its token alone; ending the master ends them all.
  ASSERT_TRUE(federation->withdraw(client, master->id, "mail").ok());
  EXPECT_EQ(federation->validate(client, *mail, "mail").status().code(), StatusCode::kForbidden);
  EXPECT_TRUE(federation->validate(client, *billing, "billing").ok());
  ASSERT_TRUE(client.revoke_user("alice").ok());
  EXPECT_EQ(federation->validate(client, *billing, "billing").status().code(),
            StatusCode::kNotFound);
}

// Authentication and roles on a real node (issue 5): nothing without AUTH, app for sessions,
// admin for STATS, and a wrong secret says so.
TEST_F(ConfiguredNode, RolesFromSharedSecrets) {
  ASSERT_NO_FATAL_FAILURE(
      start({"--app-secret", "app-secret-1", "--admin-secret", "admin-secret-2"}));
  auto client_with = [&](std::string secret) {
    return std::make_unique<Client>(client_options(std::move(secret)));
  };
  auto anonymous = client_with("");
  EXPECT_TRUE(anonymous->ping().ok());  // PING is open
  EXPECT_EQ(anonymous->create(create_with("alice")).status().code(), StatusCode::kUnauthenticated);
  auto app = client_with("app-secret-1");
  auto created = app->create(create_with("alice"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_TRUE(app->get(created->id).ok());
  EXPECT_EQ(app->stats().status().code(), StatusCode::kForbidden);
  auto admin = client_with("admin-secret-2");
  auto stats = admin->stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_TRUE(admin->get(created->id).ok());
  auto wrong = client_with("not-the-secret");
  auto refused = wrong->get(created->id);
  EXPECT_EQ(refused.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(refused.status().message().find("AUTH with Options::secret failed"), std::string::npos)
      << refused.status().message();
}

// Binding to a prefix, and the destroy policy (issue 5): a session bound to 203.0.113.0/24
// answers any address inside it; an address outside is CONTEXT_MISMATCH and ends it.
TEST_F(ConfiguredNode, PrefixBindingAndDestroyPolicy) {
  ASSERT_NO_FATAL_FAILURE(start({"--context-mismatch-policy", "destroy"}));
  Client client(client_options());
  CreateOptions create;
  create.context = ClientContext{"203.0.113.0/24", 7};
  auto created = client.create(create);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  GetOptions inside;
  inside.expect_context = ClientContext{"203.0.113.77", 7};
  EXPECT_TRUE(client.get(created->id, inside).ok());
  GetOptions other_agent;
  other_agent.expect_context = ClientContext{"203.0.113.77", 8};
  auto mismatch = client.get(created->id, other_agent);
  EXPECT_EQ(mismatch.status().code(), StatusCode::kContextMismatch);
  EXPECT_NE(mismatch.status().message().find("destroyed"), std::string::npos);
  EXPECT_EQ(client.get(created->id, inside).status().code(), StatusCode::kNotFound);
  CreateOptions bad;
  bad.context = ClientContext{"203.0.113.0/33", 7};
  EXPECT_EQ(client.create(bad).status().code(), StatusCode::kInvalidArgument);
}

// A session fixation attempt (issue 5): the attacker plants a pre-login id; the login step
// regenerates it, so the planted id reads nothing afterwards, while the user's new id carries
// the data and the login time.
TEST_F(ClientIntegration, FixationAttemptFailsAfterTheLoginStep) {
  Client client(options());
  auto planted = client.create(create_with("", {FieldValue{"theme", "dark"}}));
  ASSERT_TRUE(planted.ok());
  RegenerateOptions login;
  login.user_id = "victim";
  login.mark_authenticated = true;
  auto logged_in = client.regenerate(planted->id, login);
  ASSERT_TRUE(logged_in.ok()) << logged_in.status().ToString();
  EXPECT_EQ(client.get(planted->id).status().code(), StatusCode::kNotFound);
  auto session = client.get(logged_in->id);
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->user_id, "victim");
  EXPECT_EQ(session->field("theme")->value, "dark");
  ASSERT_NE(session->field("sessiond.authenticated_at"), nullptr);
  EXPECT_GT(std::stoll(session->field("sessiond.authenticated_at")->value), 0);
  auto by_sessctl = sessctl({"--json", "regenerate", logged_in->id, "--authenticated"});
  EXPECT_EQ(by_sessctl.exit_code, 0) << by_sessctl.err;
}

CreateOptions finance_session(std::string user) {
  CreateOptions options = create_with(std::move(user));
  options.preset = Preset::kFinance;
  return options;
}

GetOptions recording_from(std::string ip, double lat, double lon) {
  GetOptions options;
  AccessEntry& access = options.record_access.emplace();
  access.ip = std::move(ip);
  access.has_location = true;
  access.latitude = lat;
  access.longitude = lon;
  return options;
}

// Signed ids on a real node (issue 5): finance sessions get them by default, a forged one is
// refused and counted, and the node's key (made on first start in the data directory) keeps
// them valid across a restart.
TEST_F(ConfiguredNode, FinanceSessionsHaveSignedIdsThatSurviveARestart) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  std::string id;
  {
    Client client(client_options());
    auto created = client.create(finance_session("erin"));
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    id = created->id;
    EXPECT_EQ(id.size(), kSignedSessionIdTextLength);
    EXPECT_EQ(client.create(create_with("erin"))->id.size(), kSessionIdTextLength);
    ASSERT_TRUE(client.get(id).ok());
    for (std::size_t at : {std::size_t{0}, std::size_t{50}, std::size_t{63}}) {
      std::string forged = id;
      forged[at] = forged[at] == 'A' ? 'Q' : 'A';  // a 6-bit group changes: still canonical
      EXPECT_EQ(client.get(forged).status().code(), StatusCode::kNotFound) << forged;
    }
    auto stats = client.stats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->forged_ids, 3u);
  }
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "data" / "id-keys"));
  node_.reset();
  ASSERT_NO_FATAL_FAILURE(start({}));
  Client client(client_options());
  auto session = client.get(id);
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  EXPECT_EQ(session->id, id);
  auto listed = testing::run_process(SESSCTL_PATH, {"--addr", node_->address(), "get", id});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
}

// Key rotation: ids signed with the previous key work until its grace period ends.
TEST_F(ConfiguredNode, KeyRotationKeepsOldIdsValidForTheGracePeriod) {
  const std::string keys = (dir_.path() / "keys").string();
  const std::string key_a(64, 'a'), key_b(64, 'b');
  const auto write_keys = [&](const std::string& text) {
    std::ofstream(keys) << text;
    std::filesystem::permissions(
        keys, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
        std::filesystem::perm_options::replace);
  };
  write_keys("current " + key_a + "\n");
  ASSERT_NO_FATAL_FAILURE(start({"--id-key-file", keys}));
  std::string id;
  {
    Client client(client_options());
    auto created = client.create(finance_session("frank"));
    ASSERT_TRUE(created.ok());
    id = created->id;
  }
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  for (auto [until, alive] : {std::pair{now_ms + 3'600'000, true}, {now_ms - 1, false}}) {
    node_.reset();
    write_keys("current " + key_b + "\nprevious " + key_a + " " + std::to_string(until) + "\n");
    ASSERT_NO_FATAL_FAILURE(start({"--id-key-file", keys}));
    Client client(client_options());
    auto got = client.get(id);
    EXPECT_EQ(got.ok(), alive) << got.status().ToString();
    if (alive) {
      // The node hands the id back signed with the current key; that form works too.
      EXPECT_NE(got->id, id);
      EXPECT_TRUE(client.get(got->id).ok());
    }
  }
  // A key file that is not there is an error at start, not a fresh key.
  node_.reset();
  TestNode::Options o = node_options(dir_.path() / "data");
  o.extra_args = {"--id-key-file", (dir_.path() / "missing").string()};
  std::string error;
  EXPECT_EQ(TestNode::start(o, &error), nullptr);
}

// Hijack detection on a real node (issue 5): a finance session read from Tokyo three minutes
// after Paris ends every session of its user; an ecommerce session only reports it.
TEST_F(ConfiguredNode, ASessionReadFromFarAwayWithinMinutesIsCaught) {
  ASSERT_NO_FATAL_FAILURE(start({}));
  Client client(client_options());
  auto id = client.create(finance_session("grace"));
  auto other = client.create(finance_session("grace"));
  ASSERT_TRUE(id.ok() && other.ok());
  ASSERT_TRUE(client.get(id->id, recording_from("198.51.100.7", 48.8566, 2.3522)).ok());
  auto stolen = client.get(id->id, recording_from("203.0.113.66", 35.6762, 139.6503));
  EXPECT_EQ(stolen.status().code(), StatusCode::kHijackSuspected) << stolen.status().ToString();
  EXPECT_NE(stolen.status().message().find("impossible travel"), std::string::npos);
  EXPECT_NE(stolen.status().message().find("revoked (2)"), std::string::npos);
  EXPECT_EQ(client.get(other->id).status().code(), StatusCode::kNotFound);
  auto listed = client.list_user("grace");
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty());

  auto shop = client.create(create_with("heidi"));
  ASSERT_TRUE(shop.ok());
  ASSERT_TRUE(client.get(shop->id, recording_from("198.51.100.7", 48.8566, 2.3522)).ok());
  auto reported = client.get(shop->id, recording_from("203.0.113.66", 35.6762, 139.6503));
  ASSERT_TRUE(reported.ok()) << reported.status().ToString();
  ASSERT_EQ(reported->detections.size(), 1u);
  EXPECT_EQ(reported->detections[0].kind, HijackDetection::Kind::kImpossibleTravel);
  EXPECT_GT(reported->detections[0].distance_km, 9000);
  // sessctl shows it, and records the access it is given.
  auto shown = testing::run_process(
      SESSCTL_PATH, {"--addr", node_->address(), "get", shop->id, "--record-ip", "192.0.2.1",
                     "--record-at", "-33.8688", "151.2093"});
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("SUSPICIOUS:  impossible travel"), std::string::npos) << shown.out;
  auto stats = client.stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->hijack_impossible_travel, 3u);
}

}  // namespace
}  // namespace sessiond
