#include "daemon/regions.h"

#include <zstd.h>

#include <shared_mutex>

#include "cluster/membership.h"
#include "cluster/topology.h"
#include "daemon/migration.h"
#include "daemon/replicas.h"
#include "protocol/sessiond.pb.h"
#include "replication/applier.h"
#include "replication/codec.h"

namespace sessiond::daemon {

Regions::Regions(storage::SessionTable& table, storage::Store& store,
                 const storage::IdGenerator& ids, cluster::Membership* membership,
                 Replicas* replicas, Migrator* migrator, Options options)
    : table_(table),
      store_(store),
      ids_(ids),
      membership_(membership),
      replicas_(replicas),
      migrator_(migrator),
      options_(std::move(options)),
      wakers_(std::make_shared<Wakers>()) {
  for (const PeerRegionSpec& peer : options_.peers) {
    replication::RegionShipper::Options o;
    o.self = options_.node_id;
    o.region = options_.region;
    o.region_number = cluster::region_number(options_.region);
    o.peer_region = peer.name;
    o.seeds = peer.seeds;
    o.peer_secret = options_.peer_secret;
    o.ids = &ids_;
    o.batch_delay = options_.batch_delay;
    o.log = options_.log;
    shippers_.push_back(std::make_shared<replication::RegionShipper>(table_, store_, std::move(o)));
    received_[peer.name] = std::make_unique<Received>();
    repairs_.push_back(std::make_unique<Repairs>());
  }
  wakers_->shippers = shippers_;
}

Regions::~Regions() {
  {
    std::lock_guard lock(stop_mu_);
    stop_ = true;
    stopping_ = true;  // a round under way ends early
  }
  stop_cv_.notify_all();
  if (repair_thread_.joinable()) repair_thread_.join();
  if (observer_ != 0) table_.remove_observer(observer_);
  for (auto& s : shippers_) s->stop();
}

void Regions::start() {
  // Only what this node accepted itself is shipped: a remote write's origin ships it.
  observer_ = table_.on_change([wakers = wakers_](const storage::Mutation& m, std::uint64_t) {
    if (m.origin.remote) return;
    for (const auto& s : wakers->shippers) s->wake();
  });
  for (auto& s : shippers_) s->start();
  const auto now = std::chrono::steady_clock::now();
  for (auto& r : repairs_) r->next = now + options_.anti_entropy_interval;
  repair_thread_ = std::thread([this] { repair_loop(); });
}

replication::Ranges Regions::owned_ranges(std::uint64_t* epoch) const {
  if (membership_ == nullptr) {  // a one-node region owns everything
    *epoch = 0;
    return {{0, UINT64_MAX}};
  }
  const auto routing = membership_->routing();
  *epoch = routing->topology.epoch;
  std::vector<std::uint64_t> points;
  for (const auto& p : routing->ring.points()) points.push_back(p.position);
  return replication::ring_ranges(points, [&](std::size_t i) { return routing->owns(points[i]); });
}

Result<replication::RepairReport> Regions::repair_one(
    std::size_t peer, const std::string& why, bool check_only,
    std::optional<std::chrono::steady_clock::time_point> decided_at) {
  auto& shipper = *shippers_[peer];
  Repairs& r = *repairs_[peer];
  std::lock_guard run(r.run);
  if (decided_at) {
    std::lock_guard lock(r.mu);
    if (r.completed_at > *decided_at) return replication::RepairReport{};
  }
  auto view = shipper.peer_view();
  Result<replication::RepairReport> result =
      Status::Unavailable("region " + shipper.options().peer_region +
                          " has not answered TOPOLOGY yet (see the shipping errors)");
  std::uint64_t own_epoch = 0;
  const replication::Ranges owned = owned_ranges(&own_epoch);
  replication::RepairOptions o;
  o.self = options_.node_id;
  o.region = options_.region;
  o.region_number = cluster::region_number(options_.region);
  o.peer_region = shipper.options().peer_region;
  o.peer_secret = options_.peer_secret;
  o.ids = &ids_;
  o.stop = &stopping_;
  for (int attempt = 0; view && attempt < 2; ++attempt) {
    result = replication::repair_with_region(table_, o, *view, owned, check_only);
    if (result.ok() || result.status().code() != StatusCode::kWrongNode) break;
    // The peer region's topology changed since the shipper fetched it: the shipper fetches it
    // again (within a moment), and the round is tried once more by the new one.
    const std::uint64_t stale = view->topology.epoch;
    shipper.refresh_topology();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    do {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      view = shipper.peer_view();
    } while ((!view || view->topology.epoch == stale) &&
             std::chrono::steady_clock::now() < deadline && !stopping_);
    if (!view) break;
  }
  if (check_only) return result;
  std::lock_guard lock(r.mu);
  r.own_epoch = own_epoch;
  r.peer_epoch = view ? view->topology.epoch : 0;
  if (!result.ok()) {
    r.error = result.status().ToString();
    if (options_.log) {
      options_.log(true, "anti-entropy with region " + shipper.options().peer_region + " (" + why +
                             ") failed: " + r.error);
    }
    return result;
  }
  r.error.clear();
  r.pending.clear();  // whatever made a round due, this one did it
  r.completed_at = std::chrono::steady_clock::now();
  ++r.rounds;
  r.repaired += result->pulled + result->pushed;
  r.last = *result;
  r.last_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  if (options_.log && (result->buckets_differing > 0 || why != "schedule")) {
    options_.log(false, "anti-entropy with region " + shipper.options().peer_region + " (" + why +
                            "): " + std::to_string(result->buckets_differing) +
                            " buckets differed; " + std::to_string(result->pulled) +
                            " states merged from it, " + std::to_string(result->pushed) +
                            " sent; " + std::to_string(result->bytes) + " bytes in " +
                            std::to_string(result->duration.count()) + " ms");
  }
  return result;
}

void Regions::repair_loop() {
  using namespace std::chrono_literals;
  using Steady = std::chrono::steady_clock;
  for (;;) {
    {
      std::unique_lock lock(stop_mu_);
      if (stop_cv_.wait_for(lock, 200ms, [&] { return stop_; })) return;
    }
    std::uint64_t own_epoch = 0;
    (void)owned_ranges(&own_epoch);
    for (std::size_t i = 0; i < shippers_.size(); ++i) {
      auto& shipper = *shippers_[i];
      const auto view = shipper.peer_view();
      if (!view) continue;  // the shipper fetches it
      Repairs& r = *repairs_[i];
      const char* requested = shipper.take_repair_request();
      const auto decided_at = Steady::now();
      std::string why;
      {
        std::lock_guard lock(r.mu);
        if (requested != nullptr) r.pending = requested;
        if (r.pending.empty() && r.rounds > 0 &&
            (r.own_epoch != own_epoch || r.peer_epoch != view->topology.epoch)) {
          r.pending = "ownership changed";
        }
        const auto now = Steady::now();
        if (!r.pending.empty() && now >= r.retry_at) {
          why = r.pending;
        } else if (options_.anti_entropy_interval.count() > 0 && now >= r.next) {
          why = "schedule";
        }
      }
      if (why.empty()) continue;
      auto result = repair_one(i, why, false, decided_at);
      std::lock_guard lock(r.mu);
      const auto now = Steady::now();
      if (result.ok()) {
        r.pending.clear();
        r.next = now + options_.anti_entropy_interval;
      } else {
        // Tried again in a while, whatever made it due.
        if (r.pending.empty()) r.pending = why;
        r.retry_at = now + 5s;
      }
    }
  }
}

std::vector<std::pair<std::string, Result<replication::RepairReport>>> Regions::repair_now(
    const std::string& region, bool check_only) {
  std::vector<std::pair<std::string, Result<replication::RepairReport>>> out;
  for (std::size_t i = 0; i < shippers_.size(); ++i) {
    const std::string& name = shippers_[i]->options().peer_region;
    if (!region.empty() && name != region) continue;
    out.emplace_back(name, repair_one(i, "asked for", check_only));
  }
  return out;
}

Status Regions::receive_digest(const wire::DigestRequest& request, wire::DigestResponse* response) {
  if (Status s = check_peer(request.from_region(), request.region_number()); !s.ok()) return s;
  auto ranges = replication::ranges_from_wire(request, 1u << 16);
  if (!ranges.ok()) return ranges.status();
  std::uint64_t epoch = 0;
  const replication::Ranges owned = owned_ranges(&epoch);
  if (request.epoch() != epoch || replication::intersect(*ranges, owned) != *ranges) {
    return {StatusCode::kWrongNode, "node " + options_.node_id + " is at topology epoch " +
                                        std::to_string(epoch) + " and does not own all that node " +
                                        request.from_node() + " of region " +
                                        request.from_region() + " compares (its epoch " +
                                        std::to_string(request.epoch()) + ")"};
  }
  return replication::answer_region_digest(table_, ids_, *ranges, request, response);
}

Status Regions::check_peer(const std::string& region, std::uint32_t number) const {
  if (!received_.contains(region)) {
    return Status(StatusCode::kForbidden, "region " + options_.region + " has no peer region \"" +
                                              region + "\" (--peer-region on node " +
                                              options_.node_id + ")");
  }
  if (number != cluster::region_number(region)) {
    return Status(StatusCode::kForbidden, "region " + region + " sent region number " +
                                              std::to_string(number) + "; its name gives " +
                                              std::to_string(cluster::region_number(region)));
  }
  return {};
}

Status Regions::receive(const wire::ReplicateRequest& request, wire::ReplicateResponse* response) {
  if (Status s = check_peer(request.from_region(), request.region_number()); !s.ok()) return s;
  wire::MutationBatch unpacked;
  const auto* entries = &request.entries();
  if (!request.zstd_entries().empty()) {
    const std::string& packed = request.zstd_entries();
    // Never more than a frame's worth: the size is what the sender claims, checked first.
    const unsigned long long size = ZSTD_getFrameContentSize(packed.data(), packed.size());
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN ||
        size > 4ull * options_.max_frame_bytes) {
      return Status::InvalidArgument("a compressed batch without a valid size of at most " +
                                     std::to_string(4ull * options_.max_frame_bytes) + " bytes");
    }
    std::string raw(size, '\0');
    const std::size_t n = ZSTD_decompress(raw.data(), raw.size(), packed.data(), packed.size());
    if (ZSTD_isError(n) || n != size || !unpacked.ParseFromString(raw)) {
      return Status::InvalidArgument("a compressed batch that does not unpack");
    }
    entries = &unpacked.entries();
  }
  std::vector<replication::OwnedMutation> owned;
  owned.reserve(static_cast<std::size_t>(entries->size()));
  for (const auto& e : *entries) {
    auto m = replication::from_wire(e);
    if (!m.ok()) return m.status();
    owned.push_back(std::move(m).value());
  }
  // Admitted as a client's write of the same keys would be.
  std::shared_lock<std::shared_mutex> stopping, moving;
  if (membership_ != nullptr) {
    if (!membership_->writable()) return membership_->fenced_status();
    if (replicas_ != nullptr) {
      if (Status s = replicas_->admit_write(&stopping); !s.ok()) return s;
    }
    const auto routing = membership_->routing();
    response->set_epoch(routing->topology.epoch);
    for (const auto& e : owned) {
      const std::uint64_t position = replication::position_of(e.m, ids_);
      if (!routing->owns(position)) {
        const cluster::Node* owner = routing->owner(position);
        return {StatusCode::kWrongNode,
                "node " + options_.node_id + " does not own an entry node " + request.from_node() +
                    " of region " + request.from_region() + " sent (" +
                    (owner ? "node " + owner->id + " does" : std::string("no node does")) +
                    " at epoch " + std::to_string(routing->topology.epoch) + ")"};
      }
      if (!moving.owns_lock() && migrator_ != nullptr) {
        if (Status s = migrator_->admit_write(*routing, position, &moving); !s.ok()) return s;
      }
    }
  }
  auto applied = replication::apply_entries(table_, owned);
  if (!applied.ok()) return applied.status();
  Received& r = *received_.at(request.from_region());
  r.applied += applied->applied;
  r.set_aside += applied->set_aside;
  r.conflicts += applied->conflicts;
  response->set_applied(applied->applied);
  response->set_set_aside(applied->set_aside);
  response->set_conflicts(applied->conflicts);
  return {};
}

std::vector<Regions::PeerStats> Regions::stats() const {
  std::vector<PeerStats> out;
  for (const auto& s : shippers_) {
    PeerStats p;
    p.region = s->options().peer_region;
    p.shipped = s->stats();
    const Received& r = *received_.at(p.region);
    p.received = r.applied.load();
    p.received_set_aside = r.set_aside.load();
    p.received_conflicts = r.conflicts.load();
    const Repairs& rep = *repairs_[out.size()];
    std::lock_guard lock(rep.mu);
    p.repairs = rep.rounds;
    p.repaired = rep.repaired;
    p.last_repair = rep.last;
    p.last_repair_ms = rep.last_ms;
    p.repair_error = rep.error;
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace sessiond::daemon
