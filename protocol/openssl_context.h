// What the node's and the client's TLS code share (DESIGN §9): an owned OpenSSL context made
// with the settings both ends use, and OpenSSL's reason for a failure in words. The daemon's
// server context (daemon/tls.h) and the client's (client/detail/tls_context.h) start here.
#pragma once

#include <memory>
#include <string>

#include "protocol/status.h"

struct ssl_ctx_st;     // OpenSSL's SSL_CTX
struct ssl_method_st;  // OpenSSL's SSL_METHOD

namespace sessiond {

struct SslCtxDeleter {
  void operator()(ssl_ctx_st* ctx) const;
};
// An OpenSSL context, freed with SSL_CTX_free.
using SslCtxPtr = std::unique_ptr<ssl_ctx_st, SslCtxDeleter>;

// A context for `method` (TLS_server_method() or TLS_client_method()): TLS 1.2 at least, no
// renegotiation, no compression, and a failure instead of a terminal prompt for the passphrase
// of an encrypted key (SSL_CTX_get_default_passwd_cb returns that callback). Clears OpenSSL's
// error queue first. INTERNAL only when OpenSSL cannot make one (out of memory).
Result<SslCtxPtr> new_tls_context(const ssl_method_st* method);

// The reason of OpenSSL's most recent error on this thread ("unknown OpenSSL error" when there
// is none), for a message; the error queue is empty afterwards.
std::string openssl_reason();

}  // namespace sessiond
