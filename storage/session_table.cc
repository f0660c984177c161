// The sharded session table.
//
// Layout: a session is one Record allocation (detail/record.h) owned by its shard's hash set,
// which is keyed by the id inside the record (8 bytes per slot instead of 40). The shard picks
// from bytes 8..15 of the id and the set hashes bytes 0..7: ids are CSPRNG output and only ids
// made by this node, its peers or its own disk are ever inserted, so they need no further mixing.
//
// Expiry: each shard keeps a binary min-heap of its records keyed by the *persisted* deadline
// (the deadline as of the last write to disk), with each record holding its heap position. The
// key never exceeds the true deadline, so when the expirer pops a due record it either expires
// it (true deadline passed) or finds a touch that was coalesced in memory, persists it, and
// pushes the record down: the on-disk deadline thus catches up before it can drop a live
// session, and touches reach the disk at most once per idle_timeout * touch_persist_fraction.
//
// Expiry writes nothing to disk: recovery skips expired records and the compaction filter drops
// them, so a mass expiry costs no I/O.
//
// Locks: shard.mu guards a shard; user_shard.mu guards a slice of the user index. Session shard
// locks come first, several only in REGENERATE and move() (two) and in create_batch and
// rewrite_batch (one per shard involved), always in index order; a user-shard lock is taken under
// them, one at a time, never the other way round. Persistence happens under the session shard lock
// so that the order of writes to one session on disk is the order in memory.
#include "storage/session_table.h"

#include <absl/container/flat_hash_map.h>
#include <absl/container/flat_hash_set.h>
#include <absl/hash/hash.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <iterator>
#include <limits>

#include "storage/detail/record.h"

namespace sessiond::storage {
namespace {

using detail::FieldRef;
using detail::Record;
using detail::RecordPtr;

std::uint64_t id_word(const SessionId& id, std::size_t offset) {
  std::uint64_t v;
  std::memcpy(&v, id.data() + offset, sizeof v);
  return v;
}

struct IdHash {
  using is_transparent = void;
  std::size_t operator()(const SessionId& id) const { return id_word(id, 0); }
  std::size_t operator()(const RecordPtr& r) const { return id_word(r->id, 0); }
};

// Word-wise equality: ids are compared on every lookup, and a memcmp call costs more here.
bool same_id(const SessionId& a, const SessionId& b) {
  return ((id_word(a, 0) ^ id_word(b, 0)) | (id_word(a, 8) ^ id_word(b, 8)) |
          (id_word(a, 16) ^ id_word(b, 16)) | (id_word(a, 24) ^ id_word(b, 24))) == 0;
}

struct IdEq {
  using is_transparent = void;
  static const SessionId& key(const SessionId& id) { return id; }
  static const SessionId& key(const RecordPtr& r) { return r->id; }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return same_id(key(a), key(b));
  }
};

std::string_view id_bytes(const SessionId& id) {
  return {reinterpret_cast<const char*>(id.data()), id.size()};
}

constexpr std::int64_t kMaxTimeoutMs = 100LL * 365 * 24 * 3600 * 1000;  // 100 years
constexpr std::size_t kMaxShards = 1u << 16;  // scan cursors need the index to fit 16 bits

struct Counters {
  std::uint64_t creates = 0, updates = 0, destroys = 0, regenerates = 0, expiries = 0,
                read_hits = 0, read_misses = 0, touches_persisted = 0, touches_coalesced = 0;
};

struct alignas(64) Shard {
  mutable std::mutex mu;  // guards everything below
  absl::flat_hash_set<RecordPtr, IdHash, IdEq> records;
  std::vector<Record*> heap;  // min-heap on persisted_deadline_ms(); Record::heap_index is the slot
  std::size_t bytes = 0;
  Counters counters;
};

struct alignas(64) UserShard {
  mutable std::mutex mu;  // guards users
  absl::flat_hash_map<std::string, absl::flat_hash_set<SessionId, IdHash>> users;
};

// Locks two shards (one, if they are the same) in index (address) order.
std::pair<std::unique_lock<std::mutex>, std::unique_lock<std::mutex>> lock_two(Shard& a, Shard& b) {
  if (&a == &b) return {std::unique_lock(a.mu), std::unique_lock<std::mutex>()};
  Shard& lo = &a < &b ? a : b;
  Shard& hi = &a < &b ? b : a;
  std::unique_lock first(lo.mu);
  std::unique_lock second(hi.mu);
  return {std::move(first), std::move(second)};
}

// ---- expiry heap ----------------------------------------------------------------------------

std::int64_t heap_key(const Record* r) { return r->persisted_deadline_ms(); }

void heap_place(std::vector<Record*>& heap, std::size_t i, Record* r) {
  heap[i] = r;
  r->heap_index = static_cast<std::uint32_t>(i);
}

void heap_sift_up(std::vector<Record*>& heap, std::size_t i) {
  Record* r = heap[i];
  const std::int64_t key = heap_key(r);
  while (i > 0) {
    const std::size_t parent = (i - 1) / 2;
    if (heap_key(heap[parent]) <= key) break;
    heap_place(heap, i, heap[parent]);
    i = parent;
  }
  heap_place(heap, i, r);
}

void heap_sift_down(std::vector<Record*>& heap, std::size_t i) {
  Record* r = heap[i];
  const std::int64_t key = heap_key(r);
  const std::size_t n = heap.size();
  for (;;) {
    std::size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap_key(heap[child + 1]) < heap_key(heap[child])) ++child;
    if (key <= heap_key(heap[child])) break;
    heap_place(heap, i, heap[child]);
    i = child;
  }
  heap_place(heap, i, r);
}

void heap_push(std::vector<Record*>& heap, Record* r) {
  heap.push_back(r);
  heap_sift_up(heap, heap.size() - 1);
}

void heap_remove(std::vector<Record*>& heap, Record* r) {
  const std::size_t i = r->heap_index;
  Record* last = heap.back();
  heap.pop_back();
  if (last == r) return;
  heap_place(heap, i, last);
  heap_sift_up(heap, i);
  heap_sift_down(heap, last->heap_index);
}

// Restores the heap after r's key changed in either direction.
void heap_fix(std::vector<Record*>& heap, Record* r) {
  heap_sift_up(heap, r->heap_index);
  heap_sift_down(heap, r->heap_index);
}

// ---- validation -----------------------------------------------------------------------------

Status check_timeouts(const Timeouts& t) {
  if (t.idle_ms < 0 || t.absolute_ms < 0) {
    return Status::InvalidArgument("timeouts must not be negative");
  }
  if (t.idle_ms > kMaxTimeoutMs || t.absolute_ms > kMaxTimeoutMs) {
    return Status::InvalidArgument("timeouts must not exceed 100 years");
  }
  return {};
}

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

SessionMeta meta_of(const Record& r) {
  return {r.id, r.version(), r.created_at_ms, r.last_access_ms, r.deadline_ms(), r.signed_id != 0};
}

}  // namespace

class SessionTable::Impl {
 public:
  Impl(const TableOptions& options, const Clock& clock, Store* store)
      : options_(options), clock_(clock), store_(store), hlc_(clock) {
    std::size_t n = 1;
    while (n < std::clamp<std::size_t>(options.shard_count, 1, kMaxShards)) n <<= 1;
    shards_ = std::vector<Shard>(n);
    // Room for the blob's own lengths within what a record can hold.
    options_.max_session_bytes = std::min(options_.max_session_bytes, detail::kMaxBlobBytes / 2);
    user_shards_ = std::vector<UserShard>(n);
    mask_ = n - 1;
  }

  Result<RecoveryReport> recover();
  Result<SessionMeta> create(const NewSession& request);
  std::vector<Result<SessionMeta>> create_batch(std::span<const NewSession> requests);
  void create_chunk(std::span<const NewSession> requests,
                    std::vector<Result<SessionMeta>>* results);
  Status get(const SessionId& id, const ReadOptions& options, Session* out);
  void get_batch(std::span<const SessionId> ids, const ReadOptions& options, std::span<Session> out,
                 std::span<Status> statuses);
  Result<SessionMeta> update(const SessionId& id, const FieldChanges& changes,
                             std::optional<Version> expected_version);
  Result<SessionMeta> touch(const SessionId& id);
  Status destroy(const SessionId& id);
  Result<SessionMeta> regenerate(const SessionId& id, const RegenerateOptions& options);
  std::vector<SessionMeta> list_user(std::string_view user_id);
  Result<std::size_t> revoke_user(std::string_view user_id, const SessionId* keep);
  Status rewrite(const SessionId& id, RewriteFn decide);
  void rewrite_batch(std::span<const SessionId> ids, std::span<const RewriteFn> decides,
                     std::span<Status> statuses);
  void rewrite_chunk(std::span<const SessionId> ids, std::span<const RewriteFn> decides,
                     std::span<Status> statuses);
  Status move(const SessionId& from, const SessionId& to, RewriteFn decide);
  ScanPage scan(std::uint64_t cursor, std::size_t count);
  // Returns {removed, whether some shard still has due work}.
  std::pair<std::size_t, bool> expire_pass();
  // Persists every record with a coalesced touch or an unsaved access history.
  Status flush();
  // Empties the table (a failed recovery must not leave a partial load behind).
  void clear();
  TableStats stats() const;
  std::uint64_t size() const {
    std::uint64_t n = 0;
    for (const Shard& shard : shards_) {
      std::lock_guard lock(shard.mu);
      n += shard.records.size();
    }
    return n;
  }

 private:
  Shard& shard_of(const SessionId& id) { return shards_[id_word(id, 8) & mask_]; }
  UserShard& user_shard_of(std::string_view user) {
    return user_shards_[absl::Hash<std::string_view>{}(user)&mask_];
  }

  // Locks the shards with these indexes (repeats allowed) in index order.
  std::vector<std::unique_lock<std::mutex>> lock_shards(std::vector<std::size_t> indexes) {
    std::sort(indexes.begin(), indexes.end());
    indexes.erase(std::unique(indexes.begin(), indexes.end()), indexes.end());
    std::vector<std::unique_lock<std::mutex>> locks;
    locks.reserve(indexes.size());
    for (std::size_t index : indexes) locks.emplace_back(shards_[index].mu);
    return locks;
  }

  Status persist(std::span<const StoreOp> ops) { return store_ ? store_->write(ops) : Status(); }

  // Validates a create request and builds its record (with a fresh id), within the budget.
  Result<RecordPtr> new_record(const NewSession& request);
  // Finds an alive record, removing it (and answering EXPIRED) if its deadline has passed.
  Result<Record*> find_alive(Shard& shard, const SessionId& id, std::int64_t now);
  // Drops a record from memory (set, heap, user index, accounting). Persists nothing.
  void unlink(Shard& shard, Record* r);
  void insert(Shard& shard, RecordPtr r);
  void index_user(std::string_view user, const SessionId& id, bool add);
  // Slides r's last access to now; persists it if the coalescing rule says so.
  Status slide(Shard& shard, Record* r, std::int64_t now);
  // Writes the record's current state (and its user-index entry, with the same deadline, so the
  // compaction filter drops both together) plus `extra` in one batch; on success nothing of the
  // record is left unpersisted.
  Status persist_record(Record* r, std::span<const StoreOp> extra = {});
  // update() once the record is found and its version checked.
  Result<SessionMeta> apply_changes(Shard& shard, Record* old, const FieldChanges& changes,
                                    std::int64_t now);
  // Deletes an alive record from disk, then from memory.
  Status remove(Shard& shard, Record* r);
  // Puts `r` in the place of `old` (same id) in memory: set slot, heap slot, user index,
  // accounting (`old_bytes`: what `old` was counted for). Persists nothing; frees `old`.
  void replace(Shard& shard, Record* old, RecordPtr r, std::int64_t old_bytes);
  // Builds the record of a Rewrite::kPut for `id`, checked against the limits and the budget
  // (net of `replacing`, the record it will replace, if any).
  // `pending` is what earlier records of the same batch will add to the budget.
  Result<RecordPtr> put_record(const SessionId& id, const Rewrite& w, const Record* replacing,
                               std::int64_t now, std::int64_t pending = 0);
  Status check_fields(std::string_view user_id, std::span<const FieldRef> fields) const;
  Status reserve_bytes(std::int64_t delta);
  // The per-user limit before a session is added to `user` (see TableOptions): the user's
  // oldest sessions that must end to make room (none when there is room), or FORBIDDEN under
  // the refuse policy. Only looks: the caller ends them in the write that adds the session,
  // so a request that fails ends nothing. Takes its own locks: call it holding none.
  Result<std::vector<SessionId>> sessions_to_evict(std::string_view user);
  // Under the locks of the shards of `ids`: the ops that end those still alive and still of
  // `user` (appended to *ops) and the records to unlink once they are written.
  void retire_evicted(std::span<const SessionId> ids, std::string_view user, std::int64_t now,
                      std::vector<StoreOp>* ops, std::vector<std::pair<Shard*, Record*>>* ending);
  // After the write: drops the evicted records from memory and counts them as destroys.
  void unlink_evicted(std::span<const std::pair<Shard*, Record*>> ending);
  std::size_t shard_index(const SessionId& id) const { return id_word(id, 8) & mask_; }
  void account(Shard& shard, std::int64_t delta) {
    shard.bytes = static_cast<std::size_t>(static_cast<std::int64_t>(shard.bytes) + delta);
    total_bytes_.fetch_add(delta, std::memory_order_relaxed);
  }

  TableOptions options_;
  const Clock& clock_;
  Store* store_;
  HybridLogicalClock hlc_;
  std::vector<Shard> shards_;
  std::vector<UserShard> user_shards_;
  std::size_t mask_ = 0;
  std::atomic<std::int64_t> total_bytes_{0};
};

// ---- helpers --------------------------------------------------------------------------------

namespace {

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

}  // namespace

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
    ++shard.counters.expiries;
    unlink(shard, r);
    return Status::Expired();
  }
  return r;
}

void SessionTable::Impl::index_user(std::string_view user, const SessionId& id, bool add) {
  if (user.empty()) return;
  UserShard& us = user_shard_of(user);
  std::lock_guard lock(us.mu);
  if (add) {
    us.users[std::string(user)].insert(id);
    return;
  }
  auto it = us.users.find(absl::string_view(user.data(), user.size()));
  if (it == us.users.end()) return;
  it->second.erase(id);
  if (it->second.empty()) us.users.erase(it);
}

void SessionTable::Impl::unlink(Shard& shard, Record* r) {
  index_user(detail::blob_user_id(r->blob()), r->id, false);
  heap_remove(shard.heap, r);
  account(shard, -static_cast<std::int64_t>(r->footprint()));
  auto it = shard.records.find(r->id);
  shard.records.erase(it);  // frees r
}

void SessionTable::Impl::insert(Shard& shard, RecordPtr r) {
  Record* raw = r.get();
  index_user(detail::blob_user_id(raw->blob()), raw->id, true);
  account(shard, static_cast<std::int64_t>(raw->footprint()));
  shard.records.insert(std::move(r));
  heap_push(shard.heap, raw);
}

Status SessionTable::Impl::persist_record(Record* r, std::span<const StoreOp> extra) {
  const std::uint32_t previous_lag = r->unpersisted_ms;
  r->unpersisted_ms = 0;
  if (store_) {
    thread_local std::string value;
    detail::encode_value(*r, &value);
    const std::string_view user = detail::blob_user_id(r->blob());
    std::array<StoreOp, 5> ops;  // the record, its user entry, and move()'s three at most
    std::size_t n = 0;
    ops[n++] = StoreOp{StoreOp::Kind::kPutSession, id_bytes(r->id), value, {}, 0};
    if (!user.empty()) {
      ops[n++] = StoreOp{StoreOp::Kind::kPutUser, id_bytes(r->id), {}, user, r->deadline_ms()};
    }
    for (const StoreOp& op : extra) ops[n++] = op;
    if (Status s = store_->write(std::span(ops.data(), n)); !s.ok()) {
      r->unpersisted_ms = previous_lag;
      return s;
    }
  }
  if (r->extras) r->extras->unsaved_access = false;
  return {};
}

Status SessionTable::Impl::slide(Shard& shard, Record* r, std::int64_t now) {
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
    return {};
  }
  Status s = persist_record(r);
  if (!s.ok()) {
    r->last_access_ms = previous;
    r->unpersisted_ms = previous_lag;
    return s;
  }
  ++shard.counters.touches_persisted;
  if (heap_key(r) != previous_key) heap_fix(shard.heap, r);
  return {};
}

Status SessionTable::Impl::check_fields(std::string_view user_id,
                                        std::span<const FieldRef> fields) const {
  if (user_id.size() > options_.max_user_id_bytes) {
    return Status::TooLarge("user id is " + std::to_string(user_id.size()) +
                            " bytes; the limit is " + std::to_string(options_.max_user_id_bytes));
  }
  if (fields.size() > options_.max_fields) {
    return Status::TooLarge("session would have " + std::to_string(fields.size()) +
                            " fields; the limit is " + std::to_string(options_.max_fields));
  }
  std::size_t total = user_id.size();
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const FieldRef& f = fields[i];
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

Result<RecoveryReport> SessionTable::Impl::recover() {
  RecoveryReport report;
  if (!store_) return report;
  const auto started = std::chrono::steady_clock::now();
  const std::int64_t now = clock_.now_ms();
  Status s = store_->for_each_session([&](std::string_view key, std::string_view value) -> Status {
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
    if (r->deadline_ms() <= now) {
      ++report.skipped_expired;
      return Status();
    }
    hlc_.observe(r->version_hlc);
    Shard& shard = shard_of(r->id);
    std::lock_guard lock(shard.mu);
    if (shard.records.contains(r->id)) return Status::Internal("recover() on a non-empty table");
    insert(shard, std::move(r));
    ++report.loaded;
    return Status();
  });
  if (!s.ok()) {
    clear();  // never serve a partial load
    return s;
  }
  report.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - started)
                           .count();
  return report;
}

Result<RecordPtr> SessionTable::Impl::new_record(const NewSession& request) {
  const Timeouts timeouts = request.timeouts.value_or(options_.default_timeouts);
  if (Status s = check_timeouts(timeouts); !s.ok()) return s;
  if (Status s = check_context(request.context); !s.ok()) return s;
  const std::int64_t now = clock_.now_ms();
  const Version version{hlc_.now(), options_.region};

  thread_local std::vector<FieldRef> refs;
  thread_local std::string blob;
  sorted_refs(request.fields, version, &refs);
  if (Status s = check_fields(request.user_id, refs); !s.ok()) return s;
  detail::encode_blob(request.user_id, refs, version, &blob);

  RecordPtr r = Record::make(new_session_id(), blob);
  r->created_at_ms = now;
  r->last_access_ms = now;
  r->idle_ms = timeouts.idle_ms;
  r->absolute_ms = timeouts.absolute_ms;
  r->version_hlc = version.hlc;
  r->version_region = version.region;
  r->set_preset(request.preset);
  r->signed_id = request.signed_id ? 1 : 0;
  if (request.context) {
    r->extras = std::make_unique<detail::Extras>();
    r->extras->context = request.context;
  }
  if (Status s = reserve_bytes(static_cast<std::int64_t>(r->footprint())); !s.ok()) return s;
  return r;
}

Result<std::vector<SessionId>> SessionTable::Impl::sessions_to_evict(std::string_view user) {
  const std::size_t limit = options_.max_sessions_per_user;
  std::vector<SessionId> out;
  if (limit == 0 || user.empty()) return out;
  std::vector<SessionMeta> sessions = list_user(user);  // oldest first
  if (sessions.size() < limit) return out;
  if (options_.user_limit_policy == TableOptions::UserLimitPolicy::kRefuse) {
    return Status(StatusCode::kForbidden, "user '" + std::string(user) + "' has " +
                                              std::to_string(sessions.size()) +
                                              " sessions; the limit is " + std::to_string(limit));
  }
  for (std::size_t i = 0; i + limit <= sessions.size(); ++i) out.push_back(sessions[i].id);
  return out;
}

void SessionTable::Impl::retire_evicted(std::span<const SessionId> ids, std::string_view user,
                                        std::int64_t now, std::vector<StoreOp>* ops,
                                        std::vector<std::pair<Shard*, Record*>>* ending) {
  for (const SessionId& id : ids) {
    Shard& shard = shard_of(id);
    auto it = shard.records.find(id);
    if (it == shard.records.end()) continue;  // ended meanwhile
    Record* r = it->get();
    if (r->deadline_ms() <= now || detail::blob_user_id(r->blob()) != user) continue;
    ops->push_back(StoreOp{StoreOp::Kind::kDeleteSession, id_bytes(r->id), {}, {}, 0});
    ops->push_back(StoreOp{StoreOp::Kind::kDeleteUser, id_bytes(r->id), {}, user, 0});
    ending->emplace_back(&shard, r);
  }
}

void SessionTable::Impl::unlink_evicted(std::span<const std::pair<Shard*, Record*>> ending) {
  for (const auto& [shard, r] : ending) {
    unlink(*shard, r);
    ++shard->counters.destroys;
  }
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
    // A collision has probability 2^-256; if it ever happens the new id may belong to another
    // shard, so look again under that shard's lock.
    if (shard_of(r->id).records.contains(r->id)) {
      locks.clear();
      r->id = new_session_id();
      continue;
    }
    const std::int64_t now = clock_.now_ms();
    std::vector<StoreOp> retire;
    std::vector<std::pair<Shard*, Record*>> ending;
    retire_evicted(*evict, request.user_id, now, &retire, &ending);
    if (Status s = persist_record(r.get(), retire); !s.ok()) return s;
    unlink_evicted(ending);
    Shard& shard = shard_of(r->id);
    SessionMeta meta = meta_of(*r);
    insert(shard, std::move(r));
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

  std::vector<std::string> values;
  std::vector<StoreOp> ops;
  values.reserve(requests.size());
  ops.reserve(2 * requests.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    Record* r = records[i].get();
    if (r == nullptr) continue;
    if (shard_of(r->id).records.contains(r->id)) {  // 2^-256, as in create()
      results[i] = Status::Internal("session id collision; retry");
      records[i].reset();
      continue;
    }
    if (!store_) continue;
    detail::encode_value(*r, &values.emplace_back());
    ops.push_back(StoreOp{StoreOp::Kind::kPutSession, id_bytes(r->id), values.back(), {}, 0});
    const std::string_view user = detail::blob_user_id(r->blob());
    if (!user.empty()) {
      ops.push_back(StoreOp{StoreOp::Kind::kPutUser, id_bytes(r->id), {}, user, r->deadline_ms()});
    }
  }
  if (Status s = persist(ops); !s.ok()) {
    for (std::size_t i = 0; i < records.size(); ++i) {
      if (records[i]) results[i] = s;
    }
    std::move(results.begin(), results.end(), std::back_inserter(*all_results));
    return;
  }
  for (RecordPtr& r : records) {
    if (!r) continue;
    Shard& shard = shard_of(r->id);
    insert(shard, std::move(r));
    ++shard.counters.creates;
  }
  std::move(results.begin(), results.end(), std::back_inserter(*all_results));
}

Status SessionTable::Impl::get(const SessionId& id, const ReadOptions& options, Session* out) {
  const std::int64_t now = clock_.now_ms();
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
  auto found = find_alive(shard, id, now);
  if (!found.ok()) return found.status();
  Record* r = *found;
  if (options.expect_context && r->extras && r->extras->context &&
      !context_matches(*r->extras->context, *options.expect_context)) {
    ++shard.counters.read_misses;
    detail::record_to_session(*r, out);  // for the caller's policy, not for its client
    return Status::ContextMismatch("session is bound to another client context");
  }
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
      if (log.size() >= options_.access_log_length) {
        log.erase(log.begin(), log.begin() + static_cast<std::ptrdiff_t>(
                                                 log.size() - options_.access_log_length + 1));
      }
      log.push_back(*options.record_access);
      log.back().time_ms = now;
      if (!log.back().has_location) log.back().latitude = log.back().longitude = 0;
      // Saved with the session's next write (a touch past the coalescing slack, an update, the
      // expirer's catch-up) or by flush(), like coalesced touches.
      r->extras->unsaved_access = true;
      account(shard, static_cast<std::int64_t>(r->footprint()) - static_cast<std::int64_t>(before));
    }
  }
  if (options.touch) {
    if (Status s = slide(shard, r, now); !s.ok()) return s;
  }
  ++shard.counters.read_hits;
  detail::record_to_session(*r, out);
  if (options.judge && (*options.judge)(*out)) {
    if (Status s = remove(shard, r); !s.ok()) return s;
    return Status(StatusCode::kHijackSuspected, "the session was destroyed");
  }
  return {};
}

// Passes over the batch so that each pass's cache misses overlap across the batch instead of
// forming one chain per read: hash-table groups and slots; record headers; the rest of each
// record (its size is in the header); then the reads themselves, from cache.
void SessionTable::Impl::get_batch(std::span<const SessionId> ids, const ReadOptions& options,
                                   std::span<Session> out, std::span<Status> statuses) {
  for (const SessionId& id : ids) {
    Shard& shard = shard_of(id);
    std::lock_guard lock(shard.mu);
    shard.records.prefetch(id);
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (const SessionId& id : ids) {
      Shard& shard = shard_of(id);
      std::lock_guard lock(shard.mu);
      auto it = shard.records.find(id);
      if (it == shard.records.end()) continue;
      if (pass == 0) {
        __builtin_prefetch(it->get());  // prefetch never faults; the size is not known yet
      } else {
        prefetch_record(it->get());
      }
    }
  }
  for (std::size_t i = 0; i < ids.size(); ++i) statuses[i] = get(ids[i], options, &out[i]);
}

Result<SessionMeta> SessionTable::Impl::touch(const SessionId& id) {
  const std::int64_t now = clock_.now_ms();
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
  auto found = find_alive(shard, id, now);
  if (!found.ok()) return found.status();
  if (Status s = slide(shard, *found, now); !s.ok()) return s;
  return meta_of(**found);
}

Result<SessionMeta> SessionTable::Impl::update(const SessionId& id, const FieldChanges& changes,
                                               std::optional<Version> expected_version) {
  const std::int64_t now = clock_.now_ms();
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
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
    if (Status s = check_timeouts(*changes.timeouts); !s.ok()) return s;
  }
  const SessionId id = old->id;  // `old` is freed by the swap below
  const Version version{hlc_.now(), options_.region};

  // Merge: old fields minus removed, overwritten by set (which carry the new version).
  thread_local std::vector<FieldRef> current, setting, merged;
  thread_local std::string blob;
  detail::blob_fields(old->blob(), old->version(), &current);
  sorted_refs(changes.set, version, &setting);
  merged.clear();
  std::size_t i = 0, j = 0;
  auto removed = [&](std::string_view name) {
    return std::find(changes.remove.begin(), changes.remove.end(), name) != changes.remove.end();
  };
  while (i < current.size() || j < setting.size()) {
    if (j == setting.size() || (i < current.size() && current[i].name < setting[j].name)) {
      if (!removed(current[i].name)) merged.push_back(current[i]);
      ++i;
    } else {
      if (i < current.size() && current[i].name == setting[j].name) ++i;
      merged.push_back(setting[j++]);
    }
  }
  // check_fields catches duplicates in `set` as adjacent equal names in the sorted `setting`.
  for (std::size_t k = 1; k < setting.size(); ++k) {
    if (setting[k - 1].name == setting[k].name) {
      return Status::InvalidArgument("field '" + std::string(setting[k].name) + "' given twice");
    }
  }
  const std::string_view user = detail::blob_user_id(old->blob());
  if (Status s = check_fields(user, merged); !s.ok()) return s;
  detail::encode_blob(user, merged, version, &blob);

  RecordPtr r = Record::make(id, blob);
  r->created_at_ms = old->created_at_ms;
  r->last_access_ms = std::max(old->last_access_ms, now);
  r->idle_ms = changes.timeouts ? changes.timeouts->idle_ms : old->idle_ms;
  r->absolute_ms = changes.timeouts ? changes.timeouts->absolute_ms : old->absolute_ms;
  r->version_hlc = version.hlc;
  r->version_region = version.region;
  r->preset_code = old->preset_code;  // new timeouts keep the session's policy class
  r->signed_id = old->signed_id;
  const auto old_bytes = static_cast<std::int64_t>(old->footprint());  // before extras move
  r->extras = std::move(old->extras);
  const std::int64_t delta = static_cast<std::int64_t>(r->footprint()) - old_bytes;
  if (Status s = reserve_bytes(delta); !s.ok()) {
    old->extras = std::move(r->extras);
    return s;
  }
  if (Status s = persist_record(r.get()); !s.ok()) {
    old->extras = std::move(r->extras);
    return s;
  }
  Record* fresh = r.get();
  replace(shard, old, std::move(r), old_bytes);
  ++shard.counters.updates;
  return meta_of(*fresh);
}

Status SessionTable::Impl::destroy(const SessionId& id) {
  const std::int64_t now = clock_.now_ms();
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
  auto found = find_alive(shard, id, now);
  if (!found.ok()) return found.status();
  return remove(shard, *found);
}

Status SessionTable::Impl::remove(Shard& shard, Record* r) {
  const std::string_view user = detail::blob_user_id(r->blob());
  std::array<StoreOp, 2> ops{StoreOp{StoreOp::Kind::kDeleteSession, id_bytes(r->id), {}, {}, 0},
                             StoreOp{StoreOp::Kind::kDeleteUser, id_bytes(r->id), {}, user, 0}};
  if (Status s = persist(std::span(ops.data(), user.empty() ? 1 : 2)); !s.ok()) return s;
  unlink(shard, r);
  ++shard.counters.destroys;
  return {};
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
  SessionId new_id = new_session_id();
  while (new_id == id) new_id = new_session_id();
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

  const Version version{hlc_.now(), options_.region};
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
  detail::encode_blob(new_user, refs, version, &blob);

  RecordPtr r = Record::make(new_id, blob);
  // The idle timeout starts now, the absolute one does not: regenerating periodically must not
  // keep a session alive forever. Only a new user (an anonymous session logging in) starts a
  // new lifetime.
  const bool new_lifetime = new_user != old_user;
  r->created_at_ms = new_lifetime ? now : old->created_at_ms;
  r->last_access_ms = now;
  r->idle_ms = old->idle_ms;
  r->absolute_ms = old->absolute_ms;
  r->version_hlc = version.hlc;
  r->version_region = version.region;
  r->preset_code = old->preset_code;
  r->signed_id = old->signed_id;
  if (old->extras) r->extras = std::make_unique<detail::Extras>(*old->extras);
  if (Status s = reserve_bytes(static_cast<std::int64_t>(r->footprint()) -
                               static_cast<std::int64_t>(old->footprint()));
      !s.ok()) {
    return s;
  }
  // The old id and its user-index entry, and the new user's sessions that make room, go in the
  // same batch.
  std::vector<StoreOp> retire;
  retire.push_back(StoreOp{StoreOp::Kind::kDeleteSession, id_bytes(id), {}, {}, 0});
  if (!old_user.empty()) {
    retire.push_back(StoreOp{StoreOp::Kind::kDeleteUser, id_bytes(id), {}, old_user, 0});
  }
  std::vector<std::pair<Shard*, Record*>> ending;
  retire_evicted(evict, new_user, now, &retire, &ending);
  if (Status s = persist_record(r.get(), retire); !s.ok()) return s;
  unlink_evicted(ending);
  SessionMeta meta = meta_of(*r);
  unlink(old_shard, old);
  insert(new_shard, std::move(r));
  ++new_shard.counters.regenerates;
  return meta;
}

std::vector<SessionMeta> SessionTable::Impl::list_user(std::string_view user_id) {
  std::vector<SessionId> ids;
  {
    UserShard& us = user_shard_of(user_id);
    std::lock_guard lock(us.mu);
    auto it = us.users.find(absl::string_view(user_id.data(), user_id.size()));
    if (it != us.users.end()) ids.assign(it->second.begin(), it->second.end());
  }
  const std::int64_t now = clock_.now_ms();
  std::vector<SessionMeta> out;
  for (const SessionId& id : ids) {
    Shard& shard = shard_of(id);
    std::lock_guard lock(shard.mu);
    auto it = shard.records.find(id);
    if (it == shard.records.end()) continue;
    const Record& r = **it;
    if (r.deadline_ms() <= now || detail::blob_user_id(r.blob()) != user_id) continue;
    out.push_back(meta_of(r));
  }
  std::sort(out.begin(), out.end(), [](const SessionMeta& a, const SessionMeta& b) {
    return std::tie(a.created_at_ms, a.id) < std::tie(b.created_at_ms, b.id);
  });
  return out;
}

Result<std::size_t> SessionTable::Impl::revoke_user(std::string_view user_id,
                                                    const SessionId* keep) {
  std::vector<SessionId> ids;
  {
    UserShard& us = user_shard_of(user_id);
    std::lock_guard lock(us.mu);
    auto it = us.users.find(absl::string_view(user_id.data(), user_id.size()));
    if (it != us.users.end()) ids.assign(it->second.begin(), it->second.end());
  }
  std::size_t revoked = 0;
  for (const SessionId& id : ids) {
    if (keep && id == *keep) continue;
    Shard& shard = shard_of(id);
    std::lock_guard lock(shard.mu);
    auto it = shard.records.find(id);
    if (it == shard.records.end() || detail::blob_user_id((*it)->blob()) != user_id) continue;
    Record* r = it->get();
    if (r->deadline_ms() <= clock_.now_ms()) {
      ++shard.counters.expiries;
      unlink(shard, r);
      continue;
    }
    std::array<StoreOp, 2> ops{StoreOp{StoreOp::Kind::kDeleteSession, id_bytes(id), {}, {}, 0},
                               StoreOp{StoreOp::Kind::kDeleteUser, id_bytes(id), {}, user_id, 0}};
    if (Status s = persist(ops); !s.ok()) {
      return Status(s.code(), "revoked " + std::to_string(revoked) + " of " +
                                  std::to_string(ids.size()) + " sessions, then: " + s.message());
    }
    unlink(shard, r);
    ++shard.counters.destroys;
    ++revoked;
  }
  return revoked;
}

// ---- keyed access ---------------------------------------------------------------------------

Result<RecordPtr> SessionTable::Impl::put_record(const SessionId& id, const Rewrite& w,
                                                 const Record* replacing, std::int64_t now,
                                                 std::int64_t pending) {
  if (Status s = check_timeouts(w.timeouts); !s.ok()) return s;
  const Version version{hlc_.now(), options_.region};
  thread_local std::vector<FieldRef> refs;
  thread_local std::string blob;
  sorted_refs(w.fields, version, &refs);
  for (std::size_t k = 1; k < refs.size(); ++k) {
    if (refs[k - 1].name == refs[k].name) {
      return Status::InvalidArgument("field '" + std::string(refs[k].name) + "' given twice");
    }
  }
  if (Status s = check_fields({}, refs); !s.ok()) return s;
  detail::encode_blob({}, refs, version, &blob);
  RecordPtr r = Record::make(id, blob);
  r->created_at_ms = now;
  r->last_access_ms = now;
  r->idle_ms = w.timeouts.idle_ms;
  r->absolute_ms = w.timeouts.absolute_ms;
  r->version_hlc = version.hlc;
  r->version_region = version.region;
  const std::int64_t delta = static_cast<std::int64_t>(r->footprint()) -
                             (replacing ? static_cast<std::int64_t>(replacing->footprint()) : 0);
  if (Status s = reserve_bytes(delta + std::max<std::int64_t>(pending, 0)); !s.ok()) return s;
  return r;
}

Status SessionTable::Impl::rewrite(const SessionId& id, RewriteFn decide) {
  const std::int64_t now = clock_.now_ms();
  Shard& shard = shard_of(id);
  std::lock_guard lock(shard.mu);
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
      return current ? remove(shard, current) : Status();
    case Rewrite::Kind::kChange:
      if (!current) return Status::NotFound();
      return apply_changes(shard, current, w.changes, now).status();
    case Rewrite::Kind::kPut:
      break;
  }
  auto made = put_record(id, w, current, now);
  if (!made.ok()) return made.status();
  RecordPtr r = std::move(made).value();
  // The new record has no user; the one it replaces may have had a user-index entry.
  const std::string_view old_user = current ? detail::blob_user_id(current->blob()) : "";
  const StoreOp drop_user{StoreOp::Kind::kDeleteUser, id_bytes(id), {}, old_user, 0};
  if (Status s = persist_record(r.get(), std::span(&drop_user, old_user.empty() ? 0 : 1));
      !s.ok()) {
    return s;
  }
  if (current) {
    replace(shard, current, std::move(r), static_cast<std::int64_t>(current->footprint()));
    ++shard.counters.updates;
  } else {
    insert(shard, std::move(r));
    ++shard.counters.creates;
  }
  return {};
}

void SessionTable::Impl::replace(Shard& shard, Record* old, RecordPtr r, std::int64_t old_bytes) {
  const std::string_view old_user = detail::blob_user_id(old->blob());
  const std::string_view new_user = detail::blob_user_id(r->blob());
  if (old_user != new_user) {
    index_user(old_user, old->id, false);
    index_user(new_user, r->id, true);
  }
  account(shard, static_cast<std::int64_t>(r->footprint()) - old_bytes);
  // Into the old record's set slot (same id, so same hash) and heap slot.
  auto it = shard.records.find(r->id);
  r->heap_index = old->heap_index;
  shard.heap[r->heap_index] = r.get();
  Record* fresh = r.get();
  const_cast<RecordPtr&>(*it).swap(r);  // the key is unchanged, so the set stays valid
  heap_fix(shard.heap, fresh);
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
// write, then everything applied in memory.
void SessionTable::Impl::rewrite_chunk(std::span<const SessionId> ids,
                                       std::span<const RewriteFn> decides,
                                       std::span<Status> statuses) {
  std::vector<std::size_t> shard_indexes;
  shard_indexes.reserve(ids.size());
  for (const SessionId& id : ids) shard_indexes.push_back(id_word(id, 8) & mask_);
  const auto locks = lock_shards(std::move(shard_indexes));

  const std::int64_t now = clock_.now_ms();
  struct Step {
    Record* current = nullptr;
    Rewrite::Kind kind = Rewrite::Kind::kKeep;
    RecordPtr record;  // kPut
  };
  std::vector<Step> steps(ids.size());
  std::vector<std::string> values;
  values.reserve(ids.size());  // StoreOps view into these: no reallocation
  std::vector<StoreOp> ops;
  ops.reserve(2 * ids.size());
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
    const std::string_view old_user =
        step.current ? detail::blob_user_id(step.current->blob()) : "";
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
      if (store_) {
        detail::encode_value(*step.record, &values.emplace_back());
        ops.push_back(StoreOp{StoreOp::Kind::kPutSession, id_bytes(ids[i]), values.back(), {}, 0});
      }
    } else if (store_) {
      ops.push_back(StoreOp{StoreOp::Kind::kDeleteSession, id_bytes(ids[i]), {}, {}, 0});
    }
    if (store_ && !old_user.empty()) {
      ops.push_back(StoreOp{StoreOp::Kind::kDeleteUser, id_bytes(ids[i]), {}, old_user, 0});
    }
  }
  if (Status s = ops.empty() ? Status() : persist(ops); !s.ok()) {
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (steps[i].kind != Rewrite::Kind::kKeep) statuses[i] = s;
    }
    return;
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    Step& step = steps[i];
    Shard& shard = shard_of(ids[i]);
    if (step.kind == Rewrite::Kind::kDelete) {
      unlink(shard, step.current);
      ++shard.counters.destroys;
    } else if (step.kind == Rewrite::Kind::kPut) {
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
  const std::int64_t now = clock_.now_ms();
  Shard& from_shard = shard_of(from);
  Shard& to_shard = shard_of(to);
  const auto locks = lock_two(from_shard, to_shard);
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
  // The source leaves memory too, so the budget check above was conservative.
  std::array<StoreOp, 3> retire;
  std::size_t n = 0;
  retire[n++] = StoreOp{StoreOp::Kind::kDeleteSession, id_bytes(from), {}, {}, 0};
  const std::string_view source_user = detail::blob_user_id(source->blob());
  if (!source_user.empty()) {
    retire[n++] = StoreOp{StoreOp::Kind::kDeleteUser, id_bytes(from), {}, source_user, 0};
  }
  const std::string_view target_user = target ? detail::blob_user_id(target->blob()) : "";
  if (!target_user.empty()) {
    retire[n++] = StoreOp{StoreOp::Kind::kDeleteUser, id_bytes(to), {}, target_user, 0};
  }
  if (Status s = persist_record(r.get(), std::span(retire.data(), n)); !s.ok()) return s;
  unlink(from_shard, source);
  ++from_shard.counters.destroys;
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
  std::size_t shard_index = cursor >> kScanPositionBits;
  std::uint64_t from = cursor & kScanPositionMask;
  const std::int64_t now = clock_.now_ms();
  std::vector<std::pair<std::uint64_t, SessionId>> found;
  while (shard_index < shards_.size()) {
    found.clear();
    {
      Shard& shard = shards_[shard_index];
      std::lock_guard lock(shard.mu);
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
      page.cursor = (static_cast<std::uint64_t>(shard_index) << kScanPositionBits) |
                    (found[take - 1].first + 1);
      return page;
    }
    ++shard_index;
    from = 0;
    if (page.ids.size() >= count) break;
  }
  page.cursor = shard_index < shards_.size()
                    ? static_cast<std::uint64_t>(shard_index) << kScanPositionBits
                    : 0;
  return page;
}

std::pair<std::size_t, bool> SessionTable::Impl::expire_pass() {
  std::size_t removed = 0;
  bool more = false;
  for (Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    const std::int64_t now = clock_.now_ms();
    std::size_t done = 0;
    while (!shard.heap.empty() && heap_key(shard.heap.front()) <= now) {
      if (done == options_.expiry_batch) {
        more = true;
        break;
      }
      ++done;
      Record* r = shard.heap.front();
      if (r->deadline_ms() <= now) {
        unlink(shard, r);
        ++shard.counters.expiries;
        ++removed;
        continue;
      }
      // Alive with a coalesced touch: bring the disk up to date, then the key moves later.
      if (!persist_record(r).ok()) break;  // disk trouble: retry on the next pass
      ++shard.counters.touches_persisted;
      heap_sift_down(shard.heap, 0);
    }
  }
  return {removed, more};
}

Status SessionTable::Impl::flush() {
  for (Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    for (const RecordPtr& owned : shard.records) {
      Record* r = owned.get();
      if (r->unpersisted_ms == 0 && !(r->extras && r->extras->unsaved_access)) continue;
      const std::int64_t key = heap_key(r);
      if (Status s = persist_record(r); !s.ok()) return s;
      if (heap_key(r) != key) heap_fix(shard.heap, r);
    }
  }
  return {};
}

void SessionTable::Impl::clear() {
  for (Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    shard.heap.clear();
    shard.records.clear();
    shard.bytes = 0;
  }
  for (UserShard& us : user_shards_) {
    std::lock_guard lock(us.mu);
    us.users.clear();
  }
  total_bytes_ = 0;
}

TableStats SessionTable::Impl::stats() const {
  TableStats out;
  for (const Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    out.sessions += shard.records.size();
    out.memory_bytes += shard.bytes;
    const Counters& c = shard.counters;
    out.creates += c.creates;
    out.updates += c.updates;
    out.destroys += c.destroys;
    out.regenerates += c.regenerates;
    out.expiries += c.expiries;
    out.read_hits += c.read_hits;
    out.read_misses += c.read_misses;
    out.touches_persisted += c.touches_persisted;
    out.touches_coalesced += c.touches_coalesced;
  }
  for (const UserShard& us : user_shards_) {
    std::lock_guard lock(us.mu);
    out.users += us.users.size();
  }
  return out;
}

// ---- public face ----------------------------------------------------------------------------

SessionTable::SessionTable(TableOptions options, const Clock& clock, Store* store)
    : impl_(std::make_unique<Impl>(options, clock, store)), options_(std::move(options)) {}

SessionTable::~SessionTable() {
  stop_expirer();
  impl_->flush();  // best effort: a caller that needs the outcome calls flush() first
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

void SessionTable::start_expirer(std::int64_t interval_ms) {
  std::lock_guard lock(expirer_mu_);
  if (expirer_.joinable()) return;
  expirer_stop_ = false;
  expirer_ = std::thread([this, interval_ms] {
    std::unique_lock guard(expirer_mu_);
    while (!expirer_stop_) {
      guard.unlock();
      const bool more = impl_->expire_pass().second;
      guard.lock();
      if (!more) {
        expirer_cv_.wait_for(guard, std::chrono::milliseconds(interval_ms),
                             [this] { return expirer_stop_; });
      }
    }
  });
}

void SessionTable::stop_expirer() {
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
