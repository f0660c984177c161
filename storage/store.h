// Store: the RocksDB database under a node's data directory (DESIGN §3).
//
// Column families: `sessions` (id -> encoded record), `users` (user id + session id -> deadline),
// `replog` (sequence -> mutation, for cross-region shipping), `meta` (format version and, later,
// shipping cursors). Every write is one WriteBatch, so a session and its user-index entry (and
// its replication-log entry) change together or not at all. A compaction filter drops records
// whose deadline has passed.
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

// One change inside a write. Views must stay valid for the duration of Store::write.
struct StoreOp {
  enum class Kind : std::uint8_t { kPutSession, kDeleteSession, kPutUser, kDeleteUser };
  Kind kind;
  std::string_view id;           // 32-byte binary session id
  std::string_view value;        // kPutSession: the encoded record (record_codec.h)
  std::string_view user_id;      // kPutUser / kDeleteUser
  std::int64_t deadline_ms = 0;  // kPutUser: when the index entry may be dropped
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

  // Applies all ops atomically with the configured durability. A full disk or an I/O error
  // returns UNAVAILABLE and nothing is applied. Thread-safe.
  Status write(std::span<const StoreOp> ops);

  // Calls fn for every stored session in key order; stops at and returns fn's first non-OK
  // status. Not safe against concurrent writes (used by recovery only).
  Status for_each_session(
      const std::function<Status(std::string_view id, std::string_view value)>& fn) const;
  // Calls fn for every user-index entry.
  Status for_each_user_entry(
      const std::function<void(std::string_view user_id, std::string_view id)>& fn) const;
  // Calls fn for replication-log entries with sequence >= from, in order.
  Status for_each_replog_entry(
      std::uint64_t from,
      const std::function<void(std::uint64_t seq, std::string_view entry)>& fn) const;

  // Flushes memtables to SST files and runs a full compaction (tests, maintenance).
  Status compact();
  // Bytes of live SST files and of the WAL.
  std::uint64_t disk_bytes() const;
  const StoreOptions& options() const;

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sessiond::storage
