// Store against the real RocksDB in a temporary directory: what it keeps across a reopen, what
// the replication log and the compaction filter do, and how it refuses a data directory it must
// not use (a file, a foreign directory, a locked, corrupt or unreadable database).
#include "storage/store.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "storage/clock.h"
#include "storage/detail/record.h"
#include "storage/detail/shard.h"
#include "storage/session.h"
#include "tests/support/temp_dir.h"

namespace sessiond::storage {
namespace {

namespace fs = std::filesystem;
using sessiond::testing::TempDir;

// A 32-byte binary id whose key order is the order of n. The string lives for the whole test
// program, so views into it never dangle.
const std::string& test_id(std::uint32_t n) {
  static std::map<std::uint32_t, std::string> ids;
  auto [it, inserted] = ids.try_emplace(n, sizeof(SessionId), '\x5a');
  if (inserted) {
    for (std::size_t i = 0; i < 4; ++i) it->second[i] = static_cast<char>(n >> (24 - 8 * i));
  }
  return it->second;
}

// A session value as the compaction filter reads it: the format byte, the deadline at its fixed
// offset, then bytes the filter never looks at.
std::string value_with_deadline(std::int64_t deadline_ms, std::string_view payload) {
  std::string value(1, static_cast<char>(detail::kValueFormat));
  detail::put_fixed64(&value, static_cast<std::uint64_t>(deadline_ms));
  value.append(payload);
  return value;
}

StoreOptions options_at(const std::string& path, Durability durability = Durability::kAsync) {
  StoreOptions options;
  options.path = path;
  options.durability = durability;
  options.write_buffer_bytes = 1u << 20;  // small memtables keep the tests light
  options.block_cache_bytes = 1u << 20;
  return options;
}

std::unique_ptr<Store> open_store(const StoreOptions& options, const Clock& clock) {
  auto opened = Store::open(options, clock);
  if (!opened.ok()) {
    ADD_FAILURE() << "Store::open(" << options.path << "): " << opened.status().ToString();
    return nullptr;
  }
  return std::move(opened).value();
}

SessionId sid(std::string_view id) {
  SessionId out{};
  std::memcpy(out.data(), id.data(), std::min(id.size(), out.size()));
  return out;
}

// A put of a session (with its user-index entry when `user` is not empty).
Mutation put(std::string_view id, std::string_view value, std::string_view user = {},
             std::int64_t deadline = kNoDeadline) {
  Mutation m;
  m.kind = Mutation::Kind::kPut;
  m.id = sid(id);
  m.value = value;
  m.user = user;
  m.deadline_ms = deadline;
  return m;
}

// The end of a session without a tombstone (and of its user-index entry).
Mutation end(std::string_view id, std::string_view user = {}) {
  Mutation m;
  m.kind = Mutation::Kind::kEnd;
  m.id = sid(id);
  m.user = user;
  return m;
}

Status put_session(Store& store, std::string_view id, std::string_view value) {
  const Mutation m = put(id, value);
  return store.write(std::span(&m, 1));
}

Status delete_session(Store& store, std::string_view id) {
  const Mutation m = end(id);
  return store.write(std::span(&m, 1));
}

Status put_user(Store& store, std::string_view user, std::string_view id, std::int64_t deadline) {
  const std::string value = value_with_deadline(deadline, "v");  // outlives the write
  const Mutation m = put(id, value, user, deadline);
  return store.write(std::span(&m, 1));
}

std::vector<std::pair<std::string, std::string>> sessions_of(const Store& store) {
  std::vector<std::pair<std::string, std::string>> out;
  Status s = store.for_each_session([&](std::string_view id, std::string_view value) {
    out.emplace_back(id, value);
    return Status();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

std::set<std::pair<std::string, std::string>> user_entries_of(const Store& store) {
  std::set<std::pair<std::string, std::string>> out;
  Status s = store.for_each_user_entry(
      [&](std::string_view user, std::string_view id) { out.emplace(user, id); });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

// The log as (sequence, kind letter + id + value): P put, T touch, E end.
std::vector<std::pair<std::uint64_t, std::string>> replog_of(const Store& store,
                                                             std::uint64_t from = 0) {
  std::vector<std::pair<std::uint64_t, std::string>> out;
  Status s = store.for_each_log_entry(from, [&](std::uint64_t seq, const Mutation& m) {
    const char kind = m.kind == Mutation::Kind::kPut     ? 'P'
                      : m.kind == Mutation::Kind::kTouch ? 'T'
                                                         : 'E';
    out.emplace_back(seq, kind + std::string(detail::id_bytes(m.id)) + std::string(m.value));
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

void write_file(const fs::path& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The MANIFEST file named by CURRENT.
fs::path manifest_of(const fs::path& dir) {
  std::string current = read_file(dir / "CURRENT");
  while (!current.empty() && current.back() == '\n') current.pop_back();
  return dir / current;
}

// Creates a sessiond database at `path` holding one session, and closes it.
void make_database(const std::string& path, const Clock& clock) {
  auto store = open_store(options_at(path), clock);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(put_session(*store, test_id(1), value_with_deadline(kNoDeadline, "one")).ok());
  ASSERT_TRUE(store->compact().ok());  // puts the data in an SST file, as an old database has
}

// ---- opening --------------------------------------------------------------------------------

// Issue 11, review finding 7: without a WAL (memory mode) the column families must flush
// together, and expired records must not stay on disk for weeks. RocksDB writes the options it
// runs with into the data directory (OPTIONS-*): they say so.
TEST(Store, FamiliesFlushTogetherAndFilesAreCompactedPeriodically) {
  TempDir tmp;
  const std::string path = tmp.sub("data");
  ManualClock clock;
  auto store = open_store(options_at(path, Durability::kMemory), clock);
  ASSERT_NE(store, nullptr);
  std::string newest;
  for (const auto& entry : fs::directory_iterator(path)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("OPTIONS-", 0) == 0 && name > newest) newest = name;
  }
  ASSERT_FALSE(newest.empty()) << "no OPTIONS file in " << path;
  std::ifstream in(fs::path(path) / newest);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("atomic_flush=true"), std::string::npos);
  for (const char* family : {"sessions", "users"}) {
    const auto section = text.find(std::string("[CFOptions \"") + family + "\"]");
    ASSERT_NE(section, std::string::npos) << family;
    const auto next = text.find("[CFOptions", section + 1);
    const std::string options = text.substr(section, next - section);
    EXPECT_NE(options.find("periodic_compaction_seconds=21600"), std::string::npos) << family;
  }
}

TEST(Store, OpenCreatesMissingDataDirectory) {
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("nested/data");
  auto store = open_store(options_at(path), clock);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(fs::is_directory(path));
  EXPECT_TRUE(fs::exists(fs::path(path) / "CURRENT"));
  EXPECT_TRUE(sessions_of(*store).empty());
  EXPECT_EQ(store->options().path, path);
}

TEST(Store, OpenAcceptsAnEmptyExistingDirectory) {
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("data");
  fs::create_directory(path);
  auto store = open_store(options_at(path), clock);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(fs::exists(fs::path(path) / "CURRENT"));
}

TEST(Store, DurabilityNamesRoundTrip) {
  for (Durability d : {Durability::kMemory, Durability::kAsync, Durability::kSync}) {
    EXPECT_EQ(durability_from_name(durability_name(d)), d) << durability_name(d);
  }
  EXPECT_EQ(durability_name(Durability::kMemory), "memory");
  EXPECT_EQ(durability_name(Durability::kAsync), "async");
  EXPECT_EQ(durability_name(Durability::kSync), "sync");
  EXPECT_EQ(durability_from_name(""), std::nullopt);
  EXPECT_EQ(durability_from_name("Sync"), std::nullopt);
  EXPECT_EQ(durability_from_name("fsync"), std::nullopt);
  EXPECT_EQ(durability_from_name("async "), std::nullopt);
}

TEST(Store, DefaultDurabilityIsAsync) { EXPECT_EQ(StoreOptions().durability, Durability::kAsync); }

// ---- sessions and the user index ------------------------------------------------------------

TEST(Store, SessionsComeBackInKeyOrderAfterReopen) {
  TempDir tmp;
  ManualClock clock;
  const StoreOptions options = options_at(tmp.sub("data"));
  const std::vector<std::pair<std::string, std::string>> expected = {
      {test_id(1), value_with_deadline(kNoDeadline, "first")},
      {test_id(2), value_with_deadline(kNoDeadline, std::string(5000, 'x'))},
      {test_id(4), value_with_deadline(kNoDeadline, std::string("\0\xff\n", 3))},
  };
  {
    auto store = open_store(options, clock);
    ASSERT_NE(store, nullptr);
    // One batch, written out of key order, with a put and a delete of the same id inside it.
    const std::string doomed = value_with_deadline(kNoDeadline, "doomed");
    const std::vector<Mutation> ops = {
        put(expected[2].first, expected[2].second), put(test_id(3), doomed),
        put(expected[0].first, expected[0].second), put(expected[1].first, "overwritten below"),
        put(expected[1].first, expected[1].second),
    };
    ASSERT_TRUE(store->write(ops).ok());
    ASSERT_TRUE(delete_session(*store, test_id(3)).ok());
    EXPECT_EQ(sessions_of(*store), expected);
  }
  auto store = open_store(options, clock);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(sessions_of(*store), expected);
}

TEST(Store, ForEachSessionStopsAtTheFirstError) {
  TempDir tmp;
  ManualClock clock;
  auto store = open_store(options_at(tmp.sub("data")), clock);
  ASSERT_NE(store, nullptr);
  for (std::uint32_t n = 1; n <= 3; ++n) {
    ASSERT_TRUE(put_session(*store, test_id(n), value_with_deadline(kNoDeadline, "v")).ok());
  }
  int calls = 0;
  Status s = store->for_each_session([&](std::string_view, std::string_view) {
    ++calls;
    return calls == 2 ? Status::Internal("stop here") : Status();
  });
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(), "stop here");
  EXPECT_EQ(calls, 2);
}

// A session's record holds its user id, and recovery rebuilds the user index from the records:
// the `users` family keeps users' revocation generations only, under keys that tell users apart
// ("ab" is a prefix of "abc", and a 300-byte user id needs both bytes of the length prefix).
TEST(Store, SessionsWriteNoUserIndexEntriesAndGenerationsKeepUsersApart) {
  TempDir tmp;
  ManualClock clock;
  const StoreOptions options = options_at(tmp.sub("data"));
  const std::string long_user(300, 'u');
  const std::map<std::string, std::string> generations = {
      {"ab", "g-ab"}, {"abc", "g-abc"}, {long_user, "g-long"}};
  {
    auto store = open_store(options, clock);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(put_user(*store, "ab", test_id(1), kNoDeadline).ok());
    ASSERT_TRUE(put_user(*store, "abc", test_id(2), kNoDeadline).ok());
    ASSERT_TRUE(put_user(*store, long_user, test_id(3), kNoDeadline).ok());
    const Mutation remove = end(test_id(1), "ab");
    ASSERT_TRUE(store->write(std::span(&remove, 1)).ok());
    for (const auto& [user, value] : generations) {
      Mutation g;
      g.kind = Mutation::Kind::kGeneration;
      g.user = user;
      g.value = value;
      ASSERT_TRUE(store->write(std::span(&g, 1)).ok());
    }
    EXPECT_EQ(user_entries_of(*store), (std::set<std::pair<std::string, std::string>>{}));
  }
  auto store = open_store(options, clock);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(user_entries_of(*store), (std::set<std::pair<std::string, std::string>>{}));
  std::map<std::string, std::string> read;
  ASSERT_TRUE(store
                  ->for_each_generation([&](std::string_view user, std::string_view value) {
                    read.emplace(user, value);
                    return Status();
                  })
                  .ok());
  EXPECT_EQ(read, generations);
  EXPECT_EQ(sessions_of(*store).size(), 2u);  // the records (their users inside); 1 ended
}

TEST(Store, DiskBytesCountWhatWasWritten) {
  TempDir tmp;
  ManualClock clock;
  auto store = open_store(options_at(tmp.sub("data")), clock);
  ASSERT_NE(store, nullptr);
  // Incompressible values, so LZ4 cannot shrink them below their size.
  std::uint64_t x = 88172645463325252ull;
  std::string payload(4096, '\0');
  for (std::uint32_t n = 0; n < 128; ++n) {
    for (char& c : payload) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      c = static_cast<char>(x);
    }
    ASSERT_TRUE(put_session(*store, test_id(n), value_with_deadline(kNoDeadline, payload)).ok());
  }
  ASSERT_TRUE(store->compact().ok());
  EXPECT_GE(store->disk_bytes(), 128u * 4096u);
}

// ---- replication log ------------------------------------------------------------------------

TEST(Store, ReplicationLogRecordsEachSessionOpInOrder) {
  TempDir tmp;
  ManualClock clock;
  StoreOptions options = options_at(tmp.sub("data"));
  options.replication_log = true;
  auto store = open_store(options, clock);
  ASSERT_NE(store, nullptr);
  const std::string v1 = value_with_deadline(kNoDeadline, "one");
  const std::string v3 = value_with_deadline(kNoDeadline, "three");
  const std::vector<Mutation> batch = {put(test_id(1), v1, "alice"), end(test_id(2), "alice")};
  std::uint64_t first = 0;
  ASSERT_TRUE(store->write(batch, &first).ok());
  EXPECT_EQ(first, 1u);
  ASSERT_TRUE(put_session(*store, test_id(3), v3).ok());
  EXPECT_EQ(store->log_committed(), 3u);

  const std::vector<std::pair<std::uint64_t, std::string>> expected = {
      {1, "P" + test_id(1)}, {2, "E" + test_id(2)}, {3, "P" + test_id(3)}};  // puts name ids
  EXPECT_EQ(replog_of(*store), expected);
  const std::vector<std::pair<std::uint64_t, std::string>> from_two(expected.begin() + 1,
                                                                    expected.end());
  EXPECT_EQ(replog_of(*store, 2), from_two);
  EXPECT_TRUE(replog_of(*store, 4).empty());
}

TEST(Store, ReplicationLogStaysEmptyWhenOff) {
  TempDir tmp;
  ManualClock clock;
  auto store = open_store(options_at(tmp.sub("data")), clock);
  ASSERT_NE(store, nullptr);
  ASSERT_FALSE(store->options().replication_log);
  ASSERT_TRUE(put_session(*store, test_id(1), value_with_deadline(kNoDeadline, "v")).ok());
  ASSERT_TRUE(delete_session(*store, test_id(1)).ok());
  EXPECT_TRUE(replog_of(*store).empty());
}

TEST(Store, ReplicationLogContinuesItsSequenceAfterReopen) {
  TempDir tmp;
  ManualClock clock;
  StoreOptions options = options_at(tmp.sub("data"));
  options.replication_log = true;
  const std::string value = value_with_deadline(kNoDeadline, "v");
  for (std::uint32_t round = 0; round < 3; ++round) {
    auto store = open_store(options, clock);
    ASSERT_NE(store, nullptr);
    for (std::uint32_t n = 0; n < 5; ++n) {
      ASSERT_TRUE(put_session(*store, test_id(round * 5 + n), value).ok());
    }
  }
  auto store = open_store(options, clock);
  ASSERT_NE(store, nullptr);
  const auto log = replog_of(*store);
  ASSERT_EQ(log.size(), 15u);
  for (std::size_t i = 0; i < log.size(); ++i) {
    EXPECT_EQ(log[i].first, i + 1);
    EXPECT_EQ(log[i].second, "P" + test_id(static_cast<std::uint32_t>(i))) << "seq " << i + 1;
  }
}

TEST(Store, ReplicationLogIsTrimmedToItsRetention) {
  TempDir tmp;
  ManualClock clock;
  StoreOptions options = options_at(tmp.sub("data"), Durability::kMemory);
  options.replication_log = true;
  options.replication_log_retention = 100;
  constexpr std::uint64_t kWrites = 2100;  // two trims: at sequence 1024 and 2048
  const std::string value = value_with_deadline(kNoDeadline, "v");
  {
    auto store = open_store(options, clock);
    ASSERT_NE(store, nullptr);
    for (std::uint64_t n = 0; n < kWrites; ++n) {
      ASSERT_TRUE(put_session(*store, test_id(static_cast<std::uint32_t>(n)), value).ok());
    }
  }
  auto store = open_store(options, clock);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(put_session(*store, test_id(static_cast<std::uint32_t>(kWrites)), value).ok());
  const auto log = replog_of(*store);
  ASSERT_FALSE(log.empty());
  // Contiguous up to the newest entry, which continues the sequence after the reopen.
  EXPECT_EQ(log.back().first, kWrites + 1);
  for (std::size_t i = 1; i < log.size(); ++i) {
    ASSERT_EQ(log[i].first, log[i - 1].first + 1) << "gap after seq " << log[i - 1].first;
  }
  // The newest `retention` entries are all kept; trimming runs every 1024 entries, so at most
  // that many more linger.
  EXPECT_LE(log.front().first, kWrites + 1 - options.replication_log_retention);
  EXPECT_GT(log.front().first, kWrites + 1 - options.replication_log_retention - 1024)
      << "the log holds " << log.size() << " entries; retention is "
      << options.replication_log_retention;
}

// ---- compaction filter ----------------------------------------------------------------------

TEST(Store, CompactionDropsExpiredSessions) {
  TempDir tmp;
  ManualClock clock;
  const std::int64_t t0 = clock.now_ms();
  auto store = open_store(options_at(tmp.sub("data")), clock);
  ASSERT_NE(store, nullptr);
  const std::string soon = value_with_deadline(t0 + 1000, "soon");
  const std::string later = value_with_deadline(t0 + 5000, "later");
  const std::string never = value_with_deadline(kNoDeadline, "never");
  const std::string foreign = "not a session record: the filter must keep what it cannot read";
  const std::vector<Mutation> ops = {
      put(test_id(1), soon, "alice", t0 + 1000),
      put(test_id(2), later, "alice", t0 + 5000),
      put(test_id(3), never, "bob", kNoDeadline),
      put(test_id(4), foreign),
  };
  ASSERT_TRUE(store->write(ops).ok());

  using Sessions = std::vector<std::pair<std::string, std::string>>;
  ASSERT_TRUE(store->compact().ok());
  EXPECT_EQ(
      sessions_of(*store),
      (Sessions{
          {test_id(1), soon}, {test_id(2), later}, {test_id(3), never}, {test_id(4), foreign}}));

  clock.set_ms(t0 + 1000);  // a deadline is the first instant the session is gone
  ASSERT_TRUE(store->compact().ok());
  EXPECT_EQ(sessions_of(*store),
            (Sessions{{test_id(2), later}, {test_id(3), never}, {test_id(4), foreign}}));

  clock.set_ms(t0 + 3'600'000);
  ASSERT_TRUE(store->compact().ok());
  EXPECT_EQ(sessions_of(*store), (Sessions{{test_id(3), never}, {test_id(4), foreign}}));
}

// The niceness of each of this process's threads named `name` (RocksDB names its pools').
std::vector<int> niceness_of_threads(std::string_view name) {
  std::vector<int> out;
  for (const auto& task : fs::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string line;
    if (!std::getline(comm, line) || line != name) continue;
    std::ifstream stat(task.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    std::istringstream fields(text.substr(text.rfind(')') + 2));  // from field 3, the state
    std::string field;
    for (int i = 3; i <= 19 && fields >> field; ++i) {
      if (i == 19) out.push_back(std::stoi(field));
    }
  }
  return out;
}

// Compactions yield the CPU to requests (docs/operations.md): RocksDB's compaction threads run
// at nice 19 once they have taken work, its flush threads at the process's own priority.
TEST(Store, CompactionsRunAtTheLowestCpuPriorityAndFlushesDoNot) {
  TempDir tmp;
  ManualClock clock;
  auto store = open_store(options_at(tmp.sub("data")), clock);
  ASSERT_NE(store, nullptr);
  const std::string value = value_with_deadline(kNoDeadline, "a");
  ASSERT_TRUE(store->write(std::vector<Mutation>{put(test_id(1), value)}).ok());
  ASSERT_TRUE(store->compact().ok());  // a flush, then a compaction in the low-priority pool
  const std::vector<int> low = niceness_of_threads("rocksdb:low");
  const std::vector<int> high = niceness_of_threads("rocksdb:high");
  ASSERT_FALSE(low.empty());
  ASSERT_FALSE(high.empty());
  EXPECT_TRUE(std::any_of(low.begin(), low.end(), [](int n) { return n == 19; }));
  const int own = getpriority(PRIO_PROCESS, 0);
  for (int n : high) EXPECT_EQ(n, own);
}

TEST(Store, CompactionDoesNotResurrectAnOlderVersionOfADroppedSession) {
  TempDir tmp;
  ManualClock clock;
  const std::int64_t t0 = clock.now_ms();
  auto store = open_store(options_at(tmp.sub("data")), clock);
  ASSERT_NE(store, nullptr);
  // An old version with a far deadline sinks to the bottom level; a newer one (a shortened
  // policy) expires. Dropping the newer one must not let the older one show through.
  ASSERT_TRUE(put_session(*store, test_id(1), value_with_deadline(t0 + 3'600'000, "old")).ok());
  ASSERT_TRUE(store->compact().ok());
  ASSERT_TRUE(put_session(*store, test_id(1), value_with_deadline(t0 + 1000, "new")).ok());
  clock.set_ms(t0 + 2000);
  ASSERT_TRUE(store->compact().ok());
  EXPECT_TRUE(sessions_of(*store).empty());
}

// ---- refusing a data directory --------------------------------------------------------------

TEST(Store, RefusesADataDirectoryPathThatIsARegularFile) {
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("data");
  write_file(path, "precious");
  auto opened = Store::open(options_at(path), clock);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(opened.status().message().find(path), std::string::npos) << opened.status().ToString();
  EXPECT_EQ(read_file(path), "precious");
}

TEST(Store, RefusesAnEmptyPath) {
  ManualClock clock;
  auto opened = Store::open(options_at(""), clock);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.code(), StatusCode::kInvalidArgument);
}

TEST(Store, RefusesANonEmptyDirectoryWithoutADatabaseAndCreatesNothingInIt) {
  TempDir tmp;
  ManualClock clock;
  const fs::path dir = tmp.sub("data");
  fs::create_directory(dir);
  write_file(dir / "notes.txt", "someone else's files");
  fs::create_directory(dir / "photos");

  auto opened = Store::open(options_at(dir.string()), clock);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(opened.status().message().find(dir.string()), std::string::npos)
      << opened.status().ToString();
  EXPECT_EQ(names_in(dir), (std::set<std::string>{"notes.txt", "photos"}));
  EXPECT_TRUE(fs::is_empty(dir / "photos"));
  EXPECT_EQ(read_file(dir / "notes.txt"), "someone else's files");
}

TEST(Store, SecondOpenOfADirectoryInUseIsUnavailable) {
  TempDir tmp;
  ManualClock clock;
  const StoreOptions options = options_at(tmp.sub("data"));
  auto first = open_store(options, clock);
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(put_session(*first, test_id(1), value_with_deadline(kNoDeadline, "v")).ok());

  auto second = Store::open(options, clock);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.code(), StatusCode::kUnavailable) << second.status().ToString();
  EXPECT_NE(second.status().message().find("in use"), std::string::npos)
      << second.status().ToString();
  EXPECT_NE(second.status().message().find(options.path), std::string::npos)
      << second.status().ToString();

  // The refused open left the first one working, and once it closes the directory opens again.
  ASSERT_TRUE(put_session(*first, test_id(2), value_with_deadline(kNoDeadline, "w")).ok());
  EXPECT_EQ(sessions_of(*first).size(), 2u);
  first.reset();
  auto third = open_store(options, clock);
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(sessions_of(*third).size(), 2u);
}

// Opening must fail with the path in the message: never an OK, empty store.
void expect_refused(const std::string& path, const Clock& clock, std::string_view what) {
  auto opened = Store::open(options_at(path), clock);
  if (opened.ok()) {
    ADD_FAILURE() << what << ": Store::open succeeded and holds " << sessions_of(**opened).size()
                  << " sessions";
    return;
  }
  EXPECT_NE(opened.status().message().find(path), std::string::npos)
      << what << ": " << opened.status().ToString();
}

TEST(Store, RefusesADatabaseWithAGarbledCurrentFile) {
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("data");
  ASSERT_NO_FATAL_FAILURE(make_database(path, clock));
  write_file(fs::path(path) / "CURRENT", "\x01\x02garbage that names no manifest\n");
  expect_refused(path, clock, "garbled CURRENT");
}

TEST(Store, RefusesADatabaseWithAnEmptyCurrentFile) {
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("data");
  ASSERT_NO_FATAL_FAILURE(make_database(path, clock));
  write_file(fs::path(path) / "CURRENT", "");
  expect_refused(path, clock, "empty CURRENT");
}

TEST(Store, RefusesADatabaseWithAGarbledManifest) {
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("data");
  ASSERT_NO_FATAL_FAILURE(make_database(path, clock));
  const fs::path manifest = manifest_of(path);
  std::string bytes = read_file(manifest);
  ASSERT_GT(bytes.size(), 64u);
  for (std::size_t i = 16; i < bytes.size() - 16; i += 7) bytes[i] = static_cast<char>(~bytes[i]);
  write_file(manifest, bytes);
  expect_refused(path, clock, "garbled MANIFEST");
}

TEST(Store, RefusesADatabaseWithATruncatedManifest) {
  ManualClock clock;
  // Cut in half, the manifest still parses but describes the database before its data was
  // flushed (and the log that held that data is gone). Emptied, it describes nothing.
  for (const bool to_half : {true, false}) {
    SCOPED_TRACE(to_half ? "MANIFEST truncated to half" : "MANIFEST emptied");
    TempDir tmp;
    const std::string path = tmp.sub("data");
    ASSERT_NO_FATAL_FAILURE(make_database(path, clock));
    const fs::path manifest = manifest_of(path);
    fs::resize_file(manifest, to_half ? fs::file_size(manifest) / 2 : 0);
    expect_refused(path, clock, "truncated MANIFEST");
  }
}

TEST(Store, RefusesADatabaseWithoutItsCurrentFile) {
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("data");
  ASSERT_NO_FATAL_FAILURE(make_database(path, clock));
  ASSERT_TRUE(fs::remove(fs::path(path) / "CURRENT"));
  expect_refused(path, clock, "missing CURRENT");
  EXPECT_FALSE(fs::exists(fs::path(path) / "CURRENT")) << "a new database was created over the old";
}

TEST(Store, RefusesADatabaseWithAMissingTableFile) {
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("data");
  ASSERT_NO_FATAL_FAILURE(make_database(path, clock));
  int removed = 0;
  for (const auto& entry : fs::directory_iterator(path)) {
    if (entry.path().extension() == ".sst") removed += fs::remove(entry.path()) ? 1 : 0;
  }
  ASSERT_GT(removed, 0);
  expect_refused(path, clock, "missing SST files");
}

TEST(Store, RefusesAForeignRocksDbDatabaseWithoutChangingIt) {
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("data");
  {
    rocksdb::Options raw_options;
    raw_options.create_if_missing = true;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(raw_options, path, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "their key", "their value").ok());
  }
  expect_refused(path, clock, "foreign RocksDB database");

  std::vector<std::string> families;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &families).ok());
  EXPECT_EQ(families, std::vector<std::string>{rocksdb::kDefaultColumnFamilyName});
}

TEST(Store, RefusesADatabaseWithoutTheSessiondFormatMarker) {
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("data");
  {
    // Every family sessiond uses, but no "format" key in `meta`: e.g. a database whose creation
    // was interrupted, or whose marker was deleted.
    rocksdb::DBOptions raw_options;
    raw_options.create_if_missing = true;
    raw_options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const char* name : {"default", "sessions", "users", "replog", "meta"}) {
      families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    rocksdb::DB* raw = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    ASSERT_TRUE(rocksdb::DB::Open(raw_options, path, families, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[1], test_id(1),
                        value_with_deadline(kNoDeadline, "v"))
                    .ok());
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  }
  auto opened = Store::open(options_at(path), clock);
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.status().message().find(path), std::string::npos) << opened.status().ToString();
  EXPECT_NE(opened.status().message().find("format marker"), std::string::npos)
      << opened.status().ToString();
}

TEST(Store, RefusesAnUnreadableDataDirectory) {
  if (::geteuid() == 0) {
    GTEST_SKIP() << "running as root: chmod 000 does not deny root access to a directory";
  }
  TempDir tmp;
  ManualClock clock;
  const std::string path = tmp.sub("data");
  ASSERT_NO_FATAL_FAILURE(make_database(path, clock));
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  auto opened = Store::open(options_at(path), clock);
  ::chmod(path.c_str(), 0700);  // so TempDir can remove it
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.status().message().find(path), std::string::npos) << opened.status().ToString();
}

}  // namespace
}  // namespace sessiond::storage
