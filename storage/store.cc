// RocksDB behind the Store interface. Besides opening the families with the options below, it
// does three things worth knowing:
//  - refuses to open anything but an empty directory or a sessiond database (meta "format"), so
//    a wrong --data-dir or a damaged database is an error at start, not an empty store;
//  - encodes user-index keys as u16 big-endian length + user id + session id, so one user's
//    entries are contiguous and no user id can be a prefix that captures another's entries;
//  - when the replication log is on, appends one entry per mutation to `replog` in the same
//    batch, under an 8-byte big-endian sequence key. Sequence numbers are taken from a counter
//    before the write and no lock is held across it (concurrent writers share RocksDB's group
//    commit), so entries may land out of order for a moment: readers stop at log_committed(),
//    below which no write is in flight. Every 1024 entries the log is trimmed below the slowest
//    consumer's cursor, and below the retention cap regardless.
#include "storage/store.h"

#include <rocksdb/cache.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/db.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <system_error>
#include <vector>

#include "storage/detail/crc32c.h"
#include "storage/detail/memtable.h"
#include "storage/detail/record.h"

namespace sessiond::storage {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSessionsFamily = "sessions";
constexpr const char* kUsersFamily = "users";
constexpr const char* kReplogFamily = "replog";
constexpr const char* kMetaFamily = "meta";
constexpr std::string_view kFormatKey = "format";
constexpr std::string_view kFormatValue = "sessiond-2";
constexpr std::string_view kOlderFormatValue = "sessiond-1";  // before issue 11: upgraded in place
constexpr std::string_view kMetaPrefix = "node/";
constexpr std::uint64_t kReplogTrimEvery = 1024;
constexpr std::string_view kCursorPrefix = "cursor/";
constexpr std::uint64_t kPeriodicCompactionSeconds = 6 * 3600;  // docs/operations.md

// Drops records whose deadline has passed: sessions (deadline at a fixed offset of the value)
// and user-index entries (the value is the deadline). The in-memory table is authoritative for
// live sessions and rewrites any record whose on-disk deadline comes due while it is still alive.
class ExpiredFilter final : public rocksdb::CompactionFilter {
 public:
  ExpiredFilter(const Clock& clock, bool users) : clock_(clock), users_(users) {}
  bool Filter(int /*level*/, const rocksdb::Slice& /*key*/, const rocksdb::Slice& value,
              std::string* /*new_value*/, bool* /*value_changed*/) const override {
    std::int64_t deadline = kNoDeadline;
    if (users_) {
      std::string_view in(value.data(), value.size());
      std::uint64_t d = 0;
      if (!detail::get_fixed64(&in, &d)) return false;
      deadline = static_cast<std::int64_t>(d);
    } else {
      auto d = detail::value_deadline(std::string_view(value.data(), value.size()));
      if (!d) return false;  // not ours to judge: keep
      deadline = *d;
    }
    return deadline <= clock_.now_ms();
  }
  const char* Name() const override { return users_ ? "sessiond.users" : "sessiond.sessions"; }

 private:
  const Clock& clock_;
  const bool users_;
};

// RocksDB's info log (<data dir>/LOG), written so that a full disk cannot hurt. RocksDB's own
// file logger goes through a writer that Debian's build asserts on (aborting the process) when
// it is used again after a failed write, which on a full disk happens as soon as RocksDB logs
// the error. This one ignores its write errors and stops at 64 MiB.
class InfoLog final : public rocksdb::Logger {
 public:
  static constexpr long kMaxBytes = 64L << 20;

  explicit InfoLog(const std::string& dir) : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL) {
    // Appends, so that an instance refused by the directory lock cannot disturb the running
    // one's log; a log past the cap moves to LOG.old first.
    const std::string path = dir + "/LOG";
    std::error_code ec;
    if (fs::file_size(path, ec) > static_cast<std::uintmax_t>(kMaxBytes)) {
      fs::rename(path, path + ".old", ec);
    }
    file_ = std::fopen(path.c_str(), "a");
  }
  ~InfoLog() override {
    if (file_ != nullptr) std::fclose(file_);
  }
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    std::lock_guard lock(mu_);
    if (file_ == nullptr || written_ > kMaxBytes) return;
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    const int head = std::fputs(stamp, file_) >= 0 ? static_cast<int>(std::strlen(stamp)) : 0;
    const int body = std::vfprintf(file_, format, ap);
    std::fputc('\n', file_);
    std::fflush(file_);
    written_ += head + std::max(body, 0) + 1;
  }

 private:
  std::mutex mu_;  // guards file_ and written_
  std::FILE* file_ = nullptr;
  long written_ = 0;
};

std::string user_key(std::string_view user_id, std::string_view id) {
  std::string key;
  key.reserve(2 + user_id.size() + id.size());
  key.push_back(static_cast<char>(user_id.size() >> 8));
  key.push_back(static_cast<char>(user_id.size() & 0xff));
  key.append(user_id);
  key.append(id);
  return key;
}

std::string be64(std::uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) out[static_cast<std::size_t>(i)] = static_cast<char>(v);
  return out;
}

std::uint64_t from_be64(std::string_view s) {
  std::uint64_t v = 0;
  for (char c : s.substr(0, 8)) v = (v << 8) | static_cast<std::uint8_t>(c);
  return v;
}

Status from_rocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return {};
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNoSpace() || s.IsIOError() || s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) {
    return Status::Unavailable(std::move(msg));
  }
  return Status::Internal(std::move(msg));
}

// Why RocksDB could not open the database in `path`, as the operator must act on it. RocksDB
// reports a directory it may not write and a LOCK another process holds alike, as an IO error
// "While open a file for lock" / "While lock file": the permission is checked first.
Status open_failure(const std::string& path, const rocksdb::Status& s) {
  const std::string text = s.ToString();
  const bool denied = text.find("Permission denied") != std::string::npos ||
                      text.find("Read-only file system") != std::string::npos;
  if (::access(path.c_str(), W_OK) != 0 || denied) {
    const int error = errno;
    return Status::Unavailable("data directory " + path + " is not writable by this user (uid " +
                               std::to_string(::geteuid()) +
                               "): " + (denied ? text : std::strerror(error)));
  }
  if (s.IsIOError() && text.find("lock") != std::string::npos) {
    return Status::Unavailable("data directory " + path +
                               " is in use by another process (RocksDB LOCK held): " + text);
  }
  return Status::Internal("cannot open the database in " + path + ": " + text);
}

}  // namespace

std::string_view durability_name(Durability d) {
  switch (d) {
    case Durability::kMemory:
      return "memory";
    case Durability::kAsync:
      return "async";
    case Durability::kSync:
      return "sync";
  }
  return "unknown";
}

std::optional<Durability> durability_from_name(std::string_view name) {
  for (Durability d : {Durability::kMemory, Durability::kAsync, Durability::kSync}) {
    if (durability_name(d) == name) return d;
  }
  return std::nullopt;
}

struct Store::Impl {
  StoreOptions options;
  ExpiredFilter sessions_filter;
  ExpiredFilter users_filter;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // sessions, users, replog, meta
  rocksdb::WriteOptions write_options;
  // Replication-log sequencing: held only to take numbers and to retire them, never across a
  // write. in_flight holds the [first, last] ranges taken by writes not yet finished.
  mutable std::mutex log_mu;  // guards next_log_seq, in_flight, cursors
  std::uint64_t next_log_seq = 1;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> in_flight;
  std::map<std::string, std::uint64_t, std::less<>> cursors;  // consumer -> first unacknowledged
  std::atomic<std::uint64_t> log_committed{0};
  std::atomic<std::uint64_t> batches_written{0};
  bool needs_upgrade = false;  // set by open(), cleared by finish_upgrade()
  // Takes n sequence numbers for a write about to start.
  std::uint64_t take_seqs(std::uint64_t n) {
    std::lock_guard lock(log_mu);
    const std::uint64_t first = next_log_seq;
    next_log_seq += n;
    in_flight.emplace_back(first, first + n - 1);
    return first;
  }
  // The write holding [first, ...] finished (written or failed): readers may pass it.
  void retire_seqs(std::uint64_t first) {
    std::lock_guard lock(log_mu);
    std::erase_if(in_flight, [&](const auto& range) { return range.first == first; });
    std::uint64_t committed = next_log_seq - 1;
    for (const auto& range : in_flight) committed = std::min(committed, range.first - 1);
    log_committed.store(committed, std::memory_order_release);
  }
  // Below which entries may go: the slowest consumer, and the retention cap whatever it is.
  std::uint64_t trim_below(std::uint64_t next) const {
    std::lock_guard lock(log_mu);
    const std::uint64_t retained =
        next > options.replication_log_retention ? next - options.replication_log_retention : 0;
    std::uint64_t below = next;
    for (const auto& [name, seq] : cursors) below = std::min(below, seq);
    if (cursors.empty()) below = retained;
    return std::max(below, retained);
  }
  // Set by the first write that fails with an I/O error (a full disk, a failing device). From
  // then on writes are refused without reaching RocksDB: Debian's RocksDB is built with
  // assertions, and the WAL writer aborts the process when it is used again after an error.
  std::atomic<bool> write_failed{false};
  std::mutex failure_mu;  // guards failure
  std::string failure;

  // Records an I/O failure of a write and returns the status to answer with.
  Status fail_writes(const rocksdb::Status& s) {
    std::lock_guard lock(failure_mu);
    if (!write_failed.load()) {
      failure = "writes are refused since a write failed (" + s.ToString() +
                "); reads still work; free space or fix the disk under " + options.path +
                ", then restart the node";
      write_failed.store(true);
    }
    return Status::Unavailable(failure);
  }
  // kAsync runs RocksDB with manual_wal_flush: a write leaves its WAL bytes in RocksDB's buffer
  // and wal_written() hands them to the operating system, at once or, inside a WalBatch of
  // this thread, when the batch finishes (one write() for many requests).
  bool manual_wal = false;
  Status wal_written();
  Status flush_wal() {
    auto s = db->FlushWAL(/*sync=*/false);
    return s.ok() ? Status() : fail_writes(s);
  }
  // The outcome of a write: I/O errors stop further writes (see write_failed).
  Status checked(const rocksdb::Status& s) {
    if (s.ok()) {
      batches_written.fetch_add(1, std::memory_order_relaxed);
      return wal_written();
    }
    if (s.IsIOError() || s.IsNoSpace() || s.IsCorruption()) return fail_writes(s);
    return from_rocks(s, "write failed");
  }
  Status refused() {
    std::lock_guard lock(failure_mu);
    return Status::Unavailable(failure);
  }

  Impl(const StoreOptions& o, const Clock& clock)
      : options(o), sessions_filter(clock, false), users_filter(clock, true) {}

  ~Impl() {
    if (!db) return;
    if (!write_failed.load()) {
      // Without a WAL the memtables are the only copy of recent writes. With one, a flush at a
      // clean stop spares the next start replaying the log (RocksDB itself flushes at close
      // only when the WAL is off): restart reads sorted tables instead of re-inserting every
      // logged write into a memtable.
      db->Flush(rocksdb::FlushOptions(), handles);
    }
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    db->Close();
  }

  rocksdb::ColumnFamilyHandle* sessions() const { return handles[0]; }
  rocksdb::ColumnFamilyHandle* users() const { return handles[1]; }
  rocksdb::ColumnFamilyHandle* replog() const { return handles[2]; }
  rocksdb::ColumnFamilyHandle* meta() const { return handles[3]; }
};

namespace {
// This thread's open WalBatch objects, and the stores it wrote to meanwhile.
thread_local int tls_wal_batches = 0;
thread_local std::vector<void*> tls_wal_pending;  // Store::Impl* (a private type here)
}  // namespace

Status Store::Impl::wal_written() {
  if (!manual_wal) return {};
  if (tls_wal_batches == 0) return flush_wal();
  if (std::find(tls_wal_pending.begin(), tls_wal_pending.end(), static_cast<void*>(this)) ==
      tls_wal_pending.end()) {
    tls_wal_pending.push_back(this);
  }
  return {};
}

Store::WalBatch::WalBatch() { ++tls_wal_batches; }

Store::WalBatch::~WalBatch() {
  finish();  // a failure has set the store's write_failed: later writes are refused
  --tls_wal_batches;
}

Status Store::WalBatch::finish() {
  Status result;
  for (void* pending : tls_wal_pending) {
    Status s = static_cast<Impl*>(pending)->flush_wal();
    if (result.ok() && !s.ok()) result = std::move(s);
  }
  tls_wal_pending.clear();
  return result;
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

const StoreOptions& Store::options() const { return impl_->options; }

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options, const Clock& clock) {
  const std::string& path = options.path;
  if (path.empty()) return Status::InvalidArgument("data directory path is empty");

  std::error_code ec;
  const auto status = fs::status(path, ec);
  bool fresh = false;
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return Status::Unavailable("cannot read data directory " + path + ": " + ec.message());
  }
  if (!fs::exists(status)) {
    fs::create_directories(path, ec);
    if (ec) {
      return Status::Unavailable("cannot create data directory " + path + ": " + ec.message());
    }
    fresh = true;
  } else if (!fs::is_directory(status)) {
    return Status::InvalidArgument("data directory " + path + " exists but is not a directory");
  } else {
    auto it = fs::directory_iterator(path, ec);
    if (ec) {
      return Status::Unavailable("cannot list data directory " + path + ": " + ec.message());
    }
    fresh = it == fs::directory_iterator();
    if (!fresh && !fs::exists(fs::path(path) / "CURRENT", ec)) {
      return Status::InvalidArgument("data directory " + path +
                                     " is not empty and holds no sessiond database (no CURRENT "
                                     "file); refusing to create one over it");
    }
  }

  auto impl = std::make_unique<Impl>(options, clock);

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = fresh;
  db_options.create_missing_column_families = fresh;
  db_options.paranoid_checks = true;
  db_options.max_background_jobs = 2;
  db_options.bytes_per_sync = 1 << 20;
  db_options.avoid_flush_during_shutdown = false;  // memory mode relies on the flush at close
  // The families flush together: without a WAL (memory mode) a session and its user-index entry
  // would otherwise reach the disk in different flushes, and a crash between them would leave
  // one without the other.
  db_options.atomic_flush = true;
  db_options.info_log = std::make_shared<InfoLog>(path);
  rocksdb::Log(rocksdb::InfoLogLevel::INFO_LEVEL, db_options.info_log,
               "sessiond: WAL checksums (CRC32C) computed by %s (storage/detail/crc32c.h)",
               detail::crc32c_implementation());
  // The sessions and users families' memtable (below, detail/memtable.h) takes inserts from one
  // writer at a time.
  db_options.allow_concurrent_memtable_write = false;
  // kAsync: WAL bytes go to the operating system when the write returns or its thread's
  // WalBatch finishes (Impl::wal_written), not inside RocksDB's write path.
  db_options.manual_wal_flush = options.durability == Durability::kAsync;

  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  auto family_options = [&](const rocksdb::CompactionFilter* filter) {
    rocksdb::ColumnFamilyOptions cf;
    cf.write_buffer_size = options.write_buffer_bytes;
    cf.max_write_buffer_number = 3;
    // Sessions are short-lived: most die in the upper levels, where compressing them costs CPU
    // that the two-core machines we target need for requests. Only long-lived data is
    // compressed.
    cf.compression_per_level = {rocksdb::kNoCompression,  rocksdb::kNoCompression,
                                rocksdb::kLZ4Compression, rocksdb::kLZ4Compression,
                                rocksdb::kLZ4Compression, rocksdb::kLZ4Compression,
                                rocksdb::kLZ4Compression};
    cf.compaction_filter = filter;
    // Expired records leave only when a compaction reads them; files that no write pushes down
    // would keep them for weeks. Every file is compacted (through the filter) at least this
    // often.
    cf.periodic_compaction_seconds = kPeriodicCompactionSeconds;
    // sessiond never point-reads these families (the table in memory answers reads; recovery
    // scans), so an append-only memtable, sorted at flush, beats the skiplist, whose inserts are
    // a chain of cache misses over random 32-byte keys; it sorts by the keys' first 16 bytes kept
    // beside each entry (detail/memtable.h; the families' comparator is the bytewise default).
    cf.memtable_factory = detail::prefix_sorted_memtable_factory();
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = cache;
    cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    return cf;
  };
  rocksdb::ColumnFamilyOptions small;
  small.write_buffer_size = 4u << 20;
  // The replication log is read by its shippers while it is written, from a cursor near its
  // end: a vector memtable would sort itself for every such read (a shipper's batch), while its
  // keys (ascending sequences) append to the skiplist's end.
  rocksdb::ColumnFamilyOptions replog = family_options(nullptr);
  replog.memtable_factory = std::make_shared<rocksdb::SkipListFactory>();
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {kSessionsFamily, family_options(&impl->sessions_filter)},
      {kUsersFamily, family_options(&impl->users_filter)},
      {kReplogFamily, replog},
      {kMetaFamily, small},
      {rocksdb::kDefaultColumnFamilyName, small},
  };

  if (!fresh) {
    std::vector<std::string> existing;
    auto s = rocksdb::DB::ListColumnFamilies(db_options, path, &existing);
    if (!s.ok()) {
      return Status::Internal("cannot read the database in " + path +
                              " (corrupt or unreadable): " + s.ToString());
    }
    for (const auto& f : families) {
      if (std::find(existing.begin(), existing.end(), f.name) == existing.end()) {
        return Status::Internal("database in " + path + " lacks column family '" + f.name +
                                "': not a sessiond data directory, or a damaged one");
      }
    }
  }

  // Compactions run at the lowest CPU priority (nice 19; flushes keep the normal one): on the
  // small machines sessiond targets they would otherwise take a core from requests, and they
  // catch up whenever requests leave one idle. RocksDB's level-0 limits still slow writes down
  // if they ever fall far behind. Measured in docs/benchmarks.md (issue 18): +11-15% ops/s on
  // the 8 KiB session mix over 60 s, with no more files or bytes on disk at the end.
  rocksdb::Env::Default()->LowerThreadPoolCPUPriority(rocksdb::Env::LOW,
                                                      rocksdb::CpuPriority::kLow);
  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  auto s = rocksdb::DB::Open(db_options, path, families, &handles, &raw);
  if (!s.ok()) return open_failure(path, s);
  impl->db.reset(raw);
  // The default family is opened because RocksDB requires it; sessiond never uses it.
  impl->db->DestroyColumnFamilyHandle(handles.back());
  handles.pop_back();
  impl->handles = std::move(handles);

  std::string format;
  if (fresh) {
    s = impl->db->Put(rocksdb::WriteOptions(), impl->meta(),
                      rocksdb::Slice(kFormatKey.data(), kFormatKey.size()),
                      rocksdb::Slice(kFormatValue.data(), kFormatValue.size()));
    if (s.ok() && db_options.manual_wal_flush) s = impl->db->FlushWAL(/*sync=*/false);
    if (!s.ok()) return from_rocks(s, "cannot initialise data directory " + path);
  } else {
    s = impl->db->Get(rocksdb::ReadOptions(), impl->meta(),
                      rocksdb::Slice(kFormatKey.data(), kFormatKey.size()), &format);
    impl->needs_upgrade = s.ok() && format == kOlderFormatValue;
    if (!s.ok() || (format != kFormatValue && !impl->needs_upgrade)) {
      return Status::Internal("database in " + path + " has no sessiond format marker (" +
                              (s.ok() ? "found '" + format + "'" : s.ToString()) + ")");
    }
  }

  // The replication log continues after its last entry; the consumers' cursors are in meta.
  std::unique_ptr<rocksdb::Iterator> it(
      impl->db->NewIterator(rocksdb::ReadOptions(), impl->replog()));
  it->SeekToLast();
  if (it->Valid()) impl->next_log_seq = from_be64(it->key().ToStringView()) + 1;
  if (!it->status().ok()) return from_rocks(it->status(), "cannot read replication log in " + path);
  impl->log_committed = impl->next_log_seq - 1;
  it.reset(impl->db->NewIterator(rocksdb::ReadOptions(), impl->meta()));
  for (it->Seek(rocksdb::Slice(kCursorPrefix.data(), kCursorPrefix.size()));
       it->Valid() &&
       it->key().starts_with(rocksdb::Slice(kCursorPrefix.data(), kCursorPrefix.size()));
       it->Next()) {
    impl->cursors[std::string(it->key().ToStringView().substr(kCursorPrefix.size()))] =
        from_be64(it->value().ToStringView());
  }
  if (!it->status().ok()) return from_rocks(it->status(), "cannot read log cursors in " + path);

  impl->manual_wal = options.durability == Durability::kAsync;
  impl->write_options.disableWAL = options.durability == Durability::kMemory;
  impl->write_options.sync = options.durability == Durability::kSync;
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

namespace {

void put_bytes(std::string* out, std::string_view bytes) {
  detail::put_varint(out, bytes.size());
  out->append(bytes);
}

// A replication-log entry: u8 kind, varint origin region, varint origin node, u8 remote, the
// 32-byte id, bytes user, then for kEnd/kGeneration bytes value and varint deadline, for kPut
// varint deadline only, for kTouch varint last access, varint n and n access entries. A put's
// record is not copied into the log (it would double what every write costs): the merge is
// state-based, so a shipper sends the session's state as it is when it ships
// (SessionTable::state_of), which includes every put logged before.
thread_local std::uint64_t tls_last_log_seq = 0;

void encode_log_entry(const Mutation& m, std::string* out) {
  out->clear();
  out->push_back(static_cast<char>(m.kind));
  detail::put_varint(out, m.origin.region);
  detail::put_varint(out, m.origin.node);
  out->push_back(m.origin.remote ? 1 : 0);
  out->append(reinterpret_cast<const char*>(m.id.data()), m.id.size());
  put_bytes(out, m.user);
  if (m.kind == Mutation::Kind::kTouch) {
    detail::put_varint(out, static_cast<std::uint64_t>(m.last_access_ms));
    detail::put_varint(out, m.access_log.size());
    for (const AccessEntry& e : m.access_log) detail::put_access_entry(out, e);
  } else {
    if (m.kind != Mutation::Kind::kPut) put_bytes(out, m.value);
    detail::put_varint(out, static_cast<std::uint64_t>(m.deadline_ms));
  }
}

bool decode_log_entry(std::string_view in, Mutation* m, std::vector<AccessEntry>* accesses) {
  std::uint64_t region = 0, node = 0, v = 0;
  *m = Mutation{};
  if (in.empty()) return false;
  const auto kind = static_cast<std::uint8_t>(in.front());
  in.remove_prefix(1);
  if (kind < 1 || kind > 4) return false;
  m->kind = static_cast<Mutation::Kind>(kind);
  if (!detail::get_varint(&in, &region) || !detail::get_varint(&in, &node) ||
      in.size() < 1 + sizeof(SessionId)) {
    return false;
  }
  m->origin = {static_cast<std::uint32_t>(region), static_cast<std::uint32_t>(node), in[0] != 0};
  std::memcpy(m->id.data(), in.data() + 1, sizeof(SessionId));
  in.remove_prefix(1 + sizeof(SessionId));
  if (!detail::get_bytes(&in, &m->user)) return false;
  if (m->kind == Mutation::Kind::kTouch) {
    std::uint64_t n = 0;
    if (!detail::get_varint(&in, &v) || !detail::get_varint(&in, &n) || n > in.size()) {
      return false;
    }
    m->last_access_ms = static_cast<std::int64_t>(v);
    accesses->resize(n);
    for (AccessEntry& e : *accesses) {
      if (!detail::get_access_entry(&in, &e)) return false;
    }
    m->access_log = *accesses;
  } else {
    if (m->kind != Mutation::Kind::kPut && !detail::get_bytes(&in, &m->value)) return false;
    if (!detail::get_varint(&in, &v)) return false;
    m->deadline_ms = static_cast<std::int64_t>(v);
  }
  return in.empty();
}

}  // namespace

Status Store::write(std::span<const Mutation> mutations, std::uint64_t* first_log_seq, bool log) {
  auto& impl = *impl_;
  if (first_log_seq != nullptr) *first_log_seq = 0;
  if (impl.write_failed.load(std::memory_order_acquire)) return impl.refused();
  thread_local rocksdb::WriteBatch batch;
  thread_local std::string deadline, entry;
  batch.Clear();
  for (const Mutation& m : mutations) {
    const rocksdb::Slice id(reinterpret_cast<const char*>(m.id.data()), m.id.size());
    switch (m.kind) {
      case Mutation::Kind::kPut:
      case Mutation::Kind::kTouch:
        // The record holds its user id: no user-index entry (see store.h).
        batch.Put(impl.sessions(), id, rocksdb::Slice(m.value.data(), m.value.size()));
        break;
      case Mutation::Kind::kEnd:
        if (m.value.empty()) {
          batch.Delete(impl.sessions(), id);
        } else {
          batch.Put(impl.sessions(), id, rocksdb::Slice(m.value.data(), m.value.size()));
        }
        break;
      case Mutation::Kind::kGeneration:
        // Under the user's key without an id; its "deadline" never comes.
        deadline.clear();
        detail::put_fixed64(&deadline, static_cast<std::uint64_t>(kNoDeadline));
        deadline.append(m.value);
        batch.Put(impl.users(), user_key(m.user, {}), deadline);
        break;
    }
  }
  if (!impl.options.replication_log || !log || mutations.empty()) {
    return impl.checked(impl.db->Write(impl.write_options, &batch));
  }
  const std::uint64_t first = impl.take_seqs(mutations.size());
  std::uint64_t seq = first;
  for (const Mutation& m : mutations) {
    encode_log_entry(m, &entry);
    batch.Put(impl.replog(), be64(seq), entry);
    if (seq % kReplogTrimEvery == 0) {
      const std::uint64_t below = impl.trim_below(seq);
      if (below > 0) batch.DeleteRange(impl.replog(), be64(0), be64(below));
    }
    ++seq;
  }
  auto s = impl.db->Write(impl.write_options, &batch);
  impl.retire_seqs(first);
  if (s.ok()) tls_last_log_seq = first + mutations.size() - 1;
  if (s.ok() && first_log_seq != nullptr) *first_log_seq = first;
  return impl.checked(s);
}

Status Store::forget(std::span<const Forget> entries) {
  auto& impl = *impl_;
  if (impl.write_failed.load(std::memory_order_acquire)) return impl.refused();
  rocksdb::WriteBatch batch;
  for (const Forget& f : entries) {
    if (f.generation) {
      batch.Delete(impl.users(), user_key(f.user, {}));
      continue;
    }
    batch.Delete(impl.sessions(),
                 rocksdb::Slice(reinterpret_cast<const char*>(f.id.data()), f.id.size()));
  }
  return impl.checked(impl.db->Write(impl.write_options, &batch));
}

Status Store::for_each_session(const std::function<Status(std::string_view, std::string_view)>& fn,
                               std::string_view lower, std::string_view upper) const {
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  ro.readahead_size = 2u << 20;
  const rocksdb::Slice lower_slice(lower.data(), lower.size());
  const rocksdb::Slice upper_slice(upper.data(), upper.size());
  if (!lower.empty()) ro.iterate_lower_bound = &lower_slice;
  if (!upper.empty()) ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->sessions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    Status s = fn(it->key().ToStringView(), it->value().ToStringView());
    if (!s.ok()) return s;
  }
  return from_rocks(it->status(), "cannot read sessions from " + impl_->options.path);
}

Status Store::for_each_user_entry(
    const std::function<void(std::string_view, std::string_view)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->users()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view key = it->key().ToStringView();
    if (key.size() < 2) continue;
    const std::size_t len =
        (static_cast<std::uint8_t>(key[0]) << 8) | static_cast<std::uint8_t>(key[1]);
    if (key.size() != 2 + len + sizeof(SessionId)) continue;
    fn(key.substr(2, len), key.substr(2 + len));
  }
  return from_rocks(it->status(), "cannot read user index from " + impl_->options.path);
}

Status Store::for_each_generation(
    const std::function<Status(std::string_view, std::string_view)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->users()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view key = it->key().ToStringView();
    std::string_view value = it->value().ToStringView();
    if (key.size() < 2 || value.size() < 8) continue;
    const std::size_t len =
        (static_cast<std::uint8_t>(key[0]) << 8) | static_cast<std::uint8_t>(key[1]);
    if (key.size() != 2 + len) continue;  // an index entry: user + session id
    if (Status s = fn(key.substr(2), value.substr(8)); !s.ok()) return s;
  }
  return from_rocks(it->status(), "cannot read revocation generations from " + impl_->options.path);
}

Status Store::put_meta(std::string_view key, std::string_view value) {
  if (impl_->write_failed.load(std::memory_order_acquire)) return impl_->refused();
  const std::string k = std::string(kMetaPrefix) + std::string(key);
  auto s = impl_->db->Put(impl_->write_options, impl_->meta(), k,
                          rocksdb::Slice(value.data(), value.size()));
  return s.ok() ? impl_->wal_written() : impl_->checked(s);
}

std::optional<std::string> Store::get_meta(std::string_view key) const {
  std::string value;
  const std::string k = std::string(kMetaPrefix) + std::string(key);
  if (!impl_->db->Get(rocksdb::ReadOptions(), impl_->meta(), k, &value).ok()) return std::nullopt;
  return value;
}

bool Store::needs_upgrade() const { return impl_->needs_upgrade; }

Status Store::finish_upgrade() {
  if (!impl_->needs_upgrade) return {};
  if (auto s = impl_->db->Flush(rocksdb::FlushOptions(), impl_->handles); !s.ok()) {
    return from_rocks(s, "cannot flush the upgraded records");
  }
  rocksdb::WriteOptions synced;
  synced.sync = true;
  auto s =
      impl_->db->Put(synced, impl_->meta(), rocksdb::Slice(kFormatKey.data(), kFormatKey.size()),
                     rocksdb::Slice(kFormatValue.data(), kFormatValue.size()));
  if (!s.ok()) return from_rocks(s, "cannot record the upgraded format");
  impl_->needs_upgrade = false;
  return {};
}

std::uint64_t Store::batches_written() const {
  return impl_->batches_written.load(std::memory_order_relaxed);
}

std::uint64_t Store::log_committed() const {
  return impl_->log_committed.load(std::memory_order_acquire);
}

Status Store::for_each_log_entry(
    std::uint64_t from, const std::function<void(std::uint64_t, const Mutation&)>& fn) const {
  return for_each_log_entry(from, std::numeric_limits<std::size_t>::max(), fn);
}

std::uint64_t Store::last_log_seq_on_this_thread() { return tls_last_log_seq; }

Status Store::for_each_log_entry(
    std::uint64_t from, std::size_t limit,
    const std::function<void(std::uint64_t, const Mutation&)>& fn) const {
  const std::uint64_t last = log_committed();
  std::size_t seen = 0;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->replog()));
  Mutation m;
  std::vector<AccessEntry> accesses;
  for (it->Seek(be64(from)); it->Valid(); it->Next()) {
    const std::uint64_t seq = from_be64(it->key().ToStringView());
    if (seq > last || seen++ == limit) break;
    if (!decode_log_entry(it->value().ToStringView(), &m, &accesses)) {
      return Status::Internal("corrupt replication-log entry " + std::to_string(seq) + " in " +
                              impl_->options.path);
    }
    fn(seq, m);
  }
  return from_rocks(it->status(), "cannot read replication log");
}

Status Store::set_log_cursor(std::string_view consumer, std::uint64_t next_seq) {
  if (impl_->write_failed.load(std::memory_order_acquire)) return impl_->refused();
  const std::string key = std::string(kCursorPrefix) + std::string(consumer);
  auto s = impl_->db->Put(impl_->write_options, impl_->meta(), key, be64(next_seq));
  if (!s.ok()) return impl_->checked(s);
  if (Status flushed = impl_->wal_written(); !flushed.ok()) return flushed;
  std::lock_guard lock(impl_->log_mu);
  impl_->cursors[std::string(consumer)] = next_seq;
  return {};
}

std::optional<std::uint64_t> Store::log_cursor(std::string_view consumer) const {
  std::lock_guard lock(impl_->log_mu);
  auto it = impl_->cursors.find(consumer);
  if (it == impl_->cursors.end()) return std::nullopt;
  return it->second;
}

Status Store::drop_log_cursor(std::string_view consumer) {
  if (impl_->write_failed.load(std::memory_order_acquire)) return impl_->refused();
  const std::string key = std::string(kCursorPrefix) + std::string(consumer);
  auto s = impl_->db->Delete(impl_->write_options, impl_->meta(), key);
  if (!s.ok()) return impl_->checked(s);
  if (Status flushed = impl_->wal_written(); !flushed.ok()) return flushed;
  std::lock_guard lock(impl_->log_mu);
  impl_->cursors.erase(std::string(consumer));
  return {};
}

Status Store::compact() {
  auto s = impl_->db->Flush(rocksdb::FlushOptions(), impl_->handles);
  if (!s.ok()) return from_rocks(s, "flush failed");
  for (auto* h : impl_->handles) {
    s = impl_->db->CompactRange(rocksdb::CompactRangeOptions(), h, nullptr, nullptr);
    if (!s.ok()) return from_rocks(s, "compaction failed");
  }
  return {};
}

Store::Memory Store::memory() const {
  Memory m;
  std::uint64_t v = 0;
  for (auto* h : impl_->handles) {
    if (impl_->db->GetIntProperty(h, rocksdb::DB::Properties::kSizeAllMemTables, &v)) {
      m.memtables += v;
    }
    if (impl_->db->GetIntProperty(h, rocksdb::DB::Properties::kEstimateTableReadersMem, &v)) {
      m.table_readers += v;
    }
  }
  // One cache shared by the families: read once.
  if (!impl_->handles.empty() &&
      impl_->db->GetIntProperty(impl_->handles.front(), rocksdb::DB::Properties::kBlockCacheUsage,
                                &v)) {
    m.block_cache = v;
  }
  return m;
}

std::string Store::write_failure() const {
  if (!impl_->write_failed.load()) return {};
  std::lock_guard lock(impl_->failure_mu);
  return impl_->failure;
}

Status Store::checkpoint(const std::string& dir) const {
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    return Status::InvalidArgument(dir + " already exists: a backup goes into a new directory");
  }
  const fs::path parent = fs::path(dir).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec)) {
    return Status::InvalidArgument(parent.string() + " is not a directory");
  }
  rocksdb::Checkpoint* raw = nullptr;
  auto s = rocksdb::Checkpoint::Create(impl_->db.get(), &raw);
  if (!s.ok()) return from_rocks(s, "cannot start a checkpoint");
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  // log_size_for_flush 0: memtables are flushed first (atomic_flush keeps the families in step).
  s = checkpoint->CreateCheckpoint(dir, /*log_size_for_flush=*/0);
  if (!s.ok()) return from_rocks(s, "checkpoint into " + dir + " failed");
  return {};
}

std::uint64_t Store::disk_bytes() const {
  std::uint64_t total = 0, v = 0;
  for (auto* h : impl_->handles) {
    if (impl_->db->GetIntProperty(h, rocksdb::DB::Properties::kLiveSstFilesSize, &v)) total += v;
  }
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(impl_->options.path, ec)) {
    if (entry.path().extension() == ".log") total += entry.file_size(ec);
  }
  return total;
}

}  // namespace sessiond::storage
