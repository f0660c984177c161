// TLS for the client's connections (internal): the OpenSSL client context built from
// ClientTlsOptions, and the words that explain a failed handshake. OpenSSL only; transport.cc
// wraps the context for asio.
#pragma once

#include <string>
#include <system_error>

#include "protocol/openssl_context.h"
#include "protocol/status.h"
#include "sessiond/client.h"

struct ssl_st;  // OpenSSL's SSL

namespace sessiond::client_detail {

// A client context: TLS 1.2 at least, the node's certificate verified against
// options.ca_file (or the system store), options' certificate and key loaded when given.
// INVALID_ARGUMENT naming the file that cannot be read or used.
Result<SslCtxPtr> make_client_context(const ClientTlsOptions& options);

// Prepares a connection's SSL object: SNI (when `server_name` is a DNS name) and the name or
// IP address the node's certificate must carry. INVALID_ARGUMENT if OpenSSL refuses the name.
Status prepare_client_connection(ssl_st* ssl, const std::string& server_name);

// Why a handshake (or the first read after it, where TLS 1.3 reports a refused client
// certificate) failed, for a message: the certificate check that failed, the node's alert, or
// a hint that the node does not speak TLS.
std::string tls_failure_reason(ssl_st* ssl, const std::error_code& error);

}  // namespace sessiond::client_detail
