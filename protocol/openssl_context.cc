#include "protocol/openssl_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace sessiond {
namespace {

// Never prompt on the terminal for the passphrase of an encrypted key: fail instead.
int no_passphrase(char*, int, int, void*) { return 0; }

}  // namespace

void SslCtxDeleter::operator()(ssl_ctx_st* ctx) const { SSL_CTX_free(ctx); }

Result<SslCtxPtr> new_tls_context(const ssl_method_st* method) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(method));
  if (!ctx) return Status::Internal("cannot create a TLS context: " + openssl_reason());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_default_passwd_cb(ctx.get(), no_passphrase);
  return ctx;
}

std::string openssl_reason() {
  unsigned long last = 0;
  while (const unsigned long e = ERR_get_error()) last = e;
  if (last == 0) return "unknown OpenSSL error";
  if (const char* reason = ERR_reason_error_string(last)) return reason;
  char text[256];
  ERR_error_string_n(last, text, sizeof text);
  return text;
}

}  // namespace sessiond
