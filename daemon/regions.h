// Multi-region replication on this node (DESIGN §7; docs/regions.md).
//
// The sending side: one replication::RegionShipper per peer region (--peer-region), woken by
// every write this node accepts.
//
// The receiving side: REPLICATE and DIGEST from nodes of peer regions. The sender's region must be
// one of this node's peer regions, with the number its name gives (cluster::region_number), and
// not this node's own; every entry must be of a range this node owns (WRONG_NODE otherwise: the
// sender fetches the topology again), admitted like a client's write (fencing, a stop in
// progress, a migration's handover); then merged with apply(), original versions and origin
// kept, so the entries go on to this node's replicas and never back to a peer region.
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

#include "daemon/config.h"
#include "replication/region_repair.h"
#include "replication/region_shipper.h"
#include "storage/id_generator.h"
#include "storage/session_table.h"
#include "storage/store.h"

namespace sessiond::cluster {
class Membership;
}

namespace sessiond::wire {
class DigestRequest;
class DigestResponse;
class ReplicateRequest;
class ReplicateResponse;
}  // namespace sessiond::wire

namespace sessiond::daemon {

class Migrator;
class Replicas;

class Regions {
 public:
  struct Options {
    std::string node_id;
    std::string region;
    std::vector<PeerRegionSpec> peers;
    std::string peer_secret;
    std::chrono::milliseconds batch_delay{5};
    std::chrono::milliseconds anti_entropy_interval{300'000};
    std::uint32_t max_frame_bytes = 1u << 20;  // what a compressed batch may unpack to, at most
    std::function<void(bool warning, const std::string&)> log;
  };
  // `membership`, `replicas` and `migrator` are null for a node without --etcd (it owns every
  // range of its one-node region).
  Regions(storage::SessionTable& table, storage::Store& store, const storage::IdGenerator& ids,
          cluster::Membership* membership, Replicas* replicas, Migrator* migrator, Options options);
  // Stops the shippers.
  ~Regions();
  Regions(const Regions&) = delete;
  Regions& operator=(const Regions&) = delete;

  // Follows the table's writes and starts shipping.
  void start();

  // REPLICATE from a node of a peer region.
  Status receive(const wire::ReplicateRequest& request, wire::ReplicateResponse* response);
  // DIGEST from a node of a peer region (replication/region_repair.h), for ranges this node
  // owns at the epoch the sender names (WRONG_NODE otherwise).
  Status receive_digest(const wire::DigestRequest& request, wire::DigestResponse* response);

  // Anti-entropy with `region` (empty: every peer region) now, for this node's ranges: one
  // report per region, or why its round failed. Runs on the caller's thread.
  // With `check_only`, compares only (replication::repair_with_region).
  std::vector<std::pair<std::string, Result<replication::RepairReport>>> repair_now(
      const std::string& region, bool check_only = false);

  // Per peer region, for STATS and `sessctl cluster status`.
  struct PeerStats {
    std::string region;
    replication::RegionShipper::Stats shipped;
    // What this node applied from it.
    std::uint64_t received = 0;
    std::uint64_t received_set_aside = 0;
    std::uint64_t received_conflicts = 0;
    // Anti-entropy: rounds completed, the last one's report and wall time (ms since the
    // epoch; 0: none yet), and the last failure.
    std::uint64_t repairs = 0;
    std::uint64_t repaired = 0;  // states merged or sent by all rounds
    replication::RepairReport last_repair;
    std::int64_t last_repair_ms = 0;
    std::string repair_error;
  };
  std::vector<PeerStats> stats() const;

 private:
  // FORBIDDEN unless `region` is a peer region with that number.
  Status check_peer(const std::string& region, std::uint32_t number) const;
  // The ring positions this node owns in its region now, and the epoch they are of.
  replication::Ranges owned_ranges(std::uint64_t* epoch) const;
  // The schedule: rounds every anti_entropy_interval, after a retention gap, and after either
  // region's topology changed.
  void repair_loop();
  // With `decided_at` (the schedule): nothing is done when a round completed after it (one
  // asked for meanwhile did the work), and an empty report is returned.
  Result<replication::RepairReport> repair_one(
      std::size_t peer, const std::string& why, bool check_only = false,
      std::optional<std::chrono::steady_clock::time_point> decided_at = std::nullopt);

  storage::SessionTable& table_;
  storage::Store& store_;
  const storage::IdGenerator& ids_;
  cluster::Membership* membership_;
  Replicas* replicas_;
  Migrator* migrator_;
  const Options options_;

  struct Received {
    std::atomic<std::uint64_t> applied{0}, set_aside{0}, conflicts{0};
  };
  struct Repairs {
    std::mutex run;         // one round per peer region at a time
    mutable std::mutex mu;  // guards what follows
    std::uint64_t rounds = 0, repaired = 0;
    replication::RepairReport last;
    std::int64_t last_ms = 0;
    std::string error;
    std::uint64_t own_epoch = 0, peer_epoch = 0;  // of the last round
    std::chrono::steady_clock::time_point next;   // the next scheduled round
    std::string pending;  // why a round is due besides the schedule ("": none)
    std::chrono::steady_clock::time_point retry_at;      // after a failed one
    std::chrono::steady_clock::time_point completed_at;  // the last round that completed
  };
  std::vector<std::unique_ptr<Repairs>> repairs_;  // per shipper
  std::vector<std::shared_ptr<replication::RegionShipper>> shippers_;
  std::map<std::string, std::unique_ptr<Received>> received_;  // by peer region; fixed at start
  // What every write wakes, held by the table's observer (which may outlive this object).
  struct Wakers {
    std::atomic<bool> stopped{false};
    std::vector<std::shared_ptr<replication::RegionShipper>> shippers;
  };
  std::shared_ptr<Wakers> wakers_;
  std::uint64_t observer_ = 0;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::atomic<bool> stopping_{false};
  std::thread repair_thread_;
};

}  // namespace sessiond::daemon
