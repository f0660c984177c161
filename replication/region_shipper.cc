#include "replication/region_shipper.h"

#include <zstd.h>

#include <algorithm>

#include "protocol/sessiond.pb.h"
#include "replication/codec.h"
#include "replication/peer_link.h"
#include "storage/store.h"
#include "storage/test_hooks.h"

namespace sessiond::replication {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

std::int64_t steady_ns() { return Steady::now().time_since_epoch().count(); }

}  // namespace

std::optional<std::size_t> PeerRegionView::owner(std::uint64_t position) const {
  if (ring.empty()) return std::nullopt;
  return cluster::place(ring, topology.nodes, topology.replication_factor, position).owner;
}

PeerRegionView PeerRegionView::from_wire(const wire::TopologyResponse& response) {
  PeerRegionView view;
  view.topology.region = response.region();
  view.topology.epoch = response.epoch();
  view.topology.replication_factor = std::max<std::uint32_t>(response.replication_factor(), 1);
  for (const wire::Node& in : response.nodes()) {
    cluster::Node node;
    node.id = in.id();
    node.address = in.address();
    node.number = in.number();
    node.weight = in.weight();
    node.down = in.down();
    node.in_sync.assign(in.in_sync().begin(), in.in_sync().end());
    view.topology.nodes.push_back(std::move(node));
  }
  // The ring's owner() is an index into this order, the one every node builds its ring in.
  std::sort(view.topology.nodes.begin(), view.topology.nodes.end(),
            [](const cluster::Node& a, const cluster::Node& b) { return a.id < b.id; });
  view.ring = cluster::Ring(view.topology.nodes);
  return view;
}

RegionShipper::RegionShipper(storage::SessionTable& table, storage::Store& store, Options options)
    : table_(table),
      store_(store),
      options_(std::move(options)),
      cursor_name_("ship/region:" + options_.peer_region) {
  // A peer region new to this node gets what is logged from now on; what came before reaches
  // it by anti-entropy (which runs once the shipper has the peer's topology).
  const std::uint64_t committed = store_.log_committed();
  const auto cursor = store_.log_cursor(cursor_name_);
  if (!cursor) repair_requested_ = kNewPeer;
  next_ = cursor.value_or(committed + 1);
  // Recorded at once: the log is trimmed below the slowest recorded cursor.
  (void)store_.set_log_cursor(cursor_name_, next_);
  persisted_ = next_;
}

RegionShipper::~RegionShipper() { stop(); }

void RegionShipper::start() {
  std::lock_guard lock(mu_);
  if (!thread_.joinable() && !stop_) thread_ = std::thread([this] { loop(); });
}

void RegionShipper::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void RegionShipper::wake() {
  // A plain read first: under load the mark is set, and every write would otherwise contend
  // for the cache line.
  if (first_unread_ns_.load(std::memory_order_relaxed) == 0) {
    std::int64_t none = 0;
    first_unread_ns_.compare_exchange_strong(none, steady_ns(), std::memory_order_relaxed);
  }
  {
    std::lock_guard lock(mu_);
    if (woken_) return;
    woken_ = true;
  }
  cv_.notify_one();
}

void RegionShipper::wait_for_work(std::chrono::milliseconds at_most) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, at_most, [&] { return stop_.load() || woken_; });
  woken_ = false;
}

std::shared_ptr<const PeerRegionView> RegionShipper::peer_view() const {
  std::lock_guard lock(mu_);
  return view_;
}

void RegionShipper::refresh_topology() {
  std::lock_guard lock(mu_);
  view_.reset();
}

RegionShipper::Stats RegionShipper::stats() const {
  Stats s;
  const std::uint64_t committed = store_.log_committed();
  const std::uint64_t next = next_.load(std::memory_order_acquire);
  s.lag_entries = committed + 1 > next ? committed + 1 - next : 0;
  s.lag_ms = s.lag_entries == 0 ? 0 : (steady_ns() - caught_up_ns_.load()) / 1'000'000;
  s.entries_shipped = shipped_.load();
  s.bytes_shipped = bytes_.load();
  s.batches = batches_.load();
  s.set_aside = set_aside_.load();
  s.conflicts = conflicts_.load();
  s.retention_gaps = gaps_.load();
  std::lock_guard lock(mu_);
  s.peer_epoch = view_ ? view_->topology.epoch : 0;
  s.last_error = last_error_;
  std::vector<double> samples;
  {
    std::lock_guard lag_lock(lag_mu_);
    samples = lag_ms_;
    s.lag_samples = lag_count_;
  }
  if (!samples.empty()) {
    std::sort(samples.begin(), samples.end());
    const auto at = [&](double q) {
      return samples[std::min(samples.size() - 1, static_cast<std::size_t>(q * samples.size()))];
    };
    s.lag_p50_ms = at(0.5);
    s.lag_p99_ms = at(0.99);
    s.lag_max_ms = samples.back();
  }
  return s;
}

void RegionShipper::note_error(const Status& s) {
  std::lock_guard lock(mu_);
  last_error_ = s.ok() ? std::string() : s.ToString();
}

Status RegionShipper::advance(std::uint64_t next, bool force) {
  next_.store(next, std::memory_order_release);
  const auto now = Steady::now();
  if (next == persisted_ || (!force && now - persisted_at_ < options_.cursor_persist_interval)) {
    return {};
  }
  if (Status s = store_.set_log_cursor(cursor_name_, next); !s.ok()) return s;
  persisted_ = next;
  persisted_at_ = now;
  return {};
}

PeerLink& RegionShipper::link_to(const std::string& address) {
  auto& link = links_[address];
  if (!link) link = std::make_unique<PeerLink>(address, options_.peer_secret);
  return *link;
}

Status RegionShipper::fetch_topology() {
  std::vector<std::string> candidates = options_.seeds;
  if (auto old = peer_view()) {
    for (const auto& n : old->topology.nodes) {
      if (std::find(candidates.begin(), candidates.end(), n.address) == candidates.end()) {
        candidates.push_back(n.address);
      }
    }
  }
  Status last = Status::Unavailable("no seed of region " + options_.peer_region);
  for (const std::string& address : candidates) {
    wire::TopologyRequest request;
    wire::TopologyResponse response;
    if (Status s = link_to(address).call(protocol::Opcode::kTopology, request, &response);
        !s.ok()) {
      last = s;
      continue;
    }
    if (response.region() != options_.peer_region) {
      // A seed of the wrong region (a configuration mistake): never ship there.
      last =
          Status::InvalidArgument("seed " + address + " of peer region " + options_.peer_region +
                                  " serves region " + response.region() + " (check --peer-region)");
      continue;
    }
    auto view = std::make_shared<PeerRegionView>(PeerRegionView::from_wire(response));
    if (view->ring.empty()) {
      last = Status::Unavailable("region " + options_.peer_region + " has no node with weight");
      continue;
    }
    const bool first = peer_view() == nullptr;
    {
      std::lock_guard lock(mu_);
      view_ = std::move(view);
    }
    if (first && options_.log) {
      options_.log(false, "region " + options_.peer_region + ": topology epoch " +
                              std::to_string(response.epoch()) + " with " +
                              std::to_string(response.nodes_size()) + " nodes (from " + address +
                              ")");
    }
    return {};
  }
  return last;
}

Result<bool> RegionShipper::ship_batch(const PeerRegionView& view) {
  const std::uint64_t from = next_.load();
  // When the oldest entry of this batch was logged (taken before reading: what is logged from
  // now on marks the next batch; put back below unless this one reaches the log's end).
  const std::int64_t oldest_ns = first_unread_ns_.exchange(0, std::memory_order_relaxed);
  const std::uint64_t committed = store_.log_committed();
  auto keep_oldest = [&] {
    std::int64_t later = first_unread_ns_.load(std::memory_order_relaxed);
    while (oldest_ns != 0 && (later == 0 || later > oldest_ns) &&
           !first_unread_ns_.compare_exchange_weak(later, oldest_ns, std::memory_order_relaxed)) {
    }
  };
  if (from > committed) {
    keep_oldest();
    return false;
  }
  // Per owner in the peer region: its part of the batch.
  std::map<std::size_t, wire::MutationBatch> parts;
  std::uint64_t last = from - 1, first = 0;
  std::size_t bytes = 0, count = 0;
  bool blocked = false;  // an entry the peer region has no writer for: the batch ends before it
  std::string state;
  Status s = store_.for_each_log_entry(
      from, options_.batch_entries, [&](std::uint64_t seq, const storage::Mutation& m) {
        if (first == 0) first = seq;
        if (blocked || bytes >= kMaxBatchBytes) return;
        if (m.origin.remote) {
          last = seq;
          return;
        }
        const auto owner = view.owner(position_of(m, *options_.ids));
        if (!owner) {
          blocked = true;
          return;
        }
        last = seq;
        storage::Mutation out = m;
        if (m.kind == storage::Mutation::Kind::kPut) {
          // The session's state now; an ended one ships with its end entry, later in the log.
          auto kind = table_.state_of(m.id, &state);
          if (!kind.ok() || *kind != storage::Mutation::Kind::kPut) return;
          out.value = state;
        }
        auto* e = parts[*owner].add_entries();
        to_wire(out, e);
        bytes += e->ByteSizeLong();
        ++count;
      });
  if (!s.ok()) {
    keep_oldest();
    return s;
  }
  if (last < committed || first != from) keep_oldest();
  if (first != from) {
    // The log no longer holds what the peer needs next (it was cut off past the retention
    // cap): ship on from what it holds, and repair the rest by anti-entropy.
    const std::uint64_t resume = first == 0 ? committed + 1 : first;
    if (options_.log) {
      options_.log(true, "region " + options_.peer_region +
                             " fell behind the log's retention: " + "entries " +
                             std::to_string(from) + " to " + std::to_string(resume - 1) +
                             " are gone; repairing it by anti-entropy");
    }
    ++gaps_;
    repair_requested_ = kGap;
    if (Status a = advance(resume, true); !a.ok()) return a;
    return true;
  }
  if (last < from) {
    if (blocked) {
      return Status::Unavailable("region " + options_.peer_region +
                                 " has no writer for a range (its owner is down)");
    }
    return false;
  }
  last_full_ = count >= options_.batch_entries || bytes >= kMaxBatchBytes;
  // Every owner's part at once, then every answer.
  struct Sent {
    PeerLink* link;
    std::uint32_t request_id;
  };
  std::vector<Sent> sent;
  std::uint64_t sent_bytes = 0;
  for (auto& [owner, part] : parts) {
    const cluster::Node& node = view.topology.nodes[owner];
    wire::ReplicateRequest request;
    request.set_from_node(options_.self);
    request.set_from_region(options_.region);
    request.set_region_number(options_.region_number);
    request.set_epoch(view.topology.epoch);
    const std::string raw = part.SerializeAsString();
    if (raw.size() > options_.compress_bytes) {
      std::string packed(ZSTD_compressBound(raw.size()), '\0');
      const std::size_t n = ZSTD_compress(packed.data(), packed.size(), raw.data(), raw.size(), 1);
      if (ZSTD_isError(n)) return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(n));
      packed.resize(n);
      request.set_zstd_entries(std::move(packed));
    } else {
      *request.mutable_entries() = std::move(*part.mutable_entries());
    }
    PeerLink& link = link_to(node.address);
    auto id = link.send(protocol::Opcode::kReplicate, request);
    if (!id.ok()) {
      keep_oldest();
      if (storage::sabotaged(storage::Sabotage::kSkipRegionCursor)) (void)advance(last + 1, false);
      return id.status();
    }
    sent.push_back({&link, *id});
    sent_bytes += request.ByteSizeLong();
  }
  Status failed;
  std::uint64_t newest_epoch = 0;
  std::uint64_t set_aside = 0, conflicts = 0;
  for (const Sent& one : sent) {
    wire::ReplicateResponse response;
    // Every answer is read, so that each connection stays in step for the next batch.
    if (Status r = one.link->receive(one.request_id, &response); !r.ok()) {
      if (failed.ok()) failed = r;
      continue;
    }
    newest_epoch = std::max(newest_epoch, response.epoch());
    set_aside += response.set_aside();
    conflicts += response.conflicts();
  }
  if (!failed.ok()) {
    keep_oldest();
    if (storage::sabotaged(storage::Sabotage::kSkipRegionCursor)) (void)advance(last + 1, false);
    return failed;
  }
  if (oldest_ns != 0 && last >= committed) {
    std::lock_guard lock(lag_mu_);
    const double ms = static_cast<double>(steady_ns() - oldest_ns) / 1e6;
    if (lag_ms_.size() < kLagSamples) {
      lag_ms_.push_back(ms);
    } else {
      lag_ms_[lag_next_] = ms;
    }
    lag_next_ = (lag_next_ + 1) % kLagSamples;
    ++lag_count_;
  }
  if (newest_epoch > view.topology.epoch) refresh_topology();
  set_aside_ += set_aside;
  conflicts_ += conflicts;
  shipped_ += count;
  bytes_ += sent_bytes;
  ++batches_;
  if (Status a = advance(last + 1, false); !a.ok()) return a;
  if (last >= committed) caught_up_ns_ = steady_ns();
  return true;
}

void RegionShipper::loop() {
  auto backoff = 50ms;
  bool complained = false;
  while (!stop_) {
    auto view = peer_view();
    Status s;
    if (!view) {
      s = fetch_topology();
      view = peer_view();
    }
    bool idle = false;
    if (s.ok() && view) {
      if (!last_full_ && options_.batch_delay.count() > 0) {
        // A fuller batch in a moment, unless the last one was already full.
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, options_.batch_delay, [&] { return stop_.load(); });
      }
      auto shipped = ship_batch(*view);
      s = shipped.status();
      idle = shipped.ok() && !*shipped;
    }
    if (!s.ok()) {
      last_full_ = false;
      note_error(s);
      if (!complained && options_.log) {
        options_.log(true, "shipping to region " + options_.peer_region +
                               " failed (retrying): " + s.ToString());
      }
      complained = true;
      // Connections with answers still pending are out of step: made again. The owner may
      // have moved or gone: the topology is fetched again.
      links_.clear();
      refresh_topology();
      wait_for_work(s.code() == StatusCode::kWrongNode ? 10ms : backoff);
      if (s.code() != StatusCode::kWrongNode)
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, 2s);
      continue;
    }
    if (complained) {
      if (options_.log)
        options_.log(false, "shipping to region " + options_.peer_region + " again");
      note_error(Status());
    }
    complained = false;
    backoff = 50ms;
    if (idle) {
      caught_up_ns_ = steady_ns();
      (void)advance(next_, true);  // a quiet moment: the cursor goes to `meta`
      wait_for_work(100ms);
    }
  }
  (void)advance(next_, true);
}

}  // namespace sessiond::replication
