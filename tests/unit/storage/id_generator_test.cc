// User-affine ids (DESIGN §2, §6): a route key from a keyed hash of the user id, 24 random bytes.
#include "storage/id_generator.h"

#include <gtest/gtest.h>

#include <set>

#include "storage/clock.h"
#include "storage/session_table.h"

namespace sessiond::storage {
namespace {

RouteKeySecret secret_of(std::uint8_t b) {
  RouteKeySecret s;
  s.fill(b);
  return s;
}

TEST(IdGenerator, AUsersSessionsShareARouteKeyThatDependsOnTheSecret) {
  const IdGenerator ids(secret_of(1));
  const SessionId a = ids.next_id("alice"), b = ids.next_id("alice");
  EXPECT_NE(a, b);
  EXPECT_EQ(route_key_of(a), route_key_of(b));
  EXPECT_EQ(route_key_of(a), ids.route_key_of_user("alice"));
  EXPECT_NE(route_key_of(a), route_key_of(ids.next_id("bob")));
  EXPECT_NE(IdGenerator(secret_of(2)).route_key_of_user("alice"), ids.route_key_of_user("alice"))
      << "without the secret the route key says nothing of the user id";
  EXPECT_EQ(IdGenerator(secret_of(1)).route_key_of_user("alice"), ids.route_key_of_user("alice"))
      << "every node with the same secret places a user alike";
  // The other 24 bytes are random; anonymous route keys are random too.
  std::set<RouteKey> anonymous;
  for (int i = 0; i < 100; ++i) anonymous.insert(route_key_of(ids.next_id("")));
  EXPECT_EQ(anonymous.size(), 100u);
}

TEST(IdGenerator, RegenerateKeepsTheRouteKeyUnlessTheUserChanges) {
  ManualClock clock;
  const IdGenerator ids(secret_of(7));
  TableOptions options;
  options.ids = &ids;
  SessionTable table(options, clock, nullptr);
  auto anon = table.create(NewSession{});
  auto alice = table.create(NewSession{"alice", {}, {}, {}, {}, false, {}});
  ASSERT_TRUE(anon.ok() && alice.ok());
  EXPECT_EQ(route_key_of(alice->id), ids.route_key_of_user("alice"));
  auto same = table.regenerate(alice->id);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(route_key_of(same->id), route_key_of(alice->id));
  auto still_anonymous = table.regenerate(anon->id);
  ASSERT_TRUE(still_anonymous.ok());
  EXPECT_EQ(route_key_of(still_anonymous->id), route_key_of(anon->id));
  RegenerateOptions login;
  login.user_id = "bob";
  auto logged_in = table.regenerate(still_anonymous->id, login);
  ASSERT_TRUE(logged_in.ok());
  EXPECT_EQ(route_key_of(logged_in->id), ids.route_key_of_user("bob")) << "placed with bob's";
}

}  // namespace
}  // namespace sessiond::storage
