// RequestCache (daemon/request_cache.h): what a retried CREATE or REGENERATE gets back by its
// request id, and how long it is remembered.
#include "daemon/request_cache.h"

#include <gtest/gtest.h>

#include <string>

namespace sessiond::daemon {
namespace {

using Lookup = RequestCache::Lookup;

TEST(RequestCache, ARetryGetsTheFirstAnswerAndAnotherRequestUnderTheIdIsRefused) {
  RequestCache cache;
  std::string answer;
  EXPECT_EQ(cache.begin("id-1", 7, 1000, &answer), Lookup::kNew);
  EXPECT_EQ(cache.begin("id-1", 7, 1001, &answer), Lookup::kRunning);
  cache.finish("id-1", "first answer");
  EXPECT_EQ(cache.begin("id-1", 7, 1002, &answer), Lookup::kAnswered);
  EXPECT_EQ(answer, "first answer");
  EXPECT_EQ(cache.begin("id-1", 8, 1003, &answer), Lookup::kReused);
  // Ids that share a prefix, or differ only in length, are different ids.
  EXPECT_EQ(cache.begin("id-", 7, 1004, &answer), Lookup::kNew);
  EXPECT_EQ(cache.begin(std::string("id-1\0", 5), 7, 1004, &answer), Lookup::kNew);
  EXPECT_EQ(cache.size(), 3u);
}

TEST(RequestCache, AFailedFirstAttemptIsRunAgain) {
  RequestCache cache;
  std::string answer;
  EXPECT_EQ(cache.begin("id", 1, 1000, &answer), Lookup::kNew);
  cache.finish("id", "");
  EXPECT_EQ(cache.begin("id", 1, 1001, &answer), Lookup::kNew);
}

TEST(RequestCache, AnswersLeaveAfterTheirTimeAndBeyondTheCapacityOldestFirst) {
  RequestCache cache(/*capacity=*/3, /*keep_ms=*/100);
  std::string answer;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(cache.begin("id" + std::to_string(i), 1, 1000 + i, &answer), Lookup::kNew);
    cache.finish("id" + std::to_string(i), "a" + std::to_string(i));
  }
  ASSERT_EQ(cache.begin("id3", 1, 1003, &answer), Lookup::kNew);  // over capacity: id0 goes
  cache.finish("id3", "a3");
  EXPECT_EQ(cache.begin("id1", 1, 1004, &answer), Lookup::kAnswered);
  EXPECT_EQ(answer, "a1");
  EXPECT_EQ(cache.begin("id0", 1, 1005, &answer), Lookup::kNew);  // forgotten: runs again
  // 100 ms after id2 began, it is forgotten too.
  EXPECT_EQ(cache.begin("id2", 1, 1102, &answer), Lookup::kNew);
}

TEST(RequestCache, IdsLongerThanTheLimitAreRefusedAndNotKept) {
  RequestCache cache;
  std::string answer;
  const std::string longest(RequestCache::kMaxIdBytes, 'x');
  EXPECT_EQ(cache.begin(longest, 1, 1000, &answer), Lookup::kNew);
  EXPECT_EQ(cache.begin(longest + "x", 1, 1000, &answer), Lookup::kReused);
  cache.finish(longest + "x", "ignored");
  EXPECT_EQ(cache.size(), 1u);
}

}  // namespace
}  // namespace sessiond::daemon
