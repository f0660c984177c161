#include "cluster/membership.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace sessiond::cluster {
namespace {

using Steady = std::chrono::steady_clock;

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Steady::now().time_since_epoch())
      .count();
}

std::string region_prefix(std::string_view region) {
  return "/sessiond/" + std::string(region) + "/";
}

std::string number_key(std::string_view region, std::uint32_t n) {
  return region_prefix(region) + "numbers/" + std::to_string(n);
}

}  // namespace

std::string topology_key(std::string_view region) { return region_prefix(region) + "topology"; }
std::string node_key(std::string_view region, std::string_view node_id) {
  return region_prefix(region) + "nodes/" + std::string(node_id);
}
std::string migration_prefix(std::string_view region, std::uint64_t migration) {
  return region_prefix(region) + "migrations/" + std::to_string(migration) + "/";
}

std::string nodes_prefix(std::string_view region) { return region_prefix(region) + "nodes/"; }

std::string isr_key(std::string_view region, std::string_view node_id) {
  return region_prefix(region) + "isr/" + std::string(node_id);
}

namespace {
std::string legacy_prefix(std::string_view region) { return region_prefix(region) + "legacy/"; }
}  // namespace

Placement Routing::placement(std::uint64_t position) const {
  return place(ring, topology.nodes, topology.replication_factor, position);
}

const Node* Routing::owner(std::uint64_t position) const {
  if (ring.empty()) return nullptr;
  if (!any_down) return &topology.nodes[ring.owner(position)];
  const auto o = placement(position).owner;
  return o ? &topology.nodes[*o] : nullptr;
}

const Node* Routing::target_owner(std::uint64_t position) const {
  if (!target || !topology.migration) return owner(position);
  if (target->empty()) return nullptr;
  const auto& nodes = topology.migration->target;
  const auto o = place(*target, nodes, topology.replication_factor, position).owner;
  return o ? &nodes[*o] : nullptr;
}

Result<std::map<std::string, MigrationProgress>> read_migration_progress(const EtcdClient& etcd,
                                                                         const Topology& topology) {
  std::map<std::string, MigrationProgress> out;
  if (!topology.migration) return out;
  const std::string prefix = migration_prefix(topology.region, topology.migration->id);
  auto marks = etcd.get_prefix(prefix);
  if (!marks.ok()) return marks.status();
  for (const Node& n : topology.nodes) {
    MigrationProgress p;
    for (const auto& kv : marks->kvs) {
      const bool is_done = kv.key == prefix + "done/" + n.id;
      if (!is_done && kv.key != prefix + "progress/" + n.id) continue;
      const nlohmann::json v = nlohmann::json::parse(kv.value, nullptr, false);
      if (v.is_object()) {
        p.sessions = std::max(p.sessions, v.value("sessions", std::uint64_t{0}));
        p.bytes = std::max(p.bytes, v.value("bytes", std::uint64_t{0}));
      }
      p.handed_over = p.handed_over || is_done;
    }
    out[n.id] = p;
  }
  return out;
}

std::vector<double> ring_shares(const Ring& ring, std::size_t nodes) {
  std::vector<double> out(nodes, 0.0);
  const auto& points = ring.points();
  if (points.empty()) return out;
  constexpr double kCircle = 18446744073709551616.0;  // 2^64
  for (std::size_t i = 0; i < points.size(); ++i) {
    // A point owns the positions after the previous point (wrapping) up to its own.
    const std::uint64_t from = i == 0 ? points.back().position : points[i - 1].position;
    const std::uint64_t arc = points[i].position - from;  // modulo 2^64
    if (points[i].node < nodes) {
      out[points[i].node] += (points.size() == 1 ? kCircle : static_cast<double>(arc)) / kCircle;
    }
  }
  return out;
}

bool Routing::owns(std::uint64_t position) const {
  if (!self || ring.empty()) return false;
  if (!any_down) return ring.owner(position) == *self;
  return placement(position).owner == self;
}

bool Routing::replicates(std::uint64_t position) const {
  if (!self || ring.empty() || topology.replication_factor < 2) return false;
  const auto r = placement(position).replicas;
  return std::find(r.begin(), r.end(), *self) != r.end();
}

Membership::Membership(MembershipOptions options, std::vector<std::string> endpoints)
    : options_(std::move(options)), etcd_(std::move(endpoints), options_.etcd_timeout) {
  if (!options_.log) options_.log = [](bool, const std::string&) {};
}

Result<std::unique_ptr<Membership>> Membership::connect(MembershipOptions options) {
  if (!valid_node_id(options.node_id)) {
    return Status::InvalidArgument("node id \"" + options.node_id +
                                   "\" is not valid (1-64 of A-Z a-z 0-9 . _ -)");
  }
  if (options.region.empty() || !valid_node_id(options.region)) {
    return Status::InvalidArgument("region \"" + options.region +
                                   "\" is not valid (1-64 of A-Z a-z 0-9 . _ -)");
  }
  if (options.lease_ttl < std::chrono::milliseconds(2000)) {
    return Status::InvalidArgument("--lease-ttl-ms must be at least 2000 (etcd's minimum lease)");
  }
  std::vector<std::string> endpoints = options.etcd;
  std::unique_ptr<Membership> m(new Membership(std::move(options), std::move(endpoints)));
  if (Status s = m->check_route_key(); !s.ok()) return s;
  if (Status s = m->claim_number(); !s.ok()) return s;
  return m;
}

Status Membership::check_route_key() {
  if (options_.route_key_check.empty()) return {};
  const std::string key = region_prefix(options_.region) + "route-key-check";
  Txn record{{{key, Compare::Target::kCreateRevision, 0, ""}},
             {{TxnOp::Kind::kPut, key, options_.route_key_check, 0}},
             {}};
  auto recorded = etcd_.txn(record);
  if (!recorded.ok()) return recorded.status();
  auto kv = etcd_.get(key);
  if (!kv.ok()) return kv.status();
  if (kv->has_value() && (*kv)->value != options_.route_key_check) {
    return Status::InvalidArgument(
        "this node's route-key secret differs from region " + options_.region +
        "'s: every node needs the same route-key file (docs/security.md, \"Route keys\")");
  }
  return {};
}

Status Membership::claim_number() {
  const std::string prefix = region_prefix(options_.region) + "numbers/";
  for (int attempt = 0; attempt < 16; ++attempt) {
    auto claimed = etcd_.get_prefix(prefix);
    if (!claimed.ok()) return claimed.status();
    std::vector<bool> used(0x10000);
    for (const KeyValue& kv : claimed->kvs) {
      const std::uint32_t n = static_cast<std::uint32_t>(std::stoul(kv.key.substr(prefix.size())));
      if (kv.value == options_.node_id) {
        number_ = n;
        return {};
      }
      if (n < used.size()) used[n] = true;
    }
    std::uint32_t free = 1;
    while (free < used.size() && used[free]) ++free;
    if (free >= used.size()) {
      return Status::Unavailable("region " + options_.region + " has no free node number left");
    }
    Txn claim{{{number_key(options_.region, free), Compare::Target::kCreateRevision, 0, ""}},
              {{TxnOp::Kind::kPut, number_key(options_.region, free), options_.node_id, 0}},
              {}};
    auto won = etcd_.txn(claim);
    if (!won.ok()) return won.status();
    if (*won) {
      number_ = free;
      return {};
    }
  }
  return Status::Unavailable("could not claim a node number in etcd (too much contention)");
}

std::chrono::steady_clock::duration Membership::fence_window() const {
  const auto margin = options_.drift_margin.value_or(options_.lease_ttl / 10);
  return options_.lease_ttl - margin;
}

Status Membership::register_lease(bool topology_first) {
  const std::int64_t sent = steady_ns();
  auto lease = etcd_.grant_lease(options_.lease_ttl);
  if (!lease.ok()) return lease.status();
  nlohmann::json live = {
      {"address", address_}, {"resp_address", resp_address_}, {"number", number_}};
  if (!admin_address_.empty()) live["admin_address"] = admin_address_;
  auto put = etcd_.put(node_key(options_.region, options_.node_id), live.dump(), *lease);
  if (!put.ok()) return put.status();
  lease_.store(*lease);
  if (topology_first) {
    // The lease ran out: the region may have failed this node over meanwhile. It takes writes
    // again only once it routes by the topology as it is now, not as it was.
    auto current = read_topology();
    if (!current.ok()) return current.status();
    publish(current->first);
  }
  last_renewal_.store(sent);
  writable_until_.store(
      sent + std::chrono::duration_cast<std::chrono::nanoseconds>(fence_window()).count());
  return {};
}

Result<std::pair<Topology, std::int64_t>> Membership::read_topology() const {
  auto kv = etcd_.get(topology_key(options_.region));
  if (!kv.ok()) return kv.status();
  if (!kv->has_value()) return Status::NotFound("region " + options_.region + " has no topology");
  auto t = Topology::from_json((*kv)->value);
  if (!t.ok()) return t.status();
  return std::make_pair(std::move(t).value(), (*kv)->mod_revision);
}

Result<bool> Membership::replace_topology(const Topology& next, std::int64_t revision,
                                          std::vector<TxnOp> also) {
  if (Status s = next.validate(); !s.ok()) return s;
  Txn swap{{{topology_key(options_.region), Compare::Target::kModRevision, revision, ""}},
           {{TxnOp::Kind::kPut, topology_key(options_.region), next.to_json(), 0}},
           {}};
  for (TxnOp& op : also) swap.success.push_back(std::move(op));
  return etcd_.txn(swap);
}

Status Membership::start(const std::string& address, const std::string& resp_address,
                         const std::string& admin_address) {
  admin_address_ = admin_address;
  address_ = address;
  resp_address_ = resp_address;
  if (Status s = register_lease(); !s.ok()) return s;
  // The region's first node creates its topology; a known node whose addresses changed (a
  // restart on other ports) corrects them.
  for (int attempt = 0;; ++attempt) {
    auto current = read_topology();
    if (!current.ok() && current.status().code() != StatusCode::kNotFound) return current.status();
    if (!current.ok()) {
      Topology first;
      first.region = options_.region;
      first.epoch = 1;
      first.nodes.push_back({options_.node_id, address_, resp_address_, number_, 1, false, {}});
      first.replication_factor = options_.replication_factor;
      Txn create{{{topology_key(options_.region), Compare::Target::kCreateRevision, 0, ""}},
                 {{TxnOp::Kind::kPut, topology_key(options_.region), first.to_json(), 0}},
                 {}};
      auto created = etcd_.txn(create);
      if (!created.ok()) return created.status();
      if (*created)
        options_.log(false,
                     "created region " + options_.region + "'s topology with this node alone");
      if (attempt < 8) continue;
      return Status::Unavailable("the region's topology keeps changing; try again");
    }
    Topology t = current->first;
    bool changed = false;
    for (auto* list : {&t.nodes, t.migration ? &t.migration->target : nullptr}) {
      if (list == nullptr) continue;
      for (Node& n : *list) {
        if (n.id != options_.node_id) continue;
        if (n.number != number_) {
          return Status::InvalidArgument("node " + n.id + " has number " +
                                         std::to_string(n.number) +
                                         " in the topology but claimed " + std::to_string(number_) +
                                         " in etcd: two data directories with one node id?");
        }
        if (n.address != address_ || n.resp_address != resp_address_) {
          n.address = address_;
          n.resp_address = resp_address_;
          changed = true;
        }
      }
    }
    if (changed) {
      t.epoch = current->first.epoch + 1;
      auto swapped = replace_topology(t, current->second);
      if (!swapped.ok()) return swapped.status();
      if (!*swapped) {
        if (attempt < 8) continue;
        return Status::Unavailable("the region's topology keeps changing; try again");
      }
      options_.log(false, "updated this node's address in the topology to " + address_);
      auto again = read_topology();
      if (!again.ok()) return again.status();
      current = std::move(again);
    }
    publish(current->first);
    if (Status s = read_legacy(); !s.ok()) return s;
    keep_alive_thread_ = std::thread([this] { keep_alive_loop(); });
    watch_thread_ = std::thread([this, from = current->second + 1] { watch_loop(from); });
    return {};
  }
}

void Membership::publish(Topology topology) {
  auto routing = std::make_shared<Routing>();
  routing->ring = Ring(topology.nodes);
  routing->any_down = std::any_of(topology.nodes.begin(), topology.nodes.end(),
                                  [](const Node& n) { return n.down; });
  if (topology.migration) routing->target = Ring(topology.migration->target);
  for (std::size_t i = 0; i < topology.nodes.size(); ++i) {
    if (topology.nodes[i].id == options_.node_id) routing->self = i;
  }
  routing->topology = std::move(topology);
  std::shared_ptr<const Routing> published = routing;
  std::lock_guard calling(callbacks_mu_);
  if (const auto current = routing_.load();
      current && current->topology.epoch >= published->topology.epoch) {
    return;
  }
  routing_.store(published);
  for (const auto& [handle, callback] : callbacks_) callback(published);
}

std::shared_ptr<const Routing> Membership::routing() const { return routing_.load(); }

std::uint64_t Membership::on_change(
    std::function<void(const std::shared_ptr<const Routing>&)> callback) {
  std::lock_guard lock(callbacks_mu_);
  callbacks_.emplace_back(next_callback_, std::move(callback));
  return next_callback_++;
}

void Membership::remove_on_change(std::uint64_t handle) {
  std::lock_guard lock(callbacks_mu_);
  std::erase_if(callbacks_, [&](const auto& entry) { return entry.first == handle; });
}

bool Membership::writable() const { return steady_ns() < writable_until_.load(); }

Status Membership::fenced_status() const {
  const std::int64_t since_ms = (steady_ns() - last_renewal_.load()) / 1'000'000;
  return Status::Unavailable(
      "writes refused: this node's etcd lease was last renewed " + std::to_string(since_ms) +
      " ms ago (TTL " + std::to_string(options_.lease_ttl.count()) +
      " ms); etcd unreachable? Reads go on; writes resume once it is renewed");
}

void Membership::keep_alive_loop() {
  const auto period = options_.lease_ttl / 3;
  const auto retry =
      std::min<std::chrono::milliseconds>(options_.lease_ttl / 10, std::chrono::milliseconds(500));
  bool failing = false;
  while (!stop_.load()) {
    const std::int64_t sent = steady_ns();
    auto ttl = etcd_.keep_alive(lease_.load());
    Status outcome = ttl.status();
    if (ttl.ok()) {
      last_renewal_.store(sent);
      writable_until_.store(
          sent + std::chrono::duration_cast<std::chrono::nanoseconds>(fence_window()).count());
    } else if (ttl.status().code() == StatusCode::kNotFound) {
      // The lease ran out while etcd was out of reach: take a new one and put the liveness key
      // back under it.
      outcome = register_lease(/*topology_first=*/true);
      if (outcome.ok())
        options_.log(true, "the etcd lease had expired; registered again under a new one");
    }
    if (outcome.ok() && failing) {
      options_.log(false, "etcd reachable again: lease renewed, writes accepted");
    } else if (!outcome.ok() && !failing) {
      options_.log(true, "cannot renew the etcd lease: " + outcome.message() +
                             "; writes stop when it runs out (reads go on)");
    }
    failing = !outcome.ok();
    std::unique_lock lock(stop_mu_);
    stop_cv_.wait_for(lock, failing ? retry : period, [&] { return stop_.load(); });
  }
}

void Membership::watch_loop(std::int64_t from_revision) {
  std::int64_t next = from_revision;
  const std::string key = topology_key(options_.region);
  const std::string legacy = legacy_prefix(options_.region);
  while (!stop_.load()) {
    // The whole region: the topology and the legacy holders.
    Status ended = etcd_.watch(
        region_prefix(options_.region), next,
        [&](const std::vector<WatchEvent>& events, std::int64_t) {
          for (const WatchEvent& e : events) {
            next = std::max(next, e.kv.mod_revision + 1);
            if (e.kv.key.starts_with(legacy)) {
              std::lock_guard lock(legacy_mu_);
              if (e.deleted) {
                legacy_.erase(e.kv.key.substr(legacy.size()));
              } else {
                legacy_.insert(e.kv.key.substr(legacy.size()));
              }
              continue;
            }
            if (e.deleted || e.kv.key != key) continue;
            auto t = Topology::from_json(e.kv.value);
            if (!t.ok()) {
              options_.log(true,
                           "ignoring a topology that does not parse: " + t.status().message());
              continue;
            }
            publish(std::move(t).value());
          }
        },
        stop_);
    if (stop_.load()) break;
    // A failed or compacted watch: read the current topology, then watch on from there.
    auto current = read_topology();
    if (current.ok() && read_legacy().ok()) {
      publish(current->first);
      next = std::max(next, current->second + 1);
    } else if (!ended.ok()) {
      std::unique_lock lock(stop_mu_);
      stop_cv_.wait_for(lock, std::chrono::milliseconds(500), [&] { return stop_.load(); });
    }
  }
}

Status Membership::read_legacy() {
  const std::string prefix = legacy_prefix(options_.region);
  auto range = etcd_.get_prefix(prefix);
  if (!range.ok()) return range.status();
  std::set<std::string> holders;
  for (const KeyValue& kv : range->kvs) holders.insert(kv.key.substr(prefix.size()));
  std::lock_guard lock(legacy_mu_);
  legacy_ = std::move(holders);
  return {};
}

std::vector<std::string> Membership::legacy_holders() const {
  std::lock_guard lock(legacy_mu_);
  return {legacy_.begin(), legacy_.end()};
}

Status Membership::set_legacy_sessions(std::size_t count) {
  const std::string key = legacy_prefix(options_.region) + options_.node_id;
  if (count == 0) {
    if (auto erased = etcd_.erase(key); !erased.ok()) return erased.status();
  } else if (auto put = etcd_.put(key, std::to_string(count)); !put.ok()) {
    return put.status();
  }
  // Known here at once, not only when the watch brings it.
  std::lock_guard lock(legacy_mu_);
  if (count == 0) {
    legacy_.erase(options_.node_id);
  } else {
    legacy_.insert(options_.node_id);
  }
  return {};
}

Membership::~Membership() {
  {
    std::lock_guard lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (keep_alive_thread_.joinable()) keep_alive_thread_.join();
  if (watch_thread_.joinable()) watch_thread_.join();
  if (const std::int64_t lease = lease_.load(); lease != 0) (void)etcd_.revoke_lease(lease);
}

}  // namespace sessiond::cluster
