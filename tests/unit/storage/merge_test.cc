// The merge of DESIGN §7 is a join: commutative, associative and idempotent, on random states of
// one session (random fields, field tombstones, policy writes, touches, access histories,
// incarnations and forced equal clocks from different nodes), and a tombstone beats every
// state of its incarnation or an earlier one. At least 100,000 merges per run.
#include "storage/detail/merge.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "storage/detail/record.h"
#include "storage/hlc.h"

namespace sessiond::storage::detail {
namespace {

constexpr int kRounds = 12'000;  // x 9 merges per round (below) > 100,000

class Gen {
 public:
  explicit Gen(std::uint64_t seed) : rng_(seed) {}
  std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng_);
  }
  // Versions from a small space, so that equal hlc values from different nodes and regions
  // (and equal versions) come up often.
  Version version() {
    return {HybridLogicalClock::pack(1000 + uniform(0, 3), uniform(0, 2)),
            static_cast<std::uint32_t>(uniform(0, 1)), static_cast<std::uint32_t>(uniform(0, 1))};
  }

  // One state of the session `id`, in epoch (incarnation, birth) chosen from a few; birth
  // attributes follow from the epoch, as they do for real states of one session.
  RecordPtr state(const SessionId& id) {
    const auto incarnation = static_cast<std::uint32_t>(uniform(0, 1));
    const Version birth{HybridLogicalClock::pack(900 + uniform(0, 1), 0), 0, incarnation};
    std::vector<FieldRef> fields;
    std::vector<std::string> values;
    values.reserve(8);
    Version top = birth;
    for (const char* name : {"a", "b", "cart", "role", "theme"}) {
      if (uniform(0, 2) == 0) continue;
      FieldRef f;
      f.name = name;
      f.version = version();
      f.deleted = uniform(0, 3) == 0;
      if (!f.deleted) {
        values.push_back(std::string(uniform(0, 3), static_cast<char>('a' + uniform(0, 2))));
        f.value = values.back();
      }
      top = std::max(top, f.version);
      fields.push_back(f);
    }
    BlobMeta meta;
    meta.user_id = incarnation == 0 ? "alice" : "";
    meta.incarnation = incarnation;
    meta.birth = birth;
    meta.stamp = birth.hlc % 3;
    meta.timeouts_version = uniform(0, 1) ? birth : version();
    top = std::max(top, meta.timeouts_version);
    if (uniform(0, 1)) top = std::max(top, version());  // a write that only touched others
    std::string blob;
    encode_blob(meta, fields, top, &blob);
    RecordPtr r = Record::make(id, blob);
    r->created_at_ms = static_cast<std::int64_t>(birth.hlc >> 16);
    r->last_access_ms = r->created_at_ms + static_cast<std::int64_t>(uniform(0, 50));
    // The policy follows from the version of the policy write.
    r->idle_ms = 60'000 + static_cast<std::int64_t>(meta.timeouts_version.hlc % 7) * 1000;
    r->absolute_ms = static_cast<std::int64_t>(meta.timeouts_version.hlc % 5) * 3'600'000;
    r->cap_ms = r->created_at_ms + 86'400'000;
    r->set_version(top);
    // The context is bound at birth: every state of incarnation 0 has it.
    if (incarnation == 0 || uniform(0, 1)) {
      r->extras = std::make_unique<Extras>();
      if (incarnation == 0) r->extras->context = ClientContext{"203.0.113.0/24", 7};
      for (std::uint64_t i = uniform(0, 4); i > 0; --i) {
        r->extras->access_log.push_back(
            {r->created_at_ms + static_cast<std::int64_t>(uniform(0, 20)),
             uniform(0, 1) ? "198.51.100.1" : "198.51.100.2", uniform(0, 1), false, 0, 0});
      }
      canonical_access_log(&r->extras->access_log, 3);
    }
    return r;
  }

  Tombstone tombstone() {
    return {version(), static_cast<std::int64_t>(uniform(1, 5)),
            static_cast<std::uint32_t>(uniform(0, 1))};
  }

 private:
  std::mt19937_64 rng_;
};

std::string describe(const Record& r) {
  Session s;
  record_to_session(r, &s);
  std::string out = "v=" + std::to_string(s.version.hlc) + "/" + std::to_string(s.version.region) +
                    "/" + std::to_string(s.version.node) +
                    " la=" + std::to_string(s.last_access_ms);
  for (const Field& f : s.fields) out += " " + f.name + "=" + f.value;
  return out;
}

std::uint64_t seed() {
  const char* env = std::getenv("SESSIOND_MERGE_SEED");
  return env ? std::strtoull(env, nullptr, 10) : 20261201;
}

TEST(Merge, IsCommutativeAssociativeAndIdempotentOnRandomStates) {
  Gen gen(seed());
  const SessionId id = new_session_id();
  constexpr std::size_t kLog = 3;
  std::uint64_t merges = 0;
  for (int round = 0; round < kRounds; ++round) {
    RecordPtr a = gen.state(id), b = gen.state(id), c = gen.state(id);
    RecordPtr ab = merge_records(*a, *b, kLog), ba = merge_records(*b, *a, kLog);
    ASSERT_TRUE(same_state(*ab, *ba))
        << "round " << round << ": a+b " << describe(*ab) << " != b+a " << describe(*ba);
    RecordPtr ab_c = merge_records(*ab, *c, kLog);
    RecordPtr bc = merge_records(*b, *c, kLog);
    RecordPtr a_bc = merge_records(*a, *bc, kLog);
    ASSERT_TRUE(same_state(*ab_c, *a_bc)) << "round " << round << ": (a+b)+c " << describe(*ab_c)
                                          << " != a+(b+c) " << describe(*a_bc);
    ASSERT_TRUE(same_state(*merge_records(*a, *a, kLog), *a)) << "round " << round;
    ASSERT_TRUE(same_state(*merge_records(*ab, *a, kLog), *ab))
        << "round " << round << ": merging what was merged in changes nothing";
    ASSERT_TRUE(same_state(*merge_records(*ab_c, *ab_c, kLog), *ab_c)) << "round " << round;
    merges += 9;
    // What the merge keeps is what it was given: a field comes from a or b, with the newest
    // version of the pair.
    Session merged, sa, sb;
    record_to_session(*ab, &merged);
    record_to_session(*a, &sa);
    record_to_session(*b, &sb);
    if (epoch_of(*a) == epoch_of(*b)) {
      ASSERT_EQ(merged.version, std::max(sa.version, sb.version));
      ASSERT_EQ(merged.last_access_ms, std::max(sa.last_access_ms, sb.last_access_ms));
    } else {
      ASSERT_TRUE(same_state(*ab, epoch_of(*a) > epoch_of(*b) ? *a : *b))
          << "a later incarnation (or birth) wins whole";
    }
  }
  EXPECT_GE(merges, 100'000u);
}

TEST(Merge, TombstonesJoinAndBeatEveryStateOfTheirIncarnation) {
  Gen gen(seed() + 1);
  const SessionId id = new_session_id();
  for (int round = 0; round < 20'000; ++round) {
    const Tombstone t1 = gen.tombstone(), t2 = gen.tombstone(), t3 = gen.tombstone();
    ASSERT_EQ(merge_tombstones(t1, t2), merge_tombstones(t2, t1));
    ASSERT_EQ(merge_tombstones(merge_tombstones(t1, t2), t3),
              merge_tombstones(t1, merge_tombstones(t2, t3)));
    ASSERT_EQ(merge_tombstones(t1, t1), t1);
    RecordPtr r = gen.state(id);
    const std::uint32_t incarnation = std::get<0>(epoch_of(*r));
    ASSERT_EQ(tombstone_ends(t1, *r), incarnation <= t1.incarnation)
        << "a tombstone ends its own and earlier incarnations, whatever the versions";
    // A state merged with anything of its incarnation is still ended by the tombstone.
    RecordPtr merged = merge_records(*r, *gen.state(id), 3);
    if (std::get<0>(epoch_of(*merged)) <= t1.incarnation) {
      ASSERT_TRUE(tombstone_ends(t1, *merged));
    }
  }
}

TEST(Merge, GenerationsJoin) {
  Gen gen(seed() + 2);
  std::vector<SessionId> ids = {new_session_id(), new_session_id(), new_session_id()};
  std::sort(ids.begin(), ids.end());
  auto random_generation = [&] {
    Generation g{gen.uniform(0, 3), {}};
    for (const SessionId& id : ids) {
      if (gen.uniform(0, 1)) g.keep.push_back(id);
    }
    return g;
  };
  for (int round = 0; round < 20'000; ++round) {
    const Generation a = random_generation(), b = random_generation(), c = random_generation();
    ASSERT_EQ(merge_generations(a, b), merge_generations(b, a));
    ASSERT_EQ(merge_generations(merge_generations(a, b), c),
              merge_generations(a, merge_generations(b, c)));
    ASSERT_EQ(merge_generations(a, a), a);
    ASSERT_EQ(merge_generations(a, b).generation, std::max(a.generation, b.generation));
  }
}

TEST(Merge, ARemovedFieldStaysRemovedAgainstAnOlderWriteArrivingLater) {
  const SessionId id = new_session_id();
  const Version v1{HybridLogicalClock::pack(1000, 0), 1, 0};
  const Version v2{HybridLogicalClock::pack(1000, 0), 1, 1};  // same hlc, another node: newer
  std::string blob_set, blob_removed;
  encode_blob("u", std::vector<FieldRef>{{"cart", "3", v1}}, v1, &blob_set);
  encode_blob("u", std::vector<FieldRef>{{"cart", {}, v2, true}}, v2, &blob_removed);
  RecordPtr set = Record::make(id, blob_set), removed = Record::make(id, blob_removed);
  set->set_version(v1);
  removed->set_version(v2);
  for (RecordPtr* r : {&set, &removed}) {
    (*r)->created_at_ms = (*r)->last_access_ms = 1000;
    (*r)->cap_ms = kNoDeadline;
  }
  // Field tombstones carry birth = v1 for both: same epoch.
  std::string blob;
  BlobMeta meta;
  meta.user_id = "u";
  meta.birth = meta.timeouts_version = v1;
  encode_blob(meta, std::vector<FieldRef>{{"cart", {}, v2, true}}, v2, &blob);
  removed = Record::make(id, blob);
  removed->set_version(v2);
  removed->created_at_ms = removed->last_access_ms = 1000;
  for (const auto& merged : {merge_records(*set, *removed, 3), merge_records(*removed, *set, 3)}) {
    Session s;
    record_to_session(*merged, &s);
    EXPECT_TRUE(s.fields.empty()) << "the removal (node 1) is newer than the set (node 0)";
  }
}

}  // namespace
}  // namespace sessiond::storage::detail
