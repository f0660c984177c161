// The router (router.h). A call's life: dispatch() -> route() picks the address and epoch ->
// send() wraps one attempt in a transport Call -> on_reply() finishes the call, or sends it
// once more (to the owner a WRONG_NODE named, or, after a failed connection, wherever the
// refreshed topology says) within the call's one deadline.
//
// Topology fetches ask one candidate at a time (the node that answered last, the seeds, the
// nodes of the current topology; a node whose connection just failed last) until one answers.
// An answer older than the topology in hand is ignored, so a lagging node cannot move the
// client back.
//
// Whatever a transport callback decides to send (a retry, a fetch, the calls waiting for it) is
// posted to the I/O thread rather than started from inside the callback: a transport runs
// callbacks in the middle of tearing down a failed connection, and must not be handed a new
// call there.
#include "detail/router.h"

#include <algorithm>
#include <asio.hpp>
#include <utility>

namespace sessiond::client_detail {
namespace {

using Clock = std::chrono::steady_clock;
using Route = RoutedCall::Route;

std::string op_name(protocol::Opcode opcode) { return std::string(protocol::opcode_name(opcode)); }

}  // namespace

Router::Router(IoThread& io, const Client::Options& options)
    : io_(io), options_(options), seeds_(seed_addresses(options)), home_(seeds_.front()) {}

Router::~Router() = default;

void Router::dispatch(std::shared_ptr<RoutedCall> call) {
  if (call->route != Route::kSeed && !fetch_started_ && !closed_) {
    // Lazily, and in the background: until the answer arrives calls go to the seed, whose
    // WRONG_NODE answers (if it has a cluster) point them on.
    fetch_started_ = true;
    refresh();
  }
  route(call);
}

Router::Target Router::target(const RoutedCall& call) {
  switch (call.route) {
    case Route::kSeed:
      return {seeds_.front(), 0};
    case Route::kOwner:
      if (routing()) {
        std::string owner = table_->owner_of(call.route_key);
        if (owner.empty() && call.may_read_replica) {
          // No writer for its range (its owner is down with no in-sync replica): a replica.
          return {table_->replica_of(call.route_key), table_->epoch, true};
        }
        return {std::move(owner), table_->epoch};
      }
      break;
    case Route::kAny:
      if (routing()) {
        // Round-robin over the nodes that own part of the ring (a drained node owns nothing).
        const auto& nodes = table_->nodes;
        for (std::size_t i = 0; i < nodes.size(); ++i) {
          const auto& node = nodes[next_any_++ % nodes.size()];
          if (node.weight > 0) return {node.address, table_->epoch};
        }
      }
      break;
  }
  return {home_, 0};
}

void Router::route(const std::shared_ptr<RoutedCall>& call) {
  const Target to = target(*call);
  if (to.address.empty()) {
    // No node takes writes for the key's range now (its owner is down and none of its
    // replicas was in sync): ask again a little later, within the deadline.
    const auto pause = std::chrono::milliseconds(250);
    if (Clock::now() + pause >= call->deadline) {
      finish(*call, Status::Unavailable("no node takes writes for this session's range now: its "
                                        "owner is down and no replica was in sync with it "
                                        "(docs/cluster.md, \"Replicas and failover\")"));
      return;
    }
    refresh();
    auto timer = std::make_shared<asio::steady_timer>(io_.context(), pause);
    timer->async_wait([this, call, timer](const std::error_code& ec) {
      if (!ec && !call->finished) route(call);
    });
    return;
  }
  call->reading_replica = to.replica;
  send(call, to.address, to.epoch);
}

void Router::send(const std::shared_ptr<RoutedCall>& call, const std::string& address,
                  std::uint64_t epoch) {
  if (closed_) {
    finish(*call, Status::Unavailable("the client was destroyed before " + op_name(call->opcode) +
                                      " was answered"));
    return;
  }
  Transport& transport = transport_for(address);
  std::shared_ptr<Call> handle;
  Attempt* attempt = nullptr;
  if (!call->first_attempt_used) {
    call->first_attempt_used = true;
    attempt = &call->first_attempt;
    handle = std::shared_ptr<Call>(call, attempt);
  } else {
    auto allocated = std::make_shared<Attempt>();
    allocated->keep = call;
    attempt = allocated.get();
    handle = std::move(allocated);
  }
  attempt->opcode = call->opcode;
  attempt->borrowed_body = call->body;
  // GetRequest.from_replica (field 5, true), before the epoch (field 15).
  attempt->body_tail = call->reading_replica ? std::string("\x28\x01", 2) : std::string();
  attempt->body_tail += epoch_field(epoch);
  attempt->idempotent = call->idempotent;
  attempt->fail_fast = routing() && call->route != Route::kSeed;
  attempt->timeout = call->timeout;
  attempt->deadline = call->deadline;
  attempt->routed = call.get();
  attempt->via = &transport;
  attempt->epoch = epoch;
  // Small enough for std::function to hold without an allocation. The transport holds the
  // attempt (and so the call) while it runs this.
  attempt->done = [this, attempt](const Reply& reply) {
    on_reply(attempt->routed->shared_from_this(), attempt->via, attempt->epoch, reply);
  };
  transport.start(std::move(handle));
}

void Router::on_reply(const std::shared_ptr<RoutedCall>& call, Transport* transport,
                      std::uint64_t epoch, const Reply& reply) {
  if (call->finished) return;
  const bool wrong_node = reply.status.code() == StatusCode::kWrongNode;
  if (reply.newer_epoch || wrong_node) {
    // Decided when it runs, against the topology in hand then: a refresh may have ended since.
    io_.post([this, epoch, flagged = reply.newer_epoch, wrong_node, owner_epoch = reply.owner_epoch,
              keyed = call->route == Route::kOwner] {
      if (!table_) {
        refresh();
        return;
      }
      // A flag on the answer to a request routed by an older topology than the one in hand
      // says nothing new. A keyed call routed by the current topology that went astray means
      // it is out of date; a CREATE or LIST_USER sent to any node is expected to be pointed
      // on, and only a newer epoch in the answer says the topology moved.
      const bool current = epoch >= table_->epoch;
      if ((flagged && current) ||
          (wrong_node && (owner_epoch > table_->epoch || (keyed && current)))) {
        refresh();
      }
    });
  }
  if (wrong_node) {
    if (reply.owner_epoch != 0 && reply.owner_epoch < epoch) {
      // The node answered by an older topology than the call was routed by: it has not seen
      // the newest one yet (its watch lags behind etcd). Following it back to the owner by its
      // topology would go round in circles; the same node again a moment later, once it has.
      const auto pause = std::chrono::milliseconds(kLaggingNodePauseMs);
      if (Clock::now() + pause < call->deadline) {
        auto timer = std::make_shared<asio::steady_timer>(io_.context(), pause);
        timer->async_wait(
            [this, call, timer, address = transport->address(), epoch](const std::error_code& ec) {
              if (!ec && !call->finished) send(call, address, epoch);
            });
        return;
      }
      finish(*call, reply.status);
      return;
    }
    // Followed a few times: while ownership moves (a handover, a failover, a rejoin) a node
    // that has not seen the newest topology yet may point at the previous owner.
    if (call->wrong_node_follows < kMaxWrongNodeFollows && !reply.owner_address.empty() &&
        reply.owner_address != transport->address() && Clock::now() < call->deadline) {
      ++call->wrong_node_follows;
      io_.post([this, call, owner = reply.owner_address, owner_epoch = reply.owner_epoch] {
        send(call, owner, owner_epoch);
      });
      return;
    }
    const auto pause = std::chrono::milliseconds(50);
    if (routing() && Clock::now() + pause < call->deadline) {
      // The nodes disagree for now (some have not seen the newest topology): route again by
      // the refreshed topology a moment later, within the deadline.
      call->wrong_node_follows = 0;
      auto timer = std::make_shared<asio::steady_timer>(io_.context(), pause);
      timer->async_wait([this, call, timer](const std::error_code& ec) {
        if (!ec && !call->finished) route(call);
      });
      return;
    }
    finish(*call, reply.status);
    return;
  }
  if (reply.retry_after_ms > 0 &&
      Clock::now() + std::chrono::milliseconds(reply.retry_after_ms) < call->deadline) {
    // The node did not run it (a key at its handover): the same call again after the pause,
    // to whichever node owns the key then, as often as the deadline allows.
    auto timer = std::make_shared<asio::steady_timer>(
        io_.context(), std::chrono::milliseconds(reply.retry_after_ms));
    timer->async_wait([this, call, timer](const std::error_code& ec) {
      if (!ec && !call->finished) route(call);
    });
    return;
  }
  if (reply.connection_failed && may_reroute(*call, reply)) {
    call->rerouted_after_failure = true;
    io_.post([this, call, failed = transport->address(), sent = reply.sent, why = reply.status] {
      reroute_after_refresh(call, failed, sent, why);
    });
    return;
  }
  finish(*call, reply.status, reply.body, reply.possibly_stale);
}

bool Router::may_reroute(const RoutedCall& call, const Reply& reply) const {
  // A request that may have reached a node is sent elsewhere once; one that cannot have, as
  // often as the deadline allows (an owner that is down until its failover).
  if (closed_ || (call.rerouted_after_failure && reply.sent) || call.route == Route::kSeed) {
    return false;
  }
  if (Clock::now() >= call.deadline) return false;
  // A single node without a cluster: the transport's own retries were everything there is.
  if (!routing() && seeds_.size() < 2) return false;
  // Resending is safe when the node cannot have seen the request, when running it twice does
  // no harm, or when the node recognizes it by its request id (a cluster node does); a read
  // that may go to a replica changes nothing there.
  return !reply.sent || call.idempotent || (call.has_request_id && routing()) ||
         (call.may_read_replica && routing());
}

void Router::reroute_after_refresh(const std::shared_ptr<RoutedCall>& call,
                                   const std::string& failed, bool sent, Status why) {
  const std::uint64_t epoch_before = table_ ? table_->epoch : 0;
  // After the refresh: the owner by the (possibly new) topology, unless that is the node the
  // transport could not even connect to, unchanged (until an operator or a failover changes
  // the topology, a dead owner costs each call one round of connect attempts, not two).
  const auto resume = [this, call, failed, sent, why, epoch_before] {
    if (call->finished) return;
    Target to = target(*call);
    if (call->may_read_replica && to.address == failed && routing()) {
      // The owner does not answer and no failover has happened yet: its replica serves the
      // read, flagged possibly stale.
      if (std::string replica = table_->replica_of(call->route_key); !replica.empty()) {
        to = {std::move(replica), table_->epoch, true};
      }
    }
    if (!to.replica && !sent && to.address == failed &&
        (table_ ? table_->epoch : 0) == epoch_before) {
      // Still the node that does not answer: until its failover moves its ranges (its lease
      // running out), try again a little later, within the deadline.
      const auto pause = std::chrono::milliseconds(250);
      if (!routing() || Clock::now() + pause >= call->deadline) {
        finish(*call, why);
        return;
      }
      auto timer = std::make_shared<asio::steady_timer>(io_.context(), pause);
      timer->async_wait([this, call, timer, failed, sent, why](const std::error_code& ec) {
        if (!ec && !call->finished) reroute_after_refresh(call, failed, sent, why);
      });
      return;
    }
    call->reading_replica = to.replica;
    send(call, to.address, to.epoch);
  };
  refresh(failed);
  if (!refreshing_) {
    resume();
    return;
  }
  auto timer = std::make_shared<asio::steady_timer>(io_.context(), call->deadline);
  timer->async_wait([this, call, why](const std::error_code& ec) {
    if (ec) return;
    finish(*call, Status::Unavailable("no answer within " + std::to_string(call->timeout.count()) +
                                      " ms to " + op_name(call->opcode) + " (" + why.message() +
                                      "; the topology refresh did not end in time)"));
  });
  after_refresh_.push_back([timer, resume] {
    timer->cancel();
    resume();
  });
}

void Router::finish(RoutedCall& call, Status status, std::span<const std::uint8_t> body,
                    bool possibly_stale) {
  if (call.finished) return;
  call.finished = true;
  call.complete(std::move(status), body, possibly_stale);
}

Transport& Router::transport_for(const std::string& address) {
  auto& slot = transports_[address];
  if (!slot) slot = std::make_unique<Transport>(io_.context(), options_, address);
  return *slot;
}

// ---- topology ----------------------------------------------------------------------------

void Router::topology(bool refresh_first, std::function<void(Result<Topology>)> done) {
  const auto answer = [this, done] {
    if (!table_) {
      done(refresh_error_.ok() ? Status::Unavailable("no topology") : refresh_error_);
      return;
    }
    Topology topology = table_->to_public();
    topology.source = table_source_;
    done(std::move(topology));
  };
  if (closed_) {
    done(Status::Unavailable("the client is shutting down"));
    return;
  }
  if (table_ && !refresh_first && !refreshing_) {
    answer();
    return;
  }
  fetch_started_ = true;
  after_refresh_.push_back(answer);
  refresh();
}

void Router::refresh(const std::string& avoid) {
  if (refreshing_ || closed_) return;
  refreshing_ = true;
  auto candidates = std::make_shared<std::vector<std::string>>();
  const auto add = [&](const std::string& address) {
    if (!address.empty() &&
        std::find(candidates->begin(), candidates->end(), address) == candidates->end()) {
      candidates->push_back(address);
    }
  };
  add(table_source_);
  for (const auto& seed : seeds_) add(seed);
  if (table_) {
    for (const auto& node : table_->nodes) add(node.address);
  }
  auto failed = std::find(candidates->begin(), candidates->end(), avoid);
  if (failed != candidates->end()) std::rotate(failed, failed + 1, candidates->end());
  fetch(std::move(candidates), 0, std::make_shared<std::string>());
}

void Router::fetch(std::shared_ptr<std::vector<std::string>> candidates, std::size_t next,
                   std::shared_ptr<std::string> errors) {
  if (closed_) {
    refreshed(std::nullopt, {}, Status::Unavailable("the client is shutting down"));
    return;
  }
  if (next == candidates->size()) {
    refreshed(std::nullopt, {}, Status::Unavailable("no node answered TOPOLOGY: " + *errors));
    return;
  }
  const std::string& address = (*candidates)[next];
  auto attempt = std::make_shared<Call>();
  attempt->opcode = protocol::Opcode::kTopology;
  attempt->idempotent = true;
  // With other candidates to ask, one that cannot be connected to is passed over at once.
  attempt->fail_fast = candidates->size() > next + 1;
  attempt->timeout = options_.timeout;
  attempt->deadline = Clock::now() + options_.timeout;
  attempt->done = [this, candidates, next, errors](const Reply& reply) {
    const std::string& from = (*candidates)[next];
    Status status = reply.status;
    if (status.ok()) {
      wire::TopologyResponse response;
      if (response.ParseFromArray(reply.body.data(), static_cast<int>(reply.body.size()))) {
        io_.post([this, table = RoutingTable::from_wire(response), from]() mutable {
          refreshed(std::move(table), from, Status());
        });
        return;
      }
      status = Status::Internal("the answer to TOPOLOGY does not parse");
    }
    if (!errors->empty()) *errors += "; ";
    *errors += from + ": " + status.ToString();
    io_.post([this, candidates, next, errors] { fetch(candidates, next + 1, errors); });
  };
  transport_for(address).start(std::move(attempt));
}

void Router::refreshed(std::optional<RoutingTable> table, const std::string& source, Status error) {
  refreshing_ = false;
  if (table) {
    refresh_error_ = Status();
    // Never back to an older topology (a node that lags), nor from a cluster to "no cluster"
    // (epoch 0: a node that has not joined yet).
    if (!table_ || table->epoch >= table_->epoch) {
      table_ = std::move(table);
      table_source_ = source;
    }
    if (!routing()) home_ = source;
  } else {
    refresh_error_ = std::move(error);
  }
  auto waiting = std::move(after_refresh_);
  after_refresh_.clear();
  for (auto& resume : waiting) resume();
}

void Router::shutdown() {
  closed_ = true;
  // Failing a transport's calls runs their callbacks, which may resume calls waiting for a
  // refresh; closed_ makes those fail instead of creating transports, so the map is stable.
  for (auto& [address, transport] : transports_) transport->shutdown();
}

}  // namespace sessiond::client_detail
