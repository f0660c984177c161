#include "daemon/replicas.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cluster/ring.h"
#include "protocol/sessiond.pb.h"
#include "replication/applier.h"
#include "replication/codec.h"
#include "replication/digest.h"
#include "replication/peer_link.h"
#include "storage/test_hooks.h"

namespace sessiond::daemon {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

// The index of the ring arc (by its closing point) that holds `position`.
std::size_t arc_of(const std::vector<std::uint64_t>& points, std::uint64_t position) {
  const auto it = std::lower_bound(points.begin(), points.end(), position);
  return it == points.end() ? 0 : static_cast<std::size_t>(it - points.begin());
}

}  // namespace

std::string_view replica_ack_name(ReplicaAck ack) {
  switch (ack) {
    case ReplicaAck::kNone:
      return "none";
    case ReplicaAck::kTerminal:
      return "terminal";
    case ReplicaAck::kAll:
      return "all";
  }
  return "?";
}

Replicas::Replicas(storage::SessionTable& table, storage::Store& store,
                   cluster::Membership& membership, const storage::IdGenerator& ids,
                   Options options)
    : table_(table),
      store_(store),
      membership_(membership),
      ids_(ids),
      options_(std::move(options)),
      wakers_(std::make_shared<Wakers>()) {}

Replicas::~Replicas() {
  {
    std::lock_guard lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (subscription_ != 0) membership_.remove_on_change(subscription_);
  if (observer_ != 0) table_.remove_observer(observer_);
  if (thread_.joinable()) thread_.join();
  // A write under way may still hold the wake list, and answers their waits: the shippers'
  // threads end here, since they use what this object was given (table, store, ids, the
  // progress callback), which its owner may destroy next.
  wakers_->shippers.store(nullptr);
  std::lock_guard lock(mu_);
  for (auto& [id, peer] : peers_) peer.shipper->stop();
  peers_.clear();
}

std::uint64_t Replicas::position_of(const storage::Mutation& m) const {
  return replication::position_of(m, ids_);
}

void Replicas::start() {
  // Every write wakes the shippers (they read the log themselves). The observer holds the
  // list it wakes, not this object: a write under way when we are destroyed may still call it.
  observer_ = table_.on_change([wakers = wakers_](const storage::Mutation&, std::uint64_t) {
    const auto list = wakers->shippers.load();
    if (list) {
      for (const auto& s : *list) s->wake();
    }
  });
  subscription_ = membership_.on_change(
      [this](const std::shared_ptr<const cluster::Routing>& r) { on_topology(r); });
  on_topology(membership_.routing());
  thread_ = std::thread([this] { loop(); });
}

void Replicas::on_topology(const std::shared_ptr<const cluster::Routing>& routing) {
  const std::string& self = membership_.options().node_id;
  const auto& ring_points = routing->ring.points();
  std::vector<std::uint64_t> points;
  points.reserve(ring_points.size());
  for (const auto& p : ring_points) points.push_back(p.position);
  // Each arc's placement: the replicas of the arcs this node owns.
  std::map<std::string, std::vector<bool>> arcs;
  if (routing->self && routing->topology.replication_factor > 1) {
    for (std::size_t i = 0; i < points.size(); ++i) {
      const cluster::Placement p = routing->placement(points[i]);
      if (p.owner != routing->self) continue;
      for (std::size_t r : p.replicas) {
        auto& bits = arcs[routing->topology.nodes[r].id];
        bits.resize(points.size());
        bits[i] = true;
      }
    }
  }
  auto shared_points = std::make_shared<const std::vector<std::uint64_t>>(points);
  std::lock_guard lock(mu_);
  const bool ring_changed = points != ring_points_;
  ring_points_ = points;
  for (auto it = peers_.begin(); it != peers_.end();) {
    if (arcs.contains(it->first)) {
      ++it;
      continue;
    }
    // No longer a replica of anything here: its cursor would hold the log back. (A write
    // waiting for it may still hold the shipper.)
    it->second.shipper->retire();
    (void)store_.drop_log_cursor("ship/" + it->first);
    in_sync_.erase(it->first);
    it = peers_.erase(it);
  }
  auto wake_list = std::make_shared<std::vector<std::shared_ptr<replication::Shipper>>>();
  for (auto& [id, bits] : arcs) {
    Peer& peer = peers_[id];
    bool grew = ring_changed || !peer.shipper || !peer.arcs;
    if (!grew) {
      for (std::size_t i = 0; i < bits.size(); ++i) grew = grew || (bits[i] && !(*peer.arcs)[i]);
    }
    if (!peer.shipper) {
      replication::Shipper::Options o;
      o.self = self;
      o.peer = id;
      o.peer_secret = options_.peer_secret;
      o.in_sync_lag = options_.in_sync_lag;
      o.log = options_.log;
      o.on_acked = on_progress_;
      o.ids = &ids_;
      o.anti_entropy_interval = options_.anti_entropy_interval;
      peer.shipper = std::make_shared<replication::Shipper>(table_, store_, std::move(o));
    }
    auto shared_bits = std::make_shared<const std::vector<bool>>(std::move(bits));
    peer.arcs = shared_bits;
    replication::Shipper::Target target;
    target.address = routing->topology.find(id)->address;
    target.epoch = routing->topology.epoch;
    target.wanted = [shared_points, shared_bits](std::uint64_t position) {
      return (*shared_bits)[arc_of(*shared_points, position)];
    };
    peer.shipper->retarget(std::move(target), grew);
    wake_list->push_back(peer.shipper);
  }
  wakers_->shippers.store(std::move(wake_list));
}

bool Replicas::add_shippers(const cluster::Routing& routing, std::uint64_t position, Wait* wait,
                            std::string* names) const {
  const cluster::Placement p = routing.placement(position);
  bool any = p.replicas.empty();  // fewer nodes up than the factor: as many copies as nodes
  for (std::size_t r : p.replicas) {
    if (r == routing.self) continue;
    const std::string& id = routing.topology.nodes[r].id;
    if (names != nullptr) *names += (names->empty() ? "" : ", ") + id;
    // Replicas still catching up count too: the write waits (up to its deadline) for one of
    // them to have it.
    const auto peer = peers_.find(id);
    if (peer == peers_.end()) continue;
    any = true;
    if (std::find(wait->shippers.begin(), wait->shippers.end(), peer->second.shipper) ==
        wait->shippers.end()) {
      wait->shippers.push_back(peer->second.shipper);
    }
  }
  return any;
}

Status Replicas::add_wait(std::uint64_t position, std::uint64_t seq, Wait* wait) const {
  if (storage::sabotaged(storage::Sabotage::kAckUnreplicated)) return {};  // waits for nothing
  const auto routing = membership_.routing();
  if (routing->placement(position).replicas.empty()) return {};
  std::lock_guard lock(mu_);
  // A replica this node does not feed yet (the topology changed a moment ago) is picked up
  // by check() once it does.
  add_shippers(*routing, position, wait, nullptr);
  wait->positions.push_back(position);
  wait->seq = std::max(wait->seq, seq);
  wait->deadline = Steady::now() + options_.ack_timeout;
  return {};
}

Status Replicas::add_wait_all(std::uint64_t seq, Wait* wait) const {
  if (storage::sabotaged(storage::Sabotage::kAckUnreplicated)) return {};
  std::lock_guard lock(mu_);
  if (peers_.empty()) return {};
  std::string names;
  for (const auto& [id, peer] : peers_) {
    names += (names.empty() ? "" : ", ") + id;
    if (std::find(wait->shippers.begin(), wait->shippers.end(), peer.shipper) ==
        wait->shippers.end()) {
      wait->shippers.push_back(peer.shipper);
    }
  }
  wait->seq = std::max(wait->seq, seq);
  wait->deadline = Steady::now() + options_.ack_timeout;
  return {};
}

Replicas::WaitState Replicas::check(Wait& wait) const {
  const bool late = Steady::now() > wait.deadline;
  bool any = false;
  {
    std::lock_guard lock(mu_);
    bool current = false;  // some shipper of the wait still feeds a replica of this node
    for (const auto& s : wait.shippers) {
      const auto peer = peers_.find(s->peer());
      current = current || (peer != peers_.end() && peer->second.shipper == s);
    }
    if (!current && !wait.positions.empty()) {
      const auto routing = membership_.routing();
      for (std::uint64_t position : wait.positions) {
        add_shippers(*routing, position, &wait, nullptr);
      }
    }
    for (const auto& s : wait.shippers) {
      const bool applied = s->acked() >= wait.seq;
      // Every replica in the in-sync set must have it (any of them may take over); one out of
      // it (catching up after a resync) counts once it has it, but is not waited for.
      if (in_sync_.contains(s->peer()) && !applied) {
        return late ? WaitState::kFailed : WaitState::kPending;
      }
      any = any || applied;
    }
  }
  if (any) return WaitState::kDone;
  return late ? WaitState::kFailed : WaitState::kPending;
}

Status Replicas::failed_status(const Wait& wait) {
  std::string names;
  for (const auto& s : wait.shippers) {
    names += (names.empty() ? "" : ", ") + s->peer() + " at " + std::to_string(s->acked()) +
             " of " + std::to_string(wait.seq);
  }
  return Status::Unavailable("the change was made on this node, but its replica (" + names +
                             ") did not confirm it in time: it is not acknowledged; send it "
                             "again");
}

Status Replicas::receive_digest(const wire::DigestRequest& request,
                                wire::DigestResponse* response) {
  const auto routing = membership_.routing();
  const std::string& self = membership_.options().node_id;
  if (request.epoch() != routing->topology.epoch) {
    return Status::Unavailable("node " + self + " is at topology epoch " +
                               std::to_string(routing->topology.epoch) + ", node " +
                               request.from_node() + " at " + std::to_string(request.epoch()) +
                               ": digests are compared under one topology");
  }
  const auto& nodes = routing->topology.nodes;
  const auto from = std::find_if(nodes.begin(), nodes.end(),
                                 [&](const auto& n) { return n.id == request.from_node(); });
  if (from == nodes.end() || !routing->self) {
    return Status::Unavailable("node " + self + " and node " + request.from_node() +
                               " are not both in the topology");
  }
  auto theirs = replication::digest_from_wire(request);
  if (!theirs.ok()) return theirs.status();
  // What the sender owns and this node replicates: what the sender's digest covers.
  const std::size_t owner = static_cast<std::size_t>(from - nodes.begin());
  const std::size_t me = *routing->self;
  auto wanted = [routing, owner, me](std::uint64_t position) {
    const cluster::Placement p = routing->placement(position);
    return p.owner == owner &&
           std::find(p.replicas.begin(), p.replicas.end(), me) != p.replicas.end();
  };
  const replication::Digest mine = replication::compute_digest(table_, ids_, wanted);
  std::vector<std::uint32_t> differing = replication::differing_buckets(*theirs, mine);
  response->mutable_differing()->Assign(differing.begin(), differing.end());
  if (differing.empty()) return {};
  // This node's states of those buckets, up to a bound on the answer's size.
  std::size_t bytes = 0;
  table_.export_states(replication::bucket_selection(ids_, std::move(differing), wanted),
                       [&](std::span<const storage::Mutation> batch) {
                         for (const storage::Mutation& m : batch) {
                           if (bytes >= replication::kMaxBatchBytes) {
                             response->set_truncated(true);
                             return;
                           }
                           auto* e = response->add_entries();
                           replication::to_wire(m, e);
                           bytes += e->ByteSizeLong();
                         }
                       });
  return {};
}

Status Replicas::receive(const wire::ReplicateRequest& request, wire::ReplicateResponse* response) {
  const auto routing = membership_.routing();
  std::vector<replication::OwnedMutation> entries;
  entries.reserve(static_cast<std::size_t>(request.entries_size()));
  for (const auto& e : request.entries()) {
    auto m = replication::from_wire(e);
    if (!m.ok()) return m.status();
    const std::uint64_t position = position_of(m->m);
    if (!routing->owns(position) && !routing->replicates(position)) {
      return Status::Unavailable(
          "node " + membership_.options().node_id + " neither owns nor replicates an entry node " +
          request.from_node() + " sent (topology epoch " + std::to_string(routing->topology.epoch) +
          " here, " + std::to_string(request.epoch()) + " there)");
    }
    entries.push_back(std::move(m).value());
  }
  auto applied = replication::apply_entries(table_, entries);
  if (!applied.ok()) return applied.status();
  response->set_applied(applied->applied);
  response->set_set_aside(applied->set_aside);
  return {};
}

void Replicas::loop() {
  auto failover_checked = Steady::now();
  while (!stop_) {
    publish_in_sync();
    if (Steady::now() - failover_checked > 500ms) {
      fail_over();
      rejoin();
      failover_checked = Steady::now();
    }
    std::unique_lock lock(stop_mu_);
    stop_cv_.wait_for(lock, 100ms, [&] { return stop_.load(); });
  }
}

void Replicas::publish_in_sync() {
  std::set<std::string> desired;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, peer] : peers_) {
      if (peer.shipper->in_sync()) desired.insert(id);
    }
    if (desired == published_ && desired == in_sync_) return;
    // Joining: waited for here before etcd names it.
    in_sync_.insert(desired.begin(), desired.end());
  }
  const nlohmann::json list(std::vector<std::string>(desired.begin(), desired.end()));
  auto put = membership_.etcd().put(
      cluster::isr_key(membership_.options().region, membership_.options().node_id), list.dump());
  if (!put.ok()) return;  // keep waiting for all of them; try again
  std::lock_guard lock(mu_);
  for (const std::string& id : published_) {
    if (!desired.contains(id) && options_.log) {
      options_.log(true,
                   "replica " + id + " left the in-sync set (behind by " +
                       std::to_string(peers_.contains(id) ? peers_[id].shipper->lag_entries() : 0) +
                       " entries)");
    }
  }
  for (const std::string& id : desired) {
    if (!published_.contains(id) && options_.log) {
      options_.log(false, "replica " + id + " is in sync");
    }
  }
  // Leaving: no longer waited for, now that etcd no longer names it.
  in_sync_ = desired;
  published_ = desired;
}

void Replicas::fail_over() {
  if (stopping_) return;
  const auto routing = membership_.routing();
  if (routing->topology.migration || !routing->self) return;
  const cluster::EtcdClient& etcd = membership_.etcd();
  const std::string& region = membership_.options().region;
  auto live_keys = etcd.get_prefix(cluster::nodes_prefix(region));
  if (!live_keys.ok()) return;
  std::set<std::string> live;
  for (const auto& kv : live_keys->kvs) {
    live.insert(kv.key.substr(cluster::nodes_prefix(region).size()));
  }
  bool any = false;
  for (const cluster::Node& n : routing->topology.nodes) {
    any = any || (!n.down && n.weight > 0 && !live.contains(n.id));
  }
  if (!any) return;
  auto current = membership_.read_topology();
  if (!current.ok()) return;
  cluster::Topology next = current->first;
  if (next.migration) return;
  std::string what;
  for (cluster::Node& n : next.nodes) {
    if (n.down || n.weight == 0 || live.contains(n.id)) continue;
    auto isr = etcd.get(cluster::isr_key(region, n.id));
    if (!isr.ok()) return;
    std::vector<std::string> in_sync;
    if (isr->has_value()) {
      const auto j = nlohmann::json::parse((*isr)->value, nullptr, false);
      if (j.is_array()) {
        for (const auto& id : j) {
          if (!id.is_string()) continue;
          const cluster::Node* r = next.find(id.get<std::string>());
          if (r != nullptr && !r->down && live.contains(r->id)) in_sync.push_back(r->id);
        }
      }
    }
    n.down = true;
    n.in_sync = in_sync;
    what += (what.empty() ? "" : "; ") + n.id + " (in-sync replicas: " +
            (in_sync.empty() ? std::string("none, its ranges have no writer") : "");
    for (std::size_t i = 0; i < in_sync.size(); ++i) what += (i ? ", " : "") + in_sync[i];
    what += ")";
  }
  next.epoch = current->first.epoch + 1;
  auto swapped = membership_.replace_topology(next, current->second);
  if (swapped.ok() && *swapped && options_.log) {
    options_.log(
        true, "failover at epoch " + std::to_string(next.epoch) + ": leases ran out for " + what);
  }
}

Status Replicas::push_to_owners(const cluster::Routing& routing) {
  const std::string& self = membership_.options().node_id;
  std::map<std::string, std::unique_ptr<replication::PeerLink>> links;
  std::map<std::string, wire::ReplicateRequest> batches;
  std::map<std::string, std::size_t> batch_bytes;
  Status failed;
  std::uint64_t pushed = 0;
  auto flush = [&](const std::string& owner) {
    auto& request = batches[owner];
    if (!failed.ok() || request.entries_size() == 0) return;
    auto& link = links[owner];
    if (!link) {
      link = std::make_unique<replication::PeerLink>(routing.topology.find(owner)->address,
                                                     options_.peer_secret);
    }
    wire::ReplicateResponse response;
    failed = link->call(protocol::Opcode::kReplicate, request, &response);
    pushed += static_cast<std::uint64_t>(request.entries_size());
    request.clear_entries();
    batch_bytes[owner] = 0;
  };
  const storage::SessionTable::Selection everything{[](const storage::SessionId&) { return true; },
                                                    [](std::string_view) { return true; }};
  table_.export_states(everything, [&](std::span<const storage::Mutation> batch) {
    for (const storage::Mutation& m : batch) {
      if (!failed.ok() || stop_) return;
      const auto owner = routing.placement(position_of(m)).owner;
      if (!owner) continue;  // no writer: the range waits for this node
      const std::string& id = routing.topology.nodes[*owner].id;
      if (id == self) continue;
      auto& request = batches[id];
      if (request.entries_size() == 0) {
        request.set_from_node(self);
        request.set_epoch(routing.topology.epoch);
        request.set_snapshot(true);
      }
      auto* e = request.add_entries();
      replication::to_wire(m, e);
      batch_bytes[id] += e->ByteSizeLong();
      if (request.entries_size() >= 512 || batch_bytes[id] >= replication::kMaxBatchBytes) {
        flush(id);
      }
    }
  });
  for (auto& [owner, request] : batches) flush(owner);
  if (!failed.ok()) return failed;
  if (stop_) return Status::Unavailable("stopping");
  if (options_.log) {
    options_.log(false, "back after a failover: pushed " + std::to_string(pushed) +
                            " entries to the owners of this node's former ranges");
  }
  return {};
}

Replicas::Lag Replicas::lag() const {
  Lag out;
  std::lock_guard lock(mu_);
  for (const auto& [id, peer] : peers_) {
    out.max_entries = std::max(out.max_entries, peer.shipper->lag_entries());
    const auto r = peer.shipper->repairs();
    out.repairs.rounds += r.rounds;
    out.repairs.pulled += r.pulled;
    out.repairs.pushed += r.pushed;
  }
  out.in_sync = in_sync_.size();
  out.replicas = peers_.size();
  return out;
}

Status Replicas::admit_write(std::shared_lock<std::shared_mutex>* guard) {
  *guard = std::shared_lock(stop_gate_);
  if (!stopping_.load(std::memory_order_acquire)) return {};
  guard->unlock();
  return Status::Unavailable("this node is stopping: its ranges go to their replicas");
}

bool Replicas::step_down(std::chrono::milliseconds patience) {
  const auto routing = membership_.routing();
  const std::string& self = membership_.options().node_id;
  if (!routing->self || routing->topology.nodes[*routing->self].down ||
      routing->topology.nodes[*routing->self].weight == 0 ||
      routing->topology.replication_factor < 2) {
    return false;
  }
  {
    std::lock_guard lock(mu_);
    if (peers_.empty()) return false;  // no replica to hand anything to (a one-node region)
  }
  stopping_ = true;
  { std::unique_lock fence(stop_gate_); }  // the writes admitted before are done
  const std::uint64_t head = store_.log_committed();
  const auto deadline = Steady::now() + patience;
  std::vector<std::string> caught_up;
  for (;;) {
    caught_up.clear();
    bool all = true;
    {
      std::lock_guard lock(mu_);
      for (const auto& [id, peer] : peers_) {
        if (peer.shipper->acked() >= head && peer.shipper->in_sync()) {
          caught_up.push_back(id);
        } else {
          all = false;
        }
      }
    }
    if (all) break;
    if (Steady::now() >= deadline) {
      // Not all caught up in time (a heavy load): the replicas in sync by the in-sync bound
      // (no snapshot pending, behind by less than --replica-max-lag-ms) take over too, as
      // they would after this node's crash: they have every write acknowledged with their
      // confirmation, and what they lack of the rest comes back when this node rejoins and
      // pushes what it holds. Without them those ranges would have no writer until this node
      // returns: a stop must not cost more than a crash.
      std::lock_guard lock(mu_);
      for (const auto& [id, peer] : peers_) {
        if (peer.shipper->in_sync() &&
            std::find(caught_up.begin(), caught_up.end(), id) == caught_up.end()) {
          caught_up.push_back(id);
        }
      }
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  for (int attempt = 0; attempt < 10; ++attempt) {
    auto current = membership_.read_topology();
    if (!current.ok()) break;
    if (current->first.migration) {
      if (options_.log) {
        options_.log(true,
                     "stopping during a migration: not handing over (a failover follows "
                     "when the lease is gone)");
      }
      return false;
    }
    cluster::Topology next = current->first;
    for (cluster::Node& n : next.nodes) {
      if (n.id != self) continue;
      n.down = true;
      n.in_sync = caught_up;
    }
    next.epoch = current->first.epoch + 1;
    auto swapped = membership_.replace_topology(next, current->second);
    if (swapped.ok() && *swapped) {
      if (options_.log) {
        std::string names;
        for (const auto& id : caught_up) names += (names.empty() ? "" : ", ") + id;
        options_.log(false,
                     "stopping: handed this node's ranges to " +
                         (names.empty() ? std::string("no replica (none caught up)") : names) +
                         " at epoch " + std::to_string(next.epoch));
      }
      return true;
    }
  }
  if (options_.log) options_.log(true, "stopping: could not mark this node down in etcd");
  return false;
}

void Replicas::rejoin() {
  if (stopping_) return;
  const auto routing = membership_.routing();
  const std::string& self = membership_.options().node_id;
  const cluster::Node* me = routing->topology.find(self);
  if (me == nullptr || !me->down) {
    pushed_ = false;
    return;
  }
  if (routing->topology.migration) return;  // one at a time: after it
  if (!pushed_) {
    if (Status s = push_to_owners(*routing); !s.ok()) {
      if (options_.log) options_.log(true, "pushing this node's holdings failed: " + s.ToString());
      return;
    }
    pushed_ = true;
  }
  auto current = membership_.read_topology();
  if (!current.ok() || current->first.migration) return;
  cluster::Topology next = current->first;
  next.epoch = current->first.epoch + 1;
  cluster::Migration m;
  m.id = next.epoch;
  m.reason = "rejoin " + self;
  m.target = current->first.nodes;
  for (cluster::Node& n : m.target) {
    if (n.id != self) continue;
    n.down = false;
    n.in_sync.clear();
  }
  m.started_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  next.migration = std::move(m);
  auto swapped = membership_.replace_topology(next, current->second);
  if (swapped.ok() && *swapped && options_.log) {
    options_.log(false, "asked for this node's ranges back: migration " +
                            std::to_string(next.epoch) + " (rejoin " + self + ")");
  }
}

}  // namespace sessiond::daemon
