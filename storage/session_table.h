// SessionTable: the node-local session engine (DESIGN §3). Sessions live in S shards, each a
// hash map guarded by its own lock, with an expiry heap; a user index maps user ids to their
// sessions. Every change is described as Mutations (mutation.h) and goes one way: persisted to
// the Store (when one is attached) in one WriteBatch before it is applied in memory and
// acknowledged, under the shard lock, then handed to the observers registered with on_change.
// So memory and disk agree, no caller ever sees a write that failed to persist, and whatever
// must follow writes (shipping, metrics) subscribes instead of being written into each operation.
//
// Thread safety: every method may be called from any thread. Each operation is atomic for the
// session(s) it names. REGENERATE and move() lock the two shards involved in index order,
// create_batch and rewrite_batch the shards of a group; REVOKE_USER is
// atomic per session (a session created concurrently with the revoke may survive it).
//
// Expiry: a session is alive while now < deadline. Readers never see an expired session even
// before the expirer has removed it (they remove it themselves). Sliding expiry never passes the
// absolute deadline.
#pragma once

#include <absl/functional/function_ref.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/status.h"
#include "storage/clock.h"
#include "storage/id_generator.h"
#include "storage/mutation.h"
#include "storage/session.h"
#include "storage/store.h"

namespace sessiond::storage {

struct TableOptions {
  std::size_t shard_count = 256;  // rounded up to a power of two, at most 65536
  Timeouts default_timeouts = preset_timeouts(Preset::kEcommerce);  // when a create names none
  std::uint32_t region = 0;  // stamped into every version and mutation origin; < kMaxOrigin
  std::uint32_t node = 0;    // this node's number in its region, likewise; < kMaxOrigin
  // The lifetime cap (DESIGN §7): no session outlives created_at + this, whatever its timeouts
  // and updates; tombstones are kept until the cap of the session they end (plus the skew
  // bound). Default: the longest preset's absolute timeout (gaming, 30 days). Keyed (RESP)
  // records have no cap; their tombstones are kept this long after the delete.
  std::int64_t max_lifetime_ms = 30LL * 24 * 3600 * 1000;
  // apply() sets aside a remote write whose clock is more than this ahead of ours, and retries
  // it once our clock has caught up (DESIGN §6).
  std::int64_t max_clock_skew_ms = 60'000;
  std::size_t max_set_aside = 100'000;  // beyond this, set-aside writes are dropped and counted
  // Called once, the first time a read with touch is served without sliding because the store
  // refuses writes (a full disk), with the store's error, for the operator's log. Must not call
  // the table.
  std::function<void(const Status&)> on_touch_refused;
  // Makes new ids (route keys, DESIGN §2); must outlive the table. Null: one with a random
  // secret, which keeps placement stable only for this process.
  const IdGenerator* ids = nullptr;
  std::size_t access_log_length = 10;
  // A touch is persisted only when it moves the deadline by more than this fraction of the idle
  // timeout since the last persisted write (DESIGN §3). After a crash a session can therefore
  // expire up to idle_timeout * fraction early; 0 persists every touch.
  double touch_persist_fraction = 0.1;
  // With peer regions (DESIGN §7): a coalesced touch or recorded access is written (and so
  // logged and shipped, as a small kTouch entry) within this long of happening, so that a user
  // active in one region does not expire in another, whose deadline follows the shipped ones.
  // 0: only when the slack above says so (a single region needs no more).
  std::int64_t pending_touch_ship_ms = 0;
  std::size_t expiry_batch = 1000;  // sessions removed per shard lock hold by the expirer
  // Limits on what a caller controls.
  std::size_t max_fields = 256;
  std::size_t max_field_name_bytes = 256;
  std::size_t max_user_id_bytes = 256;
  std::size_t max_session_bytes = 1u << 20;  // user id + names + values
  // Sessions per user (0 = no limit). When a create (or a regenerate that moves a session to
  // another user) would pass it, the user's oldest sessions are destroyed to make room
  // (kRevokeOldest: in the same write that adds the session, and only once every other check
  // has passed) or the request answers FORBIDDEN (kRefuse). Checked, not reserved, like the
  // memory budget: concurrent creates for one user can pass it by a few.
  std::size_t max_sessions_per_user = 0;
  enum class UserLimitPolicy { kRevokeOldest, kRefuse };
  UserLimitPolicy user_limit_policy = UserLimitPolicy::kRevokeOldest;
  // Memory budget for records (bytes, 0 = none). When reached, CREATE and REGENERATE answer
  // OVERLOADED and existing sessions keep working; nothing is evicted. It is checked, not
  // reserved, so concurrent creates can pass it by a few records.
  std::size_t memory_budget_bytes = 0;
};

// What a create, update, touch or regenerate answers: enough to use the session without
// reading it back.
struct SessionMeta {
  SessionId id{};
  Version version;
  std::int64_t created_at_ms = 0;
  std::int64_t last_access_ms = 0;
  std::int64_t deadline_ms = kNoDeadline;
  bool signed_id = false;  // created with NewSession::signed_id (the caller signs the id)
};

struct NewSession {
  std::string user_id;
  std::vector<std::pair<std::string, std::string>> fields;  // names must be unique
  std::optional<Timeouts> timeouts;                         // nullopt: the table's default
  std::optional<ClientContext> context;
  // Kept with the session for the caller's policies (DESIGN §2, §9); the table only stores them
  // (and keeps them through regenerate). `preset` does not set the timeouts: `timeouts` does.
  std::optional<Preset> preset;
  bool signed_id = false;  // the caller hands the id out with an HMAC tag
  // The id's route key (DESIGN §6: a cluster node picks one it owns for an anonymous
  // session); nullopt: the user's, or a random one for an anonymous session.
  std::optional<std::uint64_t> route_key;
};

struct ReadOptions {
  bool touch = false;  // slide last_access to now
  // When set and the session is bound to a context, a different context answers
  // CONTEXT_MISMATCH (the session is left alone; the policy belongs to the caller).
  const ClientContext* expect_context = nullptr;
  // When set, appended to the access history (its time_ms is replaced by now). Persisted with
  // the session's next write or by flush(), like a coalesced touch.
  const AccessEntry* record_access = nullptr;
  // When set, sees the session as the read would return it (access recorded, touch applied),
  // under the session's lock, and returns true to end it there and then: the session is
  // destroyed (persisted) before anyone else can read it, and get() answers HIJACK_SUSPECTED
  // with *out holding the session as it was. For hijack detection (daemon/security.h). It must
  // not call the table.
  std::optional<absl::FunctionRef<bool(const Session&)>> judge;
  // When set, a session whose version is older answers BEHIND and is left alone (read-your-
  // writes across regions: this copy has not yet merged a write the reader saw).
  const Version* min_version = nullptr;
};

struct FieldChanges {
  std::vector<std::pair<std::string, std::string>> set;  // insert or overwrite
  std::vector<std::string> remove;                       // absent names are ignored
  std::optional<Timeouts> timeouts;                      // new policy, from now on
};

// The field a REGENERATE with mark_authenticated sets: when the login happened (ms since the
// epoch, decimal).
inline constexpr std::string_view kAuthenticatedAtField = "sessiond.authenticated_at";

struct RegenerateOptions {
  std::optional<std::vector<std::pair<std::string, std::string>>> replace_fields;  // new data
  std::optional<std::string> user_id;  // e.g. bind the user at login
  bool mark_authenticated = false;     // set kAuthenticatedAtField to now
};

// What a rewrite() decides to do with the session it looked at.
struct Rewrite {
  enum class Kind {
    kKeep,    // nothing
    kPut,     // replace it (or create it) with `fields` and `timeouts`, created and accessed now,
              // with no user, context or access history
    kChange,  // apply `changes` as update() does (needs a current session: else NOT_FOUND)
    kDelete,  // remove it (nothing to do when there is none)
  };
  Kind kind = Kind::kKeep;
  std::vector<std::pair<std::string, std::string>> fields;  // kPut; names must be unique
  Timeouts timeouts;                                        // kPut
  FieldChanges changes;                                     // kChange
};

// Sees the alive session (nullptr when there is none: absent or expired) and the table's time
// now, and fills in the Rewrite. It runs under a shard lock, so it must not call the table.
using RewriteFn = absl::FunctionRef<void(const Session* current, std::int64_t now, Rewrite* out)>;

// A page of a scan() walk: ids of alive sessions, and the cursor to continue from (0: done).
struct ScanPage {
  std::vector<SessionId> ids;
  std::uint64_t cursor = 0;
};

// TableStats::sessions_by_preset: one slot per Preset, and slot 0 for explicit timeouts.
inline constexpr std::size_t kPresetSlots = 6;
// Upper bounds (seconds) of TableStats::lifetimes' buckets: a second to a week.
inline constexpr std::array<std::int64_t, 12> kLifetimeBucketsS = {
    1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 604800};
inline constexpr std::size_t kLifetimeBuckets = kLifetimeBucketsS.size();

struct TableStats {
  std::uint64_t sessions = 0;
  std::uint64_t users = 0;
  std::uint64_t memory_bytes = 0;  // records, as counted for the budget
  std::uint64_t creates = 0;
  std::uint64_t updates = 0;
  std::uint64_t destroys = 0;
  std::uint64_t regenerates = 0;
  std::uint64_t expiries = 0;
  std::uint64_t read_hits = 0;
  std::uint64_t read_misses = 0;  // not found or expired
  std::uint64_t touches_persisted = 0;
  std::uint64_t touches_coalesced = 0;
  std::uint64_t touches_refused = 0;    // reads served without sliding: the store refused writes
  std::uint64_t tombstones = 0;         // ended sessions remembered (destroy is final)
  std::uint64_t merges_applied = 0;     // apply() calls that changed something
  std::uint64_t merges_unchanged = 0;   // apply() of what was known, older, or ended
  std::uint64_t merges_set_aside = 0;   // remote writes whose clock was too far ahead
  std::uint64_t merges_dropped = 0;     // set aside beyond max_set_aside (anti-entropy repairs)
  std::uint64_t set_aside_pending = 0;  // waiting for our clock
  // Alive sessions by the preset they were created with (index: Preset + 1; 0: explicit
  // timeouts), counted as sessions enter and leave the table.
  std::array<std::uint64_t, kPresetSlots> sessions_by_preset{};
  // How long sessions lived, counted when one is destroyed or expires here (not when it moves
  // to another node): counts per bucket of kLifetimeBucketsS (the last one: longer), and the
  // sum of the lifetimes in ms.
  std::array<std::uint64_t, kLifetimeBuckets + 1> lifetimes{};
  std::uint64_t lifetime_sum_ms = 0;
};

// What apply() did with a mutation.
enum class ApplyOutcome {
  kApplied,    // the merge changed the table (written, observed)
  kMerged,     // the same, and the result keeps fields of both sides: the mutation met a
               // concurrent write here (a conflict merged, not a state replaced)
  kUnchanged,  // already known, older than what the table holds, or ended by a tombstone or
               // a revocation generation: nothing to do (applying twice changes nothing)
  kSetAside,   // its clock is beyond the skew bound: kept aside and retried later
};

struct RecoveryReport {
  std::uint64_t loaded = 0;
  std::uint64_t skipped_expired = 0;
  std::int64_t duration_ms = 0;
  std::uint64_t tombstones = 0;
  // The latest time this node's clock had reached, as the data directory says (its persisted
  // high-water mark and every version on disk): the engine's time must not restart below it.
  std::int64_t clock_high_water_ms = 0;
  bool upgraded = false;  // the data directory was in the former format, and was rewritten
};

class SessionTable {
 public:
  // `store` may be null (a purely in-memory table); when given it must outlive the table, and
  // recover() must be called before the table serves.
  SessionTable(TableOptions options, const Clock& clock, Store* store);
  ~SessionTable();  // stops the expirer, then flush()es
  SessionTable(const SessionTable&) = delete;
  SessionTable& operator=(const SessionTable&) = delete;

  // Loads every unexpired session from the store into an empty table and rebuilds the user
  // index. A record that does not decode is an error naming its id, and leaves the table empty:
  // never a partial store.
  Result<RecoveryReport> recover();

  // Creates a session with a fresh id. INVALID_ARGUMENT / TOO_LARGE past a limit, OVERLOADED
  // past the memory budget.
  Result<SessionMeta> create(const NewSession& request);
  // create() for many requests with one RocksDB write per 32 of them (group commit), as the
  // daemon does for pipelined creates: results[i] answers requests[i]. Invalid requests fail
  // alone; a failed write fails the valid ones of its group of 32 and applies none of them.
  std::vector<Result<SessionMeta>> create_batch(std::span<const NewSession> requests);
  // Copies the session into *out (reusing its buffers). NOT_FOUND or EXPIRED when it is not
  // alive, CONTEXT_MISMATCH per ReadOptions::expect_context (then *out holds the session as it
  // is, untouched and without the access recorded, for the caller's policy), HIJACK_SUSPECTED
  // when ReadOptions::judge ended it.
  Status get(const SessionId& id, const ReadOptions& options, Session* out);
  // get() for many ids at once, as a pipelining client sends them: out[i] and the returned
  // statuses[i] are what get(ids[i], options, &out[i]) would give. Each read is atomic on its
  // own, not the batch. Faster than a loop of get() because the memory accesses of different
  // sessions overlap. `out` and `statuses` must be at least as long as `ids`.
  void get_batch(std::span<const SessionId> ids, const ReadOptions& options, std::span<Session> out,
                 std::span<Status> statuses);
  // Brings the sessions of `ids` (those that exist) into the CPU's cache, with their cache
  // misses overlapping, ahead of the calls that will use them: what get_batch does before its
  // reads, for a pipeline of requests of any kind. Changes nothing; only a hint.
  void prefetch(std::span<const SessionId> ids);
  // Sets and removes fields, or changes timeouts; counts as an access (slides the idle
  // deadline). With expected_version, answers VERSION_CONFLICT unless it is the current one.
  Result<SessionMeta> update(const SessionId& id, const FieldChanges& changes,
                             std::optional<Version> expected_version = std::nullopt);
  // Slides last_access to now (never past the absolute deadline).
  Result<SessionMeta> touch(const SessionId& id);
  // Removes the session. NOT_FOUND / EXPIRED if it was not alive.
  Status destroy(const SessionId& id);
  // One atomic step: a new id, the same data (or options.replace_fields), and the old id gone.
  // The idle timeout restarts now; the absolute deadline (created_at) stays the old session's,
  // unless options.user_id changes the user, which starts a new lifetime. NOT_FOUND / EXPIRED
  // for a dead old id; a request that fails changes nothing (the per-user limit evicts only in
  // the write that succeeds).
  Result<SessionMeta> regenerate(const SessionId& id, const RegenerateOptions& options = {});
  // The user's alive sessions, oldest first.
  std::vector<SessionMeta> list_user(std::string_view user_id);
  // How many sessions of a user have an id that does not carry the user's route key: made
  // before route keys, they live where their id routes, not on their user's node (DESIGN §6;
  // docs/cluster.md says how a region still finds them). Takes each user-index lock in turn.
  std::size_t count_off_user_key() const;
  // Raises the user's revocation generation (keeping `keep`) and, in the same write, ends every
  // alive session of the user stamped below it; returns how many it ended. Atomic: a session
  // of the user created or regenerated concurrently either ends with the others or was created
  // after the revoke (and is stamped with the new generation).
  Result<std::size_t> revoke_user(std::string_view user_id, const SessionId* keep = nullptr);

  // ---- Merging what was written elsewhere (DESIGN §6, §7)

  // Merges a mutation made on another node (a replica's owner, a peer region, a migration),
  // keeping its versions: it never stamps a local clock value or created_at = now, and the
  // resulting write carries the mutation's origin (marked remote) so it is not shipped back.
  // Tombstones and generation raises are always applied; a write whose clock is beyond the skew
  // bound is set aside (kSetAside) and retried by expire_due(). Idempotent and
  // order-insensitive. INVALID_ARGUMENT for a value that does not decode; UNAVAILABLE when the
  // write fails (nothing changed).
  Result<ApplyOutcome> apply(const Mutation& mutation);
  // The state of `id` as a mutation carries it, for shipping what the log names: kPut with the
  // encoded record (value), or kEnd with its tombstone. NOT_FOUND when the table holds neither
  // (it expired, or its tombstone was dropped). The merge being state-based, the current state
  // stands for every put logged before it.
  Result<Mutation::Kind> state_of(const SessionId& id, std::string* value);

  // ---- Moving sessions between nodes (DESIGN §6: a range that changes owner)

  // Which sessions, tombstones and revocation generations move: by id, and by user (a user's
  // generation goes where the user's sessions go).
  struct Selection {
    std::function<bool(const SessionId&)> id;
    std::function<bool(std::string_view user)> user;
  };
  // Hands every selected state the table holds in memory to `emit`, a batch at a time (about a
  // shard's worth, taken under its lock and handed over after it is released): alive sessions
  // as kPut (coalesced touches and access history included), tombstones as kEnd, generations as
  // kGeneration, each with this node as origin, as apply() on the receiving node takes them.
  // The views in a batch are valid during the call only.
  void export_states(const Selection& select,
                     const std::function<void(std::span<const Mutation>)>& emit);
  // What anti-entropy compares (replication/digest.h): per selected state, which session or
  // user it is, its kind (kPut alive, kEnd tombstone, kGeneration) and what a merge orders it
  // by. Two nodes whose fingerprints agree hold the same sessions, tombstones and generations at
  // the same versions (a touch, which does not change the version, is not compared).
  struct Fingerprint {
    Mutation::Kind kind = Mutation::Kind::kPut;
    SessionId id{};            // kPut, kEnd
    std::string_view user;     // kGeneration; valid during the call
    std::uint64_t hlc = 0;     // kPut, kEnd: the version; kGeneration: the generation
    std::uint64_t origin = 0;  // kPut, kEnd: the version's region and node; kGeneration: how
                               // many ids its raise kept
  };
  void fingerprints(const Selection& select,
                    const std::function<void(std::span<const Fingerprint>)>& emit);
  // Drops every selected session, tombstone and generation from memory and disk, without
  // tombstones or log entries (the new owner holds them). Returns how many sessions went.
  Result<std::size_t> forget(const Selection& select);

  // ---- Keyed access, for callers that choose ids themselves (the RESP listener derives them
  // from Redis keys, DESIGN §10). Such ids must be as unpredictable as a CSPRNG's (a
  // cryptographic hash of the caller's name for the session): the table does not re-hash ids.

  // A read-modify-write of one id, atomic for that id: `decide` sees the current session and
  // chooses what to do; the result is persisted as one write before it is applied. Limits and
  // the budget apply as for create/update; on any error nothing changed.
  Status rewrite(const SessionId& id, RewriteFn decide);
  // rewrite() for many ids with one RocksDB write per group of up to 32 distinct ids (group
  // commit), as the RESP listener does for a pipelining client's consecutive SETs. Decisions
  // run in order, each under its shard's lock, and may choose kKeep, kPut or kDelete (kChange
  // answers INVALID_ARGUMENT); an id repeated in the batch sees the earlier decision applied.
  // statuses[i] answers decides[i]; a failed write fails the decisions of its group and
  // applies none of them. `statuses` must be at least as long as `ids`.
  void rewrite_batch(std::span<const SessionId> ids, std::span<const RewriteFn> decides,
                     std::span<Status> statuses);
  // Moves the alive session `from` to the id `to`, replacing whatever lives there, as one
  // atomic write that also deletes `from`. `decide` sees the source (never nullptr) and must
  // choose kPut (the new session at `to`) or kKeep (nothing happens). NOT_FOUND / EXPIRED when
  // `from` is not alive; INVALID_ARGUMENT when from == to.
  Status move(const SessionId& from, const SessionId& to, RewriteFn decide);
  // Walks every alive session: start with cursor 0, pass each page's cursor back, stop when it
  // is 0. A session alive for the whole walk is returned exactly once, whatever is written
  // meanwhile; one created or removed during it may or may not be. A page holds about `count`
  // ids (more when ids tie, fewer at the end of a shard); each call reads one or more whole
  // shards, so it costs O(sessions / shards). An unknown cursor ends the walk (empty page, 0).
  ScanPage scan(std::uint64_t cursor, std::size_t count);

  // Removes up to expiry_batch due sessions per shard and persists touches whose on-disk
  // deadline came due; returns the number of sessions removed. Tests call it directly; the
  // background expirer calls it on its interval.
  std::size_t expire_due();
  // Starts/stops a background thread that calls expire_due() every interval_ms.
  void start_expirer(std::int64_t interval_ms = 100);
  void stop_expirer();

  // Persists what the table holds only in memory: coalesced touches and recorded accesses.
  // Call it at clean shutdown (the destructor does, ignoring errors). A no-op without a store.
  Status flush();

  // Registers an observer of every mutation written from now on (see MutationObserver) and
  // returns a handle for remove_observer(). Observers run on the writing thread; what one
  // captures must outlive the table (whose destructor flushes) or the observer's removal.
  std::uint64_t on_change(MutationObserver observer);
  // Unregisters an observer: writes that start after it returns do not call it (one already
  // under way may still finish its call).
  void remove_observer(std::uint64_t handle);
  // Sees each session that expires (found past its deadline by a reader, the expirer or a
  // merge) as it leaves memory, under its shard lock: its id, and `read`, which decodes its
  // state when called (valid until the observer returns). Quick; must not call the table.
  // One observer, replaced by the next call (safe while the table is in use); empty: none.
  using ExpiryObserver =
      std::function<void(const SessionId&, absl::FunctionRef<const Session&()> read)>;
  void on_expiry(ExpiryObserver observer);

  TableStats stats() const;
  // Sessions in the table (alive or expired but not yet removed); cheaper than stats().
  std::uint64_t size() const;
  const TableOptions& options() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sessiond::storage
