// The admin HTTP listener and what operators run around it (issue 16): /metrics checked by
// Prometheus's promtool with counters that follow a scripted workload, /health through a long
// recovery, /cluster against a real 2-node region, online backups restored (alone, and into a
// region without bringing back what was destroyed since), sd_notify to a NOTIFY_SOCKET, the
// admin secret, and a listener that hostile clients cannot wedge.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "cluster/etcd.h"
#include "cluster/membership.h"
#include "cluster/topology.h"
#include "protocol/base64url.h"
#include "protocol/host_port.h"
#include "sessiond/client.h"
#include "storage/id_generator.h"
#include "storage/session_table.h"
#include "storage/store.h"
#include "test_etcd.h"
#include "test_node.h"
#include "tests/support/eventually.h"
#include "tests/support/temp_dir.h"

namespace sessiond::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

struct Http {
  int status = 0;  // 0: no answer
  std::string body;
};

Http http(const std::string& address, const std::string& method, const std::string& path,
          const httplib::Headers& headers = {}) {
  auto hp = parse_host_port(address);
  if (!hp.ok()) return {};
  httplib::Client c(hp->host, hp->port);
  c.set_connection_timeout(2s);
  c.set_read_timeout(10s);
  auto res = method == "POST" ? c.Post(path.c_str(), headers, "", "text/plain")
                              : c.Get(path.c_str(), headers);
  if (!res) return {};
  return {res->status, res->body};
}

json get_json(const std::string& address, const std::string& path) {
  const Http r = http(address, "GET", path);
  EXPECT_EQ(r.status, 200) << path << ": " << r.body;
  return json::parse(r.body, nullptr, false);
}

// The value of the sample `name` (with its labels, as written: name{a="b"}) in /metrics' text;
// -1 when it is not there.
double sample(const std::string& text, const std::string& name) {
  std::size_t at = 0;
  while ((at = text.find(name + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + name.size() + 1));
    at += name.size();
  }
  return -1;
}

// Appends what `fd` has to read within 50 ms to *out.
void read_some(int fd, std::string* out) {
  char buf[512];
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 50) > 0) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) out->append(buf, static_cast<std::size_t>(n));
  }
}

std::string random_id() {
  std::string bytes(32, '\0');
  for (char& c : bytes) c = static_cast<char>(std::rand() & 0xff);
  return base64url_encode(bytes);
}

class AdminTest : public ::testing::Test {
 protected:
  std::unique_ptr<TestNode> start(std::vector<std::string> extra = {},
                                  const std::string& data = "data") {
    TestNode::Options o;
    o.data_dir = dir_.path() / data;
    o.extra_args = std::move(extra);
    std::string error;
    auto node = TestNode::start(o, &error);
    EXPECT_TRUE(node) << error;
    return node;
  }
  static Client client_of(const TestNode& node) {
    ClientOptions o;
    o.address = node.address();
    o.timeout = 5s;
    return Client(o);
  }
  TempDir dir_;
};

TEST_F(AdminTest, MetricsPassPromtoolAndCountersFollowTheWorkload) {
  auto node = start({"--resp-port", "0"});
  ASSERT_TRUE(node);
  const std::string admin = node->admin_address();
  ASSERT_FALSE(admin.empty()) << node->log();
  Client c = client_of(*node);
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    CreateOptions co;
    co.user_id = "user" + std::to_string(i % 4);
    if (i < 5) co.preset = Preset::kFinance;
    auto made = c.create(co);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    ids.push_back(made->id);
  }
  for (int round = 0; round < 2; ++round) {
    for (const auto& id : ids) ASSERT_TRUE(c.get(id).ok());
  }
  for (int i = 0; i < 10; ++i) EXPECT_EQ(c.get(random_id()).status().code(), StatusCode::kNotFound);
  for (int i = 5; i < 10; ++i) ASSERT_TRUE(c.destroy(ids[i]).ok());  // none of them finance
  for (int i = 10; i < 13; ++i) ASSERT_TRUE(c.regenerate(ids[i]).ok());

  const Http r = http(admin, "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  const std::string& m = r.body;
  EXPECT_EQ(sample(m, "sessiond_sessions_created_total"), 20) << m;
  EXPECT_EQ(sample(m, "sessiond_sessions_destroyed_total"), 5);
  EXPECT_EQ(sample(m, "sessiond_sessions_regenerated_total"), 3);
  EXPECT_EQ(sample(m, "sessiond_sessions{preset=\"finance\"}"), 5);
  double alive = 0;  // the others have the node's default preset
  for (const char* preset : {"none", "finance", "healthcare", "ecommerce", "media", "gaming"}) {
    alive += sample(m, std::string("sessiond_sessions{preset=\"") + preset + "\"}");
  }
  EXPECT_EQ(alive, 15);
  EXPECT_EQ(sample(m, "sessiond_reads_total{result=\"hit\"}"), 40);
  EXPECT_EQ(sample(m, "sessiond_reads_total{result=\"miss\"}"), 10);
  EXPECT_EQ(sample(m, "sessiond_session_lifetime_seconds_count"), 5);
  EXPECT_EQ(sample(m, "sessiond_request_duration_seconds_count{listener=\"native\",op=\"create\"}"),
            20);
  EXPECT_EQ(sample(m, "sessiond_request_duration_seconds_count{listener=\"native\",op=\"get\"}"),
            50);
  EXPECT_EQ(sample(m, "sessiond_responses_total{status=\"NOT_FOUND\"}"), 10);
  EXPECT_EQ(sample(m, "sessiond_alert{rule=\"memory_high\"}"), 0);
  EXPECT_GT(sample(m, "sessiond_memory_bytes{part=\"table\"}"), 0);

  // RESP commands are counted on their own listener.
  const std::string resp = node->log().substr(node->log().find("RESP listening on ") + 18);
  const std::string resp_address = resp.substr(0, resp.find_first_not_of("0123456789.:"));
  const int fd = connect_to(resp_address);
  ASSERT_GE(fd, 0);
  const std::string commands = "SET k v\r\nGET k\r\nGET k\r\n";
  ASSERT_EQ(::write(fd, commands.data(), commands.size()), static_cast<ssize_t>(commands.size()));
  std::string replies;
  ASSERT_TRUE(eventually([&] {
    read_some(fd, &replies);
    return replies == "+OK\r\n$1\r\nv\r\n$1\r\nv\r\n";
  })) << replies;
  ::close(fd);
  const std::string after = http(admin, "GET", "/metrics").body;
  EXPECT_EQ(sample(after, "sessiond_request_duration_seconds_count{listener=\"resp\",op=\"get\"}"),
            2);
  EXPECT_EQ(sample(after, "sessiond_request_duration_seconds_count{listener=\"resp\",op=\"set\"}"),
            1);

  // Prometheus's own parser accepts the whole page.
  const std::string file = dir_.sub("metrics.txt");
  std::ofstream(file) << after;
  ASSERT_EQ(::access("/usr/bin/promtool", X_OK), 0)
      << "promtool is missing: scripts/setup installs Debian's prometheus package";
  const std::string command = "/usr/bin/promtool check metrics < " + file + " 2>&1";
  std::FILE* p = ::popen(command.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string said;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) said += buf;
  EXPECT_EQ(::pclose(p), 0) << said;
  EXPECT_EQ(said, "") << said;
}

TEST_F(AdminTest, HealthIs503WhileALargeDataDirRecoversAnd200After) {
  {  // 300 000 sessions written by the engine itself (faster than through a node)
    storage::StoreOptions so;
    so.path = dir_.sub("data");
    so.durability = storage::Durability::kMemory;
    auto store = storage::Store::open(so, storage::SystemClock::instance());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    const auto ids = storage::IdGenerator::with_random_secret();
    storage::TableOptions to;
    to.ids = &ids;
    storage::SessionTable table(to, storage::SystemClock::instance(), store->get());
    std::vector<storage::NewSession> batch(1000);
    for (auto& s : batch) s.fields = {{"cart", std::string(64, 'x')}};
    for (int i = 0; i < 300; ++i) {
      for (const auto& made : table.create_batch(batch)) ASSERT_TRUE(made.ok());
    }
    ASSERT_TRUE(table.flush().ok());
  }
  // start() returns once the admin listener is bound, before the recovery.
  TestNode::Options o;
  o.data_dir = dir_.path() / "data";
  o.ready_text = "admin HTTP listener on ";
  std::string error;
  auto node = TestNode::start(o, &error);
  ASSERT_TRUE(node) << error;
  const std::string admin = node->address();
  std::atomic<bool> done{false};
  std::mutex mu;
  std::vector<std::pair<int, std::string>> seen;  // status, phase
  std::thread poller([&] {
    while (!done.load()) {
      const Http r = http(admin, "GET", "/health");
      if (r.status != 0) {
        const json j = json::parse(r.body, nullptr, false);
        std::lock_guard lock(mu);
        seen.emplace_back(r.status, j.is_object() ? j.value("phase", "") : "");
        if (r.status == 200) return;
      }
      std::this_thread::sleep_for(2ms);
    }
  });
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return !seen.empty() && seen.back().first == 200;
  }));
  done = true;
  poller.join();
  std::lock_guard lock(mu);
  const auto recovering =
      std::find(seen.begin(), seen.end(), std::make_pair(503, std::string("recovering")));
  EXPECT_NE(recovering, seen.end())
      << "no 503 seen while recovering; " << seen.size() << " answers\n"
      << node->log();
  EXPECT_EQ(seen.back(), std::make_pair(200, std::string("ready")));
  // Never 200 before the recovery was done: every 503 came first.
  EXPECT_EQ(std::count_if(seen.begin(), seen.end(), [](const auto& s) { return s.first == 200; }),
            1);
  EXPECT_EQ(sample(http(admin, "GET", "/metrics").body, "sessiond_users"), 0);
  EXPECT_EQ(get_json(admin, "/api/overview?history=0").value("sessions", 0u), 300000u);
}

TEST_F(AdminTest, TheAdminSecretGuardsEverythingButHealth) {
  auto node = start({"--admin-secret", "adm1n-secret", "--app-secret", "app-secret"});
  ASSERT_TRUE(node);
  const std::string admin = node->admin_address();
  EXPECT_EQ(http(admin, "GET", "/health").status, 200);
  EXPECT_EQ(http(admin, "GET", "/metrics").status, 401);
  EXPECT_EQ(http(admin, "GET", "/").status, 401);
  EXPECT_EQ(http(admin, "GET", "/cluster", {{"Authorization", "Bearer app-secret"}}).status, 401);
  EXPECT_EQ(http(admin, "GET", "/metrics", {{"Authorization", "Bearer adm1n-secret"}}).status, 200);
  // A browser's Basic: any user, the secret as the password ("admin:adm1n-secret").
  EXPECT_EQ(http(admin, "GET", "/", {{"Authorization", "Basic YWRtaW46YWRtMW4tc2VjcmV0"}}).status,
            200);
  const std::string m =
      http(admin, "GET", "/metrics", {{"Authorization", "Bearer adm1n-secret"}}).body;
  EXPECT_EQ(sample(m, "sessiond_auth_failures_total"), 1);  // the app secret, not a missing one
}

TEST_F(AdminTest, HostileClientsDoNotWedgeTheListener) {
  auto node = start();
  ASSERT_TRUE(node);
  const std::string admin = node->admin_address();
  // Connections that send nothing, and one that trickles a request forever.
  std::vector<int> idle;
  for (int i = 0; i < 6; ++i) idle.push_back(connect_to(admin));
  const int trickle = connect_to(admin);
  ASSERT_EQ(::write(trickle, "GET /metr", 9), 9);
  EXPECT_EQ(http(admin, "GET", "/health").status, 200);
  // A claimed body far beyond the limit is refused without being read.
  const int big = connect_to(admin);
  const std::string claim =
      "POST /api/backup?dir=/tmp/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n";
  ASSERT_EQ(::write(big, claim.data(), claim.size()), static_cast<ssize_t>(claim.size()));
  std::string answer;
  ASSERT_TRUE(eventually([&] {
    read_some(big, &answer);
    return answer.find("\r\n") != std::string::npos;
  }));
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer;
  for (int fd : idle) ::close(fd);
  ::close(trickle);
  ::close(big);
  EXPECT_EQ(http(admin, "GET", "/health").status, 200);
  EXPECT_TRUE(node->running());
  // Nonsense parameters get clear errors.
  EXPECT_EQ(http(admin, "GET", "/api/session?id=nope").status, 400);
  EXPECT_EQ(http(admin, "GET", "/api/session?id=" + random_id()).status, 404);
  EXPECT_EQ(http(admin, "POST", "/api/backup?dir=relative/path").status, 400);
}

TEST_F(AdminTest, TheConsoleIsServedFromTheBinaryAndLooksSessionsUpWithoutValues) {
  auto node = start();
  ASSERT_TRUE(node);
  const std::string admin = node->admin_address();
  const Http page = http(admin, "GET", "/");
  ASSERT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("chart.min.js"), std::string::npos);
  const Http chart = http(admin, "GET", "/chart.min.js");
  EXPECT_EQ(chart.status, 200);
  EXPECT_GT(chart.body.size(), 100'000u);  // Debian's Chart.js, compiled in
  Client c = client_of(*node);
  CreateOptions co;
  co.user_id = "alice";
  co.fields = {{"cart", "secret-value"}};
  auto made = c.create(co);
  ASSERT_TRUE(made.ok());
  const json s = get_json(admin, "/api/session?id=" + made->id);
  EXPECT_EQ(s.value("user", ""), "alice");
  ASSERT_EQ(s["fields"].size(), 1u);
  EXPECT_EQ(s["fields"][0].value("name", ""), "cart");
  EXPECT_FALSE(s["fields"][0].contains("value"));
  EXPECT_EQ(http(admin, "GET", "/api/session?id=" + made->id).body.find("secret-value"),
            std::string::npos);
  EXPECT_EQ(get_json(admin, "/api/session?values=1&id=" + made->id)["fields"][0].value("value", ""),
            "secret-value");
  const json u = get_json(admin, "/api/user?user=alice");
  ASSERT_EQ(u["sessions"].size(), 1u);
  EXPECT_FALSE(u["sessions"][0].contains("id"));
  EXPECT_EQ(u["sessions"][0].value("id_prefix", ""), made->id.substr(0, 8));
  // Reading a session through the console does not touch it.
  EXPECT_EQ(c.get(made->id)->last_access_ms, made->last_access_ms);
}

// The datagrams sd_notify sends, read from a socket the test binds as NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~NotifySocket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  bool bound() const { return bound_; }
  // Reads what has arrived; whether some message so far contains `text`.
  bool saw(const std::string& text) {
    char buf[4096];
    pollfd p{fd_, POLLIN, 0};
    while (::poll(&p, 1, 0) > 0) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      messages_.emplace_back(buf, static_cast<std::size_t>(n));
    }
    return index_of(text) >= 0;
  }
  // The index of the first message containing `text` (-1: none).
  int index_of(const std::string& text) const {
    for (std::size_t i = 0; i < messages_.size(); ++i) {
      if (messages_[i].find(text) != std::string::npos) return static_cast<int>(i);
    }
    return -1;
  }
  std::string all() const {
    std::string out;
    for (const auto& m : messages_) out += "[" + m + "] ";
    return out;
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
  std::vector<std::string> messages_;
};

TEST_F(AdminTest, TellsSystemdReadyReloadingStoppingAndPingsTheWatchdog) {
  NotifySocket notify(dir_.sub("notify"));
  ASSERT_TRUE(notify.bound());
  ::setenv("NOTIFY_SOCKET", dir_.sub("notify").c_str(), 1);
  ::setenv("WATCHDOG_USEC", "400000", 1);
  auto node = start();
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(node);
  ASSERT_TRUE(eventually([&] { return notify.saw("READY=1"); })) << notify.all();
  EXPECT_LT(notify.index_of("STATUS=recovering"), notify.index_of("READY=1")) << notify.all();
  EXPECT_GE(notify.index_of("STATUS=recovering"), 0) << notify.all();
  ASSERT_TRUE(eventually([&] { return notify.saw("WATCHDOG=1"); }, 3s)) << notify.all();
  node->send_signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return notify.saw("RELOADING=1"); })) << notify.all();
  ASSERT_TRUE(eventually([&] { return notify.saw("STATUS=reloaded"); })) << notify.all();
  EXPECT_GT(notify.index_of("STATUS=reloaded"), notify.index_of("RELOADING=1"));
  EXPECT_NE(notify.all().find("READY=1\nSTATUS=reloaded"), std::string::npos) << notify.all();
  EXPECT_EQ(node->terminate(), 0);
  EXPECT_TRUE(notify.saw("STOPPING=1")) << notify.all();
}

TEST_F(AdminTest, ABackupUnderLoadHoldsEverySessionAcknowledgedBeforeIt) {
  auto node = start();
  ASSERT_TRUE(node);
  std::mutex mu;
  std::vector<std::string> acknowledged;
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    Client c = client_of(*node);
    for (int i = 0; i < 200'000 && !stop.load(); ++i) {
      CreateOptions co;
      co.user_id = "u" + std::to_string(i % 50);
      co.fields = {{"n", std::to_string(i)}};
      auto made = c.create(co);
      if (!made.ok()) continue;
      std::lock_guard lock(mu);
      acknowledged.push_back(made->id);
    }
  });
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return acknowledged.size() >= 2000;
  }));
  std::vector<std::string> before;
  {
    std::lock_guard lock(mu);
    before = acknowledged;
  }
  const std::string backup = dir_.sub("backup");
  const ProcessResult r =
      run_process(SESSCTL_PATH, {"--json", "backup", backup, "--admin", node->admin_address()});
  stop = true;
  writer.join();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const json report = json::parse(r.out, nullptr, false);
  EXPECT_GE(report.value("sessions", 0u), before.size()) << r.out;
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(backup) / "route-key"));
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(backup) / "id-keys"));
  // The same directory twice is refused; so is a restore into a data dir in use.
  EXPECT_EQ(
      run_process(SESSCTL_PATH, {"backup", backup, "--admin", node->admin_address()}).exit_code, 2);
  node.reset();

  auto refused = run_process(SESSIOND_DAEMON_PATH, {"--admin-listen", "off", "--restore-from",
                                                    backup, "--data-dir", dir_.sub("data")});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("is not empty"), std::string::npos) << refused.err;

  auto restored = start({"--restore-from", backup}, "restored");
  ASSERT_TRUE(restored);
  Client c = client_of(*restored);
  std::size_t missing = 0;
  for (const std::string& id : before) missing += c.get(id).ok() ? 0 : 1;
  EXPECT_EQ(missing, 0u) << "of " << before.size() << " sessions acknowledged before the backup";
}

class AdminClusterTest : public AdminTest {
 protected:
  void SetUp() override {
    std::string error;
    etcd_ = TestEtcd::start(dir_.path() / "etcd", &error);
    ASSERT_TRUE(etcd_) << error;
    etcd_client_ =
        std::make_unique<cluster::EtcdClient>(std::vector<std::string>{etcd_->endpoint()});
    std::ofstream(dir_.sub("route-key")) << "route-key " << std::string(64, 'a') << "\n";
    std::filesystem::permissions(dir_.sub("route-key"), std::filesystem::perms::owner_read |
                                                            std::filesystem::perms::owner_write);
  }
  std::unique_ptr<TestNode> start_node(const std::string& id, std::vector<std::string> extra = {},
                                       const std::string& data = {}) {
    std::vector<std::string> args = {
        "--etcd",           etcd_->endpoint(),     "--node-id",      id,
        "--route-key-file", dir_.sub("route-key"), "--lease-ttl-ms", "2000"};
    args.insert(args.end(), extra.begin(), extra.end());
    return start(args, data.empty() ? id : data);
  }
  ProcessResult sessctl_cluster(std::vector<std::string> args) {
    args.insert(args.begin(), {"cluster", "--etcd", etcd_->endpoint()});
    return run_process(SESSCTL_PATH, args);
  }
  cluster::Topology topology() {
    auto kv = etcd_client_->get(cluster::topology_key("local"));
    EXPECT_TRUE(kv.ok() && kv->has_value());
    auto t = cluster::Topology::from_json((*kv)->value);
    EXPECT_TRUE(t.ok());
    return t.ok() ? *t : cluster::Topology{};
  }
  std::unique_ptr<TestEtcd> etcd_;
  std::unique_ptr<cluster::EtcdClient> etcd_client_;
};

TEST_F(AdminClusterTest, ClusterMatchesTheTopologyOfATwoNodeRegion) {
  auto n1 = start_node("n1");
  auto n2 = start_node("n2");
  ASSERT_TRUE(n1 && n2);
  // n2 has registered but is not in the topology yet: not ready for traffic.
  ASSERT_TRUE(
      eventually([&] { return http(n1->admin_address(), "GET", "/health").status == 200; }));
  const Http waiting = http(n2->admin_address(), "GET", "/health");
  EXPECT_EQ(waiting.status, 503);
  EXPECT_NE(waiting.body.find("not in region local's topology yet"), std::string::npos)
      << waiting.body;
  ProcessResult r = sessctl_cluster({"add-node", "n2", n2->address()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = sessctl_cluster({"status", "--wait-ms", "25000"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(
      eventually([&] { return http(n2->admin_address(), "GET", "/health").status == 200; }));
  const cluster::Topology t = topology();
  json view;
  ASSERT_TRUE(eventually([&] {
    view = get_json(n2->admin_address(), "/cluster");
    return view.value("epoch", 0u) == t.epoch;
  }));
  EXPECT_TRUE(view.value("cluster", false));
  EXPECT_EQ(view.value("region", ""), "local");
  EXPECT_TRUE(view["migration"].is_null());
  ASSERT_EQ(view["nodes"].size(), 2u) << view.dump();
  double shares = 0;
  std::map<std::string, const TestNode*> nodes = {{"n1", n1.get()}, {"n2", n2.get()}};
  for (const json& n : view["nodes"]) {
    const std::string id = n.value("id", "");
    ASSERT_TRUE(nodes.count(id)) << id;
    EXPECT_EQ(n.value("address", ""), nodes[id]->address());
    EXPECT_EQ(n.value("admin_address", ""), nodes[id]->admin_address());
    EXPECT_TRUE(n.value("up", false)) << id;
    EXPECT_GT(n.value("share", 0.0), 0.2) << id;
    shares += n.value("share", 0.0);
    ASSERT_TRUE(n["overview"].is_object()) << n.dump();
    EXPECT_EQ(n["overview"].value("node", ""), id);
  }
  EXPECT_NEAR(shares, 1.0, 1e-9);
  // Sessions show up in the per-node figures, wherever they were placed.
  ClientOptions o;
  o.seeds = {n1->address()};
  Client c(o);
  for (int i = 0; i < 40; ++i) {
    CreateOptions co;
    co.user_id = "user" + std::to_string(i);
    ASSERT_TRUE(c.create(co).ok());
  }
  ASSERT_TRUE(eventually([&] {
    const json v = get_json(n1->admin_address(), "/cluster");
    std::uint64_t total = 0;
    for (const json& n : v["nodes"]) {
      if (n["overview"].is_object()) total += n["overview"].value("sessions", 0u);
    }
    return total >= 40;  // each once at its owner, and again at its replica
  }));
  // A session looked up at the node that does not own it is answered by its owner.
  CreateOptions co;
  co.user_id = "carol";
  auto made = c.create(co);
  ASSERT_TRUE(made.ok());
  for (const TestNode* n : {n1.get(), n2.get()}) {
    EXPECT_EQ(get_json(n->admin_address(), "/api/session?id=" + made->id).value("user", ""),
              "carol");
    EXPECT_EQ(get_json(n->admin_address(), "/api/user?user=carol")["sessions"].size(), 1u);
  }
}

TEST_F(AdminClusterTest, ARestoredNodeRejoinsWithoutBringingBackWhatWasDestroyedSince) {
  auto n1 = start_node("n1", {"--replica-ack", "all"});
  auto n2 = start_node("n2", {"--replica-ack", "all"});
  ASSERT_TRUE(n1 && n2);
  ASSERT_EQ(sessctl_cluster({"add-node", "n2", n2->address()}).exit_code, 0);
  ASSERT_EQ(sessctl_cluster({"status", "--wait-ms", "25000"}).exit_code, 0);
  ClientOptions o;
  o.seeds = {n1->address(), n2->address()};
  o.timeout = 10s;
  auto c = std::make_unique<Client>(o);
  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) {
    CreateOptions co;
    co.user_id = "user" + std::to_string(i);
    auto made = c->create(co);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    ids.push_back(made->id);
  }
  const std::string backup = dir_.sub("n1-backup");
  const Http b = http(n1->admin_address(), "POST", "/api/backup?dir=" + backup);
  ASSERT_EQ(b.status, 200) << b.body;
  // Half of them end after the backup (acknowledged by every replica: --replica-ack all).
  std::set<std::string> destroyed;
  for (std::size_t i = 0; i < ids.size(); i += 2) {
    ASSERT_TRUE(c->destroy(ids[i]).ok());
    destroyed.insert(ids[i]);
  }
  // n1 up in the topology: a restore is refused, since it would serve its old copy.
  const std::string n1_address = n1->address();
  auto refused =
      run_process(SESSIOND_DAEMON_PATH,
                  {"--admin-listen", "off", "--listen", "127.0.0.1:0", "--etcd", etcd_->endpoint(),
                   "--node-id", "n1", "--route-key-file", dir_.sub("route-key"), "--restore-from",
                   backup, "--data-dir", dir_.sub("n1-restored")});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("is up in region local's topology"), std::string::npos) << refused.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.sub("n1-restored")));
  // A backup older than the tombstones' keep (--max-lifetime-ms), or of another region, is
  // refused too: its copies of sessions destroyed long ago would come back.
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, json>>{{"created_ms", 0}, {"region", "elsewhere"}}) {
    const std::string copy = dir_.sub("n1-backup-" + key);
    std::filesystem::copy(backup, copy);
    json marker = json::parse(std::ifstream(std::filesystem::path(copy) / "sessiond-backup.json"));
    marker[key] = value;
    std::ofstream(std::filesystem::path(copy) / "sessiond-backup.json") << marker.dump();
    auto old = run_process(SESSIOND_DAEMON_PATH,
                           {"--admin-listen", "off", "--etcd", etcd_->endpoint(), "--node-id", "n1",
                            "--restore-from", copy, "--data-dir", dir_.sub("n1-restored")});
    EXPECT_EQ(old.exit_code, 1) << key;
    EXPECT_NE(old.err.find(key == "region" ? "the backup is of region elsewhere"
                                           : "days old, older than --max-lifetime-ms"),
              std::string::npos)
        << old.err;
  }
  // SIGTERM: n1 hands its ranges to n2 and is down in the topology; its disk is lost.
  EXPECT_EQ(n1->terminate(), 0) << n1->log();
  n1.reset();
  ASSERT_TRUE(eventually([&] {
    for (const auto& n : topology().nodes) {
      if (n.id == "n1") return n.down;
    }
    return false;
  }));
  std::filesystem::remove_all(dir_.path() / "n1");
  n1 = start_node("n1", {"--replica-ack", "all", "--restore-from", backup});
  ASSERT_TRUE(n1);
  // It rejoins: up again, its ranges streamed back, no migration left.
  ASSERT_EQ(sessctl_cluster({"status", "--wait-ms", "30000"}).exit_code, 0);
  ASSERT_TRUE(eventually(
      [&] {
        const cluster::Topology t = topology();
        if (t.migration) return false;
        for (const auto& n : t.nodes) {
          if (n.id == "n1") return !n.down;
        }
        return false;
      },
      30s));
  ASSERT_TRUE(
      eventually([&] { return http(n1->admin_address(), "GET", "/health").status == 200; }));
  c = std::make_unique<Client>(o);
  ASSERT_TRUE(c->refresh_topology().ok());
  std::size_t back = 0, lost = 0;
  for (const std::string& id : ids) {
    auto got = c->get(id);
    if (destroyed.count(id)) {
      back += got.ok() ? 1 : 0;
      if (!got.ok()) {
        EXPECT_EQ(got.status().code(), StatusCode::kNotFound) << got.status().ToString();
      }
    } else {
      lost += got.ok() ? 0 : 1;
    }
  }
  EXPECT_EQ(back, 0u) << "sessions destroyed after the backup came back";
  EXPECT_EQ(lost, 0u) << "sessions that were never destroyed are missing";
  // And n1's own copy agrees (its console lookup reads only what it holds for ids it owns).
  for (const std::string& id : destroyed) {
    EXPECT_EQ(http(n1->admin_address(), "GET", "/api/session?id=" + id).status, 404) << id;
  }
}

}  // namespace
}  // namespace sessiond::testing
