#include "detail/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <string_view>

#include "protocol/readable_file.h"

namespace sessiond::client_detail {
namespace {

bool is_ip_address(const std::string& text) {
  ASN1_OCTET_STRING* parsed = a2i_IPADDRESS(text.c_str());
  if (parsed == nullptr) return false;
  ASN1_OCTET_STRING_free(parsed);
  return true;
}

}  // namespace

Result<SslCtxPtr> make_client_context(const ClientTlsOptions& options) {
  auto made = new_tls_context(TLS_client_method());
  if (!made.ok()) return made.status();
  SslCtxPtr ctx = std::move(made).value();
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (options.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
      return Status::InvalidArgument("TLS: cannot load the system's trusted CAs: " +
                                     openssl_reason());
    }
  } else {
    if (Status s = check_readable(options.ca_file, "TLS ca_file"); !s.ok()) return s;
    if (SSL_CTX_load_verify_locations(ctx.get(), options.ca_file.c_str(), nullptr) != 1) {
      return Status::InvalidArgument("TLS: ca_file " + options.ca_file +
                                     " holds no usable PEM certificate: " + openssl_reason());
    }
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return Status::InvalidArgument(
        "TLS: cert_file and key_file go together (mutual TLS needs both, or neither)");
  }
  if (options.cert_file.empty()) return ctx;
  if (Status s = check_readable(options.cert_file, "TLS cert_file"); !s.ok()) return s;
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), options.cert_file.c_str()) != 1) {
    return Status::InvalidArgument("TLS: cert_file " + options.cert_file +
                                   " is not a usable PEM certificate: " + openssl_reason());
  }
  if (Status s = check_readable(options.key_file, "TLS key_file"); !s.ok()) return s;
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return Status::InvalidArgument("TLS: key_file " + options.key_file +
                                   " is not an unencrypted PEM key of cert_file " +
                                   options.cert_file + ": " + openssl_reason());
  }
  return ctx;
}

Status prepare_client_connection(ssl_st* ssl, const std::string& server_name) {
  ERR_clear_error();
  bool ok = true;
  if (is_ip_address(server_name)) {
    ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name.c_str()) == 1;
  } else {
    // SNI lets a node behind a name pick its certificate; the name is also what is verified.
    // SSL_set_tlsext_host_name, without the macro's C-style cast.
    ok = SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                  const_cast<char*>(server_name.c_str())) == 1 &&
         SSL_set1_host(ssl, server_name.c_str()) == 1;
  }
  if (!ok) {
    return Status::InvalidArgument("TLS: cannot verify the node as '" + server_name +
                                   "': " + openssl_reason());
  }
  return {};
}

std::string tls_failure_reason(ssl_st* ssl, const std::error_code& error) {
  const long verify = ssl != nullptr ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (verify != X509_V_OK) {
    return std::string("the node's certificate was not accepted: ") +
           X509_verify_cert_error_string(verify);
  }
  // asio reports OpenSSL's errors in its "asio.ssl" category with OpenSSL's code as the value.
  const std::string_view category = error.category().name();
  if (category == "asio.ssl") {
    const int reason = ERR_GET_REASON(static_cast<unsigned long>(error.value()));
    if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG) {
      return error.message() + " (does the node serve TLS on this port?)";
    }
    return error.message();
  }
  if (category == "asio.ssl.stream" || error.value() == 0) {
    return "the node closed the connection (" + error.message() + ")";
  }
  return error.message();
}

}  // namespace sessiond::client_detail
