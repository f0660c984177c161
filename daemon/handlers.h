// Handlers: turn one request frame into one response frame, by calling the engine. No sockets
// here (the server owns those), so the mapping between the wire and the engine can be read and
// tested on its own.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>

#include "daemon/auth.h"
#include "protocol/frame.h"
#include "protocol/status.h"
#include "storage/session_table.h"
#include "storage/store.h"

namespace sessiond::daemon {

// Node-wide counters, shared by all connections.
struct Counters {
  std::atomic<std::uint64_t> connections{0};          // open now (both listeners)
  std::atomic<std::uint64_t> resp_connections{0};     // of which on the RESP listener
  std::atomic<std::uint64_t> connections_refused{0};  // over --max-connections
  std::atomic<std::uint64_t> protocol_errors{0};      // bad frames and bodies
  std::atomic<std::uint64_t> timeouts{0};             // connections closed by the watchdog
  std::atomic<std::uint64_t> tls_handshake_failures{0};  // TLS connections that never got going
};

class Handlers {
 public:
  // `store` may be null (tests). `address` is what TOPOLOGY reports for this node.
  Handlers(storage::SessionTable& table, storage::Store* store, Counters& counters,
           std::string address, std::uint32_t max_body, AuthConfig auth = {});

  // Handles one well-framed request and appends exactly one response frame to *out. `role` is
  // the connection's (start it at auth().initial_role()); AUTH changes it, and a request its
  // role may not send answers UNAUTHENTICATED (no role yet) or FORBIDDEN. Thread-safe.
  void handle(const protocol::FrameHeader& request, std::span<const std::uint8_t> body, Role* role,
              std::string* out);

  struct Request {
    protocol::FrameHeader header;
    std::span<const std::uint8_t> body;
  };
  // Handles consecutive CREATE requests (a pipelining client's) with one RocksDB write for
  // all of them; appends their responses in order, exactly as handle() would one by one.
  void handle_creates(std::span<const Request> creates, Role* role, std::string* out);
  const AuthConfig& auth() const { return auth_; }
  // --context-mismatch-policy destroy: a GET whose context does not match the session's bound
  // one also destroys the session (the answer is still CONTEXT_MISMATCH). Set before serving.
  void set_destroy_on_context_mismatch(bool destroy) { destroy_on_mismatch_ = destroy; }
  // What TOPOLOGY reports as this node's address; set once the listener is bound, before any
  // request is handled.
  void set_address(std::string address) { address_ = std::move(address); }
  // Appends an error response to `request` (its id and opcode) with an ErrorResponse body.
  void append_error(const protocol::FrameHeader& request, const Status& status, std::string* out);

 private:
  // Appends `response` as the OK answer to `request` (TOO_LARGE if it cannot fit a frame).
  void append_ok(const protocol::FrameHeader& request,
                 const google::protobuf::MessageLite& response, std::string* out);
  storage::SessionTable& table_;
  storage::Store* store_;
  Counters& counters_;
  std::string address_;
  std::uint32_t max_body_;
  AuthConfig auth_;
  bool destroy_on_mismatch_ = false;
};

}  // namespace sessiond::daemon
