// TLS on the native listener (issue 5), with real sessiond processes on loopback: certificates
// from scripts/make-certs, the client library and sessctl over TLS, plaintext clients against a
// TLS listener, mutual TLS and the roles that client certificates grant (docs/tls.md).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "protocol/frame.h"
#include "sessiond/client.h"
#include "test_node.h"

#ifndef SESSCTL_PATH
#error "SESSCTL_PATH must name the sessctl binary"
#endif
#ifndef SESSIOND_MAKE_CERTS
#error "SESSIOND_MAKE_CERTS must name scripts/make-certs"
#endif

namespace sessiond {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;
using testing::TestNode;
using Clock = std::chrono::steady_clock;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// What a raw connection receives until the node closes it; nullopt if it is still open at the
// deadline.
std::optional<std::string> read_until_closed(int fd, std::chrono::milliseconds patience) {
  std::string received;
  const auto deadline = Clock::now() + patience;
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 1))) <= 0) continue;
    char buffer[4096];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return received;  // closed (or reset)
    received.append(buffer, static_cast<std::size_t>(n));
  }
  return std::nullopt;
}

// Each test makes its own certificates (a CA, a node, clients app/admin/peer and "plain", whose
// certificate has no OU) and, for the wrong-CA case, a second CA.
class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    certs_ = dir_.sub("certs");
    auto made = testing::run_process(SESSIOND_MAKE_CERTS, {certs_, "--client", "plain"});
    ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  }

  std::string cert(const std::string& name) const { return certs_ + "/" + name; }

  // Starts a node serving TLS with the node certificate, plus `extra` flags.
  void start(std::vector<std::string> extra = {}) {
    TestNode::Options o;
    o.data_dir = dir_.path() / "data";
    o.extra_args = {"--tls-cert", cert("node.crt"), "--tls-key", cert("node.key")};
    o.extra_args.insert(o.extra_args.end(), extra.begin(), extra.end());
    std::string error;
    node_ = TestNode::start(o, &error);
    ASSERT_NE(node_, nullptr) << error;
  }
  void start_mutual(const std::string& mode, std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), {"--tls-client-ca", cert("ca.crt"), "--tls-client-auth", mode});
    start(std::move(extra));
  }

  // A TLS client that trusts the test CA; `identity` names a client certificate ("" none).
  Client::Options tls_options(const std::string& identity = "", std::string secret = {}) const {
    Client::Options co;
    co.address = node_->address();
    co.timeout = 10s;
    co.tls.enabled = true;
    co.tls.ca_file = cert("ca.crt");
    if (!identity.empty()) {
      co.tls.cert_file = cert(identity + ".crt");
      co.tls.key_file = cert(identity + ".key");
    }
    co.secret = std::move(secret);
    return co;
  }

  TempDir dir_;
  std::string certs_;
  std::unique_ptr<TestNode> node_;
};

TEST_F(TlsTest, ClientCreatesAndGetsOverTls) {
  ASSERT_NO_FATAL_FAILURE(start());
  Client client(tls_options());
  CreateOptions create;
  create.user_id = "alice";
  create.fields = {FieldValue{"cart", "3 items"}};
  auto created = client.create(create);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto got = client.get(created->id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->field("cart")->value, "3 items");
  // By name: the node certificate carries DNS:localhost too.
  auto by_name = tls_options();
  by_name.address = "localhost:" + node_->address().substr(node_->address().rfind(':') + 1);
  EXPECT_TRUE(Client(by_name).get(created->id).ok());
  // sessctl over TLS.
  auto out = testing::run_process(
      SESSCTL_PATH, {"--addr", node_->address(), "--tls-ca", cert("ca.crt"), "get", created->id});
  EXPECT_EQ(out.exit_code, 0) << out.err;
  EXPECT_TRUE(contains(out.out, "cart")) << out.out;
}

TEST_F(TlsTest, ClientRefusesANodeItCannotVerify) {
  ASSERT_NO_FATAL_FAILURE(start());
  auto made = testing::run_process(SESSIOND_MAKE_CERTS, {dir_.sub("other")});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto wrong_ca = tls_options();
  wrong_ca.tls.ca_file = dir_.sub("other") + "/ca.crt";
  auto refused = Client(wrong_ca).ping();
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(contains(refused.status().message(), "TLS handshake failed"))
      << refused.status().message();
  EXPECT_TRUE(contains(refused.status().message(), "certificate was not accepted"));
  // The right CA, but a name the certificate does not carry.
  auto wrong_name = tls_options();
  wrong_name.tls.server_name = "sessiond.example";
  auto mismatch = Client(wrong_name).ping();
  EXPECT_EQ(mismatch.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(contains(mismatch.status().message(), "hostname mismatch"))
      << mismatch.status().message();
  // A CA file that does not exist is the caller's mistake, named.
  auto missing = tls_options();
  missing.tls.ca_file = dir_.sub("nowhere.crt");
  auto invalid = Client(missing).ping();
  EXPECT_EQ(invalid.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(invalid.status().message(), dir_.sub("nowhere.crt")));
}

TEST_F(TlsTest, PlaintextClientsFailAndTlsClientsAreStillServed) {
  ASSERT_NO_FATAL_FAILURE(start({"--log-level", "debug"}));
  Client::Options plain;
  plain.address = node_->address();
  plain.timeout = 5s;
  auto refused = Client(plain).ping();
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable) << refused.status().ToString();

  // A well-formed PING frame in plaintext gets no answer: the node closes the connection.
  const int fd = testing::connect_to(node_->address());
  ASSERT_GE(fd, 0);
  std::uint8_t frame[protocol::kHeaderSize];
  protocol::FrameHeader header;
  header.opcode = static_cast<std::uint16_t>(protocol::Opcode::kPing);
  header.request_id = 1;
  protocol::encode_header(header, frame);
  ASSERT_EQ(::send(fd, frame, sizeof frame, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof frame));
  const auto answer = read_until_closed(fd, 10s);
  ::close(fd);
  ASSERT_TRUE(answer.has_value()) << "the node kept a plaintext connection open";
  EXPECT_TRUE(answer->empty()) << "the node answered plaintext with " << answer->size() << " bytes";

  Client client(tls_options());
  CreateOptions create;
  create.user_id = "bob";
  auto created = client.create(create);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_TRUE(client.get(created->id).ok());
  // The failed handshakes are logged (at debug level); the log arrives through a pipe.
  const auto deadline = Clock::now() + 10s;
  while (!contains(node_->log(), "TLS handshake with 127.0.0.1") && Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);  // polling the log: the condition ends the wait
  }
  EXPECT_TRUE(contains(node_->log(), "TLS handshake with 127.0.0.1")) << node_->log();
  // And counted: at least the plaintext client's connection and the raw one.
  std::uint64_t failures = 0;
  while (Clock::now() < deadline) {
    auto stats = client.stats();
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    failures = stats->tls_handshake_failures;
    if (failures >= 2) break;
    std::this_thread::sleep_for(10ms);  // polling the counter: the condition ends the wait
  }
  EXPECT_GE(failures, 2u);
}

TEST_F(TlsTest, SilentClientIsClosedAfterTheFrameTimeout) {
  ASSERT_NO_FATAL_FAILURE(start({"--frame-timeout-ms", "200"}));
  const int fd = testing::connect_to(node_->address());
  ASSERT_GE(fd, 0);
  const auto answer = read_until_closed(fd, 10s);
  ::close(fd);
  ASSERT_TRUE(answer.has_value()) << "a connection without a handshake stayed open";
  EXPECT_TRUE(answer->empty());
  EXPECT_TRUE(Client(tls_options()).ping().ok());
}

TEST_F(TlsTest, RequiredClientCertificateIsEnforced) {
  ASSERT_NO_FATAL_FAILURE(start_mutual("require"));
  auto refused = Client(tls_options()).ping();
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(contains(refused.status().message(), "certificate required"))
      << refused.status().message();
  // A certificate from another CA is refused too.
  auto made = testing::run_process(SESSIOND_MAKE_CERTS, {dir_.sub("other")});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto stranger = tls_options();
  stranger.tls.cert_file = dir_.sub("other") + "/app.crt";
  stranger.tls.key_file = dir_.sub("other") + "/app.key";
  EXPECT_EQ(Client(stranger).ping().status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(Client(tls_options("app")).ping().ok());
}

// The certificate's OU is the role, with no AUTH; a certificate without one grants nothing,
// and AUTH still works on top of it.
TEST_F(TlsTest, ClientCertificateGrantsItsRole) {
  ASSERT_NO_FATAL_FAILURE(start_mutual("require", {"--admin-secret", "admin-secret-1"}));
  Client app(tls_options("app"));
  CreateOptions create;
  create.user_id = "carol";
  auto created = app.create(create);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_TRUE(app.get(created->id).ok());
  EXPECT_EQ(app.stats().status().code(), StatusCode::kForbidden);

  Client admin(tls_options("admin"));
  auto stats = admin.stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->sessions, 1u);

  Client peer(tls_options("peer"));
  EXPECT_EQ(peer.get(created->id).status().code(), StatusCode::kForbidden);

  Client plain(tls_options("plain"));
  EXPECT_EQ(plain.get(created->id).status().code(), StatusCode::kUnauthenticated);
  Client plain_with_secret(tls_options("plain", "admin-secret-1"));
  EXPECT_TRUE(plain_with_secret.stats().ok());

  // sessctl with a client certificate.
  auto out = testing::run_process(
      SESSCTL_PATH, {"--addr", node_->address(), "--tls-ca", cert("ca.crt"), "--tls-cert",
                     cert("admin.crt"), "--tls-key", cert("admin.key"), "stats"});
  EXPECT_EQ(out.exit_code, 0) << out.err;
}

TEST_F(TlsTest, OptionalClientCertificateLeavesSecretsWorking) {
  ASSERT_NO_FATAL_FAILURE(start_mutual("optional", {"--app-secret", "app-secret-1"}));
  Client anonymous(tls_options());
  EXPECT_TRUE(anonymous.ping().ok());
  CreateOptions create;
  create.user_id = "dave";
  EXPECT_EQ(anonymous.create(create).status().code(), StatusCode::kUnauthenticated);
  Client with_secret(tls_options("", "app-secret-1"));
  auto created = with_secret.create(create);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  Client with_certificate(tls_options("app"));
  EXPECT_TRUE(with_certificate.get(created->id).ok());
}

// Without secrets, asking for client certificates still means: no certificate role, no role.
TEST_F(TlsTest, ClientCertificatesWithoutSecretsGrantOnlyTheirRoles) {
  ASSERT_NO_FATAL_FAILURE(start_mutual("optional"));
  CreateOptions create;
  EXPECT_EQ(Client(tls_options()).create(create).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(Client(tls_options("plain")).create(create).status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_TRUE(Client(tls_options("app")).create(create).ok());
}

TEST_F(TlsTest, UnusableFilesFailTheStartNamingThem) {
  auto made = testing::run_process(SESSIOND_MAKE_CERTS, {dir_.sub("other")});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto try_start = [&](std::vector<std::string> args) {
    TestNode::Options o;
    o.data_dir = dir_.path() / "data";
    o.extra_args = std::move(args);
    std::string error;
    auto node = TestNode::start(o, &error);
    EXPECT_EQ(node, nullptr);
    return error;
  };
  const std::string other_key = dir_.sub("other") + "/node.key";
  auto error = try_start({"--tls-cert", cert("node.crt"), "--tls-key", other_key});
  EXPECT_TRUE(contains(error, "does not belong")) << error;
  EXPECT_TRUE(contains(error, other_key)) << error;
  error = try_start({"--tls-cert", dir_.sub("missing.crt"), "--tls-key", cert("node.key")});
  EXPECT_TRUE(contains(error, dir_.sub("missing.crt"))) << error;
  error = try_start({"--tls-cert", cert("node.crt")});
  EXPECT_TRUE(contains(error, "--tls-key")) << error;
}

}  // namespace
}  // namespace sessiond
