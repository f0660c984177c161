// SessionTable's keyed access (rewrite, move, scan), which the RESP listener is built on: each
// decision kind, what the decision sees, atomic replacement with the user index kept right,
// limits, persistence through a real Store, and the scan guarantee under concurrent writes.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "storage/clock.h"
#include "storage/session_table.h"
#include "storage/store.h"
#include "tests/support/temp_dir.h"

namespace sessiond::storage {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

SessionId id_of(std::uint8_t n) {
  SessionId id{};
  // Spread over shards (bytes 8..15), hash slots (0..7) and scan positions (16..23).
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<std::uint8_t>(n * 37 + i * 11);
  return id;
}

class KeyedTest : public ::testing::Test {
 protected:
  KeyedTest() : table_(options(), clock_, nullptr) {}

  static TableOptions options() {
    TableOptions o;
    o.shard_count = 8;
    o.max_fields = 4;
    return o;
  }

  Status put(const SessionId& id, Fields fields, Timeouts timeouts = {}) {
    return table_.rewrite(id, [&](const Session*, std::int64_t, Rewrite* w) {
      w->kind = Rewrite::Kind::kPut;
      w->fields = fields;
      w->timeouts = timeouts;
    });
  }

  std::optional<Session> read(const SessionId& id) {
    Session s;
    if (!table_.get(id, {}, &s).ok()) return std::nullopt;
    return s;
  }

  ManualClock clock_;
  SessionTable table_;
};

TEST_F(KeyedTest, PutCreatesWithTheGivenIdAndTimeouts) {
  const SessionId id = id_of(1);
  ASSERT_TRUE(put(id, {{"V", "hello"}, {"K", "k"}}, {0, 5000}).ok());
  auto s = read(id);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->id, id);
  ASSERT_EQ(s->fields.size(), 2u);
  EXPECT_EQ(s->field("V")->value, "hello");
  EXPECT_EQ(s->deadline_ms(), clock_.now_ms() + 5000);
  EXPECT_EQ(table_.stats().creates, 1u);
  clock_.advance_ms(5000);
  EXPECT_FALSE(read(id));  // the absolute deadline is exact
}

TEST_F(KeyedTest, DecisionSeesTheAliveSessionOrNothing) {
  const SessionId id = id_of(2);
  int calls = 0;
  auto expect_none = [&](const Session* cur, std::int64_t now, Rewrite*) {
    ++calls;
    EXPECT_EQ(cur, nullptr);
    EXPECT_EQ(now, clock_.now_ms());
  };
  ASSERT_TRUE(table_.rewrite(id, expect_none).ok());
  ASSERT_TRUE(put(id, {{"V", "1"}}, {0, 1000}).ok());
  ASSERT_TRUE(table_
                  .rewrite(id,
                           [&](const Session* cur, std::int64_t, Rewrite*) {
                             ++calls;
                             ASSERT_NE(cur, nullptr);
                             EXPECT_EQ(cur->field("V")->value, "1");
                           })
                  .ok());
  clock_.advance_ms(1000);  // expired: seen as absent
  ASSERT_TRUE(table_.rewrite(id, expect_none).ok());
  EXPECT_EQ(calls, 3);
}

TEST_F(KeyedTest, PutReplacesEverythingIncludingTheUserIndexEntry) {
  NewSession req;
  req.user_id = "alice";
  req.fields = {{"a", "1"}, {"b", "2"}};
  auto native = table_.create(req);
  ASSERT_TRUE(native.ok());
  ASSERT_EQ(table_.list_user("alice").size(), 1u);
  ASSERT_TRUE(put(native->id, {{"c", "3"}}).ok());
  auto s = read(native->id);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->user_id, "");
  ASSERT_EQ(s->fields.size(), 1u);
  EXPECT_EQ(s->fields[0].name, "c");
  EXPECT_EQ(s->deadline_ms(), kNoDeadline);
  EXPECT_TRUE(table_.list_user("alice").empty());
  EXPECT_EQ(table_.stats().updates, 1u);
  EXPECT_EQ(table_.size(), 1u);
}

TEST_F(KeyedTest, ChangeMergesFieldsAndTimeouts) {
  const SessionId id = id_of(3);
  ASSERT_TRUE(put(id, {{"a", "1"}, {"b", "2"}}).ok());
  const std::int64_t created = read(id)->created_at_ms;
  clock_.advance_ms(100);
  ASSERT_TRUE(table_
                  .rewrite(id,
                           [](const Session*, std::int64_t, Rewrite* w) {
                             w->kind = Rewrite::Kind::kChange;
                             w->changes.set = {{"c", "3"}, {"a", "9"}};
                             w->changes.remove = {"b"};
                             w->changes.timeouts = Timeouts{0, 700};
                           })
                  .ok());
  auto s = read(id);
  ASSERT_TRUE(s);
  ASSERT_EQ(s->fields.size(), 2u);
  EXPECT_EQ(s->field("a")->value, "9");
  EXPECT_EQ(s->field("c")->value, "3");
  EXPECT_EQ(s->created_at_ms, created);
  EXPECT_EQ(s->deadline_ms(), created + 700);
}

TEST_F(KeyedTest, ChangeOfNothingIsNotFoundAndDeleteOfNothingIsFine) {
  const SessionId id = id_of(4);
  EXPECT_EQ(table_
                .rewrite(id, [](const Session*, std::int64_t,
                                Rewrite* w) { w->kind = Rewrite::Kind::kChange; })
                .code(),
            StatusCode::kNotFound);
  EXPECT_TRUE(table_
                  .rewrite(id, [](const Session*, std::int64_t,
                                  Rewrite* w) { w->kind = Rewrite::Kind::kDelete; })
                  .ok());
  ASSERT_TRUE(put(id, {{"a", "1"}}).ok());
  EXPECT_TRUE(table_
                  .rewrite(id, [](const Session*, std::int64_t,
                                  Rewrite* w) { w->kind = Rewrite::Kind::kDelete; })
                  .ok());
  EXPECT_FALSE(read(id));
  EXPECT_EQ(table_.size(), 0u);
}

TEST_F(KeyedTest, RefusedPutChangesNothing) {
  const SessionId id = id_of(5);
  ASSERT_TRUE(put(id, {{"a", "1"}}).ok());
  EXPECT_EQ(put(id, {{"a", "1"}, {"b", "1"}, {"c", "1"}, {"d", "1"}, {"e", "1"}}).code(),
            StatusCode::kTooLarge);  // max_fields = 4
  EXPECT_EQ(put(id, {{"x", "1"}, {"x", "2"}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(put(id, {{"a", "1"}}, {-1, 0}).code(), StatusCode::kInvalidArgument);
  auto s = read(id);
  ASSERT_TRUE(s);
  ASSERT_EQ(s->fields.size(), 1u);
  EXPECT_EQ(s->fields[0].name, "a");
}

TEST_F(KeyedTest, MoveReplacesTheTargetAndRemovesTheSource) {
  const SessionId from = id_of(6), to = id_of(7);
  ASSERT_TRUE(put(from, {{"v", "source"}}, {0, 9000}).ok());
  NewSession req;
  req.user_id = "bob";
  auto other = table_.create(req);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(put(to, {{"v", "target"}}).ok());
  clock_.advance_ms(1000);
  ASSERT_TRUE(table_
                  .move(from, to,
                        [&](const Session* src, std::int64_t now, Rewrite* w) {
                          ASSERT_NE(src, nullptr);
                          EXPECT_EQ(src->field("v")->value, "source");
                          w->kind = Rewrite::Kind::kPut;
                          w->fields = {{"v", src->field("v")->value + "!"}};
                          w->timeouts = {0, src->deadline_ms() - now};
                        })
                  .ok());
  EXPECT_FALSE(read(from));
  auto s = read(to);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->field("v")->value, "source!");
  EXPECT_EQ(s->deadline_ms(), clock_.now_ms() + 8000);  // the source's deadline kept
  EXPECT_EQ(table_.size(), 2u);                         // target + bob's
}

TEST_F(KeyedTest, MoveErrors) {
  const SessionId a = id_of(8), b = id_of(9);
  auto put_decision = [](const Session*, std::int64_t, Rewrite* w) {
    w->kind = Rewrite::Kind::kPut;
  };
  EXPECT_EQ(table_.move(a, b, put_decision).code(), StatusCode::kNotFound);
  ASSERT_TRUE(put(a, {{"v", "1"}}).ok());
  EXPECT_EQ(table_.move(a, a, put_decision).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(
      table_
          .move(a, b,
                [](const Session*, std::int64_t, Rewrite* w) { w->kind = Rewrite::Kind::kDelete; })
          .code(),
      StatusCode::kInvalidArgument);
  ASSERT_TRUE(table_.move(a, b, [](const Session*, std::int64_t, Rewrite*) {}).ok());  // keep
  EXPECT_TRUE(read(a));
  EXPECT_FALSE(read(b));
}

TEST_F(KeyedTest, BatchAppliesInOrderAndARepeatedIdSeesTheEarlierDecision) {
  const SessionId a = id_of(20), b = id_of(21), c = id_of(22);
  ASSERT_TRUE(put(c, {{"v", "old"}}).ok());
  std::vector<std::string> seen;
  auto append = [&](std::string value) {
    return [&, value](const Session* cur, std::int64_t, Rewrite* w) {
      seen.push_back(cur ? cur->field("v")->value : "-");
      w->kind = Rewrite::Kind::kPut;
      w->fields = {{"v", (cur ? cur->field("v")->value : "") + value}};
    };
  };
  auto first = append("1"), second = append("2"), third = append("3");
  auto change = [](const Session*, std::int64_t, Rewrite* w) { w->kind = Rewrite::Kind::kChange; };
  auto remove = [](const Session*, std::int64_t, Rewrite* w) { w->kind = Rewrite::Kind::kDelete; };
  const std::vector<SessionId> ids{a, b, a, c, b, c};
  const std::vector<RewriteFn> decides{first, second, third, change, remove, remove};
  std::vector<Status> statuses(ids.size());
  table_.rewrite_batch(ids, decides, statuses);
  EXPECT_EQ(seen, (std::vector<std::string>{"-", "-", "1"}));
  for (std::size_t i : {0, 1, 2, 4, 5}) EXPECT_TRUE(statuses[i].ok()) << i;
  EXPECT_EQ(statuses[3].code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(read(a)->field("v")->value, "13");
  EXPECT_FALSE(read(b));  // put, then deleted by a later decision
  EXPECT_FALSE(read(c));  // the refused kChange left it; the delete removed it
  EXPECT_EQ(table_.size(), 1u);
}

TEST_F(KeyedTest, BatchLimitsFailAloneAndBudgetsHold) {
  const SessionId a = id_of(23), b = id_of(24);
  auto too_many = [](const Session*, std::int64_t, Rewrite* w) {
    w->kind = Rewrite::Kind::kPut;
    w->fields = {{"a", ""}, {"b", ""}, {"c", ""}, {"d", ""}, {"e", ""}};  // max_fields = 4
  };
  auto fine = [](const Session*, std::int64_t, Rewrite* w) {
    w->kind = Rewrite::Kind::kPut;
    w->fields = {{"a", "1"}};
  };
  const std::vector<SessionId> ids{a, b};
  const std::vector<RewriteFn> decides{too_many, fine};
  std::vector<Status> statuses(2);
  table_.rewrite_batch(ids, decides, statuses);
  EXPECT_EQ(statuses[0].code(), StatusCode::kTooLarge);
  EXPECT_TRUE(statuses[1].ok());
  EXPECT_FALSE(read(a));
  EXPECT_TRUE(read(b));
}

// Every id alive for the whole walk comes back exactly once, while other ids come and go
// between pages, and a page is never far over its count.
TEST_F(KeyedTest, ScanReturnsEachLongLivedIdExactlyOnce) {
  std::set<SessionId> stable;
  for (int i = 0; i < 300; ++i) {
    NewSession req;
    auto m = table_.create(req);
    ASSERT_TRUE(m.ok());
    stable.insert(m->id);
  }
  std::map<SessionId, int> seen;
  std::vector<SessionId> churn;
  std::uint64_t cursor = 0;
  int pages = 0;
  do {
    const ScanPage page = table_.scan(cursor, 7);
    EXPECT_LE(page.ids.size(), 8u);
    for (const SessionId& id : page.ids) ++seen[id];
    // Churn: new sessions (which may land before or after the cursor) and deletions of them.
    for (int j = 0; j < 3; ++j) {
      NewSession req;
      auto m = table_.create(req);
      ASSERT_TRUE(m.ok());
      churn.push_back(m->id);
    }
    if (churn.size() > 4) {
      ASSERT_TRUE(table_.destroy(churn[churn.size() - 5]).ok());
      churn.erase(churn.end() - 5);
    }
    cursor = page.cursor;
    ASSERT_LT(++pages, 1000);
  } while (cursor != 0);
  for (const SessionId& id : stable) EXPECT_EQ(seen[id], 1);
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1);
}

// node-redis holds cursors in a double: they must stay exact there, whatever the shard count.
TEST(KeyedScan, CursorsFitADoubleWithTheMostShards) {
  ManualClock clock;
  TableOptions o;
  o.shard_count = 1u << 20;  // clamped to 2^16
  SessionTable table(o, clock, nullptr);
  std::set<SessionId> ids;
  for (int i = 0; i < 200; ++i) {
    auto m = table.create({});
    ASSERT_TRUE(m.ok());
    ids.insert(m->id);
  }
  std::set<SessionId> seen;
  std::uint64_t cursor = 0;
  std::uint64_t largest = 0;
  do {
    const ScanPage page = table.scan(cursor, 1);
    for (const SessionId& id : page.ids) EXPECT_TRUE(seen.insert(id).second);
    cursor = page.cursor;
    largest = std::max(largest, cursor);
    EXPECT_LT(cursor, std::uint64_t{1} << 53);
  } while (cursor != 0);
  EXPECT_EQ(seen, ids);
  EXPECT_GT(largest, std::uint64_t{1} << 48);  // the walk did reach the high shards
}

TEST_F(KeyedTest, ScanSkipsExpiredAndEndsOnAnUnknownCursor) {
  ASSERT_TRUE(put(id_of(10), {{"a", "1"}}, {0, 10}).ok());
  ASSERT_TRUE(put(id_of(11), {{"a", "1"}}).ok());
  clock_.advance_ms(10);
  std::vector<SessionId> all;
  std::uint64_t cursor = 0;
  do {
    ScanPage page = table_.scan(cursor, 100);
    all.insert(all.end(), page.ids.begin(), page.ids.end());
    cursor = page.cursor;
  } while (cursor != 0);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], id_of(11));
  const ScanPage past = table_.scan(std::uint64_t{1} << 62, 10);
  EXPECT_TRUE(past.ids.empty());
  EXPECT_EQ(past.cursor, 0u);
}

TEST(KeyedPersistence, RewritesAndMovesSurviveAReopen) {
  sessiond::testing::TempDir dir;
  ManualClock clock;
  StoreOptions so;
  so.path = dir.path().string();
  so.durability = Durability::kSync;
  const SessionId a = id_of(12), b = id_of(13), c = id_of(14);
  {
    auto store = Store::open(so, clock);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    SessionTable table({}, clock, store->get());
    ASSERT_TRUE(table.recover().ok());
    auto put = [&](const SessionId& id, std::string v) {
      return table.rewrite(id, [&](const Session*, std::int64_t, Rewrite* w) {
        w->kind = Rewrite::Kind::kPut;
        w->fields = {{"v", v}};
        w->timeouts = {0, 60'000};
      });
    };
    ASSERT_TRUE(put(a, "a").ok());
    ASSERT_TRUE(put(b, "b").ok());
    ASSERT_TRUE(put(c, "c").ok());
    ASSERT_TRUE(table
                    .move(a, b,
                          [](const Session* src, std::int64_t, Rewrite* w) {
                            w->kind = Rewrite::Kind::kPut;
                            w->fields = {{"v", src->field("v")->value + "-moved"}};
                          })
                    .ok());
    ASSERT_TRUE(table
                    .rewrite(c, [](const Session*, std::int64_t,
                                   Rewrite* w) { w->kind = Rewrite::Kind::kDelete; })
                    .ok());
    // A batch: one write for several keys.
    const SessionId d = id_of(15), e = id_of(16);
    auto put_d = [](const Session*, std::int64_t, Rewrite* w) {
      w->kind = Rewrite::Kind::kPut;
      w->fields = {{"v", "d"}};
    };
    const std::vector<SessionId> ids{d, e, e};
    auto remove_e = [](const Session*, std::int64_t, Rewrite* w) {
      w->kind = Rewrite::Kind::kDelete;
    };
    // RewriteFn refers to its callable: the lambdas must outlive the call.
    const std::vector<RewriteFn> decides{put_d, put_d, remove_e};
    std::vector<Status> statuses(3);
    table.rewrite_batch(ids, decides, statuses);
    for (const Status& st : statuses) ASSERT_TRUE(st.ok()) << st.ToString();
  }
  auto store = Store::open(so, clock);
  ASSERT_TRUE(store.ok());
  SessionTable table({}, clock, store->get());
  auto report = table.recover();
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->loaded, 2u);  // b, and d of the batch (e was put, then deleted)
  Session s;
  EXPECT_FALSE(table.get(a, {}, &s).ok());
  EXPECT_FALSE(table.get(c, {}, &s).ok());
  EXPECT_FALSE(table.get(id_of(16), {}, &s).ok());
  ASSERT_TRUE(table.get(id_of(15), {}, &s).ok());
  EXPECT_EQ(s.field("v")->value, "d");
  ASSERT_TRUE(table.get(b, {}, &s).ok());
  EXPECT_EQ(s.field("v")->value, "a-moved");
  EXPECT_EQ(s.deadline_ms(), kNoDeadline);
}

}  // namespace
}  // namespace sessiond::storage
