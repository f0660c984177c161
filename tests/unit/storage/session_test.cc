#include "storage/session.h"

#include <gtest/gtest.h>

#include <set>

#include "storage/clock.h"
#include "storage/hlc.h"

namespace sessiond::storage {
namespace {

TEST(SessionId, FreshIdsAreDistinctAndRoundTripThroughText) {
  std::set<SessionId> seen;
  for (int i = 0; i < 1000; ++i) {
    SessionId id = new_session_id();
    EXPECT_TRUE(seen.insert(id).second);
    std::string text = session_id_to_text(id);
    ASSERT_EQ(text.size(), 43u);
    EXPECT_EQ(
        text.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        std::string::npos);
    auto back = session_id_from_text(text);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, id);
  }
}

TEST(SessionId, TextOfKnownBytes) {
  SessionId zeros{};
  EXPECT_EQ(session_id_to_text(zeros), std::string(43, 'A'));
  SessionId ones;
  ones.fill(0xff);
  // 256 one-bits: 42 full sextets and a last one of 4 ones and 2 padding zeros (60, '8').
  EXPECT_EQ(session_id_to_text(ones), std::string(42, '_') + "8");
}

TEST(SessionId, RejectsMalformedText) {
  const std::string good = session_id_to_text(new_session_id());
  EXPECT_FALSE(session_id_from_text("").has_value());
  EXPECT_FALSE(session_id_from_text(good.substr(1)).has_value());
  EXPECT_FALSE(session_id_from_text(good + "A").has_value());
  std::string bad_char = good;
  bad_char[5] = '+';
  EXPECT_FALSE(session_id_from_text(bad_char).has_value());
  // The last character carries 2 padding bits that must be zero ('_' sets them).
  std::string bad_padding = std::string(42, 'A') + "_";
  EXPECT_FALSE(session_id_from_text(bad_padding).has_value());
}

TEST(Deadline, IsTheEarlierOfIdleAndAbsolute) {
  EXPECT_EQ(compute_deadline(1000, 5000, {100, 10000}), 5100);    // idle first
  EXPECT_EQ(compute_deadline(1000, 10950, {100, 10000}), 11000);  // absolute caps sliding
  EXPECT_EQ(compute_deadline(1000, 5000, {0, 10000}), 11000);     // absolute only
  EXPECT_EQ(compute_deadline(1000, 5000, {100, 0}), 5100);        // idle only
  EXPECT_EQ(compute_deadline(1000, 5000, {0, 0}), kNoDeadline);
}

TEST(Deadline, AbsoluteShorterThanIdleWins) {
  // A policy whose absolute timeout is shorter than its idle one expires at the absolute one.
  EXPECT_EQ(compute_deadline(0, 0, {60'000, 1'000}), 1'000);
}

TEST(Preset, TimeoutsFollowTheIndustryTable) {
  constexpr std::int64_t kMin = 60'000, kHour = 60 * kMin, kDay = 24 * kHour;
  EXPECT_EQ(preset_timeouts(Preset::kFinance), (Timeouts{10 * kMin, 30 * kMin}));
  EXPECT_EQ(preset_timeouts(Preset::kHealthcare), (Timeouts{15 * kMin, 60 * kMin}));
  EXPECT_EQ(preset_timeouts(Preset::kEcommerce), (Timeouts{30 * kMin, 24 * kHour}));
  EXPECT_EQ(preset_timeouts(Preset::kMedia), (Timeouts{1 * kHour, 7 * kDay}));
  EXPECT_EQ(preset_timeouts(Preset::kGaming), (Timeouts{2 * kHour, 30 * kDay}));
}

TEST(Preset, NamesRoundTrip) {
  for (Preset p : {Preset::kFinance, Preset::kHealthcare, Preset::kEcommerce, Preset::kMedia,
                   Preset::kGaming}) {
    EXPECT_EQ(preset_from_name(preset_name(p)), p);
  }
  EXPECT_FALSE(preset_from_name("Finance").has_value());
  EXPECT_FALSE(preset_from_name("").has_value());
}

TEST(Session, FieldLookupByName) {
  Session s;
  s.fields = {{"a", "1", {}}, {"cart", "[]", {}}, {"role", "admin", {}}};
  ASSERT_NE(s.field("cart"), nullptr);
  EXPECT_EQ(s.field("cart")->value, "[]");
  EXPECT_EQ(s.field("missing"), nullptr);
}

TEST(HybridLogicalClock, StrictlyIncreasesEvenWhenWallTimeStands) {
  ManualClock clock(5000);
  HybridLogicalClock hlc(clock);
  std::uint64_t prev = hlc.now();
  for (int i = 0; i < 1000; ++i) {
    std::uint64_t next = hlc.now();
    EXPECT_GT(next, prev);
    prev = next;
  }
  EXPECT_EQ(HybridLogicalClock::physical_ms(prev), 5000u);
  clock.advance_ms(10);
  EXPECT_EQ(hlc.now(), HybridLogicalClock::pack(5010, 0));
}

TEST(HybridLogicalClock, NeverGoesBackAndMovesPastObservedTimestamps) {
  ManualClock clock(5000);
  HybridLogicalClock hlc(clock);
  const std::uint64_t remote = HybridLogicalClock::pack(9000, 7);
  hlc.observe(remote);
  EXPECT_GT(hlc.now(), remote);
  clock.set_ms(1000);  // wall clock jumps back
  EXPECT_GT(hlc.now(), remote);
}

TEST(ContextMatch, AddressesAndPrefixes) {
  const ClientContext v4{"203.0.113.0/24", 1};
  EXPECT_TRUE(context_matches(v4, {"203.0.113.1", 1}));
  EXPECT_TRUE(context_matches(v4, {"203.0.113.255", 1}));
  EXPECT_FALSE(context_matches(v4, {"203.0.114.1", 1}));
  EXPECT_FALSE(context_matches(v4, {"203.0.113.1", 2}));  // another user agent
  EXPECT_TRUE(context_matches({"198.51.100.7", 1}, {"198.51.100.7", 1}));
  EXPECT_FALSE(context_matches({"198.51.100.7", 1}, {"198.51.100.8", 1}));
  EXPECT_TRUE(context_matches({"198.51.100.7", 1}, {"::ffff:198.51.100.7", 1}));
  const ClientContext v6{"2001:db8:1:2::/64", 1};
  EXPECT_TRUE(context_matches(v6, {"2001:db8:1:2:abcd::1", 1}));
  EXPECT_FALSE(context_matches(v6, {"2001:db8:1:3::1", 1}));
  EXPECT_FALSE(context_matches(v6, {"203.0.113.1", 1}));
  EXPECT_TRUE(context_matches({"", 5}, {"192.0.2.1", 5}));  // bound to the user agent only
  EXPECT_FALSE(context_matches({"", 5}, {"192.0.2.1", 6}));
  EXPECT_FALSE(context_matches(v4, {"203.0.113.0/24x", 1}));  // a request gives an address
  EXPECT_TRUE(context_ip_error("10.0.0.0/8").empty());
  EXPECT_TRUE(context_ip_error("").empty());
  EXPECT_FALSE(context_ip_error("10.0.0.0/33").empty());
  EXPECT_FALSE(context_ip_error("2001:db8::/129").empty());
  EXPECT_FALSE(context_ip_error("example.com").empty());
  EXPECT_FALSE(context_ip_error("10.0.0.0/").empty());
}

}  // namespace
}  // namespace sessiond::storage
