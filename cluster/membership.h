// A node's membership in its region (DESIGN §6): etcd decides, this class follows.
//
// connect() claims the node's number (the node part of every version, unique in the region)
// before the engine opens; start() takes a lease, registers the node's liveness key under it,
// creates the region's topology with this node alone if the region has none, and then keeps the
// lease alive and watches the topology on two threads of its own.
//
// Fencing: writes are allowed only while (monotonic time of the last keep-alive that etcd
// acknowledged, taken when it was sent) + lease TTL - drift margin is in the future. Past that
// writable() is false until a keep-alive succeeds again (a lease that expired meanwhile is
// replaced by a new one, and the liveness key put back under it).
//
// etcd keys of a region R (docs/cluster.md):
//   /sessiond/R/topology        the topology's JSON (cluster/topology.h); changed only by CAS
//   /sessiond/R/nodes/ID        liveness: {"address","resp_address","admin_address","number"}
//                               under the lease
//   /sessiond/R/numbers/N       node id holding number N (claimed once, kept)
//   /sessiond/R/route-key-check the fingerprint of the region's route-key secret
//   /sessiond/R/migrations/M/   a migration's progress and handover markers
//   /sessiond/R/legacy/ID       node ID holds sessions made before route keys (their count)
//   /sessiond/R/isr/ID          the replicas in sync with node ID's ranges (daemon/replicas.h)
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
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd.h"
#include "cluster/ring.h"
#include "cluster/topology.h"

namespace sessiond::cluster {

struct MembershipOptions {
  std::vector<std::string> etcd;  // endpoints (EtcdClient::parse_endpoints)
  std::string region = "local";
  std::string node_id;
  std::chrono::milliseconds lease_ttl{5000};
  // The region's replication factor, written into the topology by the node that creates it.
  std::uint32_t replication_factor = 1;
  // Subtracted from the lease TTL when fencing: covers the rate difference between this
  // machine's monotonic clock and etcd's. Default: a tenth of the TTL.
  std::optional<std::chrono::milliseconds> drift_margin;
  std::chrono::milliseconds etcd_timeout{1000};  // per etcd request
  // A fingerprint of the node's route-key secret (never the secret): the region's first node
  // records it, and a node with another secret is refused, since it would place users'
  // sessions differently.
  std::string route_key_check;
  // Where the membership reports what an operator must hear (lost and regained leases, a
  // topology that does not parse): warning or info, and the text. Called from its threads.
  std::function<void(bool warning, const std::string& message)> log;
};

// One consistent view for routing: the topology and the rings built from it.
struct Routing {
  Topology topology;
  Ring ring;                        // of topology.nodes: who owns what now
  std::optional<Ring> target;       // of the migration's target nodes, while one runs
  std::optional<std::size_t> self;  // this node's index in topology.nodes

  // Where `position` lives now (cluster/ring.h: owner and replicas, failover applied).
  Placement placement(std::uint64_t position) const;
  // The owner of `position` now; null when no node has a weight, or while no node may take
  // the ranges of a down owner.
  const Node* owner(std::uint64_t position) const;
  // The owner once the running migration is done (owner() when none runs).
  const Node* target_owner(std::uint64_t position) const;
  bool owns(std::uint64_t position) const;
  // Whether this node holds a replica of `position` (fed by its owner).
  bool replicates(std::uint64_t position) const;
  // Whether some node is down (failover applies; owners come from placement()).
  bool any_down = false;
};

// A running migration's progress on one node (from its marks under migration_prefix).
struct MigrationProgress {
  bool handed_over = false;  // its done mark is there
  std::uint64_t sessions = 0, bytes = 0;
};
// The progress of topology.migration on each of topology.nodes (by id); empty when none runs.
Result<std::map<std::string, MigrationProgress>> read_migration_progress(const EtcdClient& etcd,
                                                                         const Topology& topology);
// Each node's share of the ring (index as in the nodes the ring was built from; 0..1).
std::vector<double> ring_shares(const Ring& ring, std::size_t nodes);

// etcd's key names for a region.
std::string topology_key(std::string_view region);
std::string node_key(std::string_view region, std::string_view node_id);
std::string migration_prefix(std::string_view region, std::uint64_t migration);
std::string nodes_prefix(std::string_view region);  // liveness keys: nodes/ID
std::string isr_key(std::string_view region, std::string_view node_id);

class Membership {
 public:
  // Checks the endpoints, reaches etcd and claims this node's number; the etcd error otherwise.
  static Result<std::unique_ptr<Membership>> connect(MembershipOptions options);
  // Revokes the lease (the liveness key goes at once) and stops the threads.
  ~Membership();
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  const MembershipOptions& options() const { return options_; }
  std::uint32_t number() const { return number_; }
  const EtcdClient& etcd() const { return etcd_; }

  // Registers this node as serving at `address` (and `resp_address`, "" without), creates the
  // region's topology if there is none (this node alone), corrects this node's addresses in it
  // if they changed, and starts the keep-alive and watch threads. `admin_address` (its admin
  // HTTP listener, "" without) goes into the liveness key only.
  Status start(const std::string& address, const std::string& resp_address,
               const std::string& admin_address = {});

  // The latest topology; never null after start().
  std::shared_ptr<const Routing> routing() const;
  // Called (on the watch thread) with each new topology, after routing() returns it. Returns a
  // handle for remove_on_change(), after which the callback is not running and never runs.
  std::uint64_t on_change(std::function<void(const std::shared_ptr<const Routing>&)> callback);
  void remove_on_change(std::uint64_t handle);

  // Whether this node may accept writes now (fencing, above).
  bool writable() const;
  // UNAVAILABLE naming etcd and how long the lease has gone unrenewed (for refused writes).
  Status fenced_status() const;

  // Replaces the topology with `next` (validated) if the topology key is still at `revision`
  // (compare-and-swap), together with `also` in the same transaction. False when someone else
  // changed it first.
  Result<bool> replace_topology(const Topology& next, std::int64_t revision,
                                std::vector<TxnOp> also = {});
  // Nodes that hold sessions of users made before route keys (SessionTable::count_off_user_key):
  // such a session lives where its id routes, so REVOKE_USER and LIST_USER at its user's node
  // ask these nodes too. Followed by the watch; this node's own entry included.
  std::vector<std::string> legacy_holders() const;
  // Records this node's count of such sessions (0 clears its entry). Not under the lease: a
  // node that is down still holds them.
  Status set_legacy_sessions(std::size_t count);

  // Reads the topology from etcd now (not the watched copy) with its revision.
  Result<std::pair<Topology, std::int64_t>> read_topology() const;

 private:
  explicit Membership(MembershipOptions options, std::vector<std::string> endpoints);
  Status check_route_key();
  Status claim_number();
  // Takes a lease and puts the liveness key under it; with `topology_first` (a lease that ran
  // out) it reads and publishes the topology before it lets writes in again.
  Status register_lease(bool topology_first = false);
  void publish(Topology topology);
  void keep_alive_loop();
  void watch_loop(std::int64_t from_revision);
  Status read_legacy();  // replaces legacy_ with etcd's entries
  std::chrono::steady_clock::duration fence_window() const;

  MembershipOptions options_;
  EtcdClient etcd_;
  std::uint32_t number_ = 0;
  std::string address_, resp_address_, admin_address_;
  std::atomic<std::int64_t> lease_{0};
  // steady_clock nanoseconds until which writes are allowed.
  std::atomic<std::int64_t> writable_until_{0};
  std::atomic<std::int64_t> last_renewal_{0};  // steady ns of the last acknowledged keep-alive

  // Read by every request a node handles (routing()), so no lock: replaced whole by publish(),
  // which callbacks_mu_ serializes.
  std::atomic<std::shared_ptr<const Routing>> routing_;
  std::mutex callbacks_mu_;  // guards callbacks_ and publishing, held while callbacks run
  std::vector<std::pair<std::uint64_t, std::function<void(const std::shared_ptr<const Routing>&)>>>
      callbacks_;
  std::uint64_t next_callback_ = 1;

  mutable std::mutex legacy_mu_;
  std::set<std::string> legacy_;  // legacy_holders()

  std::atomic<bool> stop_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::thread keep_alive_thread_;
  std::thread watch_thread_;
};

}  // namespace sessiond::cluster
