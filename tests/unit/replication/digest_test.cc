// Anti-entropy digests (replication/digest.h): two tables that hold the same states have equal
// digests, whatever order they were built in; a session missing, ended or at another version on
// one side makes its bucket, and only its bucket, differ; a bucket selection picks exactly the
// states of the differing buckets.
#include "replication/digest.h"

#include <gtest/gtest.h>

#include <set>

#include "replication/applier.h"
#include "replication/codec.h"
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

}  // namespace
}  // namespace sessiond::replication
