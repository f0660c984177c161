#include "protocol/status.h"

#include <gtest/gtest.h>

#include <set>

namespace sessiond {
namespace {

TEST(Status, DefaultIsOkAndPrintsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(Status, CarriesCodeAndMessage) {
  Status s = Status::Unavailable("disk full on /var/lib/sessiond");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.ToString(), "UNAVAILABLE: disk full on /var/lib/sessiond");
  EXPECT_EQ(Status::NotFound().ToString(), "NOT_FOUND");
}

TEST(Status, EveryCodeHasADistinctName) {
  std::set<std::string_view> names;
  for (int c = 0; c <= static_cast<int>(StatusCode::kHijackSuspected); ++c) {
    auto name = status_code_name(static_cast<StatusCode>(c));
    EXPECT_NE(name, "UNKNOWN") << c;
    names.insert(name);
  }
  EXPECT_EQ(names.size(), static_cast<std::size_t>(StatusCode::kHijackSuspected) + 1);
  EXPECT_EQ(status_code_name(static_cast<StatusCode>(200)), "UNKNOWN");
}

TEST(Result, HoldsValueOrStatus) {
  Result<int> good(42);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 42);
  EXPECT_TRUE(good.status().ok());
  Result<int> bad(Status::Expired());
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.code(), StatusCode::kExpired);
}

}  // namespace
}  // namespace sessiond
