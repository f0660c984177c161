// One test per operation and per timeout rule of SessionTable, in memory (no store) with a
// ManualClock. Persistence is covered by persistence_test.cc.
#include "storage/session_table.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <thread>

namespace sessiond::storage {
namespace {

constexpr std::int64_t kIdle = 10'000;
constexpr std::int64_t kAbsolute = 60'000;

class SessionTableTest : public ::testing::Test {
 protected:
  SessionTableTest() : table_(options(), clock_, nullptr) {}

  static TableOptions options() {
    TableOptions o;
    o.shard_count = 8;
    o.default_timeouts = {kIdle, kAbsolute};
    o.access_log_length = 3;
    return o;
  }

  SessionMeta make(std::string user = "alice",
                   std::vector<std::pair<std::string, std::string>> fields = {{"cart", "[]"}},
                   std::optional<Timeouts> timeouts = std::nullopt) {
    NewSession req;
    req.user_id = std::move(user);
    req.fields = std::move(fields);
    req.timeouts = timeouts;
    auto meta = table_.create(req);
    EXPECT_TRUE(meta.ok()) << meta.status().ToString();
    return *meta;
  }

  StatusCode get_code(const SessionId& id, bool touch = false) {
    Session s;
    ReadOptions ro;
    ro.touch = touch;
    return table_.get(id, ro, &s).code();
  }

  Session read(const SessionId& id) {
    Session s;
    Status st = table_.get(id, {}, &s);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return s;
  }

  ManualClock clock_;
  SessionTable table_;
};

TEST_F(SessionTableTest, CreateThenGetReturnsTheSession) {
  const std::int64_t t0 = clock_.now_ms();
  SessionMeta m = make("alice", {{"role", "admin"}, {"cart", "[1]"}});
  EXPECT_EQ(m.created_at_ms, t0);
  EXPECT_EQ(m.last_access_ms, t0);
  EXPECT_EQ(m.deadline_ms, t0 + kIdle);
  Session s = read(m.id);
  EXPECT_EQ(s.id, m.id);
  EXPECT_EQ(s.user_id, "alice");
  ASSERT_EQ(s.fields.size(), 2u);
  EXPECT_EQ(s.fields[0].name, "cart");  // sorted by name
  EXPECT_EQ(s.field("role")->value, "admin");
  EXPECT_EQ(s.timeouts, (Timeouts{kIdle, kAbsolute}));
  EXPECT_EQ(s.version, m.version);
  EXPECT_EQ(table_.stats().sessions, 1u);
  EXPECT_EQ(table_.stats().creates, 1u);
}

TEST_F(SessionTableTest, CreateUsesPresetOrExplicitTimeouts) {
  SessionMeta m = make("", {}, preset_timeouts(Preset::kFinance));
  EXPECT_EQ(read(m.id).timeouts, preset_timeouts(Preset::kFinance));
  EXPECT_EQ(m.deadline_ms, clock_.now_ms() + 10 * 60'000);
  SessionMeta n = make("", {}, Timeouts{0, 0});
  EXPECT_EQ(n.deadline_ms, clock_.now_ms() + options().max_lifetime_ms)
      << "no timeouts: the lifetime cap still ends it";
}

TEST_F(SessionTableTest, CreateRejectsBadInputWithClearStatus) {
  NewSession dup;
  dup.fields = {{"a", "1"}, {"a", "2"}};
  auto r = table_.create(dup);
  EXPECT_EQ(r.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'a'"), std::string::npos);

  NewSession empty_name;
  empty_name.fields = {{"", "1"}};
  EXPECT_EQ(table_.create(empty_name).code(), StatusCode::kInvalidArgument);

  NewSession negative;
  negative.timeouts = Timeouts{-1, 0};
  EXPECT_EQ(table_.create(negative).code(), StatusCode::kInvalidArgument);

  NewSession long_name;
  long_name.fields = {{std::string(257, 'n'), "v"}};
  EXPECT_EQ(table_.create(long_name).code(), StatusCode::kTooLarge);

  NewSession big;
  big.fields = {{"blob", std::string((1u << 20) + 1, 'x')}};
  EXPECT_EQ(table_.create(big).code(), StatusCode::kTooLarge);

  NewSession many;
  for (int i = 0; i < 257; ++i) many.fields.push_back({"f" + std::to_string(i), ""});
  EXPECT_EQ(table_.create(many).code(), StatusCode::kTooLarge);

  NewSession long_user;
  long_user.user_id = std::string(257, 'u');
  EXPECT_EQ(table_.create(long_user).code(), StatusCode::kTooLarge);
  EXPECT_EQ(table_.stats().sessions, 0u);
}

TEST_F(SessionTableTest, CreateBatchCreatesValidRequestsAndRejectsInvalidOnesAlone) {
  std::vector<NewSession> batch(4);
  batch[0].user_id = "alice";
  batch[0].fields = {{"k", "0"}};
  batch[1].fields = {{"dup", "1"}, {"dup", "2"}};  // invalid
  batch[2].user_id = "alice";
  batch[2].fields = {{"k", "2"}};
  batch[3].timeouts = Timeouts{-5, 0};  // invalid
  auto results = table_.create_batch(batch);
  ASSERT_EQ(results.size(), 4u);
  ASSERT_TRUE(results[0].ok());
  EXPECT_EQ(results[1].code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(results[2].ok());
  EXPECT_EQ(results[3].code(), StatusCode::kInvalidArgument);
  EXPECT_NE(results[0]->id, results[2]->id);
  EXPECT_EQ(read(results[0]->id).field("k")->value, "0");
  EXPECT_EQ(read(results[2]->id).field("k")->value, "2");
  EXPECT_EQ(table_.list_user("alice").size(), 2u);
  EXPECT_EQ(table_.stats().creates, 2u);
  EXPECT_EQ(table_.stats().sessions, 2u);
}

TEST_F(SessionTableTest, CreateBatchLargerThanOneWriteGroup) {
  // Groups of 32 share a write; results still line up with requests across groups.
  std::vector<NewSession> batch(100);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    batch[i].fields = {{"n", std::to_string(i)}};
    if (i == 40) batch[i].fields.push_back({"n", "dup"});  // invalid, in the second group
  }
  auto results = table_.create_batch(batch);
  ASSERT_EQ(results.size(), batch.size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (i == 40) {
      EXPECT_EQ(results[i].code(), StatusCode::kInvalidArgument);
      continue;
    }
    ASSERT_TRUE(results[i].ok()) << i;
    EXPECT_EQ(read(results[i]->id).field("n")->value, std::to_string(i));
  }
  EXPECT_EQ(table_.stats().sessions, 99u);
}

TEST_F(SessionTableTest, UnknownIdIsNotFound) {
  EXPECT_EQ(get_code(new_session_id()), StatusCode::kNotFound);
  EXPECT_EQ(table_.touch(new_session_id()).code(), StatusCode::kNotFound);
  EXPECT_EQ(table_.destroy(new_session_id()).code(), StatusCode::kNotFound);
  EXPECT_EQ(table_.update(new_session_id(), {}).code(), StatusCode::kNotFound);
  EXPECT_EQ(table_.regenerate(new_session_id()).code(), StatusCode::kNotFound);
}

TEST_F(SessionTableTest, DeadlineExactlyNowIsExpired) {
  SessionMeta m = make();
  clock_.set_ms(m.deadline_ms - 1);
  EXPECT_EQ(get_code(m.id), StatusCode::kOk);
  clock_.set_ms(m.deadline_ms);
  EXPECT_EQ(get_code(m.id), StatusCode::kExpired);
  // The reader removed it; a second read no longer knows it.
  EXPECT_EQ(get_code(m.id), StatusCode::kNotFound);
  EXPECT_EQ(table_.stats().sessions, 0u);
}

TEST_F(SessionTableTest, ReadWithoutTouchDoesNotSlide) {
  SessionMeta m = make();
  clock_.advance_ms(kIdle - 1);
  EXPECT_EQ(get_code(m.id, /*touch=*/false), StatusCode::kOk);
  clock_.advance_ms(1);
  EXPECT_EQ(get_code(m.id), StatusCode::kExpired);
}

TEST_F(SessionTableTest, ReadWithTouchSlidesIdleDeadline) {
  SessionMeta m = make();
  for (int i = 0; i < 5; ++i) {
    clock_.advance_ms(kIdle - 1);
    EXPECT_EQ(get_code(m.id, /*touch=*/true), StatusCode::kOk) << i;
  }
  Session s = read(m.id);
  EXPECT_EQ(s.last_access_ms, clock_.now_ms());
  EXPECT_EQ(s.deadline_ms(), clock_.now_ms() + kIdle);
}

TEST_F(SessionTableTest, TouchNeverPassesAbsoluteDeadline) {
  SessionMeta m = make();
  const std::int64_t absolute = m.created_at_ms + kAbsolute;
  while (clock_.now_ms() + kIdle / 2 < absolute) {
    clock_.advance_ms(kIdle / 2);
    auto t = table_.touch(m.id);
    ASSERT_TRUE(t.ok());
    EXPECT_LE(t->deadline_ms, absolute);
  }
  auto t = table_.touch(m.id);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->deadline_ms, absolute);
  clock_.set_ms(absolute);
  EXPECT_EQ(table_.touch(m.id).code(), StatusCode::kExpired);
}

TEST_F(SessionTableTest, TouchAfterAbsoluteDeadlineDoesNotRevive) {
  SessionMeta m = make("", {}, Timeouts{kIdle, kIdle / 2});
  clock_.advance_ms(kIdle / 2);
  EXPECT_EQ(table_.touch(m.id).code(), StatusCode::kExpired);
  EXPECT_EQ(get_code(m.id, true), StatusCode::kNotFound);
}

TEST_F(SessionTableTest, AbsoluteShorterThanIdleExpiresAtAbsolute) {
  SessionMeta m = make("", {}, Timeouts{kIdle, 1000});
  EXPECT_EQ(m.deadline_ms, m.created_at_ms + 1000);
  clock_.advance_ms(999);
  EXPECT_EQ(table_.touch(m.id)->deadline_ms, m.created_at_ms + 1000);
  clock_.advance_ms(1);
  EXPECT_EQ(get_code(m.id), StatusCode::kExpired);
}

TEST_F(SessionTableTest, IdleOnlySessionSlidesForever) {
  SessionMeta m = make("", {}, Timeouts{kIdle, 0});
  for (int i = 0; i < 100; ++i) {
    clock_.advance_ms(kIdle - 1);
    ASSERT_TRUE(table_.touch(m.id).ok()) << i;
  }
}

TEST_F(SessionTableTest, GetBatchAnswersLikeGetForEachId) {
  SessionMeta a = make("alice", {{"k", "a"}});
  SessionMeta b = make("bob", {{"k", "b"}}, Timeouts{kIdle / 2, 0});
  SessionMeta c = make("carol", {{"k", "c"}});
  clock_.advance_ms(kIdle / 2);  // b is now expired
  const std::vector<SessionId> ids = {a.id, new_session_id(), b.id, c.id, a.id};
  std::vector<Session> out(ids.size());
  std::vector<Status> statuses(ids.size());
  ReadOptions touch;
  touch.touch = true;
  table_.get_batch(ids, touch, out, statuses);
  EXPECT_TRUE(statuses[0].ok());
  EXPECT_EQ(statuses[1].code(), StatusCode::kNotFound);
  EXPECT_EQ(statuses[2].code(), StatusCode::kExpired);
  EXPECT_TRUE(statuses[3].ok());
  EXPECT_TRUE(statuses[4].ok());
  EXPECT_EQ(out[0].field("k")->value, "a");
  EXPECT_EQ(out[3].field("k")->value, "c");
  EXPECT_EQ(out[3].last_access_ms, clock_.now_ms());  // touched
  EXPECT_EQ(out[4].id, a.id);
}

// A hint only: over live, expired and unknown ids it changes no session and counts no read.
TEST_F(SessionTableTest, PrefetchChangesNothing) {
  SessionMeta a = make("alice", {{"k", "a"}});
  SessionMeta b = make("bob", {{"k", "b"}}, Timeouts{kIdle / 2, 0});
  clock_.advance_ms(kIdle / 2);  // b is now expired, and not yet removed
  const auto before = table_.stats();
  table_.prefetch(std::vector<SessionId>{a.id, b.id, new_session_id(), a.id});
  const auto after = table_.stats();
  EXPECT_EQ(after.sessions, before.sessions);
  EXPECT_EQ(after.read_hits, before.read_hits);
  EXPECT_EQ(after.read_misses, before.read_misses);
  EXPECT_EQ(read(a.id).last_access_ms, a.last_access_ms);  // not touched
  Session out;
  EXPECT_EQ(table_.get(b.id, ReadOptions{}, &out).code(), StatusCode::kExpired);
}

TEST_F(SessionTableTest, UpdateSetsRemovesBumpsVersionAndSlides) {
  SessionMeta m = make("alice", {{"a", "1"}, {"b", "2"}});
  clock_.advance_ms(kIdle - 1);
  FieldChanges ch;
  ch.set = {{"c", "3"}, {"a", "one"}};
  ch.remove = {"b", "not-there"};
  auto u = table_.update(m.id, ch);
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_GT(u->version, m.version);
  EXPECT_EQ(u->last_access_ms, clock_.now_ms());
  Session s = read(m.id);
  ASSERT_EQ(s.fields.size(), 2u);
  EXPECT_EQ(s.field("a")->value, "one");
  EXPECT_EQ(s.field("c")->value, "3");
  EXPECT_EQ(s.field("b"), nullptr);
  EXPECT_EQ(s.user_id, "alice");
  EXPECT_EQ(s.version, u->version);
}

TEST_F(SessionTableTest, UpdateKeepsVersionsOfUntouchedFields) {
  SessionMeta m = make("", {{"a", "1"}, {"b", "2"}});
  FieldChanges ch;
  ch.set = {{"b", "22"}};
  auto u = table_.update(m.id, ch);
  ASSERT_TRUE(u.ok());
  Session s = read(m.id);
  EXPECT_EQ(s.field("a")->version, m.version);
  EXPECT_EQ(s.field("b")->version, u->version);
}

TEST_F(SessionTableTest, UpdateWithExpectedVersion) {
  SessionMeta m = make();
  FieldChanges ch;
  ch.set = {{"x", "1"}};
  auto first = table_.update(m.id, ch, m.version);
  ASSERT_TRUE(first.ok());
  // The version m carried is now stale.
  EXPECT_EQ(table_.update(m.id, ch, m.version).code(), StatusCode::kVersionConflict);
  EXPECT_TRUE(table_.update(m.id, ch, first->version).ok());
}

TEST_F(SessionTableTest, UpdateCanChangeTimeouts) {
  SessionMeta m = make();
  FieldChanges ch;
  ch.timeouts = Timeouts{1000, 0};
  auto u = table_.update(m.id, ch);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->deadline_ms, clock_.now_ms() + 1000);
  clock_.advance_ms(1000);
  EXPECT_EQ(get_code(m.id), StatusCode::kExpired);
}

TEST_F(SessionTableTest, UpdateRejectsDuplicatesAndLimits) {
  SessionMeta m = make();
  FieldChanges dup;
  dup.set = {{"x", "1"}, {"x", "2"}};
  EXPECT_EQ(table_.update(m.id, dup).code(), StatusCode::kInvalidArgument);
  FieldChanges big;
  big.set = {{"x", std::string(1u << 20, 'x')}};
  EXPECT_EQ(table_.update(m.id, big).code(), StatusCode::kTooLarge);
  EXPECT_EQ(read(m.id).version, m.version);  // nothing applied
}

TEST_F(SessionTableTest, UpdateOfExpiredSessionFails) {
  SessionMeta m = make();
  clock_.advance_ms(kIdle);
  EXPECT_EQ(table_.update(m.id, {}).code(), StatusCode::kExpired);
}

TEST_F(SessionTableTest, DestroyRemovesSessionAndUserIndexEntry) {
  SessionMeta a = make("alice");
  SessionMeta b = make("alice");
  EXPECT_TRUE(table_.destroy(a.id).ok());
  EXPECT_EQ(get_code(a.id), StatusCode::kNotFound);
  EXPECT_EQ(table_.destroy(a.id).code(), StatusCode::kNotFound);
  auto list = table_.list_user("alice");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, b.id);
  EXPECT_TRUE(table_.destroy(b.id).ok());
  EXPECT_TRUE(table_.list_user("alice").empty());
  EXPECT_EQ(table_.stats().users, 0u);
}

// The index keeps a user's first sessions in a short vector and moves them to a hash set past
// 16: across the move, and back below it, it lists, drops and revokes exactly the user's own.
TEST_F(SessionTableTest, UserIndexHoldsAUserWithManySessionsExactly) {
  std::set<SessionId> alive;
  for (int i = 0; i < 40; ++i) {
    alive.insert(make("carol").id);
    make("dave");  // another user's sessions in the same shards
  }
  auto listed = [&] {
    std::set<SessionId> out;
    for (const SessionMeta& m : table_.list_user("carol")) out.insert(m.id);
    return out;
  };
  ASSERT_EQ(listed(), alive);
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(table_.destroy(*alive.begin()).ok());
    alive.erase(alive.begin());
  }
  ASSERT_EQ(listed(), alive);
  alive.insert(make("carol").id);
  ASSERT_EQ(listed(), alive);
  EXPECT_EQ(table_.revoke_user("carol").value(), alive.size());
  EXPECT_TRUE(table_.list_user("carol").empty());
  EXPECT_EQ(table_.list_user("dave").size(), 40u);
  EXPECT_EQ(table_.stats().users, 1u);
}

TEST_F(SessionTableTest, RegenerateGivesNewIdSameDataAndKillsOldId) {
  SessionMeta m = make("alice", {{"cart", "[7]"}});
  clock_.advance_ms(1000);
  auto r = table_.regenerate(m.id);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(r->id, m.id);
  EXPECT_EQ(r->created_at_ms, m.created_at_ms);  // the same lifetime (the same user)
  EXPECT_EQ(r->last_access_ms, clock_.now_ms());
  EXPECT_EQ(get_code(m.id), StatusCode::kNotFound);  // fixation: the old id is useless
  Session s = read(r->id);
  EXPECT_EQ(s.field("cart")->value, "[7]");
  EXPECT_EQ(s.user_id, "alice");
  auto list = table_.list_user("alice");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, r->id);
  EXPECT_EQ(table_.stats().sessions, 1u);
}

TEST_F(SessionTableTest, RegenerateAtLoginBindsUserAndReplacesData) {
  SessionMeta anon = make("", {{"csrf", "abc"}});
  RegenerateOptions login;
  login.user_id = "bob";
  login.replace_fields = std::vector<std::pair<std::string, std::string>>{{"role", "user"}};
  auto r = table_.regenerate(anon.id, login);
  ASSERT_TRUE(r.ok());
  Session s = read(r->id);
  EXPECT_EQ(s.user_id, "bob");
  EXPECT_EQ(s.field("csrf"), nullptr);
  EXPECT_EQ(s.field("role")->value, "user");
  ASSERT_EQ(table_.list_user("bob").size(), 1u);
}

TEST_F(SessionTableTest, RegenerateOfExpiredIdFailsAndCreatesNothing) {
  SessionMeta m = make("alice");
  clock_.advance_ms(kIdle);
  EXPECT_EQ(table_.regenerate(m.id).code(), StatusCode::kExpired);
  EXPECT_EQ(table_.stats().sessions, 0u);
  EXPECT_TRUE(table_.list_user("alice").empty());
}

// Issue 11, review finding 3: REGENERATE restarted the absolute timeout, so regenerating
// periodically kept a session alive forever. The absolute deadline stays; only a new user (an
// anonymous session logging in) starts a new lifetime.
TEST_F(SessionTableTest, RegenerateKeepsTheAbsoluteDeadlineUnlessTheUserChanges) {
  const Timeouts timeouts{0, 10'000};  // absolute only
  SessionMeta m = make("alice", {}, timeouts);
  const std::int64_t deadline = m.deadline_ms;
  SessionId id = m.id;
  for (int i = 0; i < 4; ++i) {  // every 3 s, past the 10 s lifetime
    clock_.advance_ms(3'000);
    auto r = table_.regenerate(id);
    if (clock_.now_ms() >= deadline) {
      EXPECT_FALSE(r.ok()) << "regenerated past its absolute deadline";
      break;
    }
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->deadline_ms, deadline);
    id = r->id;
  }
  EXPECT_NE(get_code(id), StatusCode::kOk);
  // Logging in an anonymous session starts the user's lifetime then.
  SessionMeta anon = make("", {}, timeouts);
  clock_.advance_ms(6'000);
  RegenerateOptions login;
  login.user_id = "bob";
  auto logged_in = table_.regenerate(anon.id, login);
  ASSERT_TRUE(logged_in.ok());
  EXPECT_EQ(logged_in->created_at_ms, clock_.now_ms());
  EXPECT_EQ(logged_in->deadline_ms, clock_.now_ms() + 10'000);
}

TEST_F(SessionTableTest, ListUserReturnsAliveSessionsOldestFirst) {
  SessionMeta a = make("alice");
  clock_.advance_ms(5);
  SessionMeta b = make("alice", {}, Timeouts{kIdle * 10, 0});
  make("bob");
  auto list = table_.list_user("alice");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].id, a.id);
  EXPECT_EQ(list[1].id, b.id);
  clock_.advance_ms(kIdle);  // a expires, b lives on
  list = table_.list_user("alice");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, b.id);
  EXPECT_TRUE(table_.list_user("nobody").empty());
}

TEST_F(SessionTableTest, RevokeUserDestroysAllButKept) {
  std::vector<SessionMeta> alice;
  for (int i = 0; i < 5; ++i) alice.push_back(make("alice"));
  SessionMeta bob = make("bob");
  auto n = table_.revoke_user("alice", &alice[2].id);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 4u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(get_code(alice[static_cast<std::size_t>(i)].id),
              i == 2 ? StatusCode::kOk : StatusCode::kNotFound);
  }
  EXPECT_EQ(get_code(bob.id), StatusCode::kOk);
  EXPECT_EQ(*table_.revoke_user("alice"), 1u);
  EXPECT_EQ(*table_.revoke_user("alice"), 0u);
  EXPECT_EQ(table_.stats().sessions, 1u);
}

TEST_F(SessionTableTest, ExpirerRemovesDueSessionsAndIndex) {
  for (int i = 0; i < 50; ++i) make("alice");
  SessionMeta keeper = make("alice", {}, Timeouts{kIdle * 100, 0});
  EXPECT_EQ(table_.expire_due(), 0u);
  clock_.advance_ms(kIdle);
  EXPECT_EQ(table_.expire_due(), 50u);
  EXPECT_EQ(table_.stats().sessions, 1u);
  EXPECT_EQ(table_.stats().expiries, 50u);
  auto list = table_.list_user("alice");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, keeper.id);
}

TEST_F(SessionTableTest, ExpirerWorksInBoundedBatches) {
  TableOptions o = options();
  o.shard_count = 1;
  o.expiry_batch = 10;
  SessionTable table(o, clock_, nullptr);
  for (int i = 0; i < 35; ++i) ASSERT_TRUE(table.create({}).ok());
  clock_.advance_ms(kIdle);
  EXPECT_EQ(table.expire_due(), 10u);
  EXPECT_EQ(table.expire_due(), 10u);
  EXPECT_EQ(table.expire_due(), 10u);
  EXPECT_EQ(table.expire_due(), 5u);
  EXPECT_EQ(table.expire_due(), 0u);
}

TEST_F(SessionTableTest, ExpirerKeepsTouchedSessions) {
  SessionMeta m = make();
  clock_.advance_ms(kIdle - 1);
  ASSERT_TRUE(table_.touch(m.id).ok());
  clock_.advance_ms(1);  // the original deadline
  EXPECT_EQ(table_.expire_due(), 0u);
  EXPECT_EQ(get_code(m.id), StatusCode::kOk);
  clock_.advance_ms(kIdle);
  EXPECT_EQ(table_.expire_due(), 1u);
}

TEST_F(SessionTableTest, BackgroundExpirerRemovesDueSessions) {
  make();
  clock_.advance_ms(kIdle);
  table_.start_expirer(1);
  // Wait on the condition with a deadline (the expirer runs every millisecond).
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (table_.stats().sessions != 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  table_.stop_expirer();
  EXPECT_EQ(table_.stats().sessions, 0u);
}

TEST_F(SessionTableTest, ContextMismatchIsReported) {
  NewSession req;
  req.context = ClientContext{"203.0.113.7", 42};
  auto m = table_.create(req);
  ASSERT_TRUE(m.ok());
  Session s;
  ClientContext same{"203.0.113.7", 42}, other{"198.51.100.9", 42};
  ReadOptions ro;
  ro.expect_context = &same;
  EXPECT_TRUE(table_.get(m->id, ro, &s).ok());
  ASSERT_TRUE(s.context.has_value());
  EXPECT_EQ(*s.context, same);
  ro.expect_context = &other;
  EXPECT_EQ(table_.get(m->id, ro, &s).code(), StatusCode::kContextMismatch);
  EXPECT_TRUE(table_.get(m->id, {}, &s).ok());  // no context given: no check
}

TEST_F(SessionTableTest, AccessLogKeepsTheLastN) {
  SessionMeta m = make();
  Session s;
  for (int i = 0; i < 5; ++i) {
    clock_.advance_ms(10);
    AccessEntry e;
    e.ip = "10.0.0." + std::to_string(i);
    ReadOptions ro;
    ro.record_access = &e;
    ASSERT_TRUE(table_.get(m.id, ro, &s).ok());
  }
  ASSERT_EQ(s.access_log.size(), 3u);  // access_log_length = 3
  EXPECT_EQ(s.access_log[0].ip, "10.0.0.2");
  EXPECT_EQ(s.access_log[2].ip, "10.0.0.4");
  EXPECT_EQ(s.access_log[2].time_ms, clock_.now_ms());
}

TEST_F(SessionTableTest, AnAccessWithAnImpossibleLocationIsRefusedAndNotRecorded) {
  SessionMeta m = make();
  Session s;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (auto [lat, lon] : {std::pair{91.0, 0.0},
                          {-90.5, 0.0},
                          {0.0, 180.5},
                          {nan, 0.0},
                          {0.0, nan},
                          {inf, 0.0},
                          {0.0, -inf}}) {
    AccessEntry e;
    e.ip = "10.0.0.1";
    e.has_location = true;
    e.latitude = lat;
    e.longitude = lon;
    ReadOptions ro;
    ro.record_access = &e;
    EXPECT_EQ(table_.get(m.id, ro, &s).code(), StatusCode::kInvalidArgument) << lat << "," << lon;
  }
  AccessEntry edge;
  edge.has_location = true;
  edge.latitude = -90;
  edge.longitude = 180;
  ReadOptions ro;
  ro.record_access = &edge;
  ASSERT_TRUE(table_.get(m.id, ro, &s).ok());
  ASSERT_EQ(s.access_log.size(), 1u);  // only the valid one
}

TEST_F(SessionTableTest, MemoryBudgetRefusesNewSessionsButServesOld) {
  TableOptions o = options();
  o.memory_budget_bytes = 4096;
  SessionTable table(o, clock_, nullptr);
  NewSession req;
  req.fields = {{"v", std::string(1000, 'x')}};
  std::vector<SessionId> ids;
  for (;;) {
    auto r = table.create(req);
    if (!r.ok()) {
      EXPECT_EQ(r.code(), StatusCode::kOverloaded);
      EXPECT_NE(r.status().message().find("memory budget"), std::string::npos);
      break;
    }
    ids.push_back(r->id);
    ASSERT_LT(ids.size(), 10u);
  }
  EXPECT_GE(ids.size(), 2u);
  EXPECT_LE(table.stats().memory_bytes, 4096u);
  Session s;
  EXPECT_TRUE(table.get(ids[0], {}, &s).ok());
  ASSERT_TRUE(table.destroy(ids[0]).ok());
  EXPECT_TRUE(table.create(req).ok());  // room again
}

TEST_F(SessionTableTest, TouchesAreCoalescedWithinTheFraction) {
  SessionMeta m = make();  // idle 10 s, fraction 0.1: persisted once the deadline moves > 1 s
  clock_.advance_ms(600);
  ASSERT_TRUE(table_.touch(m.id).ok());
  clock_.advance_ms(400);
  ASSERT_TRUE(table_.touch(m.id).ok());  // moved exactly 1 s: still within the slack
  EXPECT_EQ(table_.stats().touches_coalesced, 2u);
  EXPECT_EQ(table_.stats().touches_persisted, 0u);
  clock_.advance_ms(1);
  ASSERT_TRUE(table_.touch(m.id).ok());
  EXPECT_EQ(table_.stats().touches_persisted, 1u);
}

TEST_F(SessionTableTest, VeryLongUnpersistedSlideIsPersistedBeforeItOverflows) {
  // With a fraction of 1 and an idle timeout of 100 years, coalescing alone would let the
  // in-memory lag grow past what the record can hold (2^32 ms, ~49.7 days).
  TableOptions o = options();
  o.touch_persist_fraction = 1.0;
  o.max_lifetime_ms = 10LL * 365 * 24 * 3600 * 1000;
  SessionTable table(o, clock_, nullptr);
  NewSession req;
  req.timeouts = Timeouts{100LL * 365 * 24 * 3600 * 1000, 0};
  auto m = table.create(req);
  ASSERT_TRUE(m.ok());
  clock_.advance_ms(30LL * 24 * 3600 * 1000);
  ASSERT_TRUE(table.touch(m->id).ok());
  EXPECT_EQ(table.stats().touches_persisted, 0u);
  clock_.advance_ms(30LL * 24 * 3600 * 1000);
  auto t = table.touch(m->id);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(table.stats().touches_persisted, 1u);
  EXPECT_EQ(t->last_access_ms, clock_.now_ms());
}

TEST_F(SessionTableTest, StatsCountOperations) {
  SessionMeta m = make();
  read(m.id);
  get_code(new_session_id());
  FieldChanges ch;
  ch.set = {{"k", "v"}};
  ASSERT_TRUE(table_.update(m.id, ch).ok());
  auto r = table_.regenerate(m.id);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(table_.destroy(r->id).ok());
  TableStats st = table_.stats();
  EXPECT_EQ(st.creates, 1u);
  EXPECT_EQ(st.read_hits, 1u);
  EXPECT_EQ(st.read_misses, 1u);
  EXPECT_EQ(st.updates, 1u);
  EXPECT_EQ(st.regenerates, 1u);
  EXPECT_EQ(st.destroys, 1u);
  EXPECT_EQ(st.sessions, 0u);
  EXPECT_EQ(st.memory_bytes, 0u);
}

}  // namespace
}  // namespace sessiond::storage

namespace sessiond::storage {
namespace {

// The per-user limit (issue 5): the oldest sessions make room, or the create is refused.
class UserLimitTest : public ::testing::Test {
 protected:
  static Result<SessionMeta> create(SessionTable& table, std::string user) {
    NewSession req;
    req.user_id = std::move(user);
    return table.create(req);
  }
  // A small table whose users may hold two sessions each.
  static TableOptions two_per_user() {
    TableOptions o;
    o.shard_count = 4;
    o.max_sessions_per_user = 2;
    return o;
  }
  ManualClock clock_;
};

TEST_F(UserLimitTest, OldestSessionsMakeRoom) {
  TableOptions o = two_per_user();
  SessionTable table(o, clock_, nullptr);
  auto first = create(table, "alice");
  clock_.advance_ms(1);
  auto second = create(table, "alice");
  clock_.advance_ms(1);
  ASSERT_TRUE(create(table, "bob").ok());
  auto third = create(table, "alice");
  ASSERT_TRUE(first.ok() && second.ok() && third.ok());
  const auto alice = table.list_user("alice");
  ASSERT_EQ(alice.size(), 2u);
  EXPECT_EQ(alice[0].id, second->id);
  EXPECT_EQ(alice[1].id, third->id);
  Session s;
  EXPECT_EQ(table.get(first->id, {}, &s).code(), StatusCode::kNotFound);
  EXPECT_EQ(table.list_user("bob").size(), 1u);
  // A pipelined batch counts each create against the ones before it.
  std::vector<NewSession> batch(3);
  for (auto& r : batch) r.user_id = "carol";
  for (const auto& r : table.create_batch(batch)) EXPECT_TRUE(r.ok());
  EXPECT_EQ(table.list_user("carol").size(), 2u);
}

// Issue 11, review finding 1: the oldest session was destroyed before the request was checked,
// so a CREATE or REGENERATE that was then refused still logged the user out elsewhere.
TEST_F(UserLimitTest, ARefusedRequestEndsNoSessionOfTheUser) {
  TableOptions o = two_per_user();
  o.max_session_bytes = 1000;
  SessionTable table(o, clock_, nullptr);
  auto first = create(table, "alice");
  clock_.advance_ms(1);
  auto second = create(table, "alice");
  ASSERT_TRUE(first.ok() && second.ok());
  const auto alice_intact = [&] {
    const auto sessions = table.list_user("alice");
    return sessions.size() == 2 && sessions[0].id == first->id && sessions[1].id == second->id;
  };
  NewSession too_large;
  too_large.user_id = "alice";
  too_large.fields = {{"blob", std::string(2000, 'x')}};
  EXPECT_EQ(table.create(too_large).status().code(), StatusCode::kTooLarge);
  EXPECT_TRUE(alice_intact());
  NewSession bad_timeouts;
  bad_timeouts.user_id = "alice";
  bad_timeouts.timeouts = Timeouts{-1, 0};
  EXPECT_EQ(table.create(bad_timeouts).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(alice_intact());
  // A regenerate into alice that fails: the session has expired, or its new data is too large.
  NewSession short_lived;
  short_lived.timeouts = Timeouts{10, 0};
  auto guest = table.create(short_lived);
  ASSERT_TRUE(guest.ok());
  clock_.advance_ms(20);
  RegenerateOptions login;
  login.user_id = "alice";
  EXPECT_FALSE(table.regenerate(guest->id, login).ok());
  EXPECT_TRUE(alice_intact());
  auto guest2 = table.create(NewSession{});
  ASSERT_TRUE(guest2.ok());
  RegenerateOptions login_too_large = login;
  login_too_large.replace_fields =
      std::vector<std::pair<std::string, std::string>>{{"blob", std::string(2000, 'x')}};
  EXPECT_EQ(table.regenerate(guest2->id, login_too_large).status().code(), StatusCode::kTooLarge);
  EXPECT_TRUE(alice_intact());
  // What succeeds still makes room, in the same step.
  auto third = table.regenerate(guest2->id, login);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  const auto alice = table.list_user("alice");
  ASSERT_EQ(alice.size(), 2u);
  EXPECT_EQ(alice[0].id, second->id);
  EXPECT_EQ(alice[1].id, third->id);
  Session s;
  EXPECT_EQ(table.get(first->id, {}, &s).code(), StatusCode::kNotFound);
  EXPECT_EQ(table.stats().destroys, 1u);
}

TEST_F(UserLimitTest, RefusePolicyAnswersForbidden) {
  TableOptions o = two_per_user();
  o.user_limit_policy = TableOptions::UserLimitPolicy::kRefuse;
  SessionTable table(o, clock_, nullptr);
  ASSERT_TRUE(create(table, "alice").ok());
  ASSERT_TRUE(create(table, "alice").ok());
  auto refused = create(table, "alice");
  EXPECT_EQ(refused.status().code(), StatusCode::kForbidden);
  EXPECT_EQ(table.list_user("alice").size(), 2u);
  EXPECT_TRUE(create(table, "").ok());  // sessions without a user are not limited
  // Regenerating a session into a full user is refused too; within the same user it is not.
  auto guest = create(table, "bob");
  ASSERT_TRUE(guest.ok());
  RegenerateOptions to_alice;
  to_alice.user_id = "alice";
  EXPECT_EQ(table.regenerate(guest->id, to_alice).status().code(), StatusCode::kForbidden);
  RegenerateOptions same;
  same.user_id = "alice";
  EXPECT_TRUE(table.regenerate(table.list_user("alice")[0].id, same).ok());
  EXPECT_EQ(table.list_user("alice").size(), 2u);
  // The limit check is not a read: a regenerate counts no read hit or miss.
  const TableStats before = table.stats();
  ASSERT_TRUE(table.regenerate(guest->id, RegenerateOptions{}).ok());
  RegenerateOptions to_dave;
  to_dave.user_id = "dave";
  auto moved = table.regenerate(table.list_user("bob")[0].id, to_dave);
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(table.stats().read_hits, before.read_hits);
  EXPECT_EQ(table.stats().read_misses, before.read_misses);
  // A dead session is still NOT_FOUND (counted once, as any miss).
  EXPECT_EQ(table.regenerate(guest->id, to_dave).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(table.stats().read_misses, before.read_misses + 1);
}

}  // namespace
}  // namespace sessiond::storage

namespace sessiond::storage {
namespace {

// REGENERATE as the login step (issue 5): new id, same data, old id dead, the login time set.
TEST(RegenerateLogin, MarksTheSessionAuthenticated) {
  ManualClock clock;
  SessionTable table({}, clock, nullptr);
  NewSession req;
  req.fields = {{"cart", "[1]"}, {"z", "last"}};
  auto anonymous = table.create(req);
  ASSERT_TRUE(anonymous.ok());
  clock.advance_ms(5);
  RegenerateOptions login;
  login.user_id = "alice";
  login.mark_authenticated = true;
  auto logged_in = table.regenerate(anonymous->id, login);
  ASSERT_TRUE(logged_in.ok());
  Session s;
  // The pre-login id (which an attacker may have planted: session fixation) is now useless.
  EXPECT_EQ(table.get(anonymous->id, {}, &s).code(), StatusCode::kNotFound);
  ASSERT_TRUE(table.get(logged_in->id, {}, &s).ok());
  EXPECT_EQ(s.user_id, "alice");
  EXPECT_EQ(s.field("cart")->value, "[1]");
  ASSERT_NE(s.field(kAuthenticatedAtField), nullptr);
  EXPECT_EQ(s.field(kAuthenticatedAtField)->value, std::to_string(clock.now_ms()));
  ASSERT_EQ(s.fields.size(), 3u);
  EXPECT_TRUE(std::is_sorted(s.fields.begin(), s.fields.end(),
                             [](const Field& a, const Field& b) { return a.name < b.name; }));
  // A second login replaces the time rather than adding a field.
  clock.advance_ms(7);
  auto again = table.regenerate(logged_in->id, login);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(table.get(again->id, {}, &s).ok());
  EXPECT_EQ(s.fields.size(), 3u);
  EXPECT_EQ(s.field(kAuthenticatedAtField)->value, std::to_string(clock.now_ms()));
}

}  // namespace
}  // namespace sessiond::storage

namespace sessiond::storage {
namespace {

// A clock whose next reading, once armed, waits until released: it holds a thread at the
// moment it reads the time.
class GateClock final : public Clock {
 public:
  std::int64_t now_ms() const override {
    reads_.fetch_add(1);
    std::unique_lock lock(mu_);
    if (armed_) {
      armed_ = false;
      held_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !held_; });
    }
    return now_.load();
  }
  void set_ms(std::int64_t ms) { now_.store(ms); }
  void arm() {
    std::lock_guard lock(mu_);
    armed_ = true;
  }
  bool wait_held(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return held_; });
  }
  void release() {
    std::lock_guard lock(mu_);
    held_ = false;
    cv_.notify_all();
  }
  int reads() const { return reads_.load(); }

 private:
  std::atomic<std::int64_t> now_{1'700'000'000'000};
  mutable std::atomic<int> reads_{0};
  mutable std::mutex mu_;  // guards armed_ and held_
  mutable std::condition_variable cv_;
  mutable bool armed_ = false, held_ = false;
};

// Review finding 9: operations read `now` before taking the shard lock, so a read that waited
// for the lock judged expiry by a time from before the wait and returned a session whose
// deadline had passed meanwhile.
TEST(SessionTableTime, AReadJudgesExpiryByTheTimeItHoldsTheSession) {
  GateClock clock;
  SessionTable table(TableOptions{}, clock, nullptr);
  NewSession req;
  req.timeouts = Timeouts{10'000, 0};
  auto created = table.create(req);
  ASSERT_TRUE(created.ok());
  // A touch reads the time and is held there (holding the shard, when the time is read under
  // the shard's lock).
  clock.arm();
  std::thread toucher([&] { (void)table.touch(created->id); });
  ASSERT_TRUE(clock.wait_held(std::chrono::seconds(30)));
  // A read starts meanwhile. If it read the time before waiting for the shard, it does so now.
  const int reads_before = clock.reads();
  Status read;
  std::thread reader([&] {
    Session out;
    read = table.get(created->id, {}, &out);
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  while (clock.reads() == reads_before && std::chrono::steady_clock::now() < until) {
    std::this_thread::yield();
  }
  // The deadline passes while the read waits; then the touch goes on.
  clock.set_ms(created->deadline_ms);
  clock.release();
  toucher.join();
  reader.join();
  EXPECT_FALSE(read.ok()) << "a session past its deadline was returned: " << read.ToString();
}

}  // namespace
}  // namespace sessiond::storage

namespace sessiond::storage {
namespace {

// The figures /metrics reads (issue 16): sessions by preset follow them in and out, and a
// session's lifetime is counted once, when it is destroyed or expires.
TEST_F(SessionTableTest, StatsCountSessionsByPresetAndLifetimesAtTheirEnd) {
  NewSession finance;
  finance.user_id = "bob";
  finance.preset = Preset::kFinance;  // the label; the table takes the timeouts given
  finance.timeouts = Timeouts{0, 0};
  auto f = table_.create(finance);
  ASSERT_TRUE(f.ok());
  const SessionMeta plain = make("alice", {{"cart", "[]"}}, Timeouts{0, 0});
  const SessionMeta other = make("carol", {{"cart", "[]"}}, Timeouts{0, 120'000});
  const std::size_t finance_slot = static_cast<std::size_t>(Preset::kFinance) + 1;
  TableStats st = table_.stats();
  EXPECT_EQ(st.sessions_by_preset[finance_slot], 1u);
  EXPECT_EQ(st.sessions_by_preset[0], 2u);  // explicit timeouts
  clock_.advance_ms(90'000);                // lived 90 s: the (60, 300] bucket
  ASSERT_TRUE(table_.destroy(plain.id).ok());
  st = table_.stats();
  EXPECT_EQ(st.sessions_by_preset[0], 1u);
  EXPECT_EQ(st.lifetimes[3], 1u);
  EXPECT_EQ(st.lifetime_sum_ms, 90'000u);
  // Regenerate moves the session, and its preset slot, to the new id: nothing ended.
  auto regenerated = table_.regenerate(f->id, {});
  ASSERT_TRUE(regenerated.ok()) << regenerated.status().ToString();
  st = table_.stats();
  EXPECT_EQ(st.sessions_by_preset[finance_slot], 1u);
  EXPECT_EQ(st.lifetime_sum_ms, 90'000u);
  // An expiry found by a read counts once, and the expirer does not count it again.
  clock_.advance_ms(40'000);
  EXPECT_EQ(get_code(other.id), StatusCode::kExpired);
  table_.expire_due();
  st = table_.stats();
  EXPECT_EQ(st.sessions, 1u);
  EXPECT_EQ(st.sessions_by_preset[0], 0u);
  EXPECT_EQ(st.sessions_by_preset[finance_slot], 1u);
  EXPECT_EQ(st.lifetimes[3], 2u);
  EXPECT_EQ(st.lifetime_sum_ms, 90'000u + 130'000u);
  EXPECT_EQ(st.destroys, 1u);
  EXPECT_EQ(st.expiries, 1u);
}

}  // namespace
}  // namespace sessiond::storage
