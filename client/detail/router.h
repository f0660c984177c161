// The client's router (internal): picks the node for each call by the client's copy of the
// region's topology, keeps one Transport per node address, and retries once where DESIGN §6
// says so. Everything here runs on the client's I/O thread (io_thread.h): no locks.
//
// Routing (docs/protocol.md, "Routing"):
// - Node-local calls (PING, STATS) go to the first seed.
// - Keyed calls go to the ring owner of the session id; calls without a key the client can
//   hash (CREATE, LIST_USER, REVOKE_USER) go round-robin to any node. Both carry the epoch of
//   the topology they were routed by. Without a cluster (no topology yet, or epoch 0) every
//   call goes to the seed that last answered TOPOLOGY (the first seed until one has), with
//   epoch 0, exactly as a single-node client.
// - WRONG_NODE: retried at the owner the answer names (same request bytes but the epoch), up to
//   kMaxWrongNodeFollows times while ownership moves. One whose answer names an older epoch than
//   the call was routed by comes from a node that lags behind the topology: the same node is
//   asked again after kLaggingNodePauseMs, within the deadline.
// - A connection that failed (the node never answered): the topology is refreshed and the call
//   retried once on the owner by it, if resending it is safe: not sent yet, idempotent, or
//   carrying a request id (CREATE, REGENERATE; only when routing by a cluster).
// - Topology refreshes run in the background, one at a time: after WRONG_NODE, a failed
//   connection, or an answer flagged protocol::kFlagNewerEpoch.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "detail/io_thread.h"
#include "detail/routing.h"
#include "detail/transport.h"

namespace sessiond::client_detail {

struct RoutedCall;

// One attempt of a RoutedCall at one node: the transport's Call plus what the router needs when
// its reply comes.
struct Attempt : Call {
  RoutedCall* routed = nullptr;
  std::shared_ptr<RoutedCall> keep;  // holds `routed`, except for its first attempt (see below)
  Transport* via = nullptr;
  std::uint64_t epoch = 0;  // of the topology it was routed by
};

// One logical call, across the attempts the router makes for it.
struct RoutedCall : std::enable_shared_from_this<RoutedCall> {
  enum class Route {
    kSeed,   // node-local (PING, STATS): the first seed
    kAny,    // any node; the one that does not own the key answers WRONG_NODE
    kOwner,  // the ring owner of route_key
  };
  // `possibly_stale`: a replica answered (a read while the owner was down).
  using Done = std::function<void(Status, std::span<const std::uint8_t> body, bool possibly_stale)>;

  protocol::Opcode opcode = protocol::Opcode::kPing;
  std::string body;  // serialized request without its epoch (routing.h, with_epoch)
  bool idempotent = false;
  bool has_request_id = false;  // a resend is answered, not executed twice
  Route route = Route::kSeed;
  // With kOwner: the session's route key, the first 8 bytes of its raw id (all that routing
  // reads, cluster::ring_position; short enough to need no allocation).
  std::string route_key;
  // A plain read (GET): while the owner is down or its range has no writer, it may go to a
  // replica, which answers flagged possibly stale.
  bool may_read_replica = false;
  std::chrono::milliseconds timeout{0};
  std::chrono::steady_clock::time_point deadline;  // covers every attempt
  Done done;                                       // runs once, on the I/O thread

  virtual ~RoutedCall() = default;
  // What becomes of the call, once, on the I/O thread: runs `done`. A subclass may answer in
  // its own way instead (the client's typed calls, which so need no `done` allocated).
  virtual void complete(Status status, std::span<const std::uint8_t> answer, bool possibly_stale) {
    auto run = std::move(done);
    done = nullptr;
    if (run) run(std::move(status), answer, possibly_stale);
  }

  // The router's (I/O thread only).
  bool finished = false;
  int wrong_node_follows = 0;
  bool rerouted_after_failure = false;
  bool reading_replica = false;  // the attempt under way goes to a replica
  // The first attempt lives here, handed to the transport through a shared_ptr that shares
  // this call's ownership (one allocation per call instead of two); later attempts are
  // allocated, since the transport may still hold an earlier one. It borrows `body`, which does
  // not change once the call is dispatched.
  Attempt first_attempt;
  bool first_attempt_used = false;
};

class Router {
 public:
  static constexpr int kMaxWrongNodeFollows = 3;
  // How long a call waits before asking again a node that answered WRONG_NODE by an older
  // topology than the call was routed by.
  static constexpr int kLaggingNodePauseMs = 20;
  Router(IoThread& io, const Client::Options& options);
  // The transports are destroyed with it: shutdown() must have run.
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Sends the call where it belongs (see the top of the file).
  void dispatch(std::shared_ptr<RoutedCall> call);
  // The topology the router routes by, fetched first when it has none yet or when `refresh`.
  void topology(bool refresh, std::function<void(Result<Topology>)> done);
  // Fails every outstanding call with UNAVAILABLE (running its callback); later calls fail at
  // once.
  void shutdown();

 private:
  // Where the call goes now: address and epoch (advances the round-robin for Route::kAny).
  struct Target {
    std::string address;
    std::uint64_t epoch = 0;
    bool replica = false;  // a read sent to a replica (RoutedCall::may_read_replica)
  };
  Target target(const RoutedCall& call);
  void route(const std::shared_ptr<RoutedCall>& call);
  void send(const std::shared_ptr<RoutedCall>& call, const std::string& address,
            std::uint64_t epoch);
  void on_reply(const std::shared_ptr<RoutedCall>& call, Transport* transport, std::uint64_t epoch,
                const Reply& reply);
  bool may_reroute(const RoutedCall& call, const Reply& reply) const;
  // Waits for the topology refresh (started here if none runs), then routes the call again;
  // fails it with `why` if its deadline comes first, or if the refreshed topology sends a call
  // that never reached `failed` (`sent` false: the transport ran out of connect attempts there)
  // back to it under the same epoch.
  void reroute_after_refresh(const std::shared_ptr<RoutedCall>& call, const std::string& failed,
                             bool sent, Status why);
  void finish(RoutedCall& call, Status status, std::span<const std::uint8_t> body = {},
              bool possibly_stale = false);
  bool routing() const { return table_ && table_->routes(); }
  Transport& transport_for(const std::string& address);

  // Starts a TOPOLOGY fetch unless one is in flight; `avoid` (a node whose connection just
  // failed) is asked last.
  void refresh(const std::string& avoid = {});
  void fetch(std::shared_ptr<std::vector<std::string>> candidates, std::size_t next,
             std::shared_ptr<std::string> errors);
  void refreshed(std::optional<RoutingTable> table, const std::string& source, Status error);

  IoThread& io_;
  const Client::Options& options_;
  const std::vector<std::string> seeds_;
  // Where calls go while there is no cluster to route by: the node that last answered
  // TOPOLOGY, the first seed until one has.
  std::string home_;
  std::unordered_map<std::string, std::unique_ptr<Transport>> transports_;  // by address
  std::optional<RoutingTable> table_;
  std::string table_source_;  // the node that answered table_
  std::size_t next_any_ = 0;  // round-robin position for Route::kAny

  bool fetch_started_ = false;                        // the first routed call fetches the topology
  bool refreshing_ = false;                           // a TOPOLOGY fetch is in flight (at most one)
  Status refresh_error_;                              // why the last fetch found no topology
  std::vector<std::function<void()>> after_refresh_;  // run when the fetch in flight ends
  bool closed_ = false;
};

}  // namespace sessiond::client_detail
