// Store: the RocksDB database under a node's data directory (DESIGN §3).
//
// Column families: `sessions` (id -> encoded record), `users` (user id -> revocation
// generation), `replog` (sequence -> mutation, for shipping to replicas and peer regions), `meta`
// (format version, the consumers' log cursors). The one write path: Store::write turns the
// mutations of one change (mutation.h) into one WriteBatch, so a session, its user's generation
// and its replication-log entry change together or not at all. A compaction filter drops records
// whose deadline has passed.
//
// The user index is not on disk: every record holds its user id, and recovery rebuilds the index
// from the records it loads. (Before issue 18 each write of a session with a user also wrote a
// `users` entry, user id + session id -> deadline, that nothing but tests read: a second key per
// write for RocksDB to log, sort at flush and compact. Entries left by those versions are
// skipped, and dropped by the compaction filter once their deadline passes.)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "protocol/status.h"
#include "storage/clock.h"
#include "storage/mutation.h"

namespace sessiond::storage {

// What survives what (DESIGN §3):
//  kMemory: no write-ahead log; a clean shutdown flushes, a crash loses unflushed writes.
//  kAsync:  WAL without fsync; survives a killed process, not a power loss. The default.
//  kSync:   WAL fsync per write, grouped by RocksDB across concurrent writers; survives power loss.
enum class Durability { kMemory, kAsync, kSync };
std::string_view durability_name(Durability d);
std::optional<Durability> durability_from_name(std::string_view name);

struct StoreOptions {
  std::string path;  // data directory; created when missing or empty
  Durability durability = Durability::kAsync;
  bool replication_log = false;                         // append every session mutation to `replog`
  std::uint64_t replication_log_retention = 1'000'000;  // entries kept before trimming
  std::size_t write_buffer_bytes = 64u << 20;           // per memtable
  std::size_t block_cache_bytes = 32u << 20;
};

class Store {
 public:
  // Opens or creates the database at options.path. Refuses, with a message naming the path and
  // the cause, a directory that is locked by another process, corrupt, unreadable, or not empty
  // yet holding no sessiond database: never a silently empty store.
  static Result<std::unique_ptr<Store>> open(const StoreOptions& options, const Clock& clock);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Defers, on this thread, the write of kAsync WAL bytes to the operating system until
  // finish(): the writes of many requests then cost one write() system call instead of one
  // each (RocksDB's manual_wal_flush). Until finish() has returned OK none of the deferred
  // writes may be acknowledged (a killed process would lose them), and the thread must not
  // suspend while the batch is open (no co_await): every write it makes meanwhile, for
  // whichever caller, is deferred with them. Without a batch every write reaches the operating
  // system before it returns, as before. In other modes a batch changes nothing.
  class WalBatch {
   public:
    WalBatch();
    ~WalBatch();  // finishes (a failure is then only remembered by the store: writes refused)
    WalBatch(const WalBatch&) = delete;
    WalBatch& operator=(const WalBatch&) = delete;
    // Writes what this thread's writes left in the WAL buffers. An I/O failure refuses further
    // writes, as a failed write does, and is returned: the deferred writes must not be
    // acknowledged. The batch stays open.
    Status finish();
  };

  // Writes the mutations atomically with the configured durability, each with its replication-
  // log entry when the log is on (sequence numbers *first_log_seq, +1, ...; 0 without the log).
  // A full disk or an I/O error returns UNAVAILABLE and nothing is applied. Thread-safe; no lock
  // is held across the write, so concurrent writers share a group commit.
  // `log` = false leaves the replication log out (the format upgrade rewrites records in place).
  Status write(std::span<const Mutation> mutations, std::uint64_t* first_log_seq = nullptr,
               bool log = true);

  // What a node drops when sessions move to another node (DESIGN §6): the record or tombstone
  // of `id`, or (generation = true) the user's revocation generation.
  // Never logged: the new owner has them.
  struct Forget {
    SessionId id{};
    std::string_view user;  // generation = true: whose generation (unused for a session)
    bool generation = false;
  };
  Status forget(std::span<const Forget> entries);

  // Calls fn for every stored session in key order, or for those whose key is in [lower,
  // upper) (an empty bound is none); stops at and returns fn's first non-OK status. Not safe
  // against concurrent writes (used by recovery only); calls over disjoint ranges may run in
  // parallel.
  Status for_each_session(
      const std::function<Status(std::string_view id, std::string_view value)>& fn,
      std::string_view lower = {}, std::string_view upper = {}) const;
  // Calls fn for every user-index entry left by a version before issue 18 (none are written
  // now; see the top of the file).
  Status for_each_user_entry(
      const std::function<void(std::string_view user_id, std::string_view id)>& fn) const;
  // Calls fn for every user's revocation generation (a kGeneration mutation's value).
  Status for_each_generation(
      const std::function<Status(std::string_view user_id, std::string_view value)>& fn) const;

  // Small values of the node's own in `meta` (the hybrid clock's high-water mark).
  Status put_meta(std::string_view key, std::string_view value);
  std::optional<std::string> get_meta(std::string_view key) const;

  // Whether the data directory was written by an older sessiond (format marker sessiond-1):
  // its records are read, and the table rewrites them, then calls finish_upgrade(), which
  // moves the marker to the current format (DESIGN §2; docs/operations.md, "Upgrades").
  bool needs_upgrade() const;
  Status finish_upgrade();
  // ---- Replication log (StoreOptions::replication_log) ----
  // Every sequence number up to this one is written or failed: a reader that stops here never
  // skips an entry that a concurrent writer is still writing.
  std::uint64_t log_committed() const;
  // Calls fn for log entries with from <= sequence <= log_committed(), in order; the mutation's
  // views are valid during the call. A kEnd entry holds the tombstone, a kGeneration entry the
  // generation, a kTouch entry only the last access and access history, and a kPut entry only
  // the id (and user): its state is read when shipped (SessionTable::state_of).
  Status for_each_log_entry(
      std::uint64_t from, const std::function<void(std::uint64_t seq, const Mutation&)>& fn) const;
  // The same for at most `limit` entries.
  Status for_each_log_entry(
      std::uint64_t from, std::size_t limit,
      const std::function<void(std::uint64_t seq, const Mutation&)>& fn) const;
  // The last log sequence number a write() on the calling thread was given (0: none yet): what
  // a caller that just wrote waits for its replicas to have (daemon/replicas.h).
  static std::uint64_t last_log_seq_on_this_thread();
  // A consumer's (a replica's, a peer region's) position: the first sequence it has not
  // acknowledged. Persisted in `meta`; the log is trimmed below the slowest consumer, and below
  // the retention cap whatever the consumers (a consumer left behind it is repaired by
  // anti-entropy). Returns nullopt for an unknown consumer.
  Status set_log_cursor(std::string_view consumer, std::uint64_t next_seq);
  std::optional<std::uint64_t> log_cursor(std::string_view consumer) const;
  Status drop_log_cursor(std::string_view consumer);

  // Batches written since open (one per successful write()): what a group of changes costs.
  std::uint64_t batches_written() const;
  // Flushes memtables to SST files and runs a full compaction (tests, maintenance).
  Status compact();
  // Bytes of live SST files and of the WAL.
  std::uint64_t disk_bytes() const;
  // RocksDB's memory: memtables (all families), the block cache, and the SST index and filter
  // blocks held outside it.
  struct Memory {
    std::uint64_t memtables = 0, block_cache = 0, table_readers = 0;
  };
  Memory memory() const;
  // Why writes are refused since a write failed with an I/O error (a full disk, a failing
  // device); empty while writes work.
  std::string write_failure() const;
  // A consistent copy of the database as of now, taken online, into `dir` (which must not
  // exist; its parent must): RocksDB's checkpoint (hard links where `dir` is on the same file
  // system, copies elsewhere), memtables flushed first so that it needs no WAL replay beyond
  // what it holds. INVALID_ARGUMENT naming the problem, UNAVAILABLE on an I/O error.
  Status checkpoint(const std::string& dir) const;
  const StoreOptions& options() const;

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sessiond::storage
