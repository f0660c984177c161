// Ships this node's replication log to one peer (DESIGN §6, §7): to a replica of ranges this
// node owns today, to a peer region later. From the peer's cursor (Store::log_cursor, kept in
// `meta` under "ship/PEER") it reads the log, keeps the entries the target wants, resolves each
// put to the session's current state (SessionTable::state_of: the merge is state-based, so the
// current state stands for every put before it), and sends them in REPLICATE batches over one
// connection, several in flight (the peer answers in order). The cursor advances only when the
// peer answers that it applied a batch; it is written to `meta` at most every
// `cursor_persist_interval` (after a restart the shipper resends from the last one written,
// which the state-based merge makes harmless).
//
// A peer that starts to hold ranges it did not (a new replica after a membership change or a
// failover, or any peer after this node restarts) is resynced: a snapshot of what the target
// wants, read from memory (SessionTable::export_states), goes first, and the log resumes where
// the snapshot began.
//
// Anti-entropy (replication/digest.h), every `anti_entropy_interval`: the shipper sends the peer
// a DIGEST of what the target wants, merges the peer's states of the buckets that differ (what
// this node lost and the peer still has) and sends its own states of those buckets.
//
// In sync: caught up with the log within `in_sync_lag`, and no snapshot pending. The owner
// waits for its in-sync replicas before it acknowledges a terminal write (daemon/replicas.h).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "protocol/status.h"
#include "storage/mutation.h"
#include "storage/session_table.h"

namespace sessiond::storage {
class IdGenerator;
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
    std::string self;                           // this node's id, sent with every batch
    std::string peer;                           // the peer's node id: names the cursor
    std::string peer_secret;                    // AUTH as peer when the region has secrets
    const storage::IdGenerator* ids = nullptr;  // where a mutation lives on the ring (required)
    std::size_t batch_entries = 512;
    std::size_t max_in_flight = 4;  // batches sent and not yet answered
    std::chrono::milliseconds cursor_persist_interval{100};
    // Called on the shipper's thread whenever the peer confirmed more of the log (acked()
    // grew): what waits for it can look again.
    std::function<void()> on_acked;
    // Anti-entropy with the peer this often; zero: never.
    std::chrono::milliseconds anti_entropy_interval{0};
    // Out of sync once the peer has not been caught up with the log for this long.
    std::chrono::milliseconds in_sync_lag{2000};
    std::function<void(bool warning, const std::string&)> log;
  };
  // What goes to the peer and where it listens; replaced when the topology changes.
  struct Target {
    std::string address;
    std::uint64_t epoch = 0;  // the topology epoch `wanted` was computed under
    // By ring position (replication::position_of): whether the peer holds what lives there.
    std::function<bool(std::uint64_t position)> wanted;
  };

  Shipper(storage::SessionTable& table, storage::Store& store, Options options);
  // Stops the thread; the cursor stays in `meta`.
  ~Shipper();
  // The same, before the shipper is destroyed (others may still hold it: what `wanted`
  // captured may go first).
  void stop();
  // The peer is no longer fed: the thread ends without waiting for it, and the cursor is never
  // written again (the caller drops it).
  void retire();
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
  // Anti-entropy so far: rounds compared, states merged from the peer and sent to it.
  struct Repairs {
    std::uint64_t rounds = 0;
    std::uint64_t pulled = 0;
    std::uint64_t pushed = 0;
  };
  Repairs repairs() const;

 private:
  void loop();
  Status snapshot(PeerLink& link, const Target& target, std::uint64_t generation);
  // Sends the selected states from memory in REPLICATE snapshot batches: how many.
  Result<std::uint64_t> send_states(PeerLink& link, const Target& target,
                                    const storage::SessionTable::Selection& selection);
  Status anti_entropy(PeerLink& link, const Target& target);
  // Reads the batch at read_ and sends it without waiting for the answer: false when the log
  // holds nothing beyond read_.
  Result<bool> send_batch(PeerLink& link, const Target& target);
  // Waits for the answer to the oldest batch in flight and advances the cursor past it.
  Status complete_oldest(PeerLink& link);
  Status send(PeerLink& link, const wire::ReplicateRequest& request);
  // The cursor: acked() at once, `meta` now and then (always with `force`).
  Status advance(std::uint64_t next, bool force);
  void wait_for_work(std::chrono::milliseconds at_most);

  storage::SessionTable& table_;
  storage::Store& store_;
  const Options options_;
  const std::string cursor_name_;

  mutable std::mutex mu_;  // guards target_, generation_, resync_, woken_, retired_
  std::condition_variable cv_;
  Target target_;
  std::uint64_t generation_ = 0;  // bumped by retarget()
  bool resync_ = true;            // a snapshot first, until one was sent for this generation
  bool woken_ = false;
  bool retired_ = false;

  // The loop thread's own: the batches sent and not yet answered, oldest first, the first
  // sequence not yet sent, and the cursor as `meta` has it.
  struct InFlight {
    bool sent = false;  // false: nothing the peer wanted was read, nothing sent
    std::uint32_t request_id = 0;
    std::uint64_t next = 0;  // the cursor once it is answered
    bool caught_up = false;  // it reached the end of the log when it was read
  };
  std::deque<InFlight> flight_;
  std::uint64_t read_ = 1;
  std::uint64_t persisted_ = 0;
  std::chrono::steady_clock::time_point persisted_at_;

  std::atomic<std::uint64_t> acked_{0};
  std::atomic<std::uint64_t> next_{1};         // the cursor: the first sequence not acknowledged
  std::atomic<std::int64_t> caught_up_ns_{0};  // steady time the peer was last caught up
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> repair_rounds_{0}, repair_pulled_{0}, repair_pushed_{0};
  std::thread thread_;
};

}  // namespace sessiond::replication
