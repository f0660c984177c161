// Keyed access, for callers that choose ids themselves (the RESP listener derives them from
// Redis keys, DESIGN §10): a read-modify-write of one id (rewrite), of a group with one write
// (rewrite_batch), a move between ids, and a cursor walk (scan).
#include <algorithm>
#include <array>
#include <deque>

#include "storage/detail/table_impl.h"

namespace sessiond::storage {

using detail::FieldRef;
using detail::id_word;
using detail::Record;
using detail::RecordPtr;

namespace {

// A put starts a new incarnation (DESIGN §10): past the record it replaces, or past the
// tombstone a delete left, so that it wins over both wherever the merge meets them; the
// tombstone, now beaten, leaves memory once the put is written (forget_tombstone).
std::uint32_t next_incarnation(const detail::Shard& shard, const SessionId& id,
                               const Record* replacing) {
  if (replacing) return detail::blob_meta(replacing->blob(), replacing->version()).incarnation + 1;
  auto t = shard.tombstones.find(id);
  return t == shard.tombstones.end() ? 0 : t->second.incarnation + 1;
}

void forget_tombstone(detail::Shard& shard, const SessionId& id) { shard.tombstones.erase(id); }

}  // namespace

Result<RecordPtr> SessionTable::Impl::put_record(const SessionId& id, const Rewrite& w,
                                                 const Record* replacing, std::int64_t now,
                                                 std::int64_t pending) {
  if (Status s = detail::check_timeouts(w.timeouts); !s.ok()) return s;
  const Version version = next_version();
  thread_local std::vector<FieldRef> refs;
  thread_local std::string blob;
  refs.clear();
  for (const auto& [name, value] : w.fields) refs.push_back(FieldRef{name, value, version});
  std::sort(refs.begin(), refs.end(),
            [](const FieldRef& a, const FieldRef& b) { return a.name < b.name; });
  for (std::size_t k = 1; k < refs.size(); ++k) {
    if (refs[k - 1].name == refs[k].name) {
      return Status::InvalidArgument("field '" + std::string(refs[k].name) + "' given twice");
    }
  }
  if (Status s = check_fields({}, refs); !s.ok()) return s;
  detail::BlobMeta meta;
  meta.timeouts_version = meta.birth = version;
  meta.incarnation = next_incarnation(shard_of(id), id, replacing);
  detail::encode_blob(meta, refs, version, &blob);
  RecordPtr r = Record::make(id, blob);
  r->created_at_ms = now;
  r->last_access_ms = now;
  r->idle_ms = w.timeouts.idle_ms;
  r->absolute_ms = w.timeouts.absolute_ms;
  r->cap_ms = kNoDeadline;  // a keyed record lives by its TTL, like a Redis key
  r->set_version(version);
  const std::int64_t delta = static_cast<std::int64_t>(r->footprint()) -
                             (replacing ? static_cast<std::int64_t>(replacing->footprint()) : 0);
  if (Status s = reserve_bytes(delta + std::max<std::int64_t>(pending, 0)); !s.ok()) return s;
  return r;
}

Status SessionTable::Impl::rewrite(const SessionId& id, RewriteFn decide) {
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
  const std::int64_t now = clock_.now_ms();
  Record* current = nullptr;
  if (auto found = find_alive(shard, id, now); found.ok()) current = *found;
  thread_local Session session;
  if (current) detail::record_to_session(*current, &session);
  Rewrite w;
  decide(current ? &session : nullptr, now, &w);
  switch (w.kind) {
    case Rewrite::Kind::kKeep:
      return {};
    case Rewrite::Kind::kDelete:
      return current ? remove(shard, current, now) : Status();
    case Rewrite::Kind::kChange:
      if (!current) return Status::NotFound();
      return apply_changes(shard, current, w.changes, now).status();
    case Rewrite::Kind::kPut:
      break;
  }
  auto made = put_record(id, w, current, now);
  if (!made.ok()) return made.status();
  RecordPtr r = std::move(made).value();
  if (recording()) {
    thread_local std::string value;
    Mutation put = put_of(*r, Mutation::Kind::kPut, &value);
    if (Status s = commit(std::span(&put, 1)); !s.ok()) return s;
  }
  forget_tombstone(shard, id);
  if (current) {
    replace(shard, current, std::move(r), static_cast<std::int64_t>(current->footprint()));
    ++shard.counters.updates;
  } else {
    insert(shard, std::move(r));
    ++shard.counters.creates;
  }
  return {};
}

constexpr std::size_t kRewriteChunk = 32;

void SessionTable::Impl::rewrite_batch(std::span<const SessionId> ids,
                                       std::span<const RewriteFn> decides,
                                       std::span<Status> statuses) {
  std::size_t start = 0;
  while (start < ids.size()) {
    // A chunk ends before an id it already holds: that decision must see the earlier one.
    std::size_t end = start;
    while (end < ids.size() && end - start < kRewriteChunk &&
           std::find(ids.begin() + static_cast<std::ptrdiff_t>(start),
                     ids.begin() + static_cast<std::ptrdiff_t>(end),
                     ids[end]) == ids.begin() + static_cast<std::ptrdiff_t>(end)) {
      ++end;
    }
    rewrite_chunk(ids.subspan(start, end - start), decides.subspan(start, end - start),
                  statuses.subspan(start, end - start));
    start = end;
  }
}

// As create_chunk(): the shards involved locked in index order, every decision made, one
// commit, then everything applied in memory.
void SessionTable::Impl::rewrite_chunk(std::span<const SessionId> ids,
                                       std::span<const RewriteFn> decides,
                                       std::span<Status> statuses) {
  std::vector<std::size_t> shard_indexes;
  shard_indexes.reserve(ids.size());
  for (const SessionId& id : ids) shard_indexes.push_back(shard_index(id));
  const auto locks = lock_shards(std::move(shard_indexes));
  prefetch_passes(ids, /*locked=*/true);  // the chunk's misses overlap, not one id at a time

  const std::int64_t now = clock_.now_ms();
  struct Step {
    Record* current = nullptr;
    Rewrite::Kind kind = Rewrite::Kind::kKeep;
    RecordPtr record;       // kPut
    detail::Tombstone end;  // kDelete
  };
  std::vector<Step> steps(ids.size());
  std::deque<std::string> values;  // mutations view into these: stable addresses
  std::vector<Mutation> mutations;
  mutations.reserve(ids.size());
  const bool record_writes = recording();
  thread_local Session session;
  std::int64_t pending_bytes = 0;  // what the group's puts add, for the budget check
  for (std::size_t i = 0; i < ids.size(); ++i) {
    Shard& shard = shard_of(ids[i]);
    Step& step = steps[i];
    if (auto found = find_alive(shard, ids[i], now); found.ok()) step.current = *found;
    if (step.current) detail::record_to_session(*step.current, &session);
    Rewrite w;
    decides[i](step.current ? &session : nullptr, now, &w);
    statuses[i] = Status();
    step.kind = w.kind;
    if (w.kind == Rewrite::Kind::kKeep ||
        (w.kind == Rewrite::Kind::kDelete && step.current == nullptr)) {
      step.kind = Rewrite::Kind::kKeep;
      continue;
    }
    if (w.kind == Rewrite::Kind::kChange) {
      // A change merges with the current fields; not needed by the batch's callers yet.
      statuses[i] = Status::InvalidArgument("rewrite_batch() does not take kChange");
      step.kind = Rewrite::Kind::kKeep;
      continue;
    }
    if (w.kind == Rewrite::Kind::kPut) {
      auto made = put_record(ids[i], w, step.current, now, pending_bytes);
      if (!made.ok()) {
        statuses[i] = made.status();
        step.kind = Rewrite::Kind::kKeep;
        continue;
      }
      step.record = std::move(made).value();
      pending_bytes += static_cast<std::int64_t>(step.record->footprint()) -
                       (step.current ? static_cast<std::int64_t>(step.current->footprint()) : 0);
      if (record_writes) {
        mutations.push_back(put_of(*step.record, Mutation::Kind::kPut, &values.emplace_back()));
      }
    } else {
      step.end = tombstone_of(*step.current, now);
      if (record_writes)
        mutations.push_back(end_of(*step.current, step.end, &values.emplace_back()));
    }
  }
  if (Status s = commit(mutations); !s.ok()) {
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (steps[i].kind != Rewrite::Kind::kKeep) statuses[i] = s;
    }
    return;
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    Step& step = steps[i];
    Shard& shard = shard_of(ids[i]);
    if (step.kind == Rewrite::Kind::kDelete) {
      count_end(shard, *step.current, /*expired=*/false, now);
      bury(shard, step.current, step.end);
    } else if (step.kind == Rewrite::Kind::kPut) {
      forget_tombstone(shard, ids[i]);
      if (step.current) {
        replace(shard, step.current, std::move(step.record),
                static_cast<std::int64_t>(step.current->footprint()));
        ++shard.counters.updates;
      } else {
        insert(shard, std::move(step.record));
        ++shard.counters.creates;
      }
    }
  }
}

Status SessionTable::Impl::move(const SessionId& from, const SessionId& to, RewriteFn decide) {
  if (from == to) return Status::InvalidArgument("source and target are the same session");
  Shard& from_shard = shard_of(from);
  Shard& to_shard = shard_of(to);
  const auto locks = detail::lock_two(from_shard, to_shard);
  const std::int64_t now = clock_.now_ms();
  auto found = find_alive(from_shard, from, now);
  if (!found.ok()) return found.status();
  Record* source = *found;
  Record* target = nullptr;
  if (auto t = find_alive(to_shard, to, now); t.ok()) target = *t;

  thread_local Session session;
  detail::record_to_session(*source, &session);
  Rewrite w;
  decide(&session, now, &w);
  if (w.kind == Rewrite::Kind::kKeep) return {};
  if (w.kind != Rewrite::Kind::kPut) {
    return Status::InvalidArgument("move() must put the target session or keep");
  }
  auto made = put_record(to, w, target, now);
  if (!made.ok()) return made.status();
  RecordPtr r = std::move(made).value();
  // The source leaves memory too, so the budget check above was conservative. One commit: the
  // target's new state (dropping a former user's index entry) and the source's end.
  const detail::Tombstone source_end = tombstone_of(*source, now);
  if (recording()) {
    thread_local std::string value, end_value;
    std::array<Mutation, 2> mutations{put_of(*r, Mutation::Kind::kPut, &value),
                                      end_of(*source, source_end, &end_value)};
    if (Status s = commit(mutations); !s.ok()) return s;
  }
  count_end(from_shard, *source, /*expired=*/false, now);
  bury(from_shard, source, source_end);
  forget_tombstone(to_shard, to);
  if (target) {
    unlink(to_shard, target);
    ++to_shard.counters.updates;
  } else {
    ++to_shard.counters.creates;
  }
  insert(to_shard, std::move(r));
  return {};
}

// The cursor is (shard index << 37) | position, where the position orders a shard's ids by the
// top 37 bits of their bytes 16..23 (independent of the bytes that pick the shard and the hash
// slot). Ids never change, so an id alive for the whole walk sits at one fixed place in this
// order and the walk passes it exactly once. Ties on the 37 bits are returned together. With at
// most 2^16 shards a cursor stays below 2^53, so clients that hold it in a double (node-redis
// does) get it back exactly.
namespace {
constexpr int kScanPositionBits = 37;
constexpr std::uint64_t kScanPositionMask = (std::uint64_t{1} << kScanPositionBits) - 1;
std::uint64_t scan_position(const SessionId& id) {
  return id_word(id, 16) >> (64 - kScanPositionBits);
}
}  // namespace

ScanPage SessionTable::Impl::scan(std::uint64_t cursor, std::size_t count) {
  ScanPage page;
  count = std::max<std::size_t>(count, 1);
  std::size_t index = cursor >> kScanPositionBits;
  std::uint64_t from = cursor & kScanPositionMask;
  std::vector<std::pair<std::uint64_t, SessionId>> found;
  while (index < shards_.size()) {
    found.clear();
    {
      Shard& shard = shards_[index];
      std::lock_guard lock(shard.mu);
      const std::int64_t now = clock_.now_ms();
      for (const RecordPtr& r : shard.records) {
        const std::uint64_t position = scan_position(r->id);
        if (position >= from && r->deadline_ms() > now) found.emplace_back(position, r->id);
      }
    }
    std::sort(found.begin(), found.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    const std::size_t want = count - page.ids.size();
    std::size_t take = std::min(want, found.size());
    while (take > 0 && take < found.size() && found[take].first == found[take - 1].first) ++take;
    for (std::size_t i = 0; i < take; ++i) page.ids.push_back(found[i].second);
    if (take < found.size()) {
      // The shard has more: continue after the last position taken (ties were all taken).
      page.cursor =
          (static_cast<std::uint64_t>(index) << kScanPositionBits) | (found[take - 1].first + 1);
      return page;
    }
    ++index;
    from = 0;
    if (page.ids.size() >= count) break;
  }
  page.cursor = index < shards_.size() ? static_cast<std::uint64_t>(index) << kScanPositionBits : 0;
  return page;
}

}  // namespace sessiond::storage
