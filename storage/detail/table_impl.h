// Internal to storage: SessionTable's implementation, shared by the files that hold its parts:
//   session_table.cc  the public face and the session operations (create, get, update, ...)
//   table_write.cc    the one write path (mutations, commit, observers), touches, recovery,
//                     flush and the expirer
//   table_users.cc    the user index, LIST_USER, REVOKE_USER and the per-user limit
//   table_keyed.cc    keyed access for the RESP listener (rewrite, move, scan)
//   table_merge.cc    apply(): merging what other nodes wrote (detail/merge.h has the rules)
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "storage/detail/expiry_heap.h"
#include "storage/detail/shard.h"
#include "storage/hlc.h"
#include "storage/session_table.h"

namespace sessiond::storage {

namespace detail {

// INVALID_ARGUMENT for negative timeouts or ones beyond 100 years.
Status check_timeouts(const Timeouts& t);

inline SessionMeta meta_of(const Record& r) {
  return {r.id, r.version(), r.created_at_ms, r.last_access_ms, r.deadline_ms(), r.signed_id != 0};
}

}  // namespace detail

class SessionTable::Impl {
 public:
  Impl(const TableOptions& options, const Clock& clock, Store* store);
  ~Impl();

  Result<RecoveryReport> recover();
  Result<SessionMeta> create(const NewSession& request);
  std::vector<Result<SessionMeta>> create_batch(std::span<const NewSession> requests);
  Status get(const SessionId& id, const ReadOptions& options, Session* out);
  void prefetch(std::span<const SessionId> ids);
  void get_batch(std::span<const SessionId> ids, const ReadOptions& options, std::span<Session> out,
                 std::span<Status> statuses);
  Result<SessionMeta> update(const SessionId& id, const FieldChanges& changes,
                             std::optional<Version> expected_version);
  Result<SessionMeta> touch(const SessionId& id);
  Status destroy(const SessionId& id);
  Result<SessionMeta> regenerate(const SessionId& id, const RegenerateOptions& options);
  std::vector<SessionMeta> list_user(std::string_view user_id);
  std::size_t count_off_user_key() const;
  Result<std::size_t> revoke_user(std::string_view user_id, const SessionId* keep);
  Result<ApplyOutcome> apply(const Mutation& mutation);
  Result<Mutation::Kind> state_of(const SessionId& id, std::string* value);
  void export_states(const Selection& select,
                     const std::function<void(std::span<const Mutation>)>& emit);
  void fingerprints(const Selection& select,
                    const std::function<void(std::span<const Fingerprint>)>& emit);
  Result<std::size_t> forget(const Selection& select);
  Status rewrite(const SessionId& id, RewriteFn decide);
  void rewrite_batch(std::span<const SessionId> ids, std::span<const RewriteFn> decides,
                     std::span<Status> statuses);
  Status move(const SessionId& from, const SessionId& to, RewriteFn decide);
  ScanPage scan(std::uint64_t cursor, std::size_t count);
  // Returns {removed, whether some shard still has due work}.
  std::pair<std::size_t, bool> expire_pass();
  void start_expirer(std::int64_t interval_ms);
  void stop_expirer();
  // Persists every record with a coalesced touch or an unsaved access history.
  Status flush();
  TableStats stats() const;
  std::uint64_t size() const;
  std::uint64_t add_observer(MutationObserver observer);
  void set_expiry_observer(SessionTable::ExpiryObserver o) {
    expiry_observer_.store(o ? std::make_shared<const SessionTable::ExpiryObserver>(std::move(o))
                             : nullptr);
  }
  void remove_observer(std::uint64_t handle);

  const TableOptions& options() const { return options_; }

 private:
  using Record = detail::Record;
  using RecordPtr = detail::RecordPtr;
  using Shard = detail::Shard;
  using UserShard = detail::UserShard;
  using FieldRef = detail::FieldRef;
  using Tombstone = detail::Tombstone;
  using Generation = detail::Generation;

  // ---- shards ----
  std::size_t shard_of_word(std::uint64_t hash_word) const { return (hash_word >> 40) & mask_; }
  std::size_t shard_index(const SessionId& id) const {
    return shard_of_word(detail::hash_word(id));
  }
  Shard& shard_of(const SessionId& id) { return shards_[shard_index(id)]; }
  UserShard& user_shard_of(std::string_view user);
  // Locks the shards with these indexes (repeats allowed) in index order.
  std::vector<std::unique_lock<std::mutex>> lock_shards(std::vector<std::size_t> indexes);
  // prefetch(), with `locked` for a caller that holds the shards of all the ids.
  void prefetch_passes(std::span<const SessionId> ids, bool locked);
  // Finds an alive record, removing it (and answering EXPIRED) if its deadline has passed.
  Result<Record*> find_alive(Shard& shard, const SessionId& id, std::int64_t now);
  // Drops a record from memory (set, heap, user index, accounting). Persists nothing.
  void unlink(Shard& shard, Record* r);
  // Counts the end of `r`'s life here (a destroy, or an expiry) and how long it lived. Call
  // before the record is unlinked.
  void count_end(Shard& shard, const Record& r, bool expired, std::int64_t now);
  // Hands an expiring record to on_expiry's observer, if any.
  void notify_expiry(const Record& r);
  // Into the shard; into the user index too unless `indexed` (admit() did it).
  void insert(Shard& shard, RecordPtr r, bool indexed = false);
  // Puts `r` in the place of `old` (same id) in memory: set slot, heap slot, user index,
  // accounting (`old_bytes`: what `old` was counted for). Persists nothing; frees `old`.
  void replace(Shard& shard, Record* old, RecordPtr r, std::int64_t old_bytes);
  void account(Shard& shard, std::int64_t delta) {
    shard.bytes = static_cast<std::size_t>(static_cast<std::int64_t>(shard.bytes) + delta);
    total_bytes_.fetch_add(delta, std::memory_order_relaxed);
  }

  // ---- the one write path (table_write.cc) ----
  Version next_version() { return {hlc_.now(), options_.region, options_.node}; }
  Origin local_origin() const { return {options_.region, options_.node, false}; }
  // Whether writes need describing at all: a store to write them to or an observer to see them.
  bool recording() const {
    return store_ != nullptr || observers_.load(std::memory_order_acquire) != nullptr;
  }
  // The mutation that writes r's current state; its value is encoded into *value.
  Mutation put_of(const Record& r, Mutation::Kind kind, std::string* value) const;
  // Notes for pending_touch_ship_ms that `r`, clean before (`was_clean`), may now hold a
  // coalesced touch or access (a no-op when the option is off or nothing is pending).
  void note_touched(Shard& shard, const Record& r, bool was_clean) {
    if (options_.pending_touch_ship_ms > 0 && was_clean && !clean(r)) shard.touched.push_back(r.id);
  }
  static bool clean(const Record& r) {
    return r.unpersisted_ms == 0 && !(r.extras && r.extras->unsaved_access);
  }
  // Writes the coalesced touches of `records` (alive, in `shard`, under its lock) in one batch
  // of kTouch mutations; on failure they stay pending and false is returned.
  bool write_touches(Shard& shard, const std::vector<std::pair<Record*, std::uint32_t>>& records);
  // Writes the mutations in one batch, then hands them to the observers. Call it holding the
  // locks of the sessions they name; nothing is written or observed on failure.
  Status commit(std::span<const Mutation> mutations);
  // Writes r's current state (kPut or kTouch) plus `extra` in one commit; on success nothing of
  // the record is left unpersisted.
  Status persist_record(Record* r, Mutation::Kind kind, std::span<const Mutation> extra = {});
  // Ends an alive record at `now` (the caller's reading of the clock): its end is written,
  // then it leaves memory and its tombstone stays.
  Status remove(Shard& shard, Record* r, std::int64_t now);
  // Slides r's last access to now; persists it if the coalescing rule says so.
  Status slide(Shard& shard, Record* r, std::int64_t now);
  // The tombstone that ends r now, with a fresh version, or with `version` when given (a
  // revoke's, the same wherever it is applied).
  Tombstone tombstone_of(const Record& r, std::int64_t now, const Version* version = nullptr);
  // The mutation that ends r with tombstone t (encoded into *value).
  Mutation end_of(const Record& r, const Tombstone& t, std::string* value) const;
  // After its end is written: r leaves memory and its tombstone stays.
  void bury(Shard& shard, Record* r, const Tombstone& t);
  // Where the tombstone of `id` goes in memory (joined with one already there).
  void remember_tombstone(Shard& shard, const SessionId& id, const Tombstone& t);
  // Persists the hybrid clock's high-water mark when it moved on (expirer).
  void persist_clock();
  // Rewrites records read in the older format (recover(), then finish_upgrade()).
  Status upgrade_records(std::vector<SessionId> ids);

  // ---- session operations (session_table.cc) ----
  void create_chunk(std::span<const NewSession> requests,
                    std::vector<Result<SessionMeta>>* results);
  // Validates a create request and builds its record (with a fresh id), within the budget.
  Result<RecordPtr> new_record(const NewSession& request);
  // update() once the record is found and its version checked.
  Result<SessionMeta> apply_changes(Shard& shard, Record* old, const FieldChanges& changes,
                                    std::int64_t now);
  Status check_fields(std::string_view user_id, std::span<const FieldRef> fields) const;
  Status reserve_bytes(std::int64_t delta);

  // ---- user index (table_users.cc) ----
  void index_user(std::string_view user, const SessionId& id, bool add);
  // Enters a session about to be written into its user's index, under the user-shard lock
  // together with the generation check, so that a concurrent revoke either sees the id or has
  // raised the generation first. A new birth (create, login) gets the user's current
  // generation in *stamp; otherwise a session stamped below it and not kept is refused
  // (NOT_FOUND: it was revoked) unless the raise kept it, or kept `lineage` (the id it is
  // regenerated from, which passes the keep on). No-op for an empty user. Undo with
  // index_user(.., false).
  Status admit(std::string_view user, const SessionId& id, bool new_birth, std::uint64_t* stamp,
               const SessionId* lineage = nullptr);
  // Plans the end of r at `now`: its mutation (into *ends, encoded into *values) and its
  // tombstone (into *ending), for the caller's commit and then bury_all.
  void plan_end(Record* r, std::int64_t now, std::vector<Mutation>* ends,
                std::deque<std::string>* values, std::vector<std::pair<Record*, Tombstone>>* ending,
                const Version* version = nullptr);
  // The words (UserSessionKey) of the sessions the index holds for `user`, appended to *out.
  void user_words(std::string_view user, std::vector<std::uint64_t>* out);
  // Writes `user`'s generation raised to `g` (with `origin`: this node's, or the peer's it came
  // from) in one batch with the end of every session of `words` (the user index's entries) it
  // catches, holding their shards, then buries them. Returns how many it ended; on failure
  // nothing is written or ended.
  Result<std::size_t> write_raise(std::string_view user, const Generation& g,
                                  std::span<const std::uint64_t> words, const Origin& origin);
  // Under the locks of the shards of `words`: the ends of the records of `user` that are alive
  // and stamped below g (and not kept by it), appended to *ends with their tombstones.
  void revoked_by(std::span<const std::uint64_t> words, std::string_view user, const Generation& g,
                  std::int64_t now, std::vector<Mutation>* ends, std::deque<std::string>* values,
                  std::vector<std::pair<Record*, Tombstone>>* ending);
  // The per-user limit before a session is added to `user` (see TableOptions): the user's
  // oldest sessions that must end to make room (none when there is room), or FORBIDDEN under
  // the refuse policy. Only looks: the caller ends them in the write that adds the session,
  // so a request that fails ends nothing. Takes its own locks: call it holding none.
  Result<std::vector<SessionId>> sessions_to_evict(std::string_view user);
  // Under the locks of the shards of `ids`: the ends of those still alive and still of `user`
  // (appended to *ends) and the records to unlink once they are written.
  void retire_evicted(std::span<const SessionId> ids, std::string_view user, std::int64_t now,
                      std::vector<Mutation>* ends, std::deque<std::string>* values,
                      std::vector<std::pair<Record*, Tombstone>>* ending);
  // After the write: buries the ended records and counts them as destroys.
  void bury_all(std::span<const std::pair<Record*, Tombstone>> ending);

  // ---- merge (table_merge.cc) ----
  Result<ApplyOutcome> apply_put(const Mutation& m, std::int64_t now);
  Result<ApplyOutcome> apply_touch(const Mutation& m, std::int64_t now);
  Result<ApplyOutcome> apply_end(const Mutation& m, std::int64_t now);
  Result<ApplyOutcome> apply_generation(const Mutation& m, std::int64_t now);
  // Keeps a copy of a mutation whose clock is too far ahead; retried by retry_set_aside().
  void set_aside(const Mutation& m, std::int64_t clock_ms);
  void retry_set_aside();

  // ---- keyed access (table_keyed.cc) ----
  void rewrite_chunk(std::span<const SessionId> ids, std::span<const RewriteFn> decides,
                     std::span<Status> statuses);
  // Builds the record of a Rewrite::kPut for `id`, checked against the limits and the budget
  // (net of `replacing`, the record it will replace, if any). `pending` is what earlier records
  // of the same batch will add to the budget.
  Result<RecordPtr> put_record(const SessionId& id, const Rewrite& w, const Record* replacing,
                               std::int64_t now, std::int64_t pending = 0);

  // Empties the table (a failed recovery must not leave a partial load behind).
  void clear();

  TableOptions options_;
  std::unique_ptr<IdGenerator> own_ids_;  // when options_.ids is null
  const IdGenerator* ids_;
  const Clock& clock_;
  Store* store_;
  HybridLogicalClock hlc_;
  std::vector<Shard> shards_;
  std::vector<UserShard> user_shards_;
  std::size_t mask_ = 0;
  std::atomic<std::int64_t> total_bytes_{0};

  // Observers: writers read the current list without a lock; a change publishes a new list and
  // keeps the old ones alive until the table goes (they are few and change rarely).
  struct Observers {
    std::vector<std::pair<std::uint64_t, MutationObserver>> list;
  };
  std::mutex observers_mu_;  // guards observer changes and retired_observers_
  std::atomic<const Observers*> observers_{nullptr};
  std::vector<std::unique_ptr<Observers>> retired_observers_;
  std::uint64_t next_observer_ = 1;
  // on_expiry's observer; swapped atomically, since the expirer may already run.
  std::atomic<std::shared_ptr<const SessionTable::ExpiryObserver>> expiry_observer_;

  // Remote writes set aside by apply() (clock beyond the skew bound), with the bytes their
  // views point into.
  struct SetAside {
    Mutation mutation;
    std::string user, value;
    std::vector<AccessEntry> access_log;
    std::int64_t clock_ms = 0;  // the physical time of its clock
  };
  mutable std::mutex set_aside_mu_;  // guards set_aside_ and the two counters
  std::vector<std::unique_ptr<SetAside>> set_aside_;
  std::uint64_t set_aside_count_ = 0, dropped_count_ = 0;
  std::atomic<std::uint64_t> persisted_clock_{0};    // the high-water mark last written
  std::atomic<bool> touch_refusal_reported_{false};  // on_touch_refused was called

  std::mutex expirer_mu_;  // guards expirer_stop_ and the expirer thread's start/stop
  std::condition_variable expirer_cv_;
  bool expirer_stop_ = false;
  std::thread expirer_;
};

}  // namespace sessiond::storage
