// apply(): merging a mutation that another node wrote (DESIGN §6, §7). The rules of the merge
// are in detail/merge.h; this file holds what the table does around them: the skew bound, the
// tombstones and generations that end what arrives, and one write per change that keeps the
// mutation's origin so it is never shipped back.
//
// Every apply is idempotent (a state already known, or older, changes nothing and writes
// nothing) and order-insensitive (the merge is a join), so a stream may be replayed from any
// cursor, in any order, any number of times.
#include <algorithm>
#include <deque>

#include "storage/detail/merge.h"
#include "storage/detail/table_impl.h"
#include "storage/test_hooks.h"

namespace sessiond::storage {

using detail::Record;
using detail::RecordPtr;

Result<ApplyOutcome> SessionTable::Impl::apply(const Mutation& m) {
  const std::int64_t now = clock_.now_ms();
  switch (m.kind) {
    case Mutation::Kind::kPut:
      return apply_put(m, now);
    case Mutation::Kind::kTouch:
      return apply_touch(m, now);
    case Mutation::Kind::kEnd:
      return apply_end(m, now);
    case Mutation::Kind::kGeneration:
      return apply_generation(m, now);
  }
  return Status::InvalidArgument("unknown mutation kind");
}

namespace {

// Generations count revocations of one user; far below this, and +1 never wraps.
constexpr std::uint64_t kMaxGeneration = std::uint64_t{1} << 62;

// Whether a remote write's clock is beyond the skew bound of ours (its physical part only).
bool too_far_ahead(std::uint64_t hlc, std::int64_t now, std::int64_t skew) {
  return static_cast<std::int64_t>(HybridLogicalClock::physical_ms(hlc)) > now + skew;
}

Origin remote(const Origin& o) { return {o.region, o.node, true}; }

}  // namespace

Result<ApplyOutcome> SessionTable::Impl::apply_put(const Mutation& m, std::int64_t now) {
  auto decoded = detail::decode_value(detail::id_bytes(m.id), m.value);
  if (!decoded.ok()) return Status::InvalidArgument(decoded.status().message());
  RecordPtr incoming = std::move(decoded).value();
  if (detail::value_format(m.value) == detail::kValueFormatV1) {
    incoming->cap_ms = incoming->created_at_ms + options_.max_lifetime_ms;
  }
  if (too_far_ahead(incoming->version_hlc, now, options_.max_clock_skew_ms)) {
    set_aside(m, static_cast<std::int64_t>(HybridLogicalClock::physical_ms(incoming->version_hlc)));
    return ApplyOutcome::kSetAside;
  }
  Shard& shard = shard_of(m.id);
  std::lock_guard lock(shard.mu);
  now = clock_.now_ms();
  auto unchanged = [&] {
    ++shard.counters.merges_unchanged;
    return ApplyOutcome::kUnchanged;
  };
  // Nothing comes back once ended, and no state past its deadline (its cap included) is adopted.
  if (auto t = shard.tombstones.find(m.id); t != shard.tombstones.end() &&
                                            detail::tombstone_ends(t->second, *incoming) &&
                                            !sabotaged(Sabotage::kResurrect)) {
    return unchanged();
  }
  Record* current = nullptr;
  if (auto it = shard.records.find(m.id); it != shard.records.end()) {
    current = it->get();
    if (current->deadline_ms() <= now) {
      count_end(shard, *current, /*expired=*/true, now);
      unlink(shard, current);
      current = nullptr;
    }
  }
  RecordPtr merged = current
                         ? detail::merge_records(*current, *incoming, options_.access_log_length)
                         : std::move(incoming);
  const bool conflict =
      current && merged->blob() != incoming->blob() && merged->blob() != current->blob();
  if (auto p = shard.pending_touches.find(m.id); p != shard.pending_touches.end()) {
    // Touches that arrived before the state.
    merged->last_access_ms = std::max(merged->last_access_ms, p->second.last_access_ms);
    if (!p->second.access_log.empty()) {
      if (!merged->extras) merged->extras = std::make_unique<detail::Extras>();
      auto& log = merged->extras->access_log;
      log.insert(log.end(), p->second.access_log.begin(), p->second.access_log.end());
      detail::canonical_access_log(&log, options_.access_log_length);
    }
    shard.pending_touches.erase(p);
  }
  if (current && detail::same_state(*merged, *current)) return unchanged();
  if (merged->deadline_ms() <= now) return unchanged();
  hlc_.observe(merged->version_hlc);
  const std::string_view user = detail::blob_user_id(merged->blob());
  const std::string_view old_user = current ? detail::blob_user_id(current->blob()) : "";
  const bool new_entry = !current || old_user != user;
  if (new_entry) {
    // Checked against the user's generation: a session stamped below a revoke that this node
    // has seen is ended, wherever it was created (DESIGN §7).
    std::uint64_t stamp = detail::blob_meta(merged->blob(), merged->version()).stamp;
    if (!admit(user, m.id, /*new_birth=*/false, &stamp).ok()) return unchanged();
  }
  if (recording()) {
    thread_local std::string value;
    Mutation put = put_of(*merged, Mutation::Kind::kPut, &value);
    put.origin = remote(m.origin);
    if (Status s = commit(std::span(&put, 1)); !s.ok()) {
      if (new_entry) index_user(user, m.id, false);
      return s;
    }
  }
  shard.tombstones.erase(m.id);  // a later incarnation took the id
  if (current) {
    // replace() moves the index entry when the user changed (admit() made the new one already;
    // entering it again changes nothing).
    replace(shard, current, std::move(merged), static_cast<std::int64_t>(current->footprint()));
  } else {
    insert(shard, std::move(merged), /*indexed=*/true);
  }
  ++shard.counters.merges_applied;
  return conflict ? ApplyOutcome::kMerged : ApplyOutcome::kApplied;
}

Result<ApplyOutcome> SessionTable::Impl::apply_touch(const Mutation& m, std::int64_t now) {
  if (m.last_access_ms > now + options_.max_clock_skew_ms) {
    set_aside(m, m.last_access_ms);
    return ApplyOutcome::kSetAside;
  }
  Shard& shard = shard_of(m.id);
  std::lock_guard lock(shard.mu);
  now = clock_.now_ms();
  auto found = shard.records.find(m.id);
  if (found == shard.records.end()) {
    // Its state has not arrived (or never will: ended). Held, bounded, until it does; in memory
    // only: after a restart anti-entropy repairs what a lost one moved.
    const std::size_t bound = std::max<std::size_t>(options_.max_set_aside / shards_.size(), 16);
    if (!shard.tombstones.contains(m.id) &&
        (shard.pending_touches.contains(m.id) || shard.pending_touches.size() < bound)) {
      auto& p = shard.pending_touches[m.id];
      p.last_access_ms = std::max(p.last_access_ms, m.last_access_ms);
      p.access_log.insert(p.access_log.end(), m.access_log.begin(), m.access_log.end());
      detail::canonical_access_log(&p.access_log, options_.access_log_length);
      p.received_ms = now;
    }
    ++shard.counters.merges_unchanged;
    return ApplyOutcome::kUnchanged;
  }
  if ((*found)->deadline_ms() <= now) {
    ++shard.counters.merges_unchanged;
    return ApplyOutcome::kUnchanged;
  }
  Record* r = found->get();
  std::vector<AccessEntry> log = r->extras ? r->extras->access_log : std::vector<AccessEntry>{};
  log.insert(log.end(), m.access_log.begin(), m.access_log.end());
  detail::canonical_access_log(&log, options_.access_log_length);
  const bool log_changed = !(r->extras ? r->extras->access_log == log : log.empty());
  if (m.last_access_ms <= r->last_access_ms && !log_changed) {
    ++shard.counters.merges_unchanged;
    return ApplyOutcome::kUnchanged;
  }
  // In memory at once; on disk (and onward) by the coalescing rule, as a local touch.
  const std::int64_t before = static_cast<std::int64_t>(r->footprint());
  if (log_changed) {
    if (!r->extras) r->extras = std::make_unique<detail::Extras>();
    r->extras->access_log = std::move(log);
    r->extras->unsaved_access = true;
  }
  account(shard, static_cast<std::int64_t>(r->footprint()) - before);
  const std::int64_t previous_key = detail::heap_key(r);
  if (m.last_access_ms > r->last_access_ms) {
    r->unpersisted_ms = static_cast<std::uint32_t>(std::min<std::int64_t>(
        r->unpersisted_ms + (m.last_access_ms - r->last_access_ms), UINT32_MAX));
    r->last_access_ms = m.last_access_ms;
  }
  const double slack = static_cast<double>(r->idle_ms) * options_.touch_persist_fraction;
  if (static_cast<double>(r->deadline_ms() - r->persisted_deadline_ms()) > slack) {
    thread_local std::string value;
    r->unpersisted_ms = 0;
    Mutation touch = put_of(*r, Mutation::Kind::kTouch, &value);
    touch.origin = remote(m.origin);
    if (recording()) {
      if (Status s = commit(std::span(&touch, 1)); !s.ok()) return s;  // kept in memory
    }
    if (r->extras) r->extras->unsaved_access = false;
  }
  if (detail::heap_key(r) != previous_key) shard.heap.fix(r);
  ++shard.counters.merges_applied;
  return ApplyOutcome::kApplied;
}

Result<ApplyOutcome> SessionTable::Impl::apply_end(const Mutation& m, std::int64_t /*now*/) {
  // Always applied, whatever its clock: an end must never wait (DESIGN §6).
  auto incoming = detail::decode_tombstone(m.value);
  if (!incoming) return Status::InvalidArgument("the end of a session carries no tombstone");
  Shard& shard = shard_of(m.id);
  std::lock_guard lock(shard.mu);
  // How long to remember it is ours to bound (a peer cannot make this node hold it for years):
  // no state of the session outlives its cap, which is at most a max lifetime from now.
  incoming->keep_until_ms =
      std::min(incoming->keep_until_ms,
               clock_.now_ms() + options_.max_lifetime_ms + 2 * options_.max_clock_skew_ms);
  const auto known = shard.tombstones.find(m.id);
  const detail::Tombstone t = known == shard.tombstones.end()
                                  ? *incoming
                                  : detail::merge_tombstones(known->second, *incoming);
  Record* ended = nullptr;
  if (auto it = shard.records.find(m.id);
      it != shard.records.end() && detail::tombstone_ends(t, **it)) {
    ended = it->get();
  }
  const bool news = known == shard.tombstones.end() || !(known->second == t);
  if (!news && ended == nullptr) {
    ++shard.counters.merges_unchanged;
    return ApplyOutcome::kUnchanged;
  }
  hlc_.observe(t.version.hlc);
  if (recording()) {
    thread_local std::string value;
    detail::encode_tombstone(t, &value);
    Mutation end;
    end.kind = Mutation::Kind::kEnd;
    end.id = m.id;
    end.user = ended ? detail::blob_user_id(ended->blob()) : m.user;
    end.value = value;
    end.deadline_ms = t.keep_until_ms;
    end.origin = remote(m.origin);
    if (Status s = commit(std::span(&end, 1)); !s.ok()) return s;
  }
  shard.pending_touches.erase(m.id);
  if (ended) {
    count_end(shard, *ended, /*expired=*/false, clock_.now_ms());
    bury(shard, ended, t);
  } else {
    remember_tombstone(shard, m.id, t);
  }
  ++shard.counters.merges_applied;
  return ApplyOutcome::kApplied;
}

Result<ApplyOutcome> SessionTable::Impl::apply_generation(const Mutation& m, std::int64_t /*now*/) {
  // Always applied: a raise ends the sessions stamped below it whenever it arrives.
  auto incoming = detail::decode_generation(m.value);
  if (!incoming || m.user.empty()) {
    return Status::InvalidArgument("a generation raise without a user or a generation");
  }
  if (incoming->generation > kMaxGeneration) {
    return Status::InvalidArgument("a revocation generation beyond 2^62");  // raises stay finite
  }
  detail::Generation merged;
  std::vector<std::uint64_t> words;
  {
    UserShard& us = user_shard_of(m.user);
    std::lock_guard lock(us.mu);
    auto g = us.generations.find(absl::string_view(m.user.data(), m.user.size()));
    const detail::Generation before = g == us.generations.end() ? detail::Generation{} : g->second;
    merged = detail::merge_generations(before, *incoming);
    if (merged == before && g != us.generations.end()) return ApplyOutcome::kUnchanged;
    us.generations[std::string(m.user)] = merged;
    auto it = us.users.find(absl::string_view(m.user.data(), m.user.size()));
    if (it != us.users.end()) it->second.append_to(&words);
  }
  // On failure the raise stays known in memory (it is true wherever it came from) and the sender,
  // without an acknowledgement, sends it again.
  if (auto ended = write_raise(m.user, merged, words, remote(m.origin)); !ended.ok()) {
    return ended.status();
  }
  return ApplyOutcome::kApplied;
}

Result<Mutation::Kind> SessionTable::Impl::state_of(const SessionId& id, std::string* value) {
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
  const std::int64_t now = clock_.now_ms();
  if (auto it = shard.records.find(id); it != shard.records.end() && (*it)->deadline_ms() > now) {
    // The whole state, coalesced touches included: encoded as if persisted now (the value holds
    // the persisted last access), without changing what the record says is on disk.
    Record& r = **it;
    const std::uint32_t lag = r.unpersisted_ms;
    r.unpersisted_ms = 0;
    detail::encode_value(r, value);
    r.unpersisted_ms = lag;
    return Mutation::Kind::kPut;
  }
  if (auto t = shard.tombstones.find(id); t != shard.tombstones.end()) {
    detail::encode_tombstone(t->second, value);
    return Mutation::Kind::kEnd;
  }
  return Status::NotFound();
}

void SessionTable::Impl::set_aside(const Mutation& m, std::int64_t clock_ms) {
  std::lock_guard lock(set_aside_mu_);
  if (set_aside_.size() >= options_.max_set_aside) {
    ++dropped_count_;
    return;
  }
  ++set_aside_count_;
  auto copy = std::make_unique<SetAside>();
  copy->user.assign(m.user);
  copy->value.assign(m.value);
  copy->access_log.assign(m.access_log.begin(), m.access_log.end());
  copy->mutation = m;
  copy->mutation.user = copy->user;
  copy->mutation.value = copy->value;
  copy->mutation.access_log = copy->access_log;
  copy->clock_ms = clock_ms;
  set_aside_.push_back(std::move(copy));
}

void SessionTable::Impl::retry_set_aside() {
  std::vector<std::unique_ptr<SetAside>> waiting;
  {
    std::lock_guard lock(set_aside_mu_);
    if (set_aside_.empty()) return;
    waiting.swap(set_aside_);
  }
  // Each goes through apply() again: applied when our clock has caught up, set aside again
  // otherwise; one whose write fails goes back to wait.
  std::vector<std::unique_ptr<SetAside>> still;
  const std::int64_t now = clock_.now_ms();
  for (auto& entry : waiting) {
    if (entry->clock_ms > now + options_.max_clock_skew_ms || !apply(entry->mutation).ok()) {
      still.push_back(std::move(entry));
    }
  }
  std::lock_guard lock(set_aside_mu_);
  for (auto& entry : still) set_aside_.push_back(std::move(entry));
}

}  // namespace sessiond::storage
