// SessionTable::apply() (DESIGN §6, §7): tables that exchange their mutations in any order, with
// duplicates and with losses resent later, end equal; nothing destroyed comes back; a revoke
// ends the sessions of its user created elsewhere before it was heard of, even from a table
// whose clock runs 50 s ahead; a write from too far ahead is set aside, not adopted.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "storage/clock.h"
#include "storage/mutation.h"
#include "storage/session_table.h"

namespace sessiond::storage {
namespace {

constexpr std::int64_t kMinute = 60'000;

// A mutation with the bytes its views point into.
struct Shipped {
  Mutation m;
  std::string user, value;
  std::vector<AccessEntry> log;
  static std::shared_ptr<Shipped> copy(const Mutation& m) {
    auto s = std::make_shared<Shipped>();
    s->user.assign(m.user);
    s->value.assign(m.value);
    s->log.assign(m.access_log.begin(), m.access_log.end());
    s->m = m;
    s->m.user = s->user;
    s->m.value = s->value;
    s->m.access_log = s->log;
    return s;
  }
};

// One table of a cluster of tables that share nothing but the mutations they ship.
struct Node {
  Node(std::uint32_t region, std::uint32_t number, const Clock& clock) {
    TableOptions o;
    o.region = region;
    o.node = number;
    o.shard_count = 8;
    o.touch_persist_fraction = 0;  // every touch ships
    o.access_log_length = 4;
    o.default_timeouts = Timeouts{60 * kMinute, 0};
    table = std::make_unique<SessionTable>(o, clock, nullptr);
    table->on_change([this](const Mutation& m, std::uint64_t) {
      if (!m.origin.remote) outbox.push_back(Shipped::copy(m));  // never shipped back
    });
  }
  // Before the table: its destructor flushes, and the observer writes here.
  std::vector<std::shared_ptr<Shipped>> outbox;
  std::vector<std::shared_ptr<Shipped>> inbox;
  std::unique_ptr<SessionTable> table;
};

std::string describe(const Session& s) {
  std::string out = "user=" + s.user_id + " v=" + std::to_string(s.version.hlc) + "/" +
                    std::to_string(s.version.region) + "/" + std::to_string(s.version.node) +
                    " created=" + std::to_string(s.created_at_ms) +
                    " access=" + std::to_string(s.last_access_ms) +
                    " idle=" + std::to_string(s.timeouts.idle_ms) + " fields:";
  for (const Field& f : s.fields) {
    out += " " + f.name + "=" + f.value + "@" + std::to_string(f.version.hlc) + "/" +
           std::to_string(f.version.node);
  }
  out += " log:";
  for (const AccessEntry& a : s.access_log) out += " " + std::to_string(a.time_ms) + a.ip;
  return out;
}

// Every alive session of a table, by id.
std::map<SessionId, Session> contents(SessionTable& table) {
  std::map<SessionId, Session> out;
  std::uint64_t cursor = 0;
  do {
    ScanPage page = table.scan(cursor, 100);
    for (const SessionId& id : page.ids) {
      Session s;
      if (table.get(id, {}, &s).ok()) out.emplace(id, s);
    }
    cursor = page.cursor;
  } while (cursor != 0);
  return out;
}

class Exchange {
 public:
  Exchange(std::uint64_t seed, int nodes) : rng_(seed) {
    for (int i = 0; i < nodes; ++i) {
      nodes_.push_back(std::make_unique<Node>(i % 2, static_cast<std::uint32_t>(i), clock_));
    }
  }
  std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng_);
  }
  Node& node(std::size_t i) { return *nodes_[i]; }
  ManualClock& clock() { return clock_; }

  // Moves each node's outbox to every other node's inbox.
  void post() {
    for (auto& from : nodes_) {
      for (auto& to : nodes_) {
        if (to == from) continue;
        to->inbox.insert(to->inbox.end(), from->outbox.begin(), from->outbox.end());
      }
      from->outbox.clear();
    }
  }
  // Applies some of each inbox in random order: some twice, some lost for now (kept to resend).
  void deliver(bool everything) {
    for (auto& n : nodes_) {
      std::shuffle(n->inbox.begin(), n->inbox.end(), rng_);
      std::vector<std::shared_ptr<Shipped>> resend;
      for (auto& s : n->inbox) {
        if (!everything && uniform(0, 3) == 0) {
          resend.push_back(s);  // lost: the sender has no acknowledgement and sends it again
          continue;
        }
        ASSERT_TRUE(n->table->apply(s->m).ok());
        ++applied_;
        if (uniform(0, 4) == 0) {
          ASSERT_TRUE(n->table->apply(s->m).ok());  // a duplicate
          ++applied_;
        }
        if (!everything && uniform(0, 6) == 0) resend.push_back(s);  // and again, later
      }
      n->inbox = std::move(resend);
    }
  }
  void settle() {
    // What each table holds only in memory (accesses recorded without a touch to persist) goes
    // out as touches, as the shippers send pending touches at least every few seconds.
    for (auto& n : nodes_) ASSERT_TRUE(n->table->flush().ok());
    for (int round = 0; round < 3; ++round) {
      post();
      deliver(/*everything=*/true);
    }
  }
  std::uint64_t applied() const { return applied_; }

 private:
  ManualClock clock_;
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::uint64_t applied_ = 0;
};

const std::vector<std::string> kUsers = {"", "alice", "bob", "carol"};

TEST(Apply, TablesThatExchangeMutationsInAnyOrderEndEqualAndNothingEndedComesBack) {
  std::uint64_t total_applied = 0;
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Exchange x(seed, 3);
    std::set<SessionId> ended;
    std::vector<SessionId> issued;  // in the order they were made: picks do not depend on ids
    for (int step = 0; step < 1000; ++step) {
      Node& n = x.node(x.uniform(0, 2));
      std::vector<SessionId> ids;
      for (const SessionId& id : issued) {
        Session s;
        if (n.table->get(id, {}, &s).ok()) ids.push_back(id);
      }
      const SessionId* some = ids.empty() ? nullptr : &ids[x.uniform(0, ids.size() - 1)];
      switch (x.uniform(0, 9)) {
        case 0:
        case 1: {
          NewSession req;
          req.user_id = kUsers[x.uniform(0, kUsers.size() - 1)];
          req.fields = {{"cart", std::to_string(step)}};
          auto made = n.table->create(req);
          ASSERT_TRUE(made.ok());
          issued.push_back(made->id);
          break;
        }
        case 2:
        case 3:
          if (some) {
            FieldChanges c;
            if (x.uniform(0, 1)) c.set.emplace_back("cart", "u" + std::to_string(step));
            if (x.uniform(0, 2) == 0) c.set.emplace_back("theme", "dark");
            if (x.uniform(0, 2) == 0) c.remove.push_back("cart");
            if (x.uniform(0, 5) == 0) c.timeouts = Timeouts{(30 + step % 7) * kMinute, 0};
            ASSERT_TRUE(n.table->update(*some, c).ok());
          }
          break;
        case 4:
          if (some) {
            Session s;
            AccessEntry a{0, x.uniform(0, 1) ? "198.51.100.1" : "198.51.100.9", 5, false, 0, 0};
            ReadOptions r;
            r.touch = true;
            r.record_access = &a;
            ASSERT_TRUE(n.table->get(*some, r, &s).ok());
          }
          break;
        case 5:
          if (some) {
            ASSERT_TRUE(n.table->destroy(*some).ok());
            ended.insert(*some);
          }
          break;
        case 6:
          if (some) {
            auto made = n.table->regenerate(*some);
            ASSERT_TRUE(made.ok());
            issued.push_back(made->id);
            ended.insert(*some);
          }
          break;
        case 7:
          if (x.uniform(0, 3) == 0) {
            const std::string& user = kUsers[x.uniform(1, kUsers.size() - 1)];
            for (const SessionMeta& m : n.table->list_user(user)) ended.insert(m.id);
            ASSERT_TRUE(n.table->revoke_user(user).ok());
          }
          break;
        default:
          x.post();
          x.deliver(/*everything=*/false);
          break;
      }
      x.clock().advance_ms(static_cast<std::int64_t>(x.uniform(0, 3)));
    }
    x.settle();
    const auto first = contents(*x.node(0).table);
    for (std::size_t i = 1; i < 3; ++i) {
      const auto other = contents(*x.node(i).table);
      ASSERT_EQ(first.size(), other.size()) << "node " << i;
      for (const auto& [id, s] : first) {
        auto it = other.find(id);
        ASSERT_NE(it, other.end()) << "node " << i << " lacks " << session_id_to_text(id);
        EXPECT_EQ(it->second, s) << "node " << i << " differs on " << session_id_to_text(id)
                                 << "\n  node 0: " << describe(s) << "\n  node " << i << ": "
                                 << describe(it->second);
      }
    }
    for (const SessionId& id : ended) {
      ASSERT_EQ(first.count(id), 0u) << "an ended session came back: " << session_id_to_text(id);
    }
    EXPECT_GT(first.size(), 0u);
    total_applied += x.applied();
  }
  EXPECT_GT(total_applied, 10'000u);
}

// A revoke on one table; meanwhile another, not yet told, creates sessions for the user. Once
// the raise arrives, none of them is alive anywhere: the generation, not a time, decides.
void revoke_races_creates(std::int64_t skew_ms) {
  ManualClock clock_a, clock_b(ManualClock().now_ms() + skew_ms);
  Node a(1, 1, clock_a), b(2, 1, clock_b);
  auto ship = [](Node& from, Node& to) {
    for (auto& s : from.outbox) ASSERT_TRUE(to.table->apply(s->m).ok());
    from.outbox.clear();
  };
  NewSession req;
  req.user_id = "alice";
  auto s1 = a.table->create(req);
  auto s2 = b.table->create(req);
  ASSERT_TRUE(s1.ok() && s2.ok());
  ship(a, b);
  ship(b, a);
  ASSERT_EQ(a.table->list_user("alice").size(), 2u);
  ASSERT_EQ(a.table->revoke_user("alice").value(), 2u);  // not shipped yet
  clock_a.advance_ms(5000);
  clock_b.advance_ms(5000);
  auto s3 = b.table->create(req);  // b has not heard of the revoke
  ASSERT_TRUE(s3.ok());
  ASSERT_TRUE(b.table->regenerate(s2->id).ok());  // nor does a regenerate escape it
  ship(b, a);                                     // b's creates reach a after its revoke
  ship(a, b);                                     // and the raise reaches b
  for (SessionTable* t : {a.table.get(), b.table.get()}) {
    EXPECT_TRUE(t->list_user("alice").empty()) << "a session stamped below the generation lives";
    Session out;
    EXPECT_FALSE(t->get(s3->id, {}, &out).ok());
  }
  // Sessions created once the raise is known live on.
  auto s4 = b.table->create(req);
  ASSERT_TRUE(s4.ok());
  ship(b, a);
  EXPECT_EQ(a.table->list_user("alice").size(), 1u);
  EXPECT_EQ(b.table->list_user("alice").size(), 1u);
}

TEST(Apply, ARevokeEndsSessionsCreatedElsewhereBeforeItArrived) { revoke_races_creates(0); }

// The user index holds a session as the last 8 bytes of its id, and finds it in its shard by those
// and the user id: sessions of two users whose ids share those bytes (made so here, through a
// peer's writes; 2^-64 by chance) are listed and revoked each with its own user only.
TEST(Apply, SessionsOfTwoUsersWhoseIdsShareTheirLastWordAreToldApart) {
  ManualClock clock;
  Node a(1, 1, clock), b(2, 1, clock);
  NewSession alice, bob;
  alice.user_id = "alice";
  bob.user_id = "bob";
  auto s1 = a.table->create(alice);
  auto s2 = a.table->create(bob);
  ASSERT_TRUE(s1.ok() && s2.ok());
  ASSERT_EQ(a.outbox.size(), 2u);
  auto bobs = a.outbox[1];
  ASSERT_EQ(bobs->user, "bob");
  SessionId twin = s1->id;  // alice's last word, bob's first 24 bytes
  std::copy_n(s2->id.begin(), 24, twin.begin());
  ASSERT_NE(twin, s1->id);
  bobs->m.id = twin;
  ASSERT_TRUE(b.table->apply(a.outbox[0]->m).ok());
  ASSERT_TRUE(b.table->apply(bobs->m).ok());
  auto ids_of = [&](std::string_view user) {
    std::vector<SessionId> out;
    for (const SessionMeta& m : b.table->list_user(user)) out.push_back(m.id);
    return out;
  };
  EXPECT_EQ(ids_of("alice"), std::vector<SessionId>{s1->id});
  EXPECT_EQ(ids_of("bob"), std::vector<SessionId>{twin});
  EXPECT_EQ(b.table->revoke_user("bob").value(), 1u);
  EXPECT_EQ(ids_of("alice"), std::vector<SessionId>{s1->id});
  Session out;
  EXPECT_TRUE(b.table->get(s1->id, {}, &out).ok());
  EXPECT_FALSE(b.table->get(twin, {}, &out).ok());
  EXPECT_EQ(b.table->revoke_user("alice").value(), 1u);
  EXPECT_FALSE(b.table->get(s1->id, {}, &out).ok());
}

// Every state a table holds (sessions, tombstones, generations) as anti-entropy sees it.
std::set<std::tuple<int, std::string, std::uint64_t, std::uint64_t>> fingerprints(
    SessionTable& table) {
  std::set<std::tuple<int, std::string, std::uint64_t, std::uint64_t>> out;
  const SessionTable::Selection all{[](const SessionId&) { return true; },
                                    [](std::string_view) { return true; }};
  table.fingerprints(all, [&](std::span<const SessionTable::Fingerprint> batch) {
    for (const auto& f : batch) {
      out.emplace(
          static_cast<int>(f.kind),
          f.kind == Mutation::Kind::kGeneration ? std::string(f.user) : session_id_to_text(f.id),
          f.hlc, f.origin);
    }
  });
  return out;
}

// Found by the chaos suite: a revoke's tombstones were stamped with the clock of each table that
// applied the raise, so the origin and every copy held different tombstones for the same ends,
// their digests never agreed, and only anti-entropy made them equal.
TEST(Apply, ARevokeLeavesTheSameTombstonesWhereverItIsApplied) {
  ManualClock clock_a, clock_b(ManualClock().now_ms() + 1234);
  Node a(1, 1, clock_a), b(2, 1, clock_b);
  NewSession req;
  req.user_id = "alice";
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a.table->create(req).ok());
  for (auto& s : a.outbox) ASSERT_TRUE(b.table->apply(s->m).ok());
  a.outbox.clear();
  ASSERT_EQ(fingerprints(*a.table), fingerprints(*b.table));
  clock_a.advance_ms(1000);
  clock_b.advance_ms(7000);  // b applies the raise later, by its own clock
  ASSERT_EQ(a.table->revoke_user("alice").value(), 3u);
  for (auto& s : a.outbox) ASSERT_TRUE(b.table->apply(s->m).ok());
  EXPECT_TRUE(b.table->list_user("alice").empty());
  EXPECT_EQ(fingerprints(*a.table), fingerprints(*b.table));
}

TEST(Apply, ARevokeEndsThemEvenFromATableWhoseClockRuns50SecondsAhead) {
  revoke_races_creates(50'000);
}

TEST(Apply, AWriteFromTooFarAheadIsSetAsideThenAppliedWhenOurClockCatchesUp) {
  ManualClock clock_a, clock_b(ManualClock().now_ms() + 2 * kMinute);
  Node a(1, 1, clock_a), b(2, 1, clock_b);
  NewSession req;
  req.fields = {{"k", "v"}};
  auto created = b.table->create(req);
  ASSERT_TRUE(created.ok());
  ASSERT_EQ(b.outbox.size(), 1u);
  EXPECT_EQ(a.table->apply(b.outbox[0]->m).value(), ApplyOutcome::kSetAside);
  Session out;
  EXPECT_EQ(a.table->get(created->id, {}, &out).code(), StatusCode::kNotFound);
  EXPECT_EQ(a.table->stats().merges_set_aside, 1u);
  EXPECT_EQ(a.table->stats().set_aside_pending, 1u);
  a.table->expire_due();
  EXPECT_EQ(a.table->stats().set_aside_pending, 1u) << "still too far ahead";
  clock_a.advance_ms(61'000);  // within the 60 s bound now
  a.table->expire_due();
  EXPECT_EQ(a.table->stats().set_aside_pending, 0u);
  ASSERT_TRUE(a.table->get(created->id, {}, &out).ok());
  EXPECT_EQ(out.fields[0].value, "v");
  EXPECT_EQ(out.created_at_ms, created->created_at_ms) << "apply keeps the original times";
  EXPECT_EQ(out.version, created->version) << "and the original version";
}

TEST(Apply, AnEndIsAppliedWhateverItsClockAndBeatsEveryLaterUpdate) {
  ManualClock clock_a, clock_b(ManualClock().now_ms() + 10 * kMinute);
  Node a(1, 1, clock_a), b(2, 1, clock_b);
  auto created = a.table->create(NewSession{});
  ASSERT_TRUE(created.ok());
  for (auto& s : a.outbox) ASSERT_TRUE(b.table->apply(s->m).ok());
  a.outbox.clear();
  // b (clock far ahead) updates; a destroys. a sees b's update only after its destroy.
  ASSERT_TRUE(b.table->update(created->id, FieldChanges{{{"late", "1"}}, {}, {}}).ok());
  ASSERT_TRUE(a.table->destroy(created->id).ok());
  for (auto& s : b.outbox) (void)a.table->apply(s->m);
  for (auto& s : a.outbox) {
    EXPECT_EQ(b.table->apply(s->m).value(), ApplyOutcome::kApplied) << "never set aside";
  }
  Session out;
  clock_a.advance_ms(11 * kMinute);
  a.table->expire_due();  // retries what was set aside
  EXPECT_FALSE(a.table->get(created->id, {}, &out).ok());
  EXPECT_FALSE(b.table->get(created->id, {}, &out).ok());
}

TEST(Apply, AppliedWritesAreMarkedRemoteAndKeepTheirOrigin) {
  ManualClock clock;
  Node a(1, 4, clock), b(2, 9, clock);
  std::vector<Origin> seen;
  b.table->on_change([&](const Mutation& m, std::uint64_t) { seen.push_back(m.origin); });
  ASSERT_TRUE(a.table->create(NewSession{}).ok());
  ASSERT_EQ(b.table->apply(a.outbox[0]->m).value(), ApplyOutcome::kApplied);
  ASSERT_EQ(b.table->apply(a.outbox[0]->m).value(), ApplyOutcome::kUnchanged);
  ASSERT_EQ(seen.size(), 1u) << "applying twice writes once";
  EXPECT_EQ(seen[0], (Origin{1, 4, true}));
}

}  // namespace
}  // namespace sessiond::storage

namespace sessiond::storage {
namespace {

// RESP keys (DESIGN §10): a DEL leaves a tombstone of the key's incarnation; a SET after it
// starts the next incarnation, which the tombstone does not end, while any state of the deleted
// incarnation that arrives late stays dead.
TEST(Apply, ASetAfterADelIsANewIncarnationNotAResurrection) {
  ManualClock clock;
  Node a(1, 1, clock), b(2, 1, clock);
  SessionId key{};
  key[31] = 42;
  auto put = [](std::string value) {
    return [value](const Session*, std::int64_t, Rewrite* w) {
      w->kind = Rewrite::Kind::kPut;
      w->fields = {{"v", value}};
    };
  };
  auto del = [](const Session*, std::int64_t, Rewrite* w) { w->kind = Rewrite::Kind::kDelete; };
  ASSERT_TRUE(a.table->rewrite(key, put("one")).ok());
  const auto first_put = a.outbox.back();
  ASSERT_TRUE(a.table->rewrite(key, del).ok());
  const auto the_del = a.outbox.back();
  ASSERT_TRUE(a.table->rewrite(key, put("two")).ok());
  const auto second_put = a.outbox.back();
  // b hears them backwards: the new incarnation, the delete of the old, the old put.
  for (const auto& s : {second_put, the_del, first_put}) ASSERT_TRUE(b.table->apply(s->m).ok());
  for (SessionTable* t : {a.table.get(), b.table.get()}) {
    Session out;
    ASSERT_TRUE(t->get(key, {}, &out).ok());
    EXPECT_EQ(out.fields[0].value, "two");
  }
  // A late state of the deleted incarnation stays dead on a table that saw only the delete.
  Node c(3, 1, clock);
  ASSERT_TRUE(c.table->apply(the_del->m).ok());
  EXPECT_EQ(c.table->apply(first_put->m).value(), ApplyOutcome::kUnchanged);
  Session out;
  EXPECT_FALSE(c.table->get(key, {}, &out).ok());
}

}  // namespace
}  // namespace sessiond::storage

namespace sessiond::storage {
namespace {

// What a broken or hostile peer sends is refused with a clear error and changes nothing.
TEST(Apply, MalformedOrHostileMutationsAreRefusedAndChangeNothing) {
  ManualClock clock;
  Node a(1, 1, clock);
  Mutation m;
  m.id[0] = 1;
  m.origin = Origin{2, 1, false};
  m.value = "not a record";
  for (auto kind : {Mutation::Kind::kPut, Mutation::Kind::kEnd, Mutation::Kind::kGeneration}) {
    m.kind = kind;
    m.user = kind == Mutation::Kind::kGeneration ? "alice" : "";
    EXPECT_EQ(a.table->apply(m).status().code(), StatusCode::kInvalidArgument)
        << static_cast<int>(kind);
  }
  std::string huge;
  huge.push_back(static_cast<char>(0xff));  // varint 2^63 + ...: a generation no revoke reaches
  for (int i = 0; i < 8; ++i) huge.push_back(static_cast<char>(0xff));
  huge.push_back(1);
  huge.push_back(0);  // no kept ids
  m.kind = Mutation::Kind::kGeneration;
  m.user = "alice";
  m.value = huge;
  EXPECT_EQ(a.table->apply(m).status().code(), StatusCode::kInvalidArgument);
  m.kind = static_cast<Mutation::Kind>(9);
  EXPECT_EQ(a.table->apply(m).status().code(), StatusCode::kInvalidArgument);
  const TableStats stats = a.table->stats();
  EXPECT_EQ(stats.sessions + stats.tombstones + stats.merges_applied, 0u);
  auto created = a.table->create(NewSession{"alice", {}, {}, {}, {}, false, {}});
  ASSERT_TRUE(created.ok()) << "and the user is not revoked";
}

}  // namespace
}  // namespace sessiond::storage
