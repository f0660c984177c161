// The client's connections to one node (internal): a pool of pipelined TCP connections driven
// by the client's I/O thread (io_thread.h), with per-call deadlines and reconnection (see
// retry_policy.h). The router (router.h) keeps one Transport per node address.
//
// A Call carries an already serialized request body; the transport frames it, sends it on the
// least busy connection, matches the response by request id and hands back a Reply: OK and the
// response body, or the status of the ErrorResponse, or UNAVAILABLE for a lost connection or a
// missed deadline. Asio stays inside transport.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "protocol/frame.h"
#include "protocol/status.h"
#include "sessiond/client.h"

namespace asio {
class io_context;
}

namespace sessiond::client_detail {

class Connection;

// What became of a call.
struct Reply {
  // OK, the status the node answered, or UNAVAILABLE from the transport itself.
  Status status;
  std::span<const std::uint8_t> body;  // the response body, with OK
  // The response carried protocol::kFlagNewerEpoch: the node knows a newer topology.
  bool newer_epoch = false;
  // The response carried protocol::kFlagPossiblyStale: a replica answered.
  bool possibly_stale = false;
  // The node never answered: the transport gave up on the call after its connection failed
  // (or never opened). Not set for an UNAVAILABLE the node answered, nor for a deadline.
  bool connection_failed = false;
  bool sent = false;  // the request was written to a socket (the node may have seen it)
  // With WRONG_NODE: ErrorResponse.wrong_node (the owner's address, the answer's epoch).
  std::string owner_address;
  std::uint64_t owner_epoch = 0;
  // With UNAVAILABLE: ErrorResponse.retry_after_ms (the node did not run it; send it again).
  std::uint32_t retry_after_ms = 0;
};

struct Call {
  using Done = std::function<void(const Reply&)>;

  protocol::Opcode opcode = protocol::Opcode::kPing;
  // The serialized request message: `body`, or the bytes `borrowed_body` points to when it is
  // not empty (they must stay put while the call is unfinished: the router's copy), followed by
  // `body_tail` (the router's epoch field).
  std::string body;
  std::string_view borrowed_body;
  std::string body_tail;
  bool idempotent = false;
  std::chrono::milliseconds timeout{0};  // what `deadline` was computed from (for messages)
  std::chrono::steady_clock::time_point deadline;
  Done done;  // runs once, on the I/O thread
  // A call routed in a cluster: when the node cannot be connected to, the call fails at once
  // (connection_failed) and the router decides (a replica, a failover) rather than this
  // transport reconnecting to the same node until the deadline.
  bool fail_fast = false;

  // Owned by the transport (I/O thread only).
  bool finished = false;
  bool sent = false;  // written to some socket at least once
  int attempts = 0;
  std::uint32_t request_id = 0;
  Connection* connection = nullptr;

  std::size_t body_size() const {
    return (borrowed_body.empty() ? body.size() : borrowed_body.size()) + body_tail.size();
  }
  void append_body(std::string* out) const {
    out->append(borrowed_body.empty() ? std::string_view(body) : borrowed_body);
    out->append(body_tail);
  }
};

// Every method runs on the I/O thread of `io`.
class Transport {
 public:
  // A pool of options.pool_size connections to `address` (HOST:PORT), opened lazily.
  Transport(asio::io_context& io, const Client::Options& options, std::string address);
  // Closes the sockets; shutdown() must have run (the I/O thread may have stopped since).
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Sends the call. call->deadline must be set.
  void start(std::shared_ptr<Call> call);
  // Fails every outstanding call with UNAVAILABLE (running its callback) and closes the
  // connections; later calls fail at once.
  void shutdown();
  const std::string& address() const;

  class State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace sessiond::client_detail
