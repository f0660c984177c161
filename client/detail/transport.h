// The client's connections to one node (internal): a pool of pipelined TCP connections driven
// by one I/O thread, with per-call deadlines and reconnection (see retry_policy.h).
//
// A Call carries an already serialized request body; the transport frames it, sends it on the
// least busy connection, matches the response by request id and hands back either OK and the
// response body, or the status of the ErrorResponse (or UNAVAILABLE for a lost connection or a
// missed deadline). Asio stays inside transport.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "protocol/frame.h"
#include "protocol/status.h"
#include "sessiond/client.h"

namespace sessiond::client_detail {

class Connection;

struct Call {
  using Done = std::function<void(Status, std::span<const std::uint8_t> body)>;

  protocol::Opcode opcode = protocol::Opcode::kPing;
  std::string body;  // serialized request message
  bool idempotent = false;
  std::chrono::milliseconds timeout{0};  // what `deadline` was computed from (for messages)
  std::chrono::steady_clock::time_point deadline;
  Done done;  // runs once, on the I/O thread

  // Owned by the transport (I/O thread only).
  bool finished = false;
  bool sent = false;  // written to some socket at least once
  int attempts = 0;
  std::uint32_t request_id = 0;
  Connection* connection = nullptr;
};

class Transport {
 public:
  explicit Transport(const Client::Options& options);
  // Fails every outstanding call with UNAVAILABLE (running its callback), then stops the thread.
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Sends the call; thread-safe. call->deadline must be set.
  void submit(std::shared_ptr<Call> call);
  // Runs `fn` on the I/O thread; thread-safe.
  void post(std::function<void()> fn);
  // True on the I/O thread (where callbacks run).
  bool on_io_thread() const;

  class State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace sessiond::client_detail
