// The table's one write path (DESIGN §6) and what keeps memory and disk in step: touch
// coalescing, recovery, flush and the expirer.
//
// Every operation decides in memory what changes, describes it as Mutations (put_of, end_of),
// and calls commit(): the Store writes them as one WriteBatch (record or tombstone, user-index
// entry, replication-log entry), and only then does the operation apply the change in memory
// and do the observers see it. commit() runs under the locks of the sessions it names, so the
// order of one session's mutations is the same in memory, on disk, in the log and for observers.
//
// Expiry writes nothing to disk: recovery skips expired records and the compaction filter drops
// them, so a mass expiry costs no I/O. The expirer's only writes are catch-ups of coalesced
// touches whose on-disk deadline came due, one batch per shard per pass.
#include <absl/container/flat_hash_map.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "storage/detail/merge.h"
#include "storage/detail/table_impl.h"

namespace sessiond::storage {

using detail::heap_key;
using detail::id_bytes;
using detail::Record;
using detail::RecordPtr;

namespace {
// Recovery reads this many key ranges at most in parallel (one per core).
constexpr std::size_t kMaxRecoveryThreads = 8;
}  // namespace

Mutation SessionTable::Impl::put_of(const Record& r, Mutation::Kind kind,
                                    std::string* value) const {
  detail::encode_value(r, value);
  Mutation m;
  m.kind = kind;
  m.id = r.id;
  m.user = detail::blob_user_id(r.blob());
  m.value = *value;
  m.deadline_ms = r.persisted_deadline_ms();
  m.last_access_ms = r.persisted_access_ms();
  if (r.extras) m.access_log = r.extras->access_log;
  m.origin = local_origin();
  return m;
}

detail::Tombstone SessionTable::Impl::tombstone_of(const Record& r, std::int64_t now,
                                                   const Version* version) {
  const std::int64_t cap =
      r.cap_ms == kNoDeadline ? now + options_.max_lifetime_ms : std::max(r.cap_ms, now);
  return {version ? *version : Version{hlc_.now_at(now), options_.region, options_.node},
          cap + options_.max_clock_skew_ms, detail::blob_meta(r.blob(), r.version()).incarnation};
}

Mutation SessionTable::Impl::end_of(const Record& r, const Tombstone& t, std::string* value) const {
  detail::encode_tombstone(t, value);
  Mutation m;
  m.kind = Mutation::Kind::kEnd;
  m.id = r.id;
  m.user = detail::blob_user_id(r.blob());
  m.value = *value;
  m.deadline_ms = t.keep_until_ms;
  m.origin = local_origin();
  return m;
}

void SessionTable::Impl::remember_tombstone(Shard& shard, const SessionId& id, const Tombstone& t) {
  auto [it, inserted] = shard.tombstones.try_emplace(id, t);
  if (!inserted) it->second = detail::merge_tombstones(it->second, t);
}

void SessionTable::Impl::bury(Shard& shard, Record* r, const Tombstone& t) {
  const SessionId id = r->id;
  unlink(shard, r);
  remember_tombstone(shard, id, t);
}

Status SessionTable::Impl::commit(std::span<const Mutation> mutations) {
  if (mutations.empty()) return {};
  std::uint64_t first_seq = 0;
  if (store_) {
    if (Status s = store_->write(mutations, &first_seq); !s.ok()) return s;
  }
  if (const Observers* observers = observers_.load(std::memory_order_acquire)) {
    for (std::size_t i = 0; i < mutations.size(); ++i) {
      for (const auto& [handle, observer] : observers->list) {
        observer(mutations[i], first_seq == 0 ? 0 : first_seq + i);
      }
    }
  }
  return {};
}

std::uint64_t SessionTable::Impl::add_observer(MutationObserver observer) {
  std::lock_guard lock(observers_mu_);
  auto next = std::make_unique<Observers>();
  if (const Observers* current = observers_.load(std::memory_order_relaxed)) *next = *current;
  const std::uint64_t handle = next_observer_++;
  next->list.emplace_back(handle, std::move(observer));
  observers_.store(next.get(), std::memory_order_release);
  retired_observers_.push_back(std::move(next));
  return handle;
}

void SessionTable::Impl::remove_observer(std::uint64_t handle) {
  std::lock_guard lock(observers_mu_);
  const Observers* current = observers_.load(std::memory_order_relaxed);
  if (current == nullptr) return;
  auto next = std::make_unique<Observers>(*current);
  std::erase_if(next->list, [&](const auto& entry) { return entry.first == handle; });
  if (next->list.empty()) {
    observers_.store(nullptr, std::memory_order_release);
    return;
  }
  observers_.store(next.get(), std::memory_order_release);
  retired_observers_.push_back(std::move(next));
}

Status SessionTable::Impl::persist_record(Record* r, Mutation::Kind kind,
                                          std::span<const Mutation> extra) {
  const std::uint32_t previous_lag = r->unpersisted_ms;
  r->unpersisted_ms = 0;
  if (recording()) {
    thread_local std::string value;
    thread_local std::vector<Mutation> mutations;
    mutations.clear();
    mutations.push_back(put_of(*r, kind, &value));
    mutations.insert(mutations.end(), extra.begin(), extra.end());
    if (Status s = commit(mutations); !s.ok()) {
      r->unpersisted_ms = previous_lag;
      return s;
    }
  }
  if (r->extras) r->extras->unsaved_access = false;
  return {};
}

Status SessionTable::Impl::remove(Shard& shard, Record* r, std::int64_t now) {
  const Tombstone t = tombstone_of(*r, now);
  if (recording()) {
    thread_local std::string value;
    const Mutation end = end_of(*r, t, &value);
    if (Status s = commit(std::span(&end, 1)); !s.ok()) return s;
  }
  count_end(shard, *r, /*expired=*/false, now);
  bury(shard, r, t);
  return {};
}

Status SessionTable::Impl::slide(Shard& shard, Record* r, std::int64_t now) {
  const bool was_clean = clean(*r);
  const std::int64_t previous = r->last_access_ms;
  const std::uint32_t previous_lag = r->unpersisted_ms;
  const std::int64_t previous_key = heap_key(r);
  bool must_persist = false;
  if (now > r->last_access_ms) {
    const std::int64_t lag = r->unpersisted_ms + (now - r->last_access_ms);
    must_persist = lag > std::numeric_limits<std::uint32_t>::max();  // lag must fit its field
    r->last_access_ms = now;
    r->unpersisted_ms = must_persist ? 0 : static_cast<std::uint32_t>(lag);
  }
  const double slack = static_cast<double>(r->idle_ms) * options_.touch_persist_fraction;
  if (!must_persist &&
      static_cast<double>(r->deadline_ms() - r->persisted_deadline_ms()) <= slack) {
    ++shard.counters.touches_coalesced;
    note_touched(shard, *r, was_clean);
    return {};
  }
  Status s = persist_record(r, Mutation::Kind::kTouch);
  if (!s.ok()) {
    r->last_access_ms = previous;
    r->unpersisted_ms = previous_lag;
    return s;
  }
  ++shard.counters.touches_persisted;
  if (heap_key(r) != previous_key) shard.heap.fix(r);
  return {};
}

// ---- recovery -------------------------------------------------------------------------------

Result<RecoveryReport> SessionTable::Impl::recover() {
  RecoveryReport report;
  if (!store_) return report;
  const auto started = std::chrono::steady_clock::now();
  const std::int64_t now = clock_.now_ms();
  // The clock restarts past everything this node stamped before, including writes whose records
  // are gone (expired, compacted): the persisted high-water mark, plus the most it can lag (one
  // expirer interval is far less than a second).
  std::uint64_t recovered_mark = 0;
  if (auto hw = store_->get_meta("hlc"); hw && hw->size() == 8) {
    std::memcpy(&recovered_mark, hw->data(), 8);
    hlc_.observe(recovered_mark + HybridLogicalClock::pack(1000, 0));
  }
  // The sessions are read in parallel, one key range per core (ids are uniformly spread over
  // their first byte): decoding records and building the table and user index is most of a
  // restart, and the shards and user shards take their own locks.
  struct Part {
    std::string lower, upper;  // [lower, upper) of the first key byte; empty: unbounded
    std::uint64_t seen = 0;    // the latest clock value this range shows
    std::uint64_t loaded = 0;
    std::uint64_t skipped_expired = 0;
    std::vector<SessionId> older_format;
    Status status;
    bool stopped = false;  // gave up because another range failed
  };
  const std::size_t parts_count =
      std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, kMaxRecoveryThreads);
  std::vector<Part> parts(parts_count);
  for (std::size_t i = 0; i < parts_count; ++i) {
    if (i > 0) parts[i].lower.assign(1, static_cast<char>(i * 256 / parts_count));
    if (i + 1 < parts_count)
      parts[i].upper.assign(1, static_cast<char>((i + 1) * 256 / parts_count));
  }
  std::atomic<bool> failed{false};
  auto read_part = [&](Part& part) {
    part.status = store_->for_each_session(
        [&](std::string_view key, std::string_view value) -> Status {
          if (failed.load(std::memory_order_relaxed)) {
            part.stopped = true;
            return Status::Internal("stopped: another range failed");
          }
          if (detail::value_format(value) == detail::kTombstoneFormat &&
              key.size() == sizeof(SessionId)) {
            const auto t = detail::decode_tombstone(value);
            if (!t) return Status::Internal("corrupt tombstone in " + store_->options().path);
            hlc_.observe(t->version.hlc);
            part.seen = std::max(part.seen, t->version.hlc);
            if (t->keep_until_ms <= now) return Status();
            SessionId id;
            std::memcpy(id.data(), key.data(), id.size());
            Shard& shard = shard_of(id);
            std::lock_guard lock(shard.mu);
            remember_tombstone(shard, id, *t);
            return Status();
          }
          auto decoded = detail::decode_value(key, value);
          if (!decoded.ok()) {
            std::string id_text =
                key.size() == sizeof(SessionId)
                    ? session_id_to_text(*reinterpret_cast<const SessionId*>(key.data()))
                    : "(bad key)";
            return Status::Internal("session " + id_text + " in " + store_->options().path + ": " +
                                    decoded.status().message());
          }
          RecordPtr r = std::move(decoded).value();
          if (detail::value_format(value) == detail::kValueFormatV1) {
            // Written before lifetime caps: the cap starts from the session's creation.
            r->cap_ms = r->created_at_ms + options_.max_lifetime_ms;
            part.older_format.push_back(r->id);
          }
          hlc_.observe(r->version_hlc);
          part.seen = std::max(part.seen, r->version_hlc);
          if (r->deadline_ms() <= now) {
            ++part.skipped_expired;
            return Status();
          }
          Shard& shard = shard_of(r->id);
          std::lock_guard lock(shard.mu);
          if (shard.records.contains(r->id)) {
            return Status::Internal("recover() on a non-empty table");
          }
          insert(shard, std::move(r));
          ++part.loaded;
          return Status();
        },
        part.lower, part.upper);
    if (!part.status.ok()) failed.store(true, std::memory_order_relaxed);
  };
  {
    std::vector<std::jthread> helpers;
    for (std::size_t i = 1; i < parts_count; ++i) {
      helpers.emplace_back([&read_part, &part = parts[i]] { read_part(part); });
    }
    read_part(parts[0]);
  }                                     // the helpers join here
  std::uint64_t seen = recovered_mark;  // the latest clock value the data directory shows
  std::vector<SessionId> older_format;
  Status s;
  for (Part& part : parts) {
    seen = std::max(seen, part.seen);
    report.loaded += part.loaded;
    report.skipped_expired += part.skipped_expired;
    older_format.insert(older_format.end(), part.older_format.begin(), part.older_format.end());
    if (s.ok() && !part.status.ok() && !part.stopped) s = part.status;  // the real failure
  }
  if (s.ok()) {
    s = store_->for_each_generation([&](std::string_view user, std::string_view value) -> Status {
      auto g = detail::decode_generation(value);
      if (!g) return Status::Internal("corrupt revocation generation in " + store_->options().path);
      UserShard& us = user_shard_of(user);
      std::lock_guard lock(us.mu);
      us.generations[std::string(user)] = std::move(*g);
      return Status();
    });
  }
  if (s.ok() && store_->needs_upgrade()) {
    s = upgrade_records(std::move(older_format));
    report.upgraded = s.ok();
  }
  if (!s.ok()) {
    clear();  // never serve a partial load
    return s;
  }
  for (const Shard& shard : shards_) report.tombstones += shard.tombstones.size();
  report.clock_high_water_ms = static_cast<std::int64_t>(HybridLogicalClock::physical_ms(seen));
  report.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - started)
                           .count();
  return report;
}

Status SessionTable::Impl::upgrade_records(std::vector<SessionId> ids) {
  // In batches, without the replication log (nobody consumed the older format's log). A crash
  // part-way leaves the old marker, and the next start does it again: decoding reads both.
  constexpr std::size_t kBatch = 256;
  std::deque<std::string> values;
  std::vector<Mutation> mutations;
  for (std::size_t start = 0; start < ids.size(); start += kBatch) {
    values.clear();
    mutations.clear();
    for (std::size_t i = start; i < std::min(ids.size(), start + kBatch); ++i) {
      Shard& shard = shard_of(ids[i]);
      std::lock_guard lock(shard.mu);
      auto it = shard.records.find(ids[i]);
      if (it == shard.records.end()) continue;  // skipped as expired: the filter drops it
      mutations.push_back(put_of(**it, Mutation::Kind::kPut, &values.emplace_back()));
    }
    if (Status s = store_->write(mutations, nullptr, /*log=*/false); !s.ok()) {
      return Status(s.code(), "upgrading the data directory " + store_->options().path +
                                  " to the current format: " + s.message());
    }
  }
  return store_->finish_upgrade();
}

void SessionTable::Impl::persist_clock() {
  // At most every half second of the clock's time (a small write, fsynced in sync mode): the
  // mark may lag by that much and an expirer interval, which the 1 s margin recovery adds
  // covers.
  const std::uint64_t mark = hlc_.last();
  if (!store_ ||
      mark < persisted_clock_.load(std::memory_order_relaxed) + HybridLogicalClock::pack(500, 0)) {
    return;
  }
  std::string value(8, '\0');
  std::memcpy(value.data(), &mark, 8);
  if (store_->put_meta("hlc", value).ok()) persisted_clock_.store(mark, std::memory_order_relaxed);
}

void SessionTable::Impl::clear() {
  for (Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    shard.heap.clear();
    shard.records.clear();
    shard.tombstones.clear();
    shard.bytes = 0;
  }
  for (UserShard& us : user_shards_) {
    std::lock_guard lock(us.mu);
    us.users.clear();
    us.generations.clear();
  }
  total_bytes_ = 0;
}

// ---- flush and expiry -----------------------------------------------------------------------

Status SessionTable::Impl::flush() {
  for (Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    for (const RecordPtr& owned : shard.records) {
      Record* r = owned.get();
      if (r->unpersisted_ms == 0 && !(r->extras && r->extras->unsaved_access)) continue;
      const std::int64_t key = heap_key(r);
      if (Status s = persist_record(r, Mutation::Kind::kTouch); !s.ok()) return s;
      if (heap_key(r) != key) shard.heap.fix(r);
    }
  }
  return {};
}

bool SessionTable::Impl::write_touches(
    Shard& shard, const std::vector<std::pair<Record*, std::uint32_t>>& records) {
  thread_local std::vector<std::string> values;
  thread_local std::vector<Mutation> mutations;
  values.assign(records.size(), std::string());
  mutations.clear();
  for (std::size_t i = 0; i < records.size(); ++i) {
    mutations.push_back(put_of(*records[i].first, Mutation::Kind::kTouch, &values[i]));
  }
  if (Status s = recording() ? commit(mutations) : Status(); !s.ok()) {
    // Disk trouble: the records keep their coalesced touches (their keys, come due, go back)
    // and the next pass retries.
    for (const auto& [r, lag] : records) {
      r->unpersisted_ms = lag;
      shard.heap.fix(r);
      if (options_.pending_touch_ship_ms > 0) shard.touched.push_back(r->id);
    }
    return false;
  }
  for (const auto& [r, lag] : records) {
    if (r->extras) r->extras->unsaved_access = false;
    ++shard.counters.touches_persisted;
  }
  return true;
}

std::pair<std::size_t, bool> SessionTable::Impl::expire_pass() {
  std::size_t removed = 0;
  bool more = false;
  std::vector<std::pair<Record*, std::uint32_t>> catch_up;  // record, its lag before the pass
  for (Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    const std::int64_t now = clock_.now_ms();
    // Pops due records: expired ones leave; alive ones (a coalesced touch whose on-disk deadline
    // came due) are collected and written below in one batch, then pushed down the heap.
    catch_up.clear();
    std::size_t done = 0;
    while (!shard.heap.empty() && shard.heap.front_key() <= now) {
      if (done == options_.expiry_batch) {
        more = true;
        break;
      }
      ++done;
      Record* r = shard.heap.front();
      if (r->deadline_ms() <= now) {
        count_end(shard, *r, /*expired=*/true, now);
        unlink(shard, r);
        ++removed;
        continue;
      }
      catch_up.emplace_back(r, r->unpersisted_ms);
      // Out of the way of the pop loop until it is written: its key moves to the true deadline.
      r->unpersisted_ms = 0;
      shard.heap.fix(r);
    }
    if (now >= shard.next_sweep_ms) {  // tombstones past their keep-until, once a minute
      absl::erase_if(shard.tombstones,
                     [&](const auto& entry) { return entry.second.keep_until_ms <= now; });
      // A touch whose session never arrived within the skew bound and a few minutes more.
      absl::erase_if(shard.pending_touches, [&](const auto& entry) {
        return entry.second.received_ms + options_.max_clock_skew_ms + 5 * 60'000 <= now;
      });
      shard.next_sweep_ms = now + 60'000;
    }
    if (options_.pending_touch_ship_ms > 0 && shard.next_touch_ship_ms == 0) {
      shard.next_touch_ship_ms = now + options_.pending_touch_ship_ms;  // the first round
    }
    if (options_.pending_touch_ship_ms > 0 && now >= shard.next_touch_ship_ms) {
      // Touches and accesses pending since the last round go out now (they ship to the peer
      // regions as small entries), each record once.
      std::vector<SessionId> touched;
      touched.swap(shard.touched);
      std::sort(touched.begin(), touched.end());
      touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
      for (const SessionId& id : touched) {
        const auto it = shard.records.find(id);
        if (it == shard.records.end()) continue;
        Record* r = it->get();
        if (clean(*r) || r->deadline_ms() <= now ||
            std::find_if(catch_up.begin(), catch_up.end(),
                         [&](const auto& c) { return c.first == r; }) != catch_up.end()) {
          continue;
        }
        catch_up.emplace_back(r, r->unpersisted_ms);
        r->unpersisted_ms = 0;
        shard.heap.fix(r);
      }
      shard.next_touch_ship_ms = now + options_.pending_touch_ship_ms;
    }
    if (catch_up.empty()) continue;
    (void)write_touches(shard, catch_up);
  }
  retry_set_aside();
  persist_clock();
  return {removed, more};
}

void SessionTable::Impl::start_expirer(std::int64_t interval_ms) {
  std::lock_guard lock(expirer_mu_);
  if (expirer_.joinable()) return;
  expirer_stop_ = false;
  expirer_ = std::thread([this, interval_ms] {
    std::unique_lock guard(expirer_mu_);
    while (!expirer_stop_) {
      guard.unlock();
      const bool more = expire_pass().second;
      guard.lock();
      if (!more) {
        expirer_cv_.wait_for(guard, std::chrono::milliseconds(interval_ms),
                             [this] { return expirer_stop_; });
      }
    }
  });
}

void SessionTable::Impl::stop_expirer() {
  std::thread thread;
  {
    std::lock_guard lock(expirer_mu_);
    expirer_stop_ = true;
    thread = std::move(expirer_);
  }
  expirer_cv_.notify_all();
  if (thread.joinable()) thread.join();
}

}  // namespace sessiond::storage
