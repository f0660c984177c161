#include "daemon/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "protocol/readable_file.h"

namespace sessiond::daemon {
namespace {

// TLS 1.2 suites: ECDHE key exchange (forward secrecy) with an AEAD cipher only, as in
// Mozilla's "intermediate" configuration. TLS 1.3 keeps OpenSSL's defaults, all of which are.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Resumed sessions must come from this context (OpenSSL refuses to resume a session with a
// verified client certificate without one).
constexpr unsigned char kSessionIdContext[] = "sessiond";

struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};

}  // namespace

std::string_view client_auth_name(TlsOptions::ClientAuth mode) {
  switch (mode) {
    case TlsOptions::ClientAuth::kOptional:
      return "optional";
    case TlsOptions::ClientAuth::kRequire:
      return "require";
    case TlsOptions::ClientAuth::kNone:
      break;
  }
  return "none";
}

Status validate_tls_options(const TlsOptions& options) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return Status::InvalidArgument(
        options.cert_file.empty()
            ? "--tls-key is set but --tls-cert is not: TLS needs both (or neither)"
            : "--tls-cert is set but --tls-key is not: TLS needs both (or neither)");
  }
  const bool client_auth = options.client_auth != TlsOptions::ClientAuth::kNone;
  if (!options.enabled() && (client_auth || !options.client_ca_file.empty())) {
    return Status::InvalidArgument(
        "--tls-client-auth and --tls-client-ca need TLS: set --tls-cert and --tls-key");
  }
  if (client_auth && options.client_ca_file.empty()) {
    return Status::InvalidArgument(
        "--tls-client-auth " + std::string(client_auth_name(options.client_auth)) +
        " needs --tls-client-ca (the CA that signs client certificates)");
  }
  if (!client_auth && !options.client_ca_file.empty()) {
    return Status::InvalidArgument(
        "--tls-client-ca is set but --tls-client-auth is none: set it to optional or require");
  }
  return {};
}

Result<SslCtxPtr> make_server_context(const TlsOptions& options) {
  auto made = new_tls_context(TLS_server_method());
  if (!made.ok()) return made.status();
  SslCtxPtr ctx = std::move(made).value();
  SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_set_cipher_list(ctx.get(), kTls12Ciphers) != 1) {
    return Status::Internal("cannot set the TLS 1.2 ciphers: " + openssl_reason());
  }

  if (Status s = check_readable(options.cert_file, "TLS certificate (--tls-cert)"); !s.ok()) {
    return s;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), options.cert_file.c_str()) != 1) {
    return Status::InvalidArgument("TLS certificate (--tls-cert) " + options.cert_file +
                                   " is not a usable PEM certificate: " + openssl_reason());
  }

  if (Status s = check_readable(options.key_file, "TLS key (--tls-key)"); !s.ok()) return s;
  std::unique_ptr<BIO, BioFree> key_bio(BIO_new_file(options.key_file.c_str(), "r"));
  std::unique_ptr<EVP_PKEY, PkeyFree> key(
      key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr,
                                        SSL_CTX_get_default_passwd_cb(ctx.get()), nullptr)
              : nullptr);
  if (!key) {
    return Status::InvalidArgument("TLS key (--tls-key) " + options.key_file +
                                   " is not an unencrypted PEM private key: " + openssl_reason());
  }
  X509* certificate = SSL_CTX_get0_certificate(ctx.get());
  if (certificate == nullptr || X509_check_private_key(certificate, key.get()) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument("TLS key (--tls-key) " + options.key_file +
                                   " does not belong to the certificate (--tls-cert) " +
                                   options.cert_file);
  }
  if (SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1) {
    return Status::InvalidArgument("TLS key (--tls-key) " + options.key_file +
                                   " cannot be used: " + openssl_reason());
  }

  SSL_CTX_set_session_id_context(ctx.get(), kSessionIdContext, sizeof kSessionIdContext - 1);
  if (options.client_auth == TlsOptions::ClientAuth::kNone) return ctx;

  const std::string& ca = options.client_ca_file;
  if (Status s = check_readable(ca, "TLS client CA (--tls-client-ca)"); !s.ok()) return s;
  if (SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr) != 1) {
    return Status::InvalidArgument("TLS client CA (--tls-client-ca) " + ca +
                                   " holds no usable PEM certificate: " + openssl_reason());
  }
  // The CA names go into the certificate request, so that a client with several certificates
  // can pick the right one.
  STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca.c_str());
  if (names == nullptr) {
    return Status::InvalidArgument("TLS client CA (--tls-client-ca) " + ca +
                                   " holds no usable PEM certificate: " + openssl_reason());
  }
  SSL_CTX_set_client_CA_list(ctx.get(), names);  // takes ownership
  int mode = SSL_VERIFY_PEER;
  if (options.client_auth == TlsOptions::ClientAuth::kRequire) {
    mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  }
  SSL_CTX_set_verify(ctx.get(), mode, nullptr);
  return ctx;
}

Role role_from_certificate(x509_st* certificate) {
  if (certificate == nullptr) return Role::kNone;
  X509_NAME* subject = X509_get_subject_name(certificate);
  if (subject == nullptr) return Role::kNone;
  Role found = Role::kNone;
  for (int at = X509_NAME_get_index_by_NID(subject, NID_organizationalUnitName, -1); at >= 0;
       at = X509_NAME_get_index_by_NID(subject, NID_organizationalUnitName, at)) {
    unsigned char* utf8 = nullptr;
    const int length =
        ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
    if (length < 0) continue;
    const std::string_view unit(reinterpret_cast<const char*>(utf8),
                                static_cast<std::size_t>(length));
    Role role = Role::kNone;
    if (unit == "app") role = Role::kApp;
    if (unit == "admin") role = Role::kAdmin;
    if (unit == "peer") role = Role::kPeer;
    OPENSSL_free(utf8);
    if (role == Role::kNone) continue;
    if (found != Role::kNone && found != role) return Role::kNone;  // two roles: ambiguous
    found = role;
  }
  return found;
}

}  // namespace sessiond::daemon
