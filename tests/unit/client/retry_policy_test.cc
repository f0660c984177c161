#include "detail/retry_policy.h"

#include <gtest/gtest.h>

#include <chrono>

namespace sessiond::client_detail {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

TEST(RetryPolicy, DelayGrowsExponentiallyUpToTheCap) {
  RetryPolicy policy{milliseconds(10), milliseconds(100), 2.0, 4};
  EXPECT_EQ(policy.delay(1), milliseconds(10));
  EXPECT_EQ(policy.delay(2), milliseconds(20));
  EXPECT_EQ(policy.delay(3), milliseconds(40));
  EXPECT_EQ(policy.delay(4), milliseconds(80));
  EXPECT_EQ(policy.delay(5), milliseconds(100));
  EXPECT_EQ(policy.delay(1000), milliseconds(100));  // no overflow
}

TEST(RetryPolicy, UnsentCallsAreRetriedWhateverTheirKind) {
  RetryPolicy policy;
  const auto now = Clock::now();
  EXPECT_TRUE(policy.may_retry(false, false, 1, now + milliseconds(100), now));
  EXPECT_TRUE(policy.may_retry(true, false, 1, now + milliseconds(100), now));
}

TEST(RetryPolicy, SentCallsAreRetriedOnlyWhenIdempotent) {
  RetryPolicy policy;
  const auto now = Clock::now();
  EXPECT_TRUE(policy.may_retry(true, true, 1, now + milliseconds(100), now));
  EXPECT_FALSE(policy.may_retry(false, true, 1, now + milliseconds(100), now));
}

TEST(RetryPolicy, NoRetryPastTheDeadlineOrTheAttemptBudget) {
  RetryPolicy policy{milliseconds(10), milliseconds(100), 2.0, 2};
  const auto now = Clock::now();
  EXPECT_FALSE(policy.may_retry(true, false, 1, now, now));
  EXPECT_TRUE(policy.may_retry(true, false, 2, now + milliseconds(1), now));
  EXPECT_FALSE(policy.may_retry(true, false, 3, now + milliseconds(1), now));
}

TEST(ParseHostPort, AcceptsHostsAndBracketedIpv6) {
  auto v4 = parse_host_port("127.0.0.1:7400");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, "7400");
  auto v6 = parse_host_port("[::1]:80");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  auto name = parse_host_port("localhost:65535");
  ASSERT_TRUE(name);
  EXPECT_EQ(name->host, "localhost");
}

TEST(ParseHostPort, RejectsMalformedAddresses) {
  for (const char* bad : {"", "7400", ":7400", "host:", "host:0", "host:65536", "host:12a",
                          "::1:80", "host:123456"}) {
    EXPECT_FALSE(parse_host_port(bad)) << bad;
  }
}

}  // namespace
}  // namespace sessiond::client_detail
