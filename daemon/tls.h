// TLS on the native listener (DESIGN §5, §9): the options, their validation, the OpenSSL
// server context built from them, and the role a verified client certificate grants
// (docs/tls.md). No sockets here; the server wraps the context for asio.
#pragma once

#include <string>
#include <string_view>

#include "daemon/auth.h"
#include "protocol/openssl_context.h"
#include "protocol/status.h"

struct x509_st;  // OpenSSL's X509

namespace sessiond::daemon {

struct TlsOptions {
  // Whether the node asks connecting clients for a certificate (--tls-client-auth).
  enum class ClientAuth { kNone, kOptional, kRequire };

  std::string cert_file;       // PEM certificate chain of the node; empty: TLS off
  std::string key_file;        // PEM private key of cert_file (unencrypted)
  std::string client_ca_file;  // PEM CA bundle that client certificates must chain to
  ClientAuth client_auth = ClientAuth::kNone;

  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

// "none" | "optional" | "require".
std::string_view client_auth_name(TlsOptions::ClientAuth mode);

// INVALID_ARGUMENT naming the flags when the options do not fit together: a certificate
// without a key (or the reverse), client authentication without a CA, or a CA without TLS.
// Reads no file.
Status validate_tls_options(const TlsOptions& options);

// A server context for `options` (which must be valid and enabled): TLS 1.2 at least, forward
// secret AEAD ciphers for TLS 1.2, no renegotiation; client certificates requested or required
// as options.client_auth says. INVALID_ARGUMENT naming the file when one cannot be read or
// parsed, or when the key does not belong to the certificate.
Result<SslCtxPtr> make_server_context(const TlsOptions& options);

// The role a verified client certificate grants: its subject's organizationalUnitName "app",
// "admin" or "peer". kNone when it names none of them, or more than one role (ambiguous).
// `certificate` may be null (no certificate: kNone).
Role role_from_certificate(x509_st* certificate);

}  // namespace sessiond::daemon
