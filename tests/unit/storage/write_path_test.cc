// The table's one write path (DESIGN §6): every change is a Mutation, written with its
// replication-log entry in one batch and then handed to the observers; and the parts of review
// findings 5 and 6 that the write path fixes (one batch per expirer pass over a shard, small
// log entries for touches, log cursors per consumer).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "storage/clock.h"
#include "storage/mutation.h"
#include "storage/session_table.h"
#include "storage/store.h"
#include "tests/support/temp_dir.h"

namespace sessiond::storage {
namespace {

using sessiond::testing::TempDir;

constexpr std::int64_t kMinute = 60'000;

struct Seen {
  Mutation::Kind kind;
  SessionId id;
  std::string user;
  std::uint64_t seq;
  bool has_value;
};

class WritePathTest : public ::testing::Test {
 protected:
  void open(TableOptions options = {}, bool log = true) {
    StoreOptions so;
    so.path = tmp_.sub("data");
    so.durability = Durability::kMemory;
    so.replication_log = log;
    so.write_buffer_bytes = 1u << 20;
    so.block_cache_bytes = 1u << 20;
    auto store = Store::open(so, clock_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    options.region = 3;
    options.node = 7;
    table_ = std::make_unique<SessionTable>(options, clock_, store_.get());
    ASSERT_TRUE(table_->recover().ok());
    handle_ = table_->on_change([this](const Mutation& m, std::uint64_t seq) {
      std::lock_guard lock(mu_);
      seen_.push_back({m.kind, m.id, std::string(m.user), seq, !m.value.empty()});
      EXPECT_EQ(m.origin, (Origin{3, 7, false})) << "local writes carry this node's origin";
    });
  }
  std::vector<Seen> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }
  std::vector<std::pair<std::uint64_t, Mutation::Kind>> log() {
    std::vector<std::pair<std::uint64_t, Mutation::Kind>> out;
    EXPECT_TRUE(
        store_
            ->for_each_log_entry(
                0, [&](std::uint64_t seq, const Mutation& m) { out.emplace_back(seq, m.kind); })
            .ok());
    return out;
  }

  TempDir tmp_;
  ManualClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<SessionTable> table_;
  std::uint64_t handle_ = 0;
  std::mutex mu_;  // guards seen_
  std::vector<Seen> seen_;
};

TEST_F(WritePathTest, ObserversSeeEveryChangeInTheOrderOfTheLog) {
  TableOptions options;
  options.touch_persist_fraction = 0;  // every touch persists
  open(options);
  NewSession request;
  request.user_id = "alice";
  request.fields = {{"cart", "3"}};
  auto a = table_->create(request);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(table_->update(a->id, FieldChanges{{{"cart", "4"}}, {}, {}}).ok());
  clock_.advance_ms(1000);
  ASSERT_TRUE(table_->touch(a->id).ok());
  auto b = table_->regenerate(a->id);
  ASSERT_TRUE(b.ok());
  auto c = table_->create(request);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(table_->revoke_user("alice", &c->id).value(), 1u);
  ASSERT_TRUE(table_->destroy(c->id).ok());

  using K = Mutation::Kind;
  const std::vector<std::pair<K, SessionId>> expected = {
      {K::kPut, a->id},
      {K::kPut, a->id},
      {K::kTouch, a->id},
      {K::kPut, b->id},
      {K::kEnd, a->id},
      {K::kPut, c->id},
      {K::kGeneration, {}},  // REVOKE_USER raises the user's
                             // generation, then ends b
      {K::kEnd, b->id},
      {K::kEnd, c->id}};
  const auto got = seen();
  ASSERT_EQ(got.size(), expected.size());
  const auto entries = log();
  ASSERT_EQ(entries.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(got[i].kind, expected[i].first) << "mutation " << i;
    EXPECT_EQ(got[i].id, expected[i].second) << "mutation " << i;
    EXPECT_EQ(got[i].user, "alice") << "mutation " << i;
    EXPECT_EQ(got[i].seq, entries[i].first) << "observers get the log sequence of the mutation";
    EXPECT_EQ(entries[i].second, expected[i].first) << "log entry " << i;
  }
}

TEST_F(WritePathTest, ARemovedObserverIsNotCalledAgain) {
  open();
  ASSERT_TRUE(table_->create(NewSession{}).ok());
  table_->remove_observer(handle_);
  ASSERT_TRUE(table_->create(NewSession{}).ok());
  EXPECT_EQ(seen().size(), 1u);
}

TEST_F(WritePathTest, ObserversSeeWritesWithoutAStoreOrALog) {
  open({}, /*log=*/false);
  ASSERT_TRUE(table_->create(NewSession{}).ok());
  const auto got = seen();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].seq, 0u) << "no log, no sequence";
  EXPECT_TRUE(log().empty());
}

// Review finding 6: a touch went into the log as the whole record (here 64 KiB), and so did
// every put, doubling what each write cost with the log on. Now a touch logs its last access,
// a put names its session, and the shipper reads the state when it ships (state_of).
TEST_F(WritePathTest, PutsAndTouchesGoIntoTheLogAsSmallEntries) {
  TableOptions options;
  options.touch_persist_fraction = 0;
  open(options);
  NewSession request;
  request.fields = {{"blob", std::string(64 << 10, 'x')}};
  auto created = table_->create(request);
  ASSERT_TRUE(created.ok());
  clock_.advance_ms(5000);
  ASSERT_TRUE(table_->touch(created->id).ok());
  std::vector<std::pair<Mutation::Kind, std::size_t>> entries;
  std::int64_t touched_at = 0;
  ASSERT_TRUE(store_
                  ->for_each_log_entry(0,
                                       [&](std::uint64_t, const Mutation& m) {
                                         entries.emplace_back(m.kind, m.value.size());
                                         if (m.kind == Mutation::Kind::kTouch) {
                                           touched_at = m.last_access_ms;
                                         }
                                       })
                  .ok());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].first, Mutation::Kind::kPut);
  EXPECT_EQ(entries[0].second, 0u) << "a put names its session";
  EXPECT_EQ(entries[1].first, Mutation::Kind::kTouch);
  EXPECT_EQ(entries[1].second, 0u) << "a touch ships its last access, not the record";
  EXPECT_EQ(touched_at, clock_.now_ms());
  // What a shipper sends for the put: the state now, which another table takes whole.
  std::string value;
  ASSERT_EQ(table_->state_of(created->id, &value).value(), Mutation::Kind::kPut);
  ManualClock other_clock(clock_.now_ms());
  SessionTable other(TableOptions{}, other_clock, nullptr);
  Mutation put;
  put.id = created->id;
  put.value = value;
  put.origin = Origin{3, 7, false};
  ASSERT_EQ(other.apply(put).value(), ApplyOutcome::kApplied);
  Session s;
  ASSERT_TRUE(other.get(created->id, {}, &s).ok());
  EXPECT_EQ(s.last_access_ms, clock_.now_ms()) << "the state includes the touch";
  EXPECT_EQ(s.fields[0].value.size(), 64u << 10);
  ASSERT_TRUE(table_->destroy(created->id).ok());
  EXPECT_EQ(table_->state_of(created->id, &value).value(), Mutation::Kind::kEnd);
  SessionId unknown{};
  EXPECT_EQ(table_->state_of(unknown, &value).status().code(), StatusCode::kNotFound);
}

// Review finding 5: the expirer's catch-up writes were one RocksDB write per record under the
// shard lock.
TEST_F(WritePathTest, TheExpirerCatchesUpAShardInOneBatch) {
  TableOptions options;
  options.shard_count = 1;
  options.touch_persist_fraction = 0.5;
  open(options, /*log=*/false);
  NewSession request;
  request.timeouts = Timeouts{10 * kMinute, 0};
  std::vector<SessionId> ids;
  for (int i = 0; i < 300; ++i) ids.push_back(table_->create(request).value().id);
  clock_.advance_ms(2 * kMinute);
  for (const SessionId& id : ids) ASSERT_TRUE(table_->touch(id).ok());  // coalesced
  ASSERT_EQ(table_->stats().touches_coalesced, 300u);
  clock_.advance_ms(8 * kMinute);  // the on-disk deadlines come due; the true ones are 2 min on
  const std::uint64_t before = store_->batches_written();
  EXPECT_EQ(table_->expire_due(), 0u);
  EXPECT_EQ(store_->batches_written() - before, 1u) << "one batch for the shard's catch-ups";
  EXPECT_EQ(table_->stats().touches_persisted, 300u);
  EXPECT_EQ(table_->expire_due(), 0u);
  EXPECT_EQ(store_->batches_written() - before, 1u) << "nothing left to catch up";
  for (const SessionId& id : ids) {
    Session s;
    ASSERT_TRUE(table_->get(id, {}, &s).ok());
  }
}

// With peer regions (issue 14): a coalesced touch or recorded access is logged within
// pending_touch_ship_ms, as a small kTouch entry, though the slack would let it wait.
TEST_F(WritePathTest, PendingTouchesAndAccessesAreLoggedWithinTheShipInterval) {
  TableOptions options;
  options.shard_count = 4;
  options.touch_persist_fraction = 0.5;
  options.pending_touch_ship_ms = 5000;
  open(options);
  NewSession request;
  request.timeouts = Timeouts{10 * kMinute, 0};
  const SessionId touched = table_->create(request).value().id;
  const SessionId accessed = table_->create(request).value().id;
  const SessionId idle = table_->create(request).value().id;
  const std::size_t entries_before = log().size();
  clock_.advance_ms(1000);
  ASSERT_TRUE(table_->touch(touched).ok());
  ASSERT_TRUE(table_->touch(touched).ok());  // pending once, written once
  AccessEntry a;
  a.ip = "10.0.0.1";
  ReadOptions ro;
  ro.record_access = &a;
  Session s;
  ASSERT_TRUE(table_->get(accessed, ro, &s).ok());
  EXPECT_EQ(table_->stats().touches_persisted, 0u) << "coalesced: the slack allows 5 minutes";
  table_->expire_due();
  EXPECT_EQ(log().size(), entries_before) << "not yet: within the interval";
  clock_.advance_ms(5000);
  table_->expire_due();
  const auto entries = log();
  ASSERT_EQ(entries.size(), entries_before + 2) << "one small entry per pending session";
  EXPECT_EQ(entries[entries_before].second, Mutation::Kind::kTouch);
  EXPECT_EQ(entries[entries_before + 1].second, Mutation::Kind::kTouch);
  std::set<SessionId> logged;
  for (const auto& seen_one : seen()) {
    if (seen_one.kind == Mutation::Kind::kTouch) logged.insert(seen_one.id);
  }
  EXPECT_EQ(logged, (std::set<SessionId>{touched, accessed}));
  EXPECT_FALSE(logged.contains(idle));
  // Nothing pending any more: the next round writes nothing.
  clock_.advance_ms(5000);
  table_->expire_due();
  EXPECT_EQ(log().size(), entries_before + 2);
}

// ---- the log's consumers ----------------------------------------------------------------------

Mutation put_of(std::uint32_t n, const std::string& value) {
  Mutation m;
  m.id[0] = static_cast<std::uint8_t>(n >> 24);
  m.id[1] = static_cast<std::uint8_t>(n >> 16);
  m.id[2] = static_cast<std::uint8_t>(n >> 8);
  m.id[3] = static_cast<std::uint8_t>(n);
  m.value = value;
  m.deadline_ms = kNoDeadline;
  return m;
}

std::vector<std::uint64_t> log_seqs(const Store& store) {
  std::vector<std::uint64_t> out;
  EXPECT_TRUE(
      store.for_each_log_entry(0, [&](std::uint64_t seq, const Mutation&) { out.push_back(seq); })
          .ok());
  return out;
}

TEST(StoreLog, IsTrimmedBelowTheSlowestCursorAndCursorsSurviveAReopen) {
  TempDir tmp;
  ManualClock clock;
  StoreOptions so;
  so.path = tmp.sub("data");
  so.replication_log = true;
  so.write_buffer_bytes = 1u << 20;
  const std::string value(16, 'v');
  {
    auto store = Store::open(so, clock).value();
    ASSERT_TRUE(store->set_log_cursor("replica-b", 600).ok());
    ASSERT_TRUE(store->set_log_cursor("region-eu", 1500).ok());
    for (std::uint32_t n = 1; n <= 1100; ++n) {
      const Mutation m = put_of(n, value);
      ASSERT_TRUE(store->write(std::span(&m, 1)).ok());
    }
    const auto seqs = log_seqs(*store);
    ASSERT_FALSE(seqs.empty());
    EXPECT_EQ(seqs.front(), 600u) << "trimmed at 1024 below the slowest consumer, and no further";
    EXPECT_EQ(seqs.back(), 1100u);
  }
  auto store = Store::open(so, clock).value();
  EXPECT_EQ(store->log_cursor("replica-b"), 600u);
  EXPECT_EQ(store->log_cursor("region-eu"), 1500u);
  EXPECT_EQ(store->log_cursor("nobody"), std::nullopt);
  ASSERT_TRUE(store->drop_log_cursor("replica-b").ok());
  EXPECT_EQ(store->log_cursor("replica-b"), std::nullopt);
  for (std::uint32_t n = 1101; n <= 2048; ++n) {
    const Mutation m = put_of(n, value);
    ASSERT_TRUE(store->write(std::span(&m, 1)).ok());
  }
  EXPECT_EQ(log_seqs(*store).front(), 1500u) << "the slowest consumer left is region-eu";
}

TEST(StoreLog, TheRetentionCapTrimsPastASlowConsumer) {
  TempDir tmp;
  ManualClock clock;
  StoreOptions so;
  so.path = tmp.sub("data");
  so.replication_log = true;
  so.replication_log_retention = 100;
  auto store = Store::open(so, clock).value();
  ASSERT_TRUE(store->set_log_cursor("stuck", 1).ok());
  const std::string value(16, 'v');
  for (std::uint32_t n = 1; n <= 1030; ++n) {
    const Mutation m = put_of(n, value);
    ASSERT_TRUE(store->write(std::span(&m, 1)).ok());
  }
  EXPECT_EQ(log_seqs(*store).front(), 1024u - 100u);
}

// Sequence numbers are taken without a lock across the write, so entries land out of order for
// a moment; a reader that stops at log_committed() still never skips one.
TEST(StoreLog, AReaderNeverPassesAnEntryStillBeingWritten) {
  TempDir tmp;
  ManualClock clock;
  StoreOptions so;
  so.path = tmp.sub("data");
  so.durability = Durability::kMemory;
  so.replication_log = true;
  auto store = Store::open(so, clock).value();
  constexpr int kThreads = 4;
  constexpr std::uint32_t kEach = 500;
  std::atomic<int> running{kThreads};
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      const std::string value(32, static_cast<char>('a' + t));
      for (std::uint32_t n = 0; n < kEach; ++n) {
        const Mutation m = put_of(static_cast<std::uint32_t>(t) * kEach + n, value);
        EXPECT_TRUE(store->write(std::span(&m, 1)).ok());
      }
      running.fetch_sub(1);
    });
  }
  std::uint64_t next = 1;  // the reader's cursor
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (next <= kThreads * kEach && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(store
                    ->for_each_log_entry(next,
                                         [&](std::uint64_t seq, const Mutation&) {
                                           ASSERT_EQ(seq, next) << "an entry was skipped";
                                           ++next;
                                         })
                    .ok());
    if (running.load() == 0) std::this_thread::yield();
  }
  for (auto& w : writers) w.join();
  EXPECT_EQ(next, std::uint64_t{kThreads * kEach + 1});
  EXPECT_EQ(store->log_committed(), std::uint64_t{kThreads * kEach});
}

}  // namespace
}  // namespace sessiond::storage
