// Signals (issue 10), with real sessiond processes: SIGHUP reloads the log level, the security
// policies, the id keys and the TLS certificate from the same command line and config file
// without stopping the node, and a reload that cannot load a file changes nothing; SIGQUIT
// stops the node like SIGTERM (flushed, exit 0); SIGUSR1/2 are logged and ignored
// (docs/operations.md, "Signals").
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "protocol/frame.h"
#include "sessiond/client.h"
#include "test_node.h"

#ifndef SESSIOND_MAKE_CERTS
#error "SESSIOND_MAKE_CERTS must name scripts/make-certs"
#endif

namespace sessiond {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;
using testing::TestNode;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// The last line a reload logs: once it is there, everything of that reload is installed.
constexpr const char* kReloaded = "reload: log level";
constexpr const char* kReloadFailed = "reload failed";

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Writes `text` to `path` with `mode` (key files must be private to their owner).
void write_file(const fs::path& path, const std::string& text,
                fs::perms mode = fs::perms::owner_read | fs::perms::owner_write) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(std::fwrite(text.data(), 1, text.size(), f), text.size());
  ASSERT_EQ(std::fclose(f), 0);
  fs::permissions(path, mode);
}

std::string key_hex(char digit) { return std::string(64, digit); }

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Opens a raw connection, sends the first half of a frame header and waits until the node
// closes it (the frame timeout): true when it did within `patience`, having answered nothing.
bool stalled_connection_is_closed(const std::string& address, std::chrono::milliseconds patience) {
  const int fd = testing::connect_to(address);
  if (fd < 0) return false;
  // Half of a well-formed PING header: the node waits for the rest.
  std::uint8_t header[protocol::kHeaderSize];
  protocol::FrameHeader ping;
  ping.opcode = static_cast<std::uint16_t>(protocol::Opcode::kPing);
  ping.request_id = 1;
  protocol::encode_header(ping, header);
  constexpr std::size_t kHalf = protocol::kHeaderSize / 2;
  if (::send(fd, header, kHalf, MSG_NOSIGNAL) != static_cast<ssize_t>(kHalf)) {
    ::close(fd);
    return false;
  }
  const auto deadline = Clock::now() + patience;
  bool closed = false;
  while (!closed && Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buffer[256];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) break;  // an answer: not the frame timeout
    closed = true;
  }
  ::close(fd);
  return closed;
}

class SignalsTest : public ::testing::Test {
 protected:
  std::unique_ptr<TestNode> start(std::vector<std::string> extra,
                                  const std::string& durability = "async") {
    TestNode::Options o;
    o.data_dir = dir_.path() / "data";
    o.durability = durability;
    o.extra_args = std::move(extra);
    std::string error;
    auto node = TestNode::start(o, &error);
    EXPECT_NE(node, nullptr) << error;
    return node;
  }

  static Client::Options client_options(const TestNode& node) {
    Client::Options co;
    co.address = node.address();
    co.timeout = 10s;
    return co;
  }

  static Result<SessionMeta> create(Client& client, Preset preset, const std::string& cart) {
    CreateOptions create;
    create.user_id = "alice";
    create.preset = preset;
    create.fields = {FieldValue{"cart", cart}};
    return client.create(create);
  }

  TempDir dir_;
};

TEST_F(SignalsTest, SighupInMemoryDurabilityKeepsServingEveryAcknowledgedSession) {
  auto node = start({}, "memory");
  ASSERT_NE(node, nullptr);
  Client client(client_options(*node));
  constexpr int kSessions = 1000;
  std::vector<std::string> ids;
  for (int i = 0; i < kSessions; ++i) {
    auto created = create(client, Preset::kNodeDefault, "item " + std::to_string(i));
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    ids.push_back(created->id);
  }

  // Another client keeps creating while the node reloads.
  std::atomic<bool> stop{false};
  std::atomic<int> acknowledged{0};
  std::atomic<int> failed{0};
  std::vector<std::string> during;  // written by the creator thread until it is joined
  std::thread creator([&] {
    Client busy(client_options(*node));
    while (!stop.load()) {
      auto created = create(busy, Preset::kNodeDefault, "during");
      if (!created.ok()) {
        failed.fetch_add(1);
        continue;
      }
      during.push_back(created->id);
      acknowledged.fetch_add(1);
    }
  });
  const auto wait_for_creates = [&](int count) {
    const auto deadline = Clock::now() + 10s;
    while (acknowledged.load() < count && Clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);  // polling the counter: the condition ends the wait
    }
    return acknowledged.load() >= count;
  };
  EXPECT_TRUE(wait_for_creates(10));
  node->send_signal(SIGHUP);
  const bool reloaded = node->wait_for_log(kReloaded, 10s);
  EXPECT_TRUE(wait_for_creates(acknowledged.load() + 10)) << "creates after the reload";
  stop = true;
  creator.join();
  ASSERT_TRUE(reloaded) << node->log();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_TRUE(node->running()) << node->log();
  EXPECT_TRUE(client.ping().ok());
  EXPECT_TRUE(Client(client_options(*node)).ping().ok()) << "a new connection after SIGHUP";
  for (int i = 0; i < kSessions; ++i) {
    auto got = client.get(ids[static_cast<std::size_t>(i)]);
    ASSERT_TRUE(got.ok()) << i << ": " << got.status().ToString();
    ASSERT_NE(got->field("cart"), nullptr);
    EXPECT_EQ(got->field("cart")->value, "item " + std::to_string(i));
  }
  for (const std::string& id : during) {
    auto got = client.get(id);
    ASSERT_TRUE(got.ok()) << id << ": " << got.status().ToString();
  }
  // The log says what the reload did, one line per thing.
  const std::string log = node->log();
  EXPECT_TRUE(contains(log, "received SIGHUP")) << log;
  EXPECT_TRUE(contains(log, "reload: security policies unchanged")) << log;
  EXPECT_TRUE(contains(log, "reload: id keys")) << log;
  EXPECT_TRUE(contains(log, "reload: log level info (unchanged)")) << log;
  EXPECT_FALSE(contains(log, "needs a restart")) << log;
  EXPECT_EQ(node->terminate(), 0) << node->log();
}

TEST_F(SignalsTest, SighupAppliesTheLogLevelAndPresetPoliciesOfTheConfigFile) {
  const fs::path config = dir_.path() / "sessiond.toml";
  write_file(config, "log-level = \"info\"\n");
  auto node = start({"--config", config.string(), "--frame-timeout-ms", "200"});
  ASSERT_NE(node, nullptr);
  Client client(client_options(*node));
  auto signed_before = create(client, Preset::kFinance, "before");
  ASSERT_TRUE(signed_before.ok()) << signed_before.status().ToString();
  EXPECT_EQ(signed_before->id.size(), 64u) << "finance ids are signed by default";
  // At info level, closing a stalled connection is not logged.
  ASSERT_TRUE(stalled_connection_is_closed(node->address(), 10s));

  write_file(config,
             "log-level = \"debug\"\n"
             "preset-policy = [\"finance:signed-ids=off\"]\n"
             "threads = 1\n");
  node->send_signal(SIGHUP);
  ASSERT_TRUE(node->wait_for_log(kReloaded, 10s)) << node->log();
  // The first close happened before the reload, so its (absent) line would come first.
  EXPECT_FALSE(contains(node->log(), "a frame did not complete within the frame timeout"))
      << node->log();
  EXPECT_TRUE(contains(node->log(), "reload: log level debug (was info)")) << node->log();
  EXPECT_TRUE(contains(node->log(), "finance signed-ids on -> off")) << node->log();
  // --threads comes from the command line (TestNode passes 2), so the file's 1 changes nothing.
  EXPECT_FALSE(contains(node->log(), "--threads")) << node->log();

  // Debug lines now show.
  ASSERT_TRUE(stalled_connection_is_closed(node->address(), 10s));
  EXPECT_TRUE(node->wait_for_log("a frame did not complete within the frame timeout", 10s))
      << node->log();
  // New finance sessions get bare ids; the signed id handed out before still works.
  auto bare_after = create(client, Preset::kFinance, "after");
  ASSERT_TRUE(bare_after.ok()) << bare_after.status().ToString();
  EXPECT_EQ(bare_after->id.size(), 43u);
  auto old = client.get(signed_before->id);
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->field("cart")->value, "before");
  EXPECT_EQ(node->terminate(), 0);
}

TEST_F(SignalsTest, SighupRestartOnlySettingsAreNamedAndKeepTheirValues) {
  const fs::path config = dir_.path() / "sessiond.toml";
  write_file(config, "max-connections = 100\n");
  auto node = start({"--config", config.string()});
  ASSERT_NE(node, nullptr);
  write_file(config, "max-connections = 1\nshards = 4\n");
  node->send_signal(SIGHUP);
  ASSERT_TRUE(node->wait_for_log(kReloaded, 10s)) << node->log();
  EXPECT_TRUE(contains(node->log(),
                       "--max-connections, --shards changed in the config but needs "
                       "a restart"))
      << node->log();
  // Still 100 connections allowed: two clients at once are served.
  Client a(client_options(*node));
  Client b(client_options(*node));
  EXPECT_TRUE(a.ping().ok());
  EXPECT_TRUE(b.ping().ok());
}

TEST_F(SignalsTest, SighupRotatesIdKeysAndOldIdsVerifyUntilTheirKeyIsRetired) {
  const fs::path keys = dir_.path() / "id-keys";
  write_file(keys, "current " + key_hex('a') + "\n");
  auto node = start({"--id-key-file", keys.string()});
  ASSERT_NE(node, nullptr);
  Client client(client_options(*node));
  auto under_a = create(client, Preset::kFinance, "a");
  ASSERT_TRUE(under_a.ok()) << under_a.status().ToString();
  ASSERT_EQ(under_a->id.size(), 64u);

  // Rotate: b is current, a is accepted for an hour.
  write_file(keys, "current " + key_hex('b') + "\nprevious " + key_hex('a') + " " +
                       std::to_string(now_ms() + 3'600'000) + "\n");
  node->send_signal(SIGHUP);
  ASSERT_TRUE(node->wait_for_log(kReloaded, 10s)) << node->log();
  EXPECT_TRUE(contains(node->log(), "reload: id keys from " + keys.string() + " (changed"))
      << node->log();
  auto under_b = create(client, Preset::kFinance, "b");
  ASSERT_TRUE(under_b.ok()) << under_b.status().ToString();
  ASSERT_EQ(under_b->id.size(), 64u);
  // The old id verifies with the previous key and comes back in the current key's form.
  auto old = client.get(under_a->id);
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->field("cart")->value, "a");
  EXPECT_NE(old->id, under_a->id) << "answered in the new key's form";
  // The same session id: 42 base64url characters are 252 bits of it (the 43rd holds 2 bits
  // of the tag).
  EXPECT_EQ(old->id.substr(0, 42), under_a->id.substr(0, 42));
  const std::string resigned = old->id;
  EXPECT_TRUE(client.get(under_b->id).ok());

  // Retire a: ids signed with it are refused, those signed with b work.
  write_file(keys, "current " + key_hex('b') + "\n");
  node->send_signal(SIGHUP);
  ASSERT_TRUE(node->wait_for_log(kReloaded, 10s, 2)) << node->log();
  EXPECT_EQ(client.get(under_a->id).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(client.get(under_b->id).ok());
  auto again = client.get(resigned);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->field("cart")->value, "a");
  EXPECT_EQ(node->terminate(), 0);
}

TEST_F(SignalsTest, SighupWithABrokenConfigOrKeyFileKeepsEverySetting) {
  const fs::path config = dir_.path() / "sessiond.toml";
  const fs::path keys = dir_.path() / "id-keys";
  write_file(config, "log-level = \"info\"\n");
  write_file(keys, "current " + key_hex('a') + "\n");
  auto node = start({"--config", config.string(), "--id-key-file", keys.string()});
  ASSERT_NE(node, nullptr);
  Client client(client_options(*node));
  auto before = create(client, Preset::kFinance, "before");
  ASSERT_TRUE(before.ok()) << before.status().ToString();

  // A config value the node does not understand.
  write_file(config,
             "log-level = \"debug\"\n"
             "preset-policy = [\"finance:signed-ids=maybe\"]\n");
  node->send_signal(SIGHUP);
  ASSERT_TRUE(node->wait_for_log(kReloadFailed, 10s)) << node->log();
  EXPECT_TRUE(contains(node->log(), "signed-ids=maybe")) << node->log();
  EXPECT_FALSE(contains(node->log(), kReloaded)) << node->log();
  auto signed_still = create(client, Preset::kFinance, "x");
  ASSERT_TRUE(signed_still.ok()) << signed_still.status().ToString();
  EXPECT_EQ(signed_still->id.size(), 64u);
  EXPECT_TRUE(client.get(before->id).ok());

  // A good config but a broken key file: the policy change in the config is not applied
  // either, and the old key keeps signing and verifying.
  write_file(config,
             "log-level = \"debug\"\n"
             "preset-policy = [\"finance:signed-ids=off\"]\n");
  write_file(keys, "current not-hex\n");
  node->send_signal(SIGHUP);
  ASSERT_TRUE(node->wait_for_log(kReloadFailed, 10s, 2)) << node->log();
  EXPECT_TRUE(contains(node->log(), keys.string())) << node->log();
  EXPECT_FALSE(contains(node->log(), kReloaded)) << node->log();
  EXPECT_TRUE(node->running());
  auto still_signed = create(client, Preset::kFinance, "y");
  ASSERT_TRUE(still_signed.ok()) << still_signed.status().ToString();
  EXPECT_EQ(still_signed->id.size(), 64u) << "the config's policy came with a bad key file";
  EXPECT_TRUE(client.get(before->id).ok());
  EXPECT_TRUE(client.get(still_signed->id).ok());

  // Fixed: the next SIGHUP applies both.
  write_file(keys, "current " + key_hex('a') + "\n");
  node->send_signal(SIGHUP);
  ASSERT_TRUE(node->wait_for_log(kReloaded, 10s)) << node->log();
  auto bare = create(client, Preset::kFinance, "z");
  ASSERT_TRUE(bare.ok()) << bare.status().ToString();
  EXPECT_EQ(bare->id.size(), 43u);
  EXPECT_TRUE(client.get(before->id).ok());
  EXPECT_EQ(node->terminate(), 0);
}

TEST_F(SignalsTest, SighupLoadsNewCertificatesForNewConnectionsOnly) {
  // Two CAs, each with a node certificate; the node serves the files in live/.
  for (const char* name : {"first", "second"}) {
    auto made = testing::run_process(SESSIOND_MAKE_CERTS, {dir_.sub(name)});
    ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  }
  const fs::path live = dir_.path() / "live";
  fs::create_directories(live);
  const auto install = [&](const std::string& from) {
    for (const char* file : {"node.crt", "node.key"}) {
      fs::copy_file(fs::path(dir_.sub(from)) / file, live / file,
                    fs::copy_options::overwrite_existing);
    }
  };
  install("first");
  auto node = start(
      {"--tls-cert", (live / "node.crt").string(), "--tls-key", (live / "node.key").string()});
  ASSERT_NE(node, nullptr);
  const auto trusting = [&](const std::string& ca) {
    Client::Options co = client_options(*node);
    co.pool_size = 1;
    co.tls.enabled = true;
    co.tls.ca_file = dir_.sub(ca) + "/ca.crt";
    return co;
  };
  Client open_before(trusting("first"));
  ASSERT_TRUE(open_before.ping().ok());
  EXPECT_EQ(Client(trusting("second")).ping().status().code(), StatusCode::kUnavailable);

  install("second");
  node->send_signal(SIGHUP);
  ASSERT_TRUE(node->wait_for_log(kReloaded, 10s)) << node->log();
  EXPECT_TRUE(contains(node->log(), "reload: TLS certificate " + (live / "node.crt").string()))
      << node->log();
  // New connections get the new certificate...
  auto fresh = Client(trusting("second")).ping();
  EXPECT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(Client(trusting("first")).ping().status().code(), StatusCode::kUnavailable);
  // ...and the connection opened before keeps working (its client trusts only the first CA,
  // so a new connection of it would fail).
  auto kept = open_before.ping();
  EXPECT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_TRUE(create(open_before, Preset::kNodeDefault, "kept").ok());

  // A certificate file that cannot be used: the node keeps the second certificate.
  write_file(live / "node.crt", "not a certificate\n");
  node->send_signal(SIGHUP);
  ASSERT_TRUE(node->wait_for_log(kReloadFailed, 10s)) << node->log();
  EXPECT_TRUE(contains(node->log(), (live / "node.crt").string())) << node->log();
  auto after_failure = Client(trusting("second")).ping();
  EXPECT_TRUE(after_failure.ok()) << after_failure.status().ToString();
  EXPECT_EQ(node->terminate(), 0);
}

TEST_F(SignalsTest, SighupLoadsANewClientCaForNewConnectionsOnly) {
  for (const char* name : {"first", "second"}) {
    auto made = testing::run_process(SESSIOND_MAKE_CERTS, {dir_.sub(name)});
    ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  }
  const fs::path client_ca = dir_.path() / "client-ca.crt";
  fs::copy_file(dir_.sub("first") + "/ca.crt", client_ca);
  auto node = start({"--tls-cert", dir_.sub("first") + "/node.crt", "--tls-key",
                     dir_.sub("first") + "/node.key", "--tls-client-ca", client_ca.string(),
                     "--tls-client-auth", "require"});
  ASSERT_NE(node, nullptr);
  // A client of the node (which keeps the first CA's certificate) with the app certificate
  // that `issuer`'s CA signed.
  const auto with_certificate_of = [&](const std::string& issuer) {
    Client::Options co = client_options(*node);
    co.pool_size = 1;
    co.tls.enabled = true;
    co.tls.ca_file = dir_.sub("first") + "/ca.crt";
    co.tls.cert_file = dir_.sub(issuer) + "/app.crt";
    co.tls.key_file = dir_.sub(issuer) + "/app.key";
    return co;
  };
  Client open_before(with_certificate_of("first"));
  ASSERT_TRUE(open_before.ping().ok());
  EXPECT_FALSE(Client(with_certificate_of("second")).ping().ok());

  fs::copy_file(dir_.sub("second") + "/ca.crt", client_ca, fs::copy_options::overwrite_existing);
  node->send_signal(SIGHUP);
  ASSERT_TRUE(node->wait_for_log(kReloaded, 10s)) << node->log();
  EXPECT_TRUE(contains(node->log(), "client CA " + client_ca.string())) << node->log();
  auto fresh = Client(with_certificate_of("second")).ping();
  EXPECT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_FALSE(Client(with_certificate_of("first")).ping().ok());
  auto kept = open_before.ping();
  EXPECT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(node->terminate(), 0);
}

TEST_F(SignalsTest, SigquitStopsGracefullyAndFlushes) {
  std::string id;
  {
    auto node = start({});
    ASSERT_NE(node, nullptr);
    Client client(client_options(*node));
    auto created = create(client, Preset::kNodeDefault, "kept");
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    id = created->id;
    // The access history is kept in memory until the session's next write or the final
    // flush: only a graceful stop keeps it.
    GetOptions with_access;
    AccessEntry& access = with_access.record_access.emplace();
    access.ip = "203.0.113.7";
    ASSERT_TRUE(client.get(id, with_access).ok());
    EXPECT_EQ(node->stop_with(SIGQUIT), 0) << node->log();
    EXPECT_TRUE(contains(node->log(), "received SIGQUIT, stopping")) << node->log();
    EXPECT_TRUE(contains(node->log(), "stopped cleanly")) << node->log();
  }
  auto node = start({});
  ASSERT_NE(node, nullptr);
  Client client(client_options(*node));
  auto log = client.access_log(id);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ(log->size(), 1u);
  EXPECT_EQ((*log)[0].ip, "203.0.113.7");
}

TEST_F(SignalsTest, SigusrIsLoggedAndIgnored) {
  auto node = start({}, "memory");
  ASSERT_NE(node, nullptr);
  Client client(client_options(*node));
  auto created = create(client, Preset::kNodeDefault, "kept");
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  node->send_signal(SIGUSR1);
  ASSERT_TRUE(node->wait_for_log("received SIGUSR1: ignored", 10s)) << node->log();
  node->send_signal(SIGUSR2);
  ASSERT_TRUE(node->wait_for_log("received SIGUSR2: ignored", 10s)) << node->log();
  EXPECT_TRUE(node->running());
  EXPECT_TRUE(client.ping().ok());
  EXPECT_TRUE(client.get(created->id).ok());
  EXPECT_EQ(node->terminate(), 0) << node->log();
}

}  // namespace
}  // namespace sessiond
