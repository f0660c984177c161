// Replicas and failover inside a region (DESIGN §6; docs/cluster.md, "Replicas and failover").
//
// The owner's side: one replication::Shipper per peer that replicates ranges this node owns,
// retargeted on every topology change (a peer that gains ranges is resynced from memory), woken
// by every write. The in-sync replicas (shippers caught up within their bound) are recorded in
// etcd under isr/NODE; a replica joins the set here before etcd says so and leaves it here only
// after etcd says so, so the set etcd holds never names a replica that a write was acknowledged
// without. A write that must be replicated before it is acknowledged (--replica-ack: terminal
// writes, or all) waits for every in-sync replica of its range, and fails with UNAVAILABLE when
// its range has replicas but none is in sync.
//
// The replica's side: REPLICATE, merged with apply() (only entries of ranges this node owns or
// replicates under its topology).
//
// Failover: when a node of the topology has no liveness key (its lease ran out), the live nodes
// mark it down by CAS on the topology, with the replicas etcd lists as in sync with it; the ring
// then gives each of its ranges to the first of those (cluster/ring.h, place()). Not while a
// migration runs (it waits for the node).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/membership.h"
#include "replication/shipper.h"
#include "storage/id_generator.h"
#include "storage/session_table.h"
#include "storage/store.h"

namespace sessiond::wire {
class DigestRequest;
class DigestResponse;
class ReplicateRequest;
class ReplicateResponse;
}  // namespace sessiond::wire

namespace sessiond::daemon {

enum class ReplicaAck { kNone, kTerminal, kAll };
std::string_view replica_ack_name(ReplicaAck ack);

class Replicas {
 public:
  struct Options {
    ReplicaAck ack = ReplicaAck::kTerminal;
    std::string peer_secret;
    std::chrono::milliseconds in_sync_lag{2000};  // a replica this far behind leaves the set
    std::chrono::milliseconds ack_timeout{2000};  // how long a write waits for its replicas
    // Anti-entropy with each replica (replication/digest.h) this often; zero: never.
    std::chrono::milliseconds anti_entropy_interval{60000};
    std::function<void(bool warning, const std::string&)> log;
  };
  Replicas(storage::SessionTable& table, storage::Store& store, cluster::Membership& membership,
           const storage::IdGenerator& ids, Options options);
  // Stops the shippers and the failover thread.
  ~Replicas();
  Replicas(const Replicas&) = delete;
  Replicas& operator=(const Replicas&) = delete;

  // Called on a shipper's thread whenever a replica confirmed more of the log: writes waiting
  // for replicas may be done (check() them again). Set before start().
  void on_progress(std::function<void()> fn) { on_progress_ = std::move(fn); }
  // Follows the topology and the table's writes from now on.
  void start();
  const Options& options() const { return options_; }

  // What a write waits for before it is acknowledged: the replicas that were in sync, and the
  // log sequence they must have applied.
  struct Wait {
    std::vector<std::shared_ptr<replication::Shipper>> shippers;
    std::vector<std::uint64_t> positions;  // the write's (none: every replica of this node)
    std::uint64_t seq = 0;
    std::chrono::steady_clock::time_point deadline;
  };
  // Adds what the write at `position` (logged up to `seq`) waits for to `wait`: its replicas;
  // nothing when its range has none (fewer nodes up than the factor).
  Status add_wait(std::uint64_t position, std::uint64_t seq, Wait* wait) const;
  // The same for a write whose positions are not known (a REVOKE_USER of sessions made before
  // route keys, held here for other users' nodes): every replica this node feeds.
  Status add_wait_all(std::uint64_t seq, Wait* wait) const;
  enum class WaitState { kPending, kDone, kFailed };
  // kDone once every replica of `wait` that is in the in-sync set applied it, and one at least
  // (in the set or catching up) did; kFailed at the deadline.
  // While none of its replicas has it, the wait follows the topology: a replica that is no
  // longer one (it stopped, it was failed over) gives way to the range's new replicas.
  WaitState check(Wait& wait) const;
  // What kFailed means, for the client.
  static Status failed_status(const Wait& wait);

  // A write on this node: OK (with `guard` holding the step-down gate until it is done) or
  // UNAVAILABLE once step_down() began.
  Status admit_write(std::shared_lock<std::shared_mutex>* guard);
  // SIGTERM in a region (docs/cluster.md, "Stopping a node"): refuses new writes, waits for
  // those admitted, waits (up to `patience`) until its replicas have applied everything it
  // logged, then marks itself down with the replicas that have as in sync, which take its
  // ranges at once (at the deadline, with those in sync by the in-sync bound, as a crash
  // would). Without replicas (factor 1) or a topology that cannot be changed now (a
  // migration runs) it only logs why; the node stops either way.
  // True when it handed its ranges over.
  bool step_down(std::chrono::milliseconds patience);
  // Any stop: no more failovers or rejoins started from this node (the others may be stopping
  // too), and writes are refused.
  void begin_stop() { stopping_ = true; }

  // For STATS: how far the furthest-behind replica is, and how many are in the in-sync set.
  struct Lag {
    std::uint64_t max_entries = 0;
    std::uint64_t in_sync = 0;
    std::uint64_t replicas = 0;             // in sync or not
    replication::Shipper::Repairs repairs;  // anti-entropy, summed over the replicas
  };
  Lag lag() const;

  // REPLICATE from the owner of the entries' ranges.
  Status receive(const wire::ReplicateRequest& request, wire::ReplicateResponse* response);
  // DIGEST from the owner of ranges this node replicates: the buckets where what this node
  // holds of them differs, and its states there.
  Status receive_digest(const wire::DigestRequest& request, wire::DigestResponse* response);

 private:
  void on_topology(const std::shared_ptr<const cluster::Routing>& routing);
  void loop();  // the in-sync set and failover, a few times a second
  void publish_in_sync();
  void fail_over();
  // A node that returns after its failover: pushes what it holds to the ranges' owners (what
  // it accepted that no replica confirmed is in there), then asks for its ranges back (a
  // migration to the topology with it up; daemon/migration.h moves them).
  void rejoin();
  Status push_to_owners(const cluster::Routing& routing);
  std::uint64_t position_of(const storage::Mutation& m) const;
  // Adds the shippers of the replicas of `position` under `routing` (mu_ held); false when it
  // has replicas but this node feeds none of them.
  bool add_shippers(const cluster::Routing& routing, std::uint64_t position, Wait* wait,
                    std::string* names) const;

  storage::SessionTable& table_;
  storage::Store& store_;
  cluster::Membership& membership_;
  const storage::IdGenerator& ids_;
  const Options options_;
  std::function<void()> on_progress_;

  // What every write wakes, held by the table's observer (which may outlive this object).
  struct Wakers {
    std::atomic<std::shared_ptr<const std::vector<std::shared_ptr<replication::Shipper>>>> shippers;
  };
  std::shared_ptr<Wakers> wakers_;

  // Per peer: the ring arcs (by point index) it replicates for this node, and its shipper.
  struct Peer {
    std::shared_ptr<replication::Shipper> shipper;
    std::shared_ptr<const std::vector<bool>> arcs;
  };
  mutable std::mutex mu_;  // guards peers_, ring_points_, in_sync_
  std::map<std::string, Peer> peers_;
  std::vector<std::uint64_t> ring_points_;  // the ring the arcs are of
  std::set<std::string> in_sync_;           // ⊇ what etcd's isr/SELF says
  std::set<std::string> published_;         // what etcd's isr/SELF says

  std::shared_mutex stop_gate_;  // writes hold it shared; step_down() takes it to fence
  std::atomic<bool> stopping_{false};
  bool pushed_ = false;  // rejoin(): this node's holdings went to the owners (loop thread)
  std::uint64_t subscription_ = 0;
  std::uint64_t observer_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::thread thread_;
};

}  // namespace sessiond::daemon
