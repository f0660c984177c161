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

}  // namespace
}  // namespace sessiond::client_detail
