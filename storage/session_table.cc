// SessionTable's public face and the session operations: create, get, update, touch, destroy,
// regenerate. The write path they share is in table_write.cc, the user index in
// table_users.cc, keyed access in table_keyed.cc; detail/table_impl.h lists the parts.
#include "storage/session_table.h"

#include <algorithm>
#include <deque>
#include <iterator>

#include "storage/detail/merge.h"
#include "storage/detail/table_impl.h"

namespace sessiond::storage {

using detail::FieldRef;
using detail::id_word;
using detail::meta_of;
using detail::Record;
using detail::RecordPtr;

namespace detail {

Status check_timeouts(const Timeouts& t) {
  constexpr std::int64_t kMaxTimeoutMs = 100LL * 365 * 24 * 3600 * 1000;  // 100 years
  if (t.idle_ms < 0 || t.absolute_ms < 0) {
    return Status::InvalidArgument("timeouts must not be negative");
  }
  if (t.idle_ms > kMaxTimeoutMs || t.absolute_ms > kMaxTimeoutMs) {
    return Status::InvalidArgument("timeouts must not exceed 100 years");
  }
  return {};
}

}  // namespace detail

namespace {

constexpr std::size_t kMaxShards = 1u << 16;  // scan cursors need the index to fit 16 bits

Status check_context(const std::optional<ClientContext>& c) {
  if (c && c->ip.size() > kMaxIpBytes) {
    return Status::InvalidArgument("client IP longer than 64 bytes");
  }
  if (c) {
    if (std::string error = context_ip_error(c->ip); !error.empty()) {
      return Status::InvalidArgument(std::move(error));
    }
  }
  return {};
}

// Asks for every cache line of a record at once. Decoding walks the fields one length at a
// time, which would otherwise fetch a large record as a chain of dependent misses.
void prefetch_record(const Record* r) {
  const char* p = reinterpret_cast<const char*>(r);
  const char* end = p + sizeof(Record) + r->blob_size;
  for (p += 64; p < end; p += 64) __builtin_prefetch(p);
}

// Sorted field refs from request pairs; the refs view into `pairs`.
void sorted_refs(const std::vector<std::pair<std::string, std::string>>& pairs, Version version,
                 std::vector<FieldRef>* out) {
  out->clear();
  out->reserve(pairs.size());
  for (const auto& [name, value] : pairs) out->push_back(FieldRef{name, value, version});
  std::sort(out->begin(), out->end(),
            [](const FieldRef& a, const FieldRef& b) { return a.name < b.name; });
}

// A read's access history before it recorded an access, to undo it (get()).
std::vector<AccessEntry>& access_backup() {
  thread_local std::vector<AccessEntry> log;
  return log;
}

// The ends a create or regenerate writes with the session (evictions), with their encodings.
std::deque<std::string>& end_values() {
  thread_local std::deque<std::string> values;
  values.clear();
  return values;
}

// The record with its blob's generation stamp set (a user that was revoked before: rare).
RecordPtr restamped(const Record& r, std::uint64_t stamp) {
  thread_local std::vector<FieldRef> fields;
  thread_local std::string blob;
  detail::BlobMeta meta = detail::blob_meta(r.blob(), r.version());
  meta.stamp = stamp;
  detail::blob_fields(r.blob(), r.version(), &fields);
  detail::encode_blob(meta, fields, r.version(), &blob);
  return detail::copy_record(r, blob);
}

}  // namespace

SessionTable::Impl::Impl(const TableOptions& options, const Clock& clock, Store* store)
    : options_(options),
      own_ids_(options.ids ? nullptr
                           : std::make_unique<IdGenerator>(IdGenerator::with_random_secret())),
      ids_(options.ids ? options.ids : own_ids_.get()),
      clock_(clock),
      store_(store),
      hlc_(clock) {
  std::size_t n = 1;
  while (n < std::clamp<std::size_t>(options.shard_count, 1, kMaxShards)) n <<= 1;
  shards_ = std::vector<Shard>(n);
  // Room for the blob's own lengths within what a record can hold.
  options_.max_session_bytes = std::min(options_.max_session_bytes, detail::kMaxBlobBytes / 2);
  user_shards_ = std::vector<UserShard>(n);
  mask_ = n - 1;
}

SessionTable::Impl::~Impl() { stop_expirer(); }

std::vector<std::unique_lock<std::mutex>> SessionTable::Impl::lock_shards(
    std::vector<std::size_t> indexes) {
  std::sort(indexes.begin(), indexes.end());
  indexes.erase(std::unique(indexes.begin(), indexes.end()), indexes.end());
  std::vector<std::unique_lock<std::mutex>> locks;
  locks.reserve(indexes.size());
  for (std::size_t index : indexes) locks.emplace_back(shards_[index].mu);
  return locks;
}

std::uint64_t SessionTable::Impl::size() const {
  std::uint64_t n = 0;
  for (const Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    n += shard.records.size();
  }
  return n;
}

Result<Record*> SessionTable::Impl::find_alive(Shard& shard, const SessionId& id,
                                               std::int64_t now) {
  shard.records.prefetch(id);  // control bytes and slot in parallel rather than one by one
  auto it = shard.records.find(id);
  if (it == shard.records.end()) {
    ++shard.counters.read_misses;
    return Status::NotFound();
  }
  Record* r = it->get();
  prefetch_record(r);
  if (r->deadline_ms() <= now) {
    ++shard.counters.read_misses;
    count_end(shard, *r, /*expired=*/true, now);
    unlink(shard, r);
    return Status::Expired();
  }
  return r;
}

void SessionTable::Impl::unlink(Shard& shard, Record* r) {
  index_user(detail::blob_user_id(r->blob()), r->id, false);
  shard.heap.remove(r);
  account(shard, -static_cast<std::int64_t>(r->footprint()));
  --shard.by_preset[r->preset_code];
  auto it = shard.records.find(r->id);
  shard.records.erase(it);  // frees r
}

void SessionTable::Impl::notify_expiry(const Record& r) {
  const std::shared_ptr<const ExpiryObserver> observer = expiry_observer_.load();
  if (!observer) return;
  (*observer)(r.id, [&r]() -> const Session& {
    thread_local Session session;
    detail::record_to_session(r, &session);
    return session;
  });
}

void SessionTable::Impl::count_end(Shard& shard, const Record& r, bool expired, std::int64_t now) {
  detail::Counters& c = shard.counters;
  ++(expired ? c.expiries : c.destroys);
  if (expired) notify_expiry(r);
  const std::int64_t lived_ms = std::max<std::int64_t>(0, now - r.created_at_ms);
  std::size_t bucket = 0;
  while (bucket < kLifetimeBuckets && lived_ms > kLifetimeBucketsS[bucket] * 1000) ++bucket;
  ++c.lifetimes[bucket];
  c.lifetime_sum_ms += static_cast<std::uint64_t>(lived_ms);
}

void SessionTable::Impl::insert(Shard& shard, RecordPtr r, bool indexed) {
  Record* raw = r.get();
  if (!indexed) index_user(detail::blob_user_id(raw->blob()), raw->id, true);
  account(shard, static_cast<std::int64_t>(raw->footprint()));
  ++shard.by_preset[raw->preset_code];
  shard.records.insert(std::move(r));
  shard.heap.push(raw);
}

void SessionTable::Impl::replace(Shard& shard, Record* old, RecordPtr r, std::int64_t old_bytes) {
  const std::string_view old_user = detail::blob_user_id(old->blob());
  const std::string_view new_user = detail::blob_user_id(r->blob());
  if (old_user != new_user) {
    index_user(old_user, old->id, false);
    index_user(new_user, r->id, true);
  }
  account(shard, static_cast<std::int64_t>(r->footprint()) - old_bytes);
  --shard.by_preset[old->preset_code];
  ++shard.by_preset[r->preset_code];
  // Into the old record's set slot (same id, so same hash) and heap slot.
  auto it = shard.records.find(r->id);
  shard.heap.replace(old, r.get());
  const_cast<RecordPtr&>(*it).swap(r);  // the key is unchanged, so the set stays valid
}

Status SessionTable::Impl::check_fields(std::string_view user_id,
                                        std::span<const FieldRef> fields) const {
  if (user_id.size() > options_.max_user_id_bytes) {
    return Status::TooLarge("user id is " + std::to_string(user_id.size()) +
                            " bytes; the limit is " + std::to_string(options_.max_user_id_bytes));
  }
  const auto live = static_cast<std::size_t>(
      std::count_if(fields.begin(), fields.end(), [](const FieldRef& f) { return !f.deleted; }));
  if (live > options_.max_fields) {
    return Status::TooLarge("session would have " + std::to_string(live) +
                            " fields; the limit is " + std::to_string(options_.max_fields));
  }
  std::size_t total = user_id.size();
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const FieldRef& f = fields[i];
    if (f.deleted) continue;
    if (f.name.empty()) return Status::InvalidArgument("field names must not be empty");
    if (f.name.size() > options_.max_field_name_bytes) {
      return Status::TooLarge("field name of " + std::to_string(f.name.size()) +
                              " bytes; the limit is " +
                              std::to_string(options_.max_field_name_bytes));
    }
    if (i > 0 && fields[i - 1].name == f.name) {
      return Status::InvalidArgument("field '" + std::string(f.name) + "' given twice");
    }
    total += f.name.size() + f.value.size();
  }
  if (total > options_.max_session_bytes) {
    return Status::TooLarge("session would hold " + std::to_string(total) +
                            " bytes; the limit is " + std::to_string(options_.max_session_bytes));
  }
  return {};
}

Status SessionTable::Impl::reserve_bytes(std::int64_t delta) {
  if (options_.memory_budget_bytes == 0 || delta <= 0) return {};
  const std::int64_t budget = static_cast<std::int64_t>(options_.memory_budget_bytes);
  if (total_bytes_.load(std::memory_order_relaxed) + delta > budget) {
    return Status::Overloaded("memory budget of " + std::to_string(budget) +
                              " bytes reached; no new sessions until some end");
  }
  return {};
}

// ---- operations -----------------------------------------------------------------------------

Result<RecordPtr> SessionTable::Impl::new_record(const NewSession& request) {
  const Timeouts timeouts = request.timeouts.value_or(options_.default_timeouts);
  if (Status s = detail::check_timeouts(timeouts); !s.ok()) return s;
  if (Status s = check_context(request.context); !s.ok()) return s;
  const std::int64_t now = clock_.now_ms();
  const Version version = next_version();

  thread_local std::vector<FieldRef> refs;
  thread_local std::string blob;
  sorted_refs(request.fields, version, &refs);
  if (Status s = check_fields(request.user_id, refs); !s.ok()) return s;
  detail::encode_blob(request.user_id, refs, version, &blob);

  RecordPtr r = Record::make(request.route_key ? IdGenerator::id_with_route_key(*request.route_key)
                                               : ids_->next_id(request.user_id),
                             blob);
  r->created_at_ms = now;
  r->last_access_ms = now;
  r->idle_ms = timeouts.idle_ms;
  r->absolute_ms = timeouts.absolute_ms;
  r->cap_ms = now + options_.max_lifetime_ms;
  r->set_version(version);
  r->set_preset(request.preset);
  r->signed_id = request.signed_id ? 1 : 0;
  if (request.context) {
    r->extras = std::make_unique<detail::Extras>();
    r->extras->context = request.context;
  }
  if (Status s = reserve_bytes(static_cast<std::int64_t>(r->footprint())); !s.ok()) return s;
  return r;
}

Result<SessionMeta> SessionTable::Impl::create(const NewSession& request) {
  // Everything that can refuse the request comes before anything ends: the record's checks,
  // the limit's policy, and then one write that adds the session and ends the evicted ones.
  auto made = new_record(request);
  if (!made.ok()) return made.status();
  RecordPtr r = std::move(made).value();
  auto evict = sessions_to_evict(request.user_id);
  if (!evict.ok()) return evict.status();
  std::vector<std::size_t> indexes;
  for (;;) {
    indexes.assign({shard_index(r->id)});
    for (const SessionId& id : *evict) indexes.push_back(shard_index(id));
    auto locks = lock_shards(indexes);
    // A collision has probability 2^-192; if it ever happens the new id may belong to another
    // shard, so look again under that shard's lock.
    if (shard_of(r->id).records.contains(r->id)) {
      locks.clear();
      r->id = request.route_key ? IdGenerator::id_with_route_key(*request.route_key)
                                : ids_->next_id(request.user_id);
      continue;
    }
    const std::int64_t now = clock_.now_ms();
    std::uint64_t stamp = 0;
    if (Status s = admit(request.user_id, r->id, /*new_birth=*/true, &stamp); !s.ok()) return s;
    if (stamp != 0) r = restamped(*r, stamp);
    std::vector<Mutation> retire;
    std::vector<std::pair<Record*, detail::Tombstone>> ending;
    if (!evict->empty())
      retire_evicted(*evict, request.user_id, now, &retire, &end_values(), &ending);
    if (Status s = persist_record(r.get(), Mutation::Kind::kPut, retire); !s.ok()) {
      index_user(request.user_id, r->id, false);
      return s;
    }
    bury_all(ending);
    Shard& shard = shard_of(r->id);
    SessionMeta meta = meta_of(*r);
    insert(shard, std::move(r), /*indexed=*/true);
    ++shard.counters.creates;
    return meta;
  }
}

// Group commit: every valid request's record and user-index entry go into one WriteBatch, so
// the write-ahead log is written once per chunk of kCreateChunk requests. The shards involved
// are locked in index order (the documented ordered case of DESIGN §3) for the length of that
// one write; the chunk bounds how many locks one thread holds and how long other requests on
// those shards wait.
constexpr std::size_t kCreateChunk = 32;

std::vector<Result<SessionMeta>> SessionTable::Impl::create_batch(
    std::span<const NewSession> requests) {
  std::vector<Result<SessionMeta>> results;
  results.reserve(requests.size());
  if (options_.max_sessions_per_user > 0) {
    // Each create must see the ones before it for its user's count: one by one.
    for (const NewSession& request : requests) results.push_back(create(request));
    return results;
  }
  for (std::size_t start = 0; start < requests.size(); start += kCreateChunk) {
    create_chunk(requests.subspan(start, std::min(kCreateChunk, requests.size() - start)),
                 &results);
  }
  return results;
}

void SessionTable::Impl::create_chunk(std::span<const NewSession> requests,
                                      std::vector<Result<SessionMeta>>* all_results) {
  std::vector<Result<SessionMeta>> results;
  results.reserve(requests.size());
  std::vector<RecordPtr> records(requests.size());
  std::vector<std::size_t> shard_indexes;
  shard_indexes.reserve(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    auto made = new_record(requests[i]);
    if (!made.ok()) {
      results.emplace_back(made.status());
      continue;
    }
    records[i] = std::move(made).value();
    shard_indexes.push_back(shard_index(records[i]->id));
    results.emplace_back(meta_of(*records[i]));
  }
  const auto locks = lock_shards(std::move(shard_indexes));

  std::deque<std::string> values;  // mutations view into these: stable addresses
  std::vector<Mutation> mutations;
  mutations.reserve(requests.size());
  const bool record_writes = recording();
  for (std::size_t i = 0; i < records.size(); ++i) {
    Record* r = records[i].get();
    if (r == nullptr) continue;
    if (shard_of(r->id).records.contains(r->id)) {  // 2^-192, as in create()
      results[i] = Status::Internal("session id collision; retry");
      records[i].reset();
      continue;
    }
    std::uint64_t stamp = 0;
    const std::string_view user = detail::blob_user_id(r->blob());
    if (Status s = admit(user, r->id, /*new_birth=*/true, &stamp); !s.ok()) {
      results[i] = s;
      records[i].reset();
      continue;
    }
    if (stamp != 0) records[i] = restamped(*records[i], stamp);
    if (record_writes) {
      mutations.push_back(put_of(*records[i], Mutation::Kind::kPut, &values.emplace_back()));
    }
  }
  if (Status s = commit(mutations); !s.ok()) {
    for (std::size_t i = 0; i < records.size(); ++i) {
      if (!records[i]) continue;
      results[i] = s;
      index_user(detail::blob_user_id(records[i]->blob()), records[i]->id, false);
    }
    std::move(results.begin(), results.end(), std::back_inserter(*all_results));
    return;
  }
  for (RecordPtr& r : records) {
    if (!r) continue;
    Shard& shard = shard_of(r->id);
    insert(shard, std::move(r), /*indexed=*/true);
    ++shard.counters.creates;
  }
  std::move(results.begin(), results.end(), std::back_inserter(*all_results));
}

Status SessionTable::Impl::get(const SessionId& id, const ReadOptions& options, Session* out) {
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
  const std::int64_t now = clock_.now_ms();
  auto found = find_alive(shard, id, now);
  if (!found.ok()) {
    // Never heard of here (no tombstone either): the write the reader saw has not arrived.
    if (options.min_version && found.status().code() == StatusCode::kNotFound &&
        !shard.tombstones.contains(id)) {
      return Status(StatusCode::kBehind, "this node has not yet received the session");
    }
    return found.status();
  }
  Record* r = *found;
  if (options.min_version && r->version() < *options.min_version) {
    return Status(StatusCode::kBehind,
                  "this copy of the session is at an older version than the one asked for");
  }
  if (options.expect_context && r->extras && r->extras->context &&
      !context_matches(*r->extras->context, *options.expect_context)) {
    ++shard.counters.read_misses;
    detail::record_to_session(*r, out);  // for the caller's policy, not for its client
    return Status::ContextMismatch("session is bound to another client context");
  }
  bool unsaved_backup = false, recorded = false;
  if (options.record_access) {
    if (options.record_access->ip.size() > kMaxIpBytes) {
      return Status::InvalidArgument("client IP longer than 64 bytes");
    }
    const AccessEntry& a = *options.record_access;
    if (a.has_location && !(a.latitude >= -90 && a.latitude <= 90 && a.longitude >= -180 &&
                            a.longitude <= 180)) {  // NaN fails every comparison
      return Status::InvalidArgument(
          "location outside latitude -90..90 and longitude -180..180 (degrees)");
    }
    if (options_.access_log_length > 0) {
      const std::size_t before = r->footprint();
      if (!r->extras) r->extras = std::make_unique<detail::Extras>();
      auto& log = r->extras->access_log;
      // Kept to undo the access if the touch below cannot be written.
      if (options.touch) {
        access_backup() = log;
        unsaved_backup = r->extras->unsaved_access;
        recorded = true;
      }
      log.push_back(*options.record_access);
      log.back().time_ms = now;
      if (!log.back().has_location) log.back().latitude = log.back().longitude = 0;
      // The form the merge keeps (ordered, no repeats), so that merging a history with itself
      // changes nothing.
      detail::canonical_access_log(&log, options_.access_log_length);
      // Saved with the session's next write (a touch past the coalescing slack, an update, the
      // expirer's catch-up) or by flush(), like coalesced touches.
      const bool was_clean = clean(*r);
      r->extras->unsaved_access = true;
      note_touched(shard, *r, was_clean);
      account(shard, static_cast<std::int64_t>(r->footprint()) - static_cast<std::int64_t>(before));
    }
  }
  if (options.touch) {
    if (Status s = slide(shard, r, now); !s.ok()) {
      if (s.code() != StatusCode::kUnavailable) return s;
      // The store refuses writes (a full disk): the read is served as it is, without sliding
      // (slide() left the record as it was) and without the access it recorded, and counted.
      // Users stay logged in until their unslid deadline; the operator sees the warning.
      if (recorded) {
        const std::size_t before = r->footprint();
        r->extras->access_log.swap(access_backup());
        r->extras->unsaved_access = unsaved_backup;
        account(shard,
                static_cast<std::int64_t>(r->footprint()) - static_cast<std::int64_t>(before));
      }
      ++shard.counters.touches_refused;
      if (!touch_refusal_reported_.exchange(true) && options_.on_touch_refused) {
        options_.on_touch_refused(s);
      }
    }
  }
  ++shard.counters.read_hits;
  detail::record_to_session(*r, out);
  if (options.judge && (*options.judge)(*out)) {
    if (Status s = remove(shard, r, now); !s.ok()) return s;
    return Status(StatusCode::kHijackSuspected, "the session was destroyed");
  }
  return {};
}

// Passes over the batch so that each pass's cache misses overlap across the batch instead of
// forming one chain per read: hash-table groups and slots; record headers; the rest of each
// record (its size is in the header). The caller's reads then come from cache. With `locked`,
// the caller holds the lock of every shard the ids fall in.
void SessionTable::Impl::prefetch_passes(std::span<const SessionId> ids, bool locked) {
  auto in_shard = [&](const SessionId& id, auto&& fn) {
    Shard& shard = shard_of(id);
    if (locked) return fn(shard);
    std::lock_guard lock(shard.mu);
    fn(shard);
  };
  for (const SessionId& id : ids) in_shard(id, [&](Shard& shard) { shard.records.prefetch(id); });
  for (int pass = 0; pass < 2; ++pass) {
    for (const SessionId& id : ids) {
      in_shard(id, [&](Shard& shard) {
        auto it = shard.records.find(id);
        if (it == shard.records.end()) return;
        if (pass == 0) {
          __builtin_prefetch(it->get());  // prefetch never faults; the size is not known yet
        } else {
          prefetch_record(it->get());
        }
      });
    }
  }
}

void SessionTable::Impl::prefetch(std::span<const SessionId> ids) {
  prefetch_passes(ids, /*locked=*/false);
}

void SessionTable::Impl::get_batch(std::span<const SessionId> ids, const ReadOptions& options,
                                   std::span<Session> out, std::span<Status> statuses) {
  prefetch(ids);
  for (std::size_t i = 0; i < ids.size(); ++i) statuses[i] = get(ids[i], options, &out[i]);
}

Result<SessionMeta> SessionTable::Impl::touch(const SessionId& id) {
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
  const std::int64_t now = clock_.now_ms();
  auto found = find_alive(shard, id, now);
  if (!found.ok()) return found.status();
  if (Status s = slide(shard, *found, now); !s.ok()) return s;
  return meta_of(**found);
}

Result<SessionMeta> SessionTable::Impl::update(const SessionId& id, const FieldChanges& changes,
                                               std::optional<Version> expected_version) {
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
  const std::int64_t now = clock_.now_ms();
  auto found = find_alive(shard, id, now);
  if (!found.ok()) return found.status();
  Record* old = *found;
  if (expected_version && *expected_version != old->version()) {
    return Status::VersionConflict("session is at a newer version");
  }
  return apply_changes(shard, old, changes, now);
}

Result<SessionMeta> SessionTable::Impl::apply_changes(Shard& shard, Record* old,
                                                      const FieldChanges& changes,
                                                      std::int64_t now) {
  if (changes.timeouts) {
    if (Status s = detail::check_timeouts(*changes.timeouts); !s.ok()) return s;
  }
  const SessionId id = old->id;  // `old` is freed by the swap below
  const Version version = next_version();

  // Merge: the old fields, overwritten by set and by removes (field tombstones, so that the
  // removal wins over older writes of the name elsewhere, DESIGN §7), which carry the new
  // version. A name both set and removed is set.
  thread_local std::vector<FieldRef> current, setting, merged;
  thread_local std::string blob;
  detail::blob_fields(old->blob(), old->version(), &current);
  sorted_refs(changes.set, version, &setting);
  const std::size_t set_count = setting.size();
  for (const std::string& name : changes.remove) {
    if (!std::binary_search(setting.begin(),
                            setting.begin() + static_cast<std::ptrdiff_t>(set_count),
                            FieldRef{name, {}, version},
                            [](const FieldRef& a, const FieldRef& b) { return a.name < b.name; })) {
      setting.push_back(FieldRef{name, {}, version, /*deleted=*/true});
    }
  }
  std::sort(setting.begin() + static_cast<std::ptrdiff_t>(set_count), setting.end(),
            [](const FieldRef& a, const FieldRef& b) { return a.name < b.name; });
  setting.erase(std::unique(setting.begin() + static_cast<std::ptrdiff_t>(set_count), setting.end(),
                            [](const FieldRef& a, const FieldRef& b) { return a.name == b.name; }),
                setting.end());
  std::inplace_merge(setting.begin(), setting.begin() + static_cast<std::ptrdiff_t>(set_count),
                     setting.end(),
                     [](const FieldRef& a, const FieldRef& b) { return a.name < b.name; });
  merged.clear();
  std::size_t i = 0, j = 0;
  while (i < current.size() || j < setting.size()) {
    if (j == setting.size() || (i < current.size() && current[i].name < setting[j].name)) {
      merged.push_back(current[i++]);
    } else {
      if (i < current.size() && current[i].name == setting[j].name) ++i;
      merged.push_back(setting[j++]);
    }
  }
  // Field tombstones are bounded like fields: past max_fields, the oldest go (a removal older
  // than that many others may then lose to a late write of the name from elsewhere).
  const auto tombstones = static_cast<std::size_t>(
      std::count_if(merged.begin(), merged.end(), [](const FieldRef& f) { return f.deleted; }));
  if (tombstones > options_.max_fields) {
    std::vector<Version> versions;
    for (const FieldRef& f : merged) {
      if (f.deleted) versions.push_back(f.version);
    }
    std::nth_element(
        versions.begin(),
        versions.begin() + static_cast<std::ptrdiff_t>(tombstones - options_.max_fields),
        versions.end());
    const Version keep_from = versions[tombstones - options_.max_fields];
    std::erase_if(merged, [&](const FieldRef& f) { return f.deleted && f.version < keep_from; });
  }
  // check_fields catches duplicates in `set` as adjacent equal names in the sorted `setting`.
  for (std::size_t k = 1; k < setting.size(); ++k) {
    if (setting[k - 1].name == setting[k].name) {
      return Status::InvalidArgument("field '" + std::string(setting[k].name) + "' given twice");
    }
  }
  detail::BlobMeta meta = detail::blob_meta(old->blob(), old->version());
  if (Status s = check_fields(meta.user_id, merged); !s.ok()) return s;
  if (changes.timeouts) meta.timeouts_version = version;
  detail::encode_blob(meta, merged, version, &blob);

  RecordPtr r = Record::make(id, blob);
  r->created_at_ms = old->created_at_ms;
  r->last_access_ms = std::max(old->last_access_ms, now);
  r->idle_ms = changes.timeouts ? changes.timeouts->idle_ms : old->idle_ms;
  r->absolute_ms = changes.timeouts ? changes.timeouts->absolute_ms : old->absolute_ms;
  r->cap_ms = old->cap_ms;  // no update raises the lifetime cap
  r->set_version(version);
  r->preset_code = old->preset_code;  // new timeouts keep the session's policy class
  r->signed_id = old->signed_id;
  const auto old_bytes = static_cast<std::int64_t>(old->footprint());  // before extras move
  r->extras = std::move(old->extras);
  const std::int64_t delta = static_cast<std::int64_t>(r->footprint()) - old_bytes;
  if (Status s = reserve_bytes(delta); !s.ok()) {
    old->extras = std::move(r->extras);
    return s;
  }
  if (Status s = persist_record(r.get(), Mutation::Kind::kPut); !s.ok()) {
    old->extras = std::move(r->extras);
    return s;
  }
  Record* fresh = r.get();
  replace(shard, old, std::move(r), old_bytes);
  ++shard.counters.updates;
  return meta_of(*fresh);
}

Status SessionTable::Impl::destroy(const SessionId& id) {
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
  // The tombstone's slot, fetched while the record is looked up rather than after.
  shard.tombstones.prefetch(id);
  const std::int64_t now = clock_.now_ms();
  auto found = find_alive(shard, id, now);
  if (!found.ok()) return found.status();
  return remove(shard, *found, now);
}

Result<SessionMeta> SessionTable::Impl::regenerate(const SessionId& id,
                                                   const RegenerateOptions& options) {
  if (options.user_id && options.user_id->size() > options_.max_user_id_bytes) {
    return Status::TooLarge("user id is " + std::to_string(options.user_id->size()) +
                            " bytes; the limit is " + std::to_string(options_.max_user_id_bytes));
  }
  std::vector<SessionId> evict;
  if (options.user_id && options_.max_sessions_per_user > 0) {
    // Moving the session to another user counts against that user's limit. A look at its user,
    // not a read (no counters, no expiry): the regenerate below reports a session not alive.
    bool other_user = false;
    {
      Shard& shard = shard_of(id);
      std::lock_guard lock(shard.mu);
      auto it = shard.records.find(id);
      other_user =
          it != shard.records.end() && detail::blob_user_id((*it)->blob()) != *options.user_id;
    }
    if (other_user) {
      auto found = sessions_to_evict(*options.user_id);
      if (!found.ok()) return found.status();
      evict = std::move(found).value();
    }
  }
  // The route key stays unless the session changes user (DESIGN §2): a login moves it to its
  // user's placement.
  const RouteKey route_key = options.user_id && !options.user_id->empty()
                                 ? ids_->route_key_of_user(*options.user_id)
                                 : route_key_of(id);
  SessionId new_id = IdGenerator::id_with_route_key(route_key);
  while (new_id == id) new_id = IdGenerator::id_with_route_key(route_key);
  Shard& old_shard = shard_of(id);
  Shard& new_shard = shard_of(new_id);
  std::vector<std::size_t> indexes{shard_index(id), shard_index(new_id)};
  for (const SessionId& e : evict) indexes.push_back(shard_index(e));
  const auto locks = lock_shards(std::move(indexes));
  const std::int64_t now = clock_.now_ms();
  auto found = find_alive(old_shard, id, now);
  if (!found.ok()) return found.status();
  Record* old = *found;
  if (new_shard.records.contains(new_id)) return Status::Internal("session id collision; retry");

  const Version version = next_version();
  thread_local std::vector<FieldRef> refs;
  thread_local std::string blob;
  const std::string_view old_user = detail::blob_user_id(old->blob());
  const std::string_view new_user = options.user_id ? std::string_view(*options.user_id) : old_user;
  if (options.replace_fields) {
    sorted_refs(*options.replace_fields, version, &refs);
  } else {
    detail::blob_fields(old->blob(), old->version(), &refs);
    for (FieldRef& f : refs) f.version = version;  // a new session: every field written now
  }
  const std::string authenticated_at = std::to_string(now);
  if (options.mark_authenticated) {  // the login step: replace or insert, keeping names sorted
    auto at = std::lower_bound(refs.begin(), refs.end(), kAuthenticatedAtField,
                               [](const FieldRef& f, std::string_view n) { return f.name < n; });
    if (at != refs.end() && at->name == kAuthenticatedAtField) {
      at->value = authenticated_at;
    } else {
      refs.insert(at, FieldRef{kAuthenticatedAtField, authenticated_at, version});
    }
  }
  if (Status s = check_fields(new_user, refs); !s.ok()) return s;
  const bool new_lifetime = new_user != old_user;
  // The new session carries the old one's revocation stamp: a revoke that raised the user's
  // generation meanwhile catches it (admit refuses it, or the revoke ends it with the others).
  std::uint64_t stamp = detail::blob_meta(old->blob(), old->version()).stamp;
  if (Status s = admit(new_user, new_id, new_lifetime, &stamp, &id); !s.ok()) return s;
  detail::BlobMeta meta;
  meta.user_id = new_user;
  meta.timeouts_version = meta.birth = version;
  meta.stamp = stamp;
  detail::encode_blob(meta, refs, version, &blob);

  RecordPtr r = Record::make(new_id, blob);
  // The idle timeout starts now, the absolute one does not: regenerating periodically must not
  // keep a session alive forever. Only a new user (an anonymous session logging in) starts a
  // new lifetime.
  r->created_at_ms = new_lifetime ? now : old->created_at_ms;
  r->cap_ms = new_lifetime ? now + options_.max_lifetime_ms : old->cap_ms;
  r->last_access_ms = now;
  r->idle_ms = old->idle_ms;
  r->absolute_ms = old->absolute_ms;
  r->set_version(version);
  r->preset_code = old->preset_code;
  r->signed_id = old->signed_id;
  if (old->extras) r->extras = std::make_unique<detail::Extras>(*old->extras);
  if (Status s = reserve_bytes(static_cast<std::int64_t>(r->footprint()) -
                               static_cast<std::int64_t>(old->footprint()));
      !s.ok()) {
    index_user(new_user, new_id, false);
    return s;
  }
  // The old id's end (a tombstone: REGENERATE's old id is final), and the new user's sessions
  // that make room, go in the same batch.
  std::deque<std::string>& values = end_values();
  const detail::Tombstone old_end = tombstone_of(*old, now);
  std::vector<Mutation> retire{end_of(*old, old_end, &values.emplace_back())};
  std::vector<std::pair<Record*, detail::Tombstone>> ending;
  retire_evicted(evict, new_user, now, &retire, &values, &ending);
  if (Status s = persist_record(r.get(), Mutation::Kind::kPut, retire); !s.ok()) {
    index_user(new_user, new_id, false);
    return s;
  }
  bury_all(ending);
  SessionMeta result = meta_of(*r);
  bury(old_shard, old, old_end);
  insert(new_shard, std::move(r), /*indexed=*/true);
  ++new_shard.counters.regenerates;
  return result;
}

TableStats SessionTable::Impl::stats() const {
  TableStats out;
  for (const Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    out.sessions += shard.records.size();
    out.memory_bytes += shard.bytes;
    const detail::Counters& c = shard.counters;
    out.creates += c.creates;
    out.updates += c.updates;
    out.destroys += c.destroys;
    out.regenerates += c.regenerates;
    out.expiries += c.expiries;
    out.read_hits += c.read_hits;
    out.read_misses += c.read_misses;
    out.touches_persisted += c.touches_persisted;
    out.touches_coalesced += c.touches_coalesced;
    out.merges_applied += c.merges_applied;
    out.touches_refused += c.touches_refused;
    out.merges_unchanged += c.merges_unchanged;
    out.tombstones += shard.tombstones.size();
    for (std::size_t i = 0; i < shard.by_preset.size(); ++i) {
      out.sessions_by_preset[i < kPresetSlots ? i : 0] += shard.by_preset[i];  // 6, 7: unknown
    }
    for (std::size_t i = 0; i <= kLifetimeBuckets; ++i) out.lifetimes[i] += c.lifetimes[i];
    out.lifetime_sum_ms += c.lifetime_sum_ms;
  }
  {
    std::lock_guard lock(set_aside_mu_);
    out.merges_set_aside = set_aside_count_;
    out.merges_dropped = dropped_count_;
    out.set_aside_pending = set_aside_.size();
  }
  for (const UserShard& us : user_shards_) {
    std::lock_guard lock(us.mu);
    out.users += us.users.size();
  }
  return out;
}

// ---- public face ----------------------------------------------------------------------------

SessionTable::SessionTable(TableOptions options, const Clock& clock, Store* store)
    : impl_(std::make_unique<Impl>(options, clock, store)) {}

SessionTable::~SessionTable() {
  impl_->stop_expirer();
  impl_->flush();  // best effort: a caller that needs the outcome calls flush() first
}

const TableOptions& SessionTable::options() const { return impl_->options(); }
std::uint64_t SessionTable::on_change(MutationObserver observer) {
  return impl_->add_observer(std::move(observer));
}
void SessionTable::remove_observer(std::uint64_t handle) { impl_->remove_observer(handle); }
void SessionTable::on_expiry(ExpiryObserver observer) {
  impl_->set_expiry_observer(std::move(observer));
}

Status SessionTable::flush() { return impl_->flush(); }

Result<RecoveryReport> SessionTable::recover() { return impl_->recover(); }
Result<SessionMeta> SessionTable::create(const NewSession& request) {
  return impl_->create(request);
}
std::vector<Result<SessionMeta>> SessionTable::create_batch(std::span<const NewSession> requests) {
  return impl_->create_batch(requests);
}
Status SessionTable::get(const SessionId& id, const ReadOptions& options, Session* out) {
  return impl_->get(id, options, out);
}
void SessionTable::get_batch(std::span<const SessionId> ids, const ReadOptions& options,
                             std::span<Session> out, std::span<Status> statuses) {
  impl_->get_batch(ids, options, out, statuses);
}
void SessionTable::prefetch(std::span<const SessionId> ids) { impl_->prefetch(ids); }
Result<SessionMeta> SessionTable::update(const SessionId& id, const FieldChanges& changes,
                                         std::optional<Version> expected_version) {
  return impl_->update(id, changes, expected_version);
}
Result<SessionMeta> SessionTable::touch(const SessionId& id) { return impl_->touch(id); }
Status SessionTable::destroy(const SessionId& id) { return impl_->destroy(id); }
Result<SessionMeta> SessionTable::regenerate(const SessionId& id,
                                             const RegenerateOptions& options) {
  return impl_->regenerate(id, options);
}
std::vector<SessionMeta> SessionTable::list_user(std::string_view user_id) {
  return impl_->list_user(user_id);
}

std::size_t SessionTable::count_off_user_key() const { return impl_->count_off_user_key(); }
Result<ApplyOutcome> SessionTable::apply(const Mutation& mutation) {
  return impl_->apply(mutation);
}
Result<Mutation::Kind> SessionTable::state_of(const SessionId& id, std::string* value) {
  return impl_->state_of(id, value);
}
Result<std::size_t> SessionTable::revoke_user(std::string_view user_id, const SessionId* keep) {
  return impl_->revoke_user(user_id, keep);
}
Status SessionTable::rewrite(const SessionId& id, RewriteFn decide) {
  return impl_->rewrite(id, decide);
}
Status SessionTable::move(const SessionId& from, const SessionId& to, RewriteFn decide) {
  return impl_->move(from, to, decide);
}
ScanPage SessionTable::scan(std::uint64_t cursor, std::size_t count) {
  return impl_->scan(cursor, count);
}
std::uint64_t SessionTable::size() const { return impl_->size(); }
void SessionTable::rewrite_batch(std::span<const SessionId> ids, std::span<const RewriteFn> decides,
                                 std::span<Status> statuses) {
  impl_->rewrite_batch(ids, decides, statuses);
}
std::size_t SessionTable::expire_due() { return impl_->expire_pass().first; }
TableStats SessionTable::stats() const { return impl_->stats(); }

void SessionTable::start_expirer(std::int64_t interval_ms) { impl_->start_expirer(interval_ms); }
void SessionTable::stop_expirer() { impl_->stop_expirer(); }

}  // namespace sessiond::storage
