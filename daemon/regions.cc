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
  }
  wakers_->shippers = shippers_;
}

Regions::~Regions() {
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
}

Status Regions::check_peer(const std::string& region, std::uint32_t number) const {
  if (!received_.contains(region)) {
    return Status(StatusCode::kForbidden, "region " + options_.region + " has no peer region \"" + region +
                             "\" (--peer-region on node " + options_.node_id + ")");
  }
  if (number != cluster::region_number(region)) {
    return Status(StatusCode::kForbidden, "region " + region + " sent region number " + std::to_string(number) +
                             "; its name gives " + std::to_string(cluster::region_number(region)));
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
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace sessiond::daemon
