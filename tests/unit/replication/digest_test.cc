// Anti-entropy digests (replication/digest.h): two tables that hold the same states have equal
// digests, whatever order they were built in; a session missing, ended or at another version on
// one side makes its bucket, and only its bucket, differ; a bucket selection picks exactly the
// states of the differing buckets.
#include "replication/digest.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "protocol/sessiond.pb.h"
#include "replication/applier.h"
#include "replication/codec.h"
#include "replication/region_repair.h"
#include "storage/clock.h"

namespace sessiond::replication {
namespace {

using storage::SessionId;

class DigestTest : public ::testing::Test {
 protected:
  DigestTest() : ids_(storage::IdGenerator::with_random_secret()) {
    storage::TableOptions o;
    o.shard_count = 8;
    o.node = 1;
    o.ids = &ids_;
    a_ = std::make_unique<storage::SessionTable>(o, clock_, nullptr);
    o.node = 2;
    b_ = std::make_unique<storage::SessionTable>(o, clock_, nullptr);
  }

  static storage::SessionTable::Selection everything() {
    return {[](const SessionId&) { return true; }, [](std::string_view) { return true; }};
  }
  // Copies every state of `from` selected by `select` into `to`, as a peer would merge them.
  static void copy(storage::SessionTable& from, storage::SessionTable& to,
                   const storage::SessionTable::Selection& select) {
    std::vector<OwnedMutation> states;
    from.export_states(select, [&](std::span<const storage::Mutation> batch) {
      for (const auto& m : batch) states.emplace_back(m);
    });
    ASSERT_TRUE(apply_entries(to, states).ok());
  }
  Digest digest(storage::SessionTable& t) {
    return compute_digest(t, ids_, [](std::uint64_t) { return true; });
  }
  std::uint32_t bucket_of(const SessionId& id) { return digest_bucket(storage::route_key_of(id)); }

  storage::ManualClock clock_{1'800'000'000'000};
  storage::IdGenerator ids_;
  std::unique_ptr<storage::SessionTable> a_, b_;
};

TEST_F(DigestTest, EqualStatesHaveEqualDigestsAndOneDifferenceOneBucket) {
  std::vector<SessionId> made;
  for (int i = 0; i < 300; ++i) {
    storage::NewSession ns;
    ns.user_id = i % 3 == 0 ? "user-" + std::to_string(i % 30) : "";
    ns.fields = {{"n", std::to_string(i)}};
    auto m = a_->create(ns);
    ASSERT_TRUE(m.ok());
    made.push_back(m->id);
  }
  ASSERT_TRUE(a_->destroy(made[0]).ok());
  ASSERT_TRUE(a_->revoke_user("user-3").ok());
  ASSERT_NO_FATAL_FAILURE(copy(*a_, *b_, everything()));
  const Digest da = digest(*a_);
  EXPECT_GT(da.states, 300u);  // sessions, a tombstone or more, a generation
  EXPECT_TRUE(differing_buckets(da, digest(*b_)).empty());

  // A session b lost: its bucket alone differs, and a bucket selection of it brings it back.
  const SessionId lost = made[7];
  ASSERT_TRUE(b_->forget({[&](const SessionId& id) { return id == lost; },
                          [](std::string_view) { return false; }})
                  .ok());
  auto diff = differing_buckets(da, digest(*b_));
  ASSERT_EQ(diff, std::vector<std::uint32_t>{bucket_of(lost)});
  std::size_t selected = 0;
  a_->export_states(bucket_selection(ids_, diff, [](std::uint64_t) { return true; }),
                    [&](std::span<const storage::Mutation> batch) {
                      for (const auto& m : batch) {
                        ++selected;
                        EXPECT_EQ(digest_bucket(position_of(m, ids_)), diff[0]);
                      }
                    });
  EXPECT_GE(selected, 1u);
  ASSERT_NO_FATAL_FAILURE(
      copy(*a_, *b_, bucket_selection(ids_, diff, [](std::uint64_t) { return true; })));
  EXPECT_TRUE(differing_buckets(digest(*a_), digest(*b_)).empty());

  // A newer version on one side, and an end the other has not heard of.
  storage::FieldChanges update;
  update.set = {{"n", "changed"}};
  ASSERT_TRUE(a_->update(made[9], update).ok());
  EXPECT_EQ(differing_buckets(digest(*a_), digest(*b_)),
            std::vector<std::uint32_t>{bucket_of(made[9])});
  ASSERT_NO_FATAL_FAILURE(copy(*a_, *b_, everything()));
  ASSERT_TRUE(b_->destroy(made[11]).ok());
  EXPECT_EQ(differing_buckets(digest(*a_), digest(*b_)),
            std::vector<std::uint32_t>{bucket_of(made[11])});
  ASSERT_NO_FATAL_FAILURE(copy(*b_, *a_, everything()));
  EXPECT_TRUE(differing_buckets(digest(*a_), digest(*b_)).empty());
}

TEST_F(DigestTest, OnlyWantedPositionsCount) {
  const auto low = [](std::uint64_t position) { return position < (std::uint64_t{1} << 63); };
  std::set<std::uint32_t> high_buckets;
  for (int i = 0; i < 200; ++i) {
    auto m = a_->create(storage::NewSession{});
    ASSERT_TRUE(m.ok());
    if (!low(storage::route_key_of(m->id))) high_buckets.insert(bucket_of(m->id));
  }
  ASSERT_FALSE(high_buckets.empty());
  // b holds only the low half: equal under `low`, different over everything.
  ASSERT_NO_FATAL_FAILURE(copy(*a_, *b_,
                               {[&](const SessionId& id) { return low(storage::route_key_of(id)); },
                                [](std::string_view) { return true; }}));
  EXPECT_TRUE(
      differing_buckets(compute_digest(*a_, ids_, low), compute_digest(*b_, ids_, low)).empty());
  const auto diff = differing_buckets(digest(*a_), digest(*b_));
  EXPECT_EQ(std::set<std::uint32_t>(diff.begin(), diff.end()), high_buckets);
}

TEST(Ranges, RingArcsIntersectionsAndMembership) {
  const std::vector<std::uint64_t> points = {100, 200, 300};
  // Point 0 closes the arc that wraps around: [0, 100] and (300, max].
  EXPECT_EQ(ring_ranges(points, [](std::size_t i) { return i == 0; }),
            (Ranges{{0, 100}, {301, UINT64_MAX}}));
  EXPECT_EQ(ring_ranges(points, [](std::size_t i) { return i > 0; }), (Ranges{{101, 300}}));
  EXPECT_EQ(ring_ranges(points, [](std::size_t) { return true; }), (Ranges{{0, UINT64_MAX}}));
  EXPECT_TRUE(ring_ranges(points, [](std::size_t) { return false; }).empty());
  const Ranges a{{0, 100}, {301, UINT64_MAX}};
  const Ranges b{{50, 350}};
  EXPECT_EQ(intersect(a, b), (Ranges{{50, 100}, {301, 350}}));
  EXPECT_EQ(intersect(b, a), intersect(a, b));
  EXPECT_TRUE(intersect(Ranges{{0, 10}}, Ranges{{11, 20}}).empty());
  for (std::uint64_t p : {0, 100, 301, 1000}) EXPECT_TRUE(in_ranges(a, p)) << p;
  for (std::uint64_t p : {101, 200, 300}) EXPECT_FALSE(in_ranges(a, p)) << p;
}

TEST(Ranges, AWireListThatIsNotSortedDisjointPairsIsRefused) {
  wire::DigestRequest r;
  for (std::uint64_t v : {10, 20, 30, 40}) r.add_ranges(v);
  EXPECT_EQ(ranges_from_wire(r, 8).value(), (Ranges{{10, 20}, {30, 40}}));
  EXPECT_FALSE(ranges_from_wire(r, 1).ok()) << "more pairs than allowed";
  r.add_ranges(50);
  EXPECT_FALSE(ranges_from_wire(r, 8).ok()) << "an odd count";
  wire::DigestRequest overlap;
  for (std::uint64_t v : {10, 20, 15, 40}) overlap.add_ranges(v);
  EXPECT_FALSE(ranges_from_wire(overlap, 8).ok());
  wire::DigestRequest reversed;
  for (std::uint64_t v : {20, 10}) reversed.add_ranges(v);
  EXPECT_FALSE(ranges_from_wire(reversed, 8).ok());
}

// The receiving side of a region's anti-entropy, driven by hand as repair_with_region drives
// it: the differing buckets' fingerprints, then the states asked for by key; only what differs
// is named or moves.
TEST_F(DigestTest, ARegionDigestNamesOnlyTheDifferingStatesAndHandsThemOverByKey) {
  std::vector<SessionId> made;
  for (int i = 0; i < 300; ++i) made.push_back(a_->create(storage::NewSession{}).value().id);
  ASSERT_NO_FATAL_FAILURE(copy(*a_, *b_, everything()));
  ASSERT_TRUE(a_->destroy(made[5]).ok());  // a tombstone only a has
  const SessionId only_a = a_->create(storage::NewSession{}).value().id;
  const Ranges all{{0, UINT64_MAX}};
  // b answers a's digest.
  wire::DigestRequest request;
  to_wire(digest(*a_), &request);
  request.set_fingerprints(true);
  wire::DigestResponse response;
  ASSERT_TRUE(answer_region_digest(*b_, ids_, all, request, &response).ok());
  std::set<std::uint32_t> expected{bucket_of(made[5]), bucket_of(only_a)};
  EXPECT_EQ(std::set<std::uint32_t>(response.differing().begin(), response.differing().end()),
            expected);
  ASSERT_EQ(response.keys_size(), response.hashes_size());
  // a's fingerprints of those buckets against b's: exactly the two states differ.
  std::map<std::uint64_t, std::uint64_t> theirs;
  for (int i = 0; i < response.keys_size(); ++i) theirs[response.keys(i)] = response.hashes(i);
  std::set<std::uint64_t> differ;
  a_->fingerprints(bucket_selection(ids_, {expected.begin(), expected.end()},
                                    [](std::uint64_t) { return true; }),
                   [&](std::span<const storage::SessionTable::Fingerprint> batch) {
                     for (const auto& f : batch) {
                       const auto it = theirs.find(fingerprint_key(f));
                       if (it == theirs.end() || it->second != fingerprint_hash(f)) {
                         differ.insert(fingerprint_key(f));
                       }
                     }
                   });
  EXPECT_EQ(differ, (std::set<std::uint64_t>{key_of_session(made[5]), key_of_session(only_a)}));
  // Asked by key, b hands over its state of made[5] (alive there) and nothing else.
  wire::DigestRequest ask;
  ask.add_want(key_of_session(made[5]));
  ask.add_want(key_of_session(only_a));
  wire::DigestResponse states;
  ASSERT_TRUE(answer_region_digest(*b_, ids_, all, ask, &states).ok());
  ASSERT_EQ(states.entries_size(), 1);
  EXPECT_EQ(states.entries(0).id(),
            std::string(reinterpret_cast<const char*>(made[5].data()), made[5].size()));
  // Outside the ranges asked for, nothing is compared.
  wire::DigestResponse none;
  ASSERT_TRUE(answer_region_digest(*b_, ids_, Ranges{}, ask, &none).ok());
  EXPECT_EQ(none.entries_size(), 0);
}

}  // namespace
}  // namespace sessiond::replication
