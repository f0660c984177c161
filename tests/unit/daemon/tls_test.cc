// The TLS options of a node: flags and their validation, the server context built from the
// files (with certificates made here by OpenSSL), and the role a client certificate grants.
#include "daemon/tls.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "tests/support/temp_dir.h"

namespace sessiond::daemon {
namespace {

using testing::TempDir;

struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct X509Free {
  void operator()(X509* certificate) const { X509_free(certificate); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

KeyPtr new_key() { return KeyPtr(EVP_EC_gen("P-256")); }

// A self-signed certificate of `key` whose subject holds one OU per entry of `units`.
X509Ptr certificate_of(EVP_PKEY* key, const std::vector<std::string>& units) {
  X509Ptr certificate(X509_new());
  X509_set_version(certificate.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(certificate.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(certificate.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(certificate.get()), 3600);
  X509_NAME* name = X509_get_subject_name(certificate.get());
  for (const auto& unit : units) {
    X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(unit.c_str()), -1, -1, 0);
  }
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("test"), -1, -1, 0);
  X509_set_issuer_name(certificate.get(), name);
  X509_set_pubkey(certificate.get(), key);
  X509_sign(certificate.get(), key, EVP_sha256());
  return certificate;
}

void write_key(const std::string& path, EVP_PKEY* key) {
  std::FILE* file = std::fopen(path.c_str(), "w");
  ASSERT_NE(file, nullptr);
  PEM_write_PrivateKey(file, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(file);
}

void write_certificate(const std::string& path, X509* certificate) {
  std::FILE* file = std::fopen(path.c_str(), "w");
  ASSERT_NE(file, nullptr);
  PEM_write_X509(file, certificate);
  std::fclose(file);
}

ParsedOptions parse(std::vector<std::string> args) {
  args.insert(args.begin(), "sessiond");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

TEST(TlsConfig, OffByDefault) {
  const auto parsed = parse({});
  ASSERT_FALSE(parsed.exit) << parsed.message;
  EXPECT_FALSE(parsed.options.tls.enabled());
  EXPECT_EQ(parsed.options.tls.client_auth, TlsOptions::ClientAuth::kNone);
}

TEST(TlsConfig, FlagsFillTheOptions) {
  const auto parsed = parse({"--tls-cert", "n.crt", "--tls-key", "n.key", "--tls-client-ca",
                             "ca.crt", "--tls-client-auth", "require"});
  ASSERT_FALSE(parsed.exit) << parsed.message;
  EXPECT_TRUE(parsed.options.tls.enabled());
  EXPECT_EQ(parsed.options.tls.cert_file, "n.crt");
  EXPECT_EQ(parsed.options.tls.key_file, "n.key");
  EXPECT_EQ(parsed.options.tls.client_ca_file, "ca.crt");
  EXPECT_EQ(parsed.options.tls.client_auth, TlsOptions::ClientAuth::kRequire);
}

TEST(TlsConfig, CertificateAndKeyGoTogether) {
  auto parsed = parse({"--tls-cert", "n.crt"});
  EXPECT_TRUE(parsed.exit);
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_NE(parsed.message.find("--tls-key"), std::string::npos) << parsed.message;
  parsed = parse({"--tls-key", "n.key"});
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_NE(parsed.message.find("--tls-cert is not"), std::string::npos) << parsed.message;
}

TEST(TlsConfig, ClientAuthNeedsTheCaAndTls) {
  auto parsed =
      parse({"--tls-cert", "n.crt", "--tls-key", "n.key", "--tls-client-auth", "optional"});
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_NE(parsed.message.find("needs --tls-client-ca"), std::string::npos) << parsed.message;
  parsed = parse({"--tls-client-ca", "ca.crt", "--tls-client-auth", "require"});
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_NE(parsed.message.find("need TLS"), std::string::npos) << parsed.message;
  parsed = parse({"--tls-cert", "n.crt", "--tls-key", "n.key", "--tls-client-ca", "ca.crt"});
  EXPECT_EQ(parsed.exit_code, 2);
  EXPECT_NE(parsed.message.find("--tls-client-auth is none"), std::string::npos) << parsed.message;
  parsed = parse({"--tls-cert", "n.crt", "--tls-key", "n.key", "--tls-client-auth", "maybe"});
  EXPECT_EQ(parsed.exit_code, 2);
}

TEST(TlsConfig, ValidateAcceptsTheGoodCombinations) {
  TlsOptions o;
  EXPECT_TRUE(validate_tls_options(o).ok());
  o.cert_file = "n.crt";
  o.key_file = "n.key";
  EXPECT_TRUE(validate_tls_options(o).ok());
  o.client_ca_file = "ca.crt";
  o.client_auth = TlsOptions::ClientAuth::kOptional;
  EXPECT_TRUE(validate_tls_options(o).ok());
  o.client_auth = TlsOptions::ClientAuth::kRequire;
  EXPECT_TRUE(validate_tls_options(o).ok());
}

class TlsServerContext : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = new_key();
    ASSERT_NE(key_, nullptr);
    certificate_ = certificate_of(key_.get(), {});
    ASSERT_NO_FATAL_FAILURE(write_key(dir_.sub("node.key"), key_.get()));
    ASSERT_NO_FATAL_FAILURE(write_certificate(dir_.sub("node.crt"), certificate_.get()));
    options_.cert_file = dir_.sub("node.crt");
    options_.key_file = dir_.sub("node.key");
  }
  TempDir dir_;
  KeyPtr key_;
  X509Ptr certificate_;
  TlsOptions options_;
};

TEST_F(TlsServerContext, LoadsAMatchingPair) {
  auto ctx = make_server_context(options_);
  EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
  options_.client_ca_file = dir_.sub("node.crt");  // any PEM certificate serves as a CA here
  options_.client_auth = TlsOptions::ClientAuth::kRequire;
  ctx = make_server_context(options_);
  EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
}

TEST_F(TlsServerContext, AMissingFileIsNamed) {
  options_.cert_file = dir_.sub("missing.crt");
  auto ctx = make_server_context(options_);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(ctx.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ctx.status().message().find(dir_.sub("missing.crt")), std::string::npos);
  EXPECT_NE(ctx.status().message().find("No such file"), std::string::npos)
      << ctx.status().message();
}

TEST_F(TlsServerContext, AFileThatIsNotPemIsNamed) {
  std::ofstream(dir_.sub("garbage.key")) << "not a key\n";
  options_.key_file = dir_.sub("garbage.key");
  auto ctx = make_server_context(options_);
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.status().message().find("--tls-key"), std::string::npos);
  EXPECT_NE(ctx.status().message().find(dir_.sub("garbage.key")), std::string::npos)
      << ctx.status().message();
}

TEST_F(TlsServerContext, AnEncryptedKeyIsRefusedWithoutAPrompt) {
  std::FILE* file = std::fopen(dir_.sub("encrypted.key").c_str(), "w");
  ASSERT_NE(file, nullptr);
  static unsigned char passphrase[] = "secret";
  PEM_write_PrivateKey(file, key_.get(), EVP_aes_256_cbc(), passphrase, sizeof passphrase - 1,
                       nullptr, nullptr);
  std::fclose(file);
  options_.key_file = dir_.sub("encrypted.key");
  auto ctx = make_server_context(options_);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(ctx.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ctx.status().message().find("is not an unencrypted PEM private key"), std::string::npos)
      << ctx.status().message();
}

TEST_F(TlsServerContext, AKeyOfAnotherCertificateIsRefused) {
  auto other = new_key();
  ASSERT_NO_FATAL_FAILURE(write_key(dir_.sub("other.key"), other.get()));
  options_.key_file = dir_.sub("other.key");
  auto ctx = make_server_context(options_);
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.status().message().find("does not belong to the certificate"), std::string::npos)
      << ctx.status().message();
}

TEST_F(TlsServerContext, AClientCaWithoutCertificatesIsRefused) {
  std::ofstream(dir_.sub("empty.crt")) << "";
  options_.client_ca_file = dir_.sub("empty.crt");
  options_.client_auth = TlsOptions::ClientAuth::kOptional;
  auto ctx = make_server_context(options_);
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.status().message().find("--tls-client-ca"), std::string::npos)
      << ctx.status().message();
}

Role role_of(const std::vector<std::string>& units) {
  auto key = new_key();
  auto certificate = certificate_of(key.get(), units);
  return role_from_certificate(certificate.get());
}

TEST(RoleFromCertificate, TheOrganizationalUnitNamesTheRole) {
  EXPECT_EQ(role_of({"app"}), Role::kApp);
  EXPECT_EQ(role_of({"admin"}), Role::kAdmin);
  EXPECT_EQ(role_of({"peer"}), Role::kPeer);
  EXPECT_EQ(role_of({"engineering", "app"}), Role::kApp);  // other units are ignored
  EXPECT_EQ(role_of({"app", "app"}), Role::kApp);
}

TEST(RoleFromCertificate, NoRoleWithoutOneClearUnit) {
  EXPECT_EQ(role_from_certificate(nullptr), Role::kNone);
  EXPECT_EQ(role_of({}), Role::kNone);
  EXPECT_EQ(role_of({"engineering"}), Role::kNone);
  EXPECT_EQ(role_of({"Admin"}), Role::kNone);         // exact, lower case
  EXPECT_EQ(role_of({"admins"}), Role::kNone);        // the whole unit, not a prefix
  EXPECT_EQ(role_of({"app", "admin"}), Role::kNone);  // ambiguous
}

}  // namespace
}  // namespace sessiond::daemon
