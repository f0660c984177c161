// SessionTable::export_states() and forget() (DESIGN §6: a range that moves to another node):
// what is exported and applied elsewhere is the same state there, tombstones and generations
// included; what is forgotten is gone from memory and disk, and nothing else is.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "storage/clock.h"
#include "storage/session_table.h"
#include "storage/store.h"
#include "tests/support/temp_dir.h"

namespace sessiond::storage {
namespace {

// Half of the route-key space: the sessions that "move".
bool moving(const SessionId& id) { return route_key_of(id) >= (std::uint64_t{1} << 63); }

TEST(ExportForget, WhatMovesArrivesWholeAndLeavesNothingBehind) {
  testing::TempDir dir;
  ManualClock clock(1'800'000'000'000);
  const IdGenerator ids = IdGenerator::with_random_secret();
  TableOptions o;
  o.shard_count = 8;
  o.node = 1;
  o.ids = &ids;
  StoreOptions so;
  so.path = dir.sub("a");
  auto store = Store::open(so, clock);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto a = std::make_unique<SessionTable>(o, clock, store->get());
  ASSERT_TRUE(a->recover().ok());
  TableOptions ob = o;
  ob.node = 2;
  SessionTable b(ob, clock, nullptr);

  std::set<SessionId> kept, moved, moved_dead;
  std::vector<std::string> users;
  for (int i = 0; i < 400; ++i) {
    NewSession ns;
    ns.user_id = i % 4 == 0 ? "user-" + std::to_string(i % 40) : "";
    ns.fields = {{"n", std::to_string(i)}};
    auto made = a->create(ns);
    ASSERT_TRUE(made.ok());
    (moving(made->id) ? moved : kept).insert(made->id);
  }
  // A tombstone and a coalesced touch in the moving part, and generations of every user.
  const SessionId dead = *moved.begin();
  ASSERT_TRUE(a->destroy(dead).ok());
  moved.erase(dead);
  moved_dead.insert(dead);
  clock.advance_ms(1000);
  ReadOptions touch;
  touch.touch = true;
  Session s;
  // An anonymous one, which the revokes below cannot end (with a user-0 session, one run in
  // twenty checked the touch on another session than the one touched).
  SessionId touched_id{};
  for (const SessionId& id : moved) {
    ASSERT_TRUE(a->get(id, {}, &s).ok());
    if (s.user_id.empty()) {
      touched_id = id;
      break;
    }
  }
  ASSERT_TRUE(a->get(touched_id, touch, &s).ok());
  const std::int64_t touched_at = s.last_access_ms;
  ASSERT_TRUE(a->revoke_user("user-0").ok());
  ASSERT_TRUE(a->revoke_user("user-1").ok());
  const std::set<SessionId> before_revoke = moved;
  const std::set<SessionId> kept_before = kept;
  for (auto it = moved.begin(); it != moved.end();) {  // sessions the revokes ended
    it = a->get(*it, {}, &s).ok() ? std::next(it) : moved.erase(it);
  }
  for (auto it = kept.begin(); it != kept.end();) {
    it = a->get(*it, {}, &s).ok() ? std::next(it) : kept.erase(it);
  }

  SessionTable::Selection select{moving, [](std::string_view user) { return user == "user-0"; }};
  std::size_t exported = 0;
  a->export_states(select, [&](std::span<const Mutation> batch) {
    for (const Mutation& m : batch) {
      ASSERT_TRUE(b.apply(m).ok());
      ++exported;
    }
  });
  EXPECT_GE(exported, moved.size() + 1);
  for (const SessionId& id : moved) {
    Session there;
    ASSERT_TRUE(b.get(id, {}, &there).ok());
    ASSERT_TRUE(a->get(id, {}, &s).ok());
    EXPECT_EQ(there.last_access_ms, s.last_access_ms);
    EXPECT_EQ(there.fields, s.fields);
  }
  Session touched;
  ASSERT_TRUE(b.get(touched_id, {}, &touched).ok());
  EXPECT_EQ(touched.last_access_ms, touched_at);  // the coalesced touch came along
  EXPECT_EQ(b.get(dead, {}, &s).code(), StatusCode::kNotFound);
  EXPECT_EQ(b.stats().tombstones, before_revoke.size() - moved.size() + 1);
  for (const SessionId& id : kept) EXPECT_FALSE(b.get(id, {}, &s).ok());

  auto forgotten = a->forget(select);
  ASSERT_TRUE(forgotten.ok()) << forgotten.status().ToString();
  EXPECT_EQ(*forgotten, moved.size());
  EXPECT_EQ(a->stats().tombstones, kept_before.size() - kept.size());  // only those that stay
  for (const SessionId& id : moved) EXPECT_FALSE(a->get(id, {}, &s).ok());
  for (const SessionId& id : kept) EXPECT_TRUE(a->get(id, {}, &s).ok());
  // And from disk: a restart brings back only what stayed.
  a.reset();
  store->reset();
  store = Store::open(so, clock);
  ASSERT_TRUE(store.ok());
  SessionTable again(o, clock, store->get());
  auto report = again.recover();
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->loaded, kept.size());
  for (const SessionId& id : kept) EXPECT_TRUE(again.get(id, {}, &s).ok());
  for (const SessionId& id : moved) EXPECT_FALSE(again.get(id, {}, &s).ok());
}

}  // namespace
}  // namespace sessiond::storage
