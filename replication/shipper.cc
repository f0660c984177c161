#include "replication/shipper.h"

#include <algorithm>
#include <vector>

#include "protocol/sessiond.pb.h"
#include "replication/applier.h"
#include "replication/codec.h"
#include "replication/digest.h"
#include "replication/peer_link.h"
#include "storage/session_table.h"
#include "storage/store.h"

namespace sessiond::replication {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

std::int64_t steady_ns() { return Steady::now().time_since_epoch().count(); }

}  // namespace

Shipper::Shipper(storage::SessionTable& table, storage::Store& store, Options options)
    : table_(table),
      store_(store),
      options_(std::move(options)),
      cursor_name_("ship/" + options_.peer) {
  // Where the last run left off; what was shipped before is resent from there at most. A
  // snapshot comes first anyway (the ranges the peer holds may have changed meanwhile).
  const std::uint64_t committed = store_.log_committed();
  next_ = store_.log_cursor(cursor_name_).value_or(committed + 1);
  acked_ = next_ - 1;
  read_ = next_;
  // Recorded at once: the log is trimmed below the slowest recorded cursor, and a cursor not
  // recorded yet would not hold it back. (A failed write leaves it unrecorded: the gap check
  // in send_batch() then resyncs the peer.)
  (void)store_.set_log_cursor(cursor_name_, next_);
  persisted_ = next_;
}

Shipper::~Shipper() { stop(); }

void Shipper::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Shipper::retire() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    retired_ = true;
  }
  cv_.notify_all();
}

void Shipper::retarget(Target target, bool resync) {
  {
    std::lock_guard lock(mu_);
    target_ = std::move(target);
    ++generation_;
    resync_ = resync_ || resync;
    woken_ = true;
    if (!thread_.joinable() && !stop_) thread_ = std::thread([this] { loop(); });
  }
  cv_.notify_all();
}

void Shipper::wake() {
  {
    std::lock_guard lock(mu_);
    if (woken_) return;
    woken_ = true;
  }
  cv_.notify_one();
}

bool Shipper::in_sync() const {
  {
    std::lock_guard lock(mu_);
    if (resync_) return false;
  }
  return steady_ns() - caught_up_ns_.load(std::memory_order_acquire) <
         std::chrono::nanoseconds(options_.in_sync_lag).count();
}

std::uint64_t Shipper::lag_entries() const {
  const std::uint64_t committed = store_.log_committed();
  const std::uint64_t acked = acked_.load(std::memory_order_acquire);
  return committed > acked ? committed - acked : 0;
}

void Shipper::wait_for_work(std::chrono::milliseconds at_most) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, at_most, [&] { return stop_.load() || woken_; });
  woken_ = false;
}

Status Shipper::send(PeerLink& link, const wire::ReplicateRequest& request) {
  wire::ReplicateResponse response;
  return link.call(protocol::Opcode::kReplicate, request, &response);
}

Status Shipper::advance(std::uint64_t next, bool force) {
  if (next != next_) {
    next_ = next;
    acked_.store(next - 1, std::memory_order_release);
    if (options_.on_acked) options_.on_acked();
  }
  const auto now = Steady::now();
  if (next == persisted_ || (!force && now - persisted_at_ < options_.cursor_persist_interval)) {
    return {};
  }
  // Under mu_: once retire() returned, the cursor is not written again.
  std::lock_guard lock(mu_);
  if (retired_) return {};
  if (Status s = store_.set_log_cursor(cursor_name_, next); !s.ok()) return s;
  persisted_ = next;
  persisted_at_ = now;
  return {};
}

Result<std::uint64_t> Shipper::send_states(PeerLink& link, const Target& target,
                                           const storage::SessionTable::Selection& selection) {
  Status failed;
  std::uint64_t sent = 0;
  wire::ReplicateRequest request;
  request.set_from_node(options_.self);
  request.set_epoch(target.epoch);
  request.set_snapshot(true);
  std::size_t bytes = 0;
  auto flush = [&] {
    if (!failed.ok() || request.entries_size() == 0) return;
    failed = send(link, request);
    sent += static_cast<std::uint64_t>(request.entries_size());
    request.clear_entries();
    bytes = 0;
  };
  table_.export_states(selection, [&](std::span<const storage::Mutation> batch) {
    if (!failed.ok() || stop_) return;
    for (const storage::Mutation& m : batch) {
      auto* e = request.add_entries();
      to_wire(m, e);
      bytes += e->ByteSizeLong();
      if (static_cast<std::size_t>(request.entries_size()) >= options_.batch_entries ||
          bytes >= kMaxBatchBytes) {
        flush();
      }
    }
  });
  flush();
  if (!failed.ok()) return failed;
  if (stop_) return Status::Unavailable("stopping");
  return sent;
}

Status Shipper::snapshot(PeerLink& link, const Target& target, std::uint64_t generation) {
  // Everything logged before `start` is in memory by the time export_states holds each shard's
  // lock; the log resumes at `start`.
  const std::uint64_t start = store_.log_committed() + 1;
  {
    // The log from `start` on must stay until the peer has it: the cursor holds it back.
    std::lock_guard lock(mu_);
    if (retired_) return Status::Unavailable("retired");
    if (Status s = store_.set_log_cursor(cursor_name_, start); !s.ok()) return s;
    persisted_ = start;
    persisted_at_ = Steady::now();
  }
  const storage::IdGenerator& ids = *options_.ids;
  const storage::SessionTable::Selection selection{
      [&](const storage::SessionId& id) { return target.wanted(storage::route_key_of(id)); },
      [&](std::string_view user) { return target.wanted(ids.route_key_of_user(user)); }};
  if (auto sent = send_states(link, target, selection); !sent.ok()) return sent.status();
  {
    std::lock_guard lock(mu_);
    if (generation_ != generation) return {};  // retargeted meanwhile: another snapshot
    resync_ = false;
  }
  if (Status s = advance(std::max(start, std::uint64_t{1}), true); !s.ok()) return s;
  read_ = next_;
  caught_up_ns_ = steady_ns();
  return {};
}

Status Shipper::anti_entropy(PeerLink& link, const Target& target) {
  const Digest mine = compute_digest(table_, *options_.ids, target.wanted);
  wire::DigestRequest request;
  request.set_from_node(options_.self);
  request.set_epoch(target.epoch);
  to_wire(mine, &request);
  wire::DigestResponse response;
  if (Status s = link.call(protocol::Opcode::kDigest, request, &response); !s.ok()) return s;
  ++repair_rounds_;
  if (response.differing_size() == 0) return {};
  std::vector<std::uint32_t> buckets;
  for (std::uint32_t b : response.differing()) {
    if (b < kDigestBuckets) buckets.push_back(b);
  }
  std::sort(buckets.begin(), buckets.end());
  buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
  // The peer's states first (what this node lost and the peer still holds), then this node's
  // of the same buckets, which include them now.
  std::vector<OwnedMutation> theirs;
  theirs.reserve(static_cast<std::size_t>(response.entries_size()));
  for (const auto& e : response.entries()) {
    auto m = from_wire(e);
    if (!m.ok()) return m.status();
    const std::uint64_t position = position_of(m->m, *options_.ids);
    if (!target.wanted(position) ||
        !std::binary_search(buckets.begin(), buckets.end(), digest_bucket(position))) {
      continue;  // not the peer's to send
    }
    theirs.push_back(std::move(m).value());
  }
  auto applied = apply_entries(table_, theirs);
  if (!applied.ok()) return applied.status();
  repair_pulled_ += theirs.size();
  auto sent = send_states(link, target, bucket_selection(*options_.ids, buckets, target.wanted));
  if (!sent.ok()) return sent.status();
  repair_pushed_ += *sent;
  if (options_.log) {
    options_.log(false, "anti-entropy with " + options_.peer + ": " +
                            std::to_string(buckets.size()) + " of " +
                            std::to_string(kDigestBuckets) + " buckets differed; " +
                            std::to_string(theirs.size()) + " states merged from it" +
                            (response.truncated() ? " (more next round)" : "") + ", " +
                            std::to_string(*sent) + " sent");
  }
  return {};
}

Shipper::Repairs Shipper::repairs() const {
  return {repair_rounds_.load(), repair_pulled_.load(), repair_pushed_.load()};
}

Result<bool> Shipper::send_batch(PeerLink& link, const Target& target) {
  const std::uint64_t from = read_;
  const std::uint64_t committed = store_.log_committed();
  if (from > committed) return false;
  wire::ReplicateRequest request;
  request.set_from_node(options_.self);
  request.set_epoch(target.epoch);
  std::uint64_t last = from - 1;
  std::uint64_t first = 0;
  std::size_t bytes = 0;  // the batch stops at kMaxBatchBytes: what follows goes next time
  std::string state;
  Status s = store_.for_each_log_entry(from, options_.batch_entries,
                                       [&](std::uint64_t seq, const storage::Mutation& m) {
                                         if (first == 0) first = seq;
                                         if (bytes >= kMaxBatchBytes) return;
                                         last = seq;
                                         if (!target.wanted(position_of(m, *options_.ids))) return;
                                         if (m.kind != storage::Mutation::Kind::kPut) {
                                           auto* e = request.add_entries();
                                           to_wire(m, e);
                                           bytes += e->ByteSizeLong();
                                           return;
                                         }
                                         // The session's state now; an ended one ships with its end
                                         // entry, later in the log.
                                         auto kind = table_.state_of(m.id, &state);
                                         if (!kind.ok() || *kind != storage::Mutation::Kind::kPut)
                                           return;
                                         storage::Mutation put = m;
                                         put.value = state;
                                         auto* e = request.add_entries();
                                         to_wire(put, e);
                                         bytes += e->ByteSizeLong();
                                       });
  if (!s.ok()) return s;
  if (first != from) {
    // The log no longer holds what the peer needs next (trimmed past the retention cap, or a
    // write that failed after it took its sequence): shipping on would skip it silently. A
    // snapshot brings the peer up to date instead.
    if (options_.log) {
      options_.log(
          true, "the log no longer holds entry " + std::to_string(from) + " for " + options_.peer +
                    " (next held: " + (first == 0 ? std::string("none") : std::to_string(first)) +
                    "): resyncing it from memory");
    }
    std::lock_guard lock(mu_);
    resync_ = true;
    return false;
  }
  InFlight batch;
  batch.next = last + 1;
  batch.caught_up = last >= committed;
  if (request.entries_size() > 0) {
    auto id = link.send(protocol::Opcode::kReplicate, request);
    if (!id.ok()) return id.status();
    batch.sent = true;
    batch.request_id = *id;
  }
  flight_.push_back(batch);
  read_ = batch.next;
  return true;
}

Status Shipper::complete_oldest(PeerLink& link) {
  const InFlight batch = flight_.front();
  if (batch.sent) {
    wire::ReplicateResponse response;
    if (Status s = link.receive(batch.request_id, &response); !s.ok()) return s;
  }
  flight_.pop_front();
  if (Status s = advance(batch.next, false); !s.ok()) return s;
  if (batch.caught_up) caught_up_ns_ = steady_ns();
  return {};
}

void Shipper::loop() {
  std::unique_ptr<PeerLink> link;
  auto backoff = 50ms;
  bool complained = false;
  // The first round once the peer had a chance to catch up.
  auto next_repair = Steady::now() + options_.anti_entropy_interval;
  // What was sent and not answered is sent again (on a new connection).
  auto abandon_flight = [&] {
    flight_.clear();
    read_ = next_.load();
  };
  while (!stop_) {
    Target target;
    std::uint64_t generation = 0;
    bool resync = false;
    {
      std::lock_guard lock(mu_);
      target = target_;
      generation = generation_;
      resync = resync_;
    }
    if (target.address.empty() || !target.wanted) {
      wait_for_work(1s);
      continue;
    }
    if (!link || link->address() != target.address) {
      link = std::make_unique<PeerLink>(target.address, options_.peer_secret);
      abandon_flight();
    }
    Status s;
    bool idle = false;
    if (resync) {
      // The batches in flight are answered first (their answers would be out of order for
      // the snapshot's calls).
      while (s.ok() && !flight_.empty()) s = complete_oldest(*link);
      if (s.ok()) s = snapshot(*link, target, generation);
    } else if (options_.anti_entropy_interval.count() > 0 && Steady::now() >= next_repair) {
      // The batches in flight are answered first, as for a snapshot.
      while (s.ok() && !flight_.empty()) s = complete_oldest(*link);
      if (s.ok()) {
        // Not a shipping failure: the peer may be at another topology epoch for a moment. (A
        // broken connection is made again by the next send.)
        if (Status repair = anti_entropy(*link, target); !repair.ok() && options_.log) {
          options_.log(false, "anti-entropy with " + options_.peer +
                                  " skipped this round: " + repair.ToString());
        }
      }
      next_repair = Steady::now() + options_.anti_entropy_interval;
    } else {
      bool more = true;
      while (s.ok() && more && flight_.size() < options_.max_in_flight) {
        auto sent = send_batch(*link, target);
        s = sent.status();
        more = sent.ok() && *sent;
      }
      if (s.ok() && !flight_.empty()) {
        s = complete_oldest(*link);
      } else if (s.ok()) {
        caught_up_ns_ = steady_ns();
        idle = true;
      }
    }
    if (!s.ok()) {
      if (!complained && options_.log) {
        options_.log(true, "shipping to " + options_.peer + " failed (retrying): " + s.ToString());
      }
      complained = true;
      link.reset();  // answers still in flight would be out of order
      abandon_flight();
      wait_for_work(backoff);
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, 1s);
      continue;
    }
    if (complained && options_.log) options_.log(false, "shipping to " + options_.peer + " again");
    complained = false;
    backoff = 50ms;
    if (idle) {
      (void)advance(next_, true);  // a quiet moment: the cursor goes to `meta`
      wait_for_work(100ms);
    }
  }
  (void)advance(next_, true);  // what was answered before the stop
}

}  // namespace sessiond::replication
