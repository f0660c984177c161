// Ships this node's replication log to one peer (DESIGN §6, §7): to a replica of ranges this
// node owns today, to a peer region later. From the peer's cursor (Store::log_cursor, kept in
// `meta` under "ship/PEER") it reads the log, keeps the entries the target wants, resolves each
// put to the session's current state (SessionTable::state_of: the merge is state-based, so the
// current state stands for every put before it), and sends them in REPLICATE batches over one
// connection. The cursor advances only when the peer answers that it applied a batch.
//
// A peer that starts to hold ranges it did not (a new replica after a membership change or a
// failover, or any peer after this node restarts) is resynced: a snapshot of what the target
// wants, read from memory (SessionTable::export_states), goes first, and the log resumes where
// the snapshot began.
//
// In sync: caught up with the log within `in_sync_lag`, and no snapshot pending. The owner
// waits for its in-sync replicas before it acknowledges a terminal write (daemon/replicas.h).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "protocol/status.h"
#include "storage/mutation.h"

namespace sessiond::storage {
class SessionTable;
class Store;
}  // namespace sessiond::storage

namespace sessiond::wire {
class ReplicateRequest;
}

namespace sessiond::replication {

class PeerLink;

class Shipper {
 public:
  struct Options {
    std::string self;         // this node's id, sent with every batch
    std::string peer;         // the peer's node id: names the cursor
    std::string peer_secret;  // AUTH as peer when the region has secrets
    std::size_t batch_entries = 512;
    // Out of sync once the peer has not been caught up with the log for this long.
    std::chrono::milliseconds in_sync_lag{2000};
    std::function<void(bool warning, const std::string&)> log;
  };
  // What goes to the peer and where it listens; replaced when the topology changes.
  struct Target {
    std::string address;
    std::uint64_t epoch = 0;  // the topology epoch `wanted` was computed under
    std::function<bool(const storage::Mutation&)> wanted;
  };

  Shipper(storage::SessionTable& table, storage::Store& store, Options options);
  // Stops the thread; the cursor stays in `meta`.
  ~Shipper();
  // The same, before the shipper is destroyed (others may still hold it: what `wanted`
  // captured may go first).
  void stop();
  Shipper(const Shipper&) = delete;
  Shipper& operator=(const Shipper&) = delete;

  // Sets what to ship and where (and starts the thread the first time). With `resync` the
  // peer is out of sync until a snapshot of what `wanted` selects has been applied there.
  void retarget(Target target, bool resync);
  // Wakes the thread: something was logged. Cheap; called for every mutation.
  void wake();

  const std::string& peer() const { return options_.peer; }
  // Every entry up to this sequence that the peer wants is applied there.
  std::uint64_t acked() const { return acked_.load(std::memory_order_acquire); }
  bool in_sync() const;
  // Entries logged but not yet acknowledged.
  std::uint64_t lag_entries() const;

 private:
  void loop();
  Status snapshot(PeerLink& link, const Target& target, std::uint64_t generation);
  // Ships one batch from the cursor: true when it sent or skipped something.
  Result<bool> ship_batch(PeerLink& link, const Target& target);
  Status send(PeerLink& link, const wire::ReplicateRequest& request);
  Status advance(std::uint64_t next);  // cursor, acked, caught-up time
  void wait_for_work(std::chrono::milliseconds at_most);

  storage::SessionTable& table_;
  storage::Store& store_;
  const Options options_;
  const std::string cursor_name_;

  mutable std::mutex mu_;  // guards target_, generation_, resync_, woken_
  std::condition_variable cv_;
  Target target_;
  std::uint64_t generation_ = 0;  // bumped by retarget()
  bool resync_ = true;            // a snapshot first, until one was sent for this generation
  bool woken_ = false;

  std::atomic<std::uint64_t> acked_{0};
  std::atomic<std::uint64_t> next_{1};         // the cursor: the first sequence not acknowledged
  std::atomic<std::int64_t> caught_up_ns_{0};  // steady time the peer was last caught up
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sessiond::replication
