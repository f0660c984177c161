// Ships this node's replication log to one peer region (DESIGN §7; docs/regions.md).
//
// What goes: every entry this node accepted itself, whether or not it still owns the range
// (an entry of remote origin came from another node, which ships it; a region's in-region
// replicas therefore ship nothing until they take writes). A put ships as the session's state
// now (SessionTable::state_of), which the state-based merge makes equivalent to every put before
// it; touches, tombstones and generations ship as logged.
//
// Where it goes: each entry to its owner in the peer region, by that region's ring. The peer's
// topology comes from TOPOLOGY at its seeds (and at the nodes the last one named); it is fetched
// again when a node answers WRONG_NODE or a newer epoch, or cannot be reached.
//
// How: batches of up to `batch_entries` entries (and kMaxBatchBytes), waiting up to
// `batch_delay` for a fuller one when the last was not full; split by owner and sent to every
// owner at once; zstd-compressed when larger than `compress_bytes`. The cursor ("ship/region:
// NAME" in `meta`, which holds the log back) advances only once every owner answered that it
// applied its part; it is written to `meta` at most every `cursor_persist_interval`. Applying a
// batch twice changes nothing, so a crash at any point at worst sends a batch again.
//
// A log that no longer holds what the peer needs next (it was cut off past the retention cap)
// is skipped to what it holds, logged and counted, and the peer repaired by anti-entropy
// (replication/region_repair.h), which also runs on a schedule, after ownership changes and on
// demand.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/ring.h"
#include "cluster/topology.h"
#include "protocol/status.h"
#include "storage/session_table.h"

namespace sessiond::storage {
class IdGenerator;
class Store;
}  // namespace sessiond::storage

namespace sessiond::wire {
class ReplicateRequest;
class TopologyResponse;
}  // namespace sessiond::wire

namespace sessiond::replication {

class PeerLink;

// A peer region's topology as this node routes by it.
struct PeerRegionView {
  cluster::Topology topology;
  cluster::Ring ring;
  // The owner's index in topology.nodes of what lives at `position`; none while the peer
  // region has no writer for it.
  std::optional<std::size_t> owner(std::uint64_t position) const;
  static PeerRegionView from_wire(const wire::TopologyResponse& response);
};

class RegionShipper {
 public:
  struct Options {
    std::string self;    // this node's id
    std::string region;  // this node's region
    std::uint32_t region_number = 0;
    std::string peer_region;         // the region shipped to
    std::vector<std::string> seeds;  // host:port of its nodes
    std::string peer_secret;
    const storage::IdGenerator* ids = nullptr;  // where a mutation lives on the ring (required)
    std::size_t batch_entries = 512;
    std::chrono::milliseconds batch_delay{5};
    std::size_t compress_bytes = 4096;
    std::chrono::milliseconds cursor_persist_interval{100};
    std::function<void(bool warning, const std::string&)> log;
  };

  RegionShipper(storage::SessionTable& table, storage::Store& store, Options options);
  // Stops the thread; the cursor stays in `meta`.
  ~RegionShipper();
  RegionShipper(const RegionShipper&) = delete;
  RegionShipper& operator=(const RegionShipper&) = delete;

  void start();
  void stop();
  // Something was logged. Cheap; called for every mutation.
  void wake();

  const Options& options() const { return options_; }
  // The peer region's topology as last fetched (null before the first).
  std::shared_ptr<const PeerRegionView> peer_view() const;
  // Drops the peer's topology: the next batch fetches it again.
  void refresh_topology();

  struct Stats {
    std::uint64_t lag_entries = 0;  // logged here and not yet acknowledged by the peer region
    std::int64_t lag_ms = 0;        // since the peer region was last caught up with the log
    std::uint64_t entries_shipped = 0;
    std::uint64_t bytes_shipped = 0;  // frame bodies sent, after compression
    std::uint64_t batches = 0;
    std::uint64_t set_aside = 0;       // entries the peer set aside (clock beyond its skew bound)
    std::uint64_t conflicts = 0;       // entries the peer merged with a concurrent state of its own
    std::uint64_t retention_gaps = 0;  // times the log no longer held what the peer needed
    std::uint64_t peer_epoch = 0;
    std::string last_error;  // of the last failed batch, until one succeeds
    // Replication lag of the last kLagSamples batches: from the moment the batch's oldest entry
    // was logged (the first write after the shipper was last caught up) until the peer answered
    // that it applied the batch. Percentiles in ms; 0 without samples.
    double lag_p50_ms = 0, lag_p99_ms = 0, lag_max_ms = 0;
    std::uint64_t lag_samples = 0;
  };
  static constexpr std::size_t kLagSamples = 8192;
  Stats stats() const;
  // Why anti-entropy must run, once (null: no reason): the peer region is new to this node (what
  // was logged before it is not shipped), or the log skipped entries it never got.
  const char* take_repair_request() {
    switch (repair_requested_.exchange(kNoRepair)) {
      case kNewPeer:
        return "first contact: what this node held before";
      case kGap:
        return "the log no longer held what it needed";
      default:
        return nullptr;
    }
  }

 private:
  void loop();
  Status fetch_topology();
  // Reads the next batch and sends it to its owners; false when the log holds nothing new.
  Result<bool> ship_batch(const PeerRegionView& view);
  PeerLink& link_to(const std::string& address);
  Status advance(std::uint64_t next, bool force);
  void wait_for_work(std::chrono::milliseconds at_most);
  void note_error(const Status& s);

  storage::SessionTable& table_;
  storage::Store& store_;
  const Options options_;
  const std::string cursor_name_;

  mutable std::mutex mu_;  // guards woken_, view_, last_error_
  std::condition_variable cv_;
  bool woken_ = false;
  std::shared_ptr<const PeerRegionView> view_;
  std::string last_error_;

  // The loop thread's own.
  std::map<std::string, std::unique_ptr<PeerLink>> links_;  // by address
  std::uint64_t persisted_ = 0;
  std::chrono::steady_clock::time_point persisted_at_;
  bool last_full_ = false;  // the last batch stopped at a limit: the next goes at once

  // Lag samples (Stats::lag_*): steady ns when the first entry not yet read was logged (0:
  // none pending), and the samples, a ring.
  std::atomic<std::int64_t> first_unread_ns_{0};
  mutable std::mutex lag_mu_;
  std::vector<double> lag_ms_;
  std::size_t lag_next_ = 0;
  std::uint64_t lag_count_ = 0;
  std::atomic<std::uint64_t> next_{1};  // the cursor: the first sequence not acknowledged
  std::atomic<std::int64_t> caught_up_ns_{0};
  std::atomic<std::uint64_t> shipped_{0}, bytes_{0}, batches_{0}, set_aside_{0}, conflicts_{0},
      gaps_{0};
  enum RepairReason : int { kNoRepair, kNewPeer, kGap };
  std::atomic<int> repair_requested_{kNoRepair};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sessiond::replication
