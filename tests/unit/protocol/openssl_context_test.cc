// The OpenSSL context settings and error text that the node's and the client's TLS share.
#include "protocol/openssl_context.h"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

namespace sessiond {
namespace {

TEST(NewTlsContext, SetsWhatBothEndsShare) {
  for (const SSL_METHOD* method : {TLS_server_method(), TLS_client_method()}) {
    auto ctx = new_tls_context(method);
    ASSERT_TRUE(ctx.ok()) << ctx.status().ToString();
    EXPECT_EQ(SSL_CTX_get_min_proto_version(ctx->get()), TLS1_2_VERSION);
    const auto options = SSL_CTX_get_options(ctx->get());
    EXPECT_NE(options & SSL_OP_NO_RENEGOTIATION, 0u);
    EXPECT_NE(options & SSL_OP_NO_COMPRESSION, 0u);
    // The passphrase callback refuses: an encrypted key fails instead of prompting.
    pem_password_cb* callback = SSL_CTX_get_default_passwd_cb(ctx->get());
    ASSERT_NE(callback, nullptr);
    char buffer[16];
    EXPECT_EQ(callback(buffer, sizeof buffer, 0, nullptr), 0);
  }
}

TEST(NewTlsContext, StartsWithAnEmptyErrorQueue) {
  ERR_put_error(ERR_LIB_SSL, 0, SSL_R_BAD_LENGTH, __FILE__, __LINE__);
  auto ctx = new_tls_context(TLS_client_method());
  ASSERT_TRUE(ctx.ok());
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST(OpensslReason, SaysWhyAndEmptiesTheQueue) {
  ERR_clear_error();
  EXPECT_EQ(openssl_reason(), "unknown OpenSSL error");
  auto ctx = new_tls_context(TLS_server_method());
  ASSERT_TRUE(ctx.ok());
  EXPECT_NE(SSL_CTX_use_certificate_chain_file(ctx->get(), "/nonexistent/node.crt"), 1);
  const std::string reason = openssl_reason();
  EXPECT_NE(reason, "unknown OpenSSL error");
  EXPECT_FALSE(reason.empty());
  EXPECT_EQ(ERR_peek_error(), 0u);
}

}  // namespace
}  // namespace sessiond
