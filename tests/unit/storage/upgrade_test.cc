// A data directory written by the sessiond before issue 11 (record format 1, marker sessiond-1;
// tests/fixtures/datadir-format1) is upgraded in place on the first start: every session comes
// back with its id (so signed ids and cookies keep working), fields, user and context, gets a
// lifetime cap from its creation, stays reachable through its user's index (its id has no
// route key) and revocable; the records are rewritten in format 2 and the marker moves on.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "storage/clock.h"
#include "storage/detail/record.h"
#include "storage/session_table.h"
#include "storage/store.h"
#include "tests/support/temp_dir.h"

#ifndef SESSIOND_SOURCE_DIR
#error "SESSIOND_SOURCE_DIR must name the source tree (tests/unit/CMakeLists.txt)"
#endif

namespace sessiond::storage {
namespace {

namespace fs = std::filesystem;
using sessiond::testing::TempDir;

constexpr std::int64_t kWrittenAt = 1796164909470;  // just after the fixture was written
constexpr std::int64_t kDay = 24LL * 3600 * 1000;

SessionId id_of(const char* text) { return session_id_from_text(text).value(); }

std::string copy_fixture(const TempDir& tmp) {
  const std::string path = tmp.sub("data");
  fs::copy(fs::path(SESSIOND_SOURCE_DIR) / "tests/fixtures/datadir-format1", path);
  fs::remove(fs::path(path) / "README.md");
  return path;
}

StoreOptions options_at(const std::string& path) {
  StoreOptions o;
  o.path = path;
  o.write_buffer_bytes = 1u << 20;
  o.block_cache_bytes = 1u << 20;
  return o;
}

TEST(Upgrade, ADataDirectoryOfTheFormerFormatIsUpgradedInPlace) {
  TempDir tmp;
  const std::string path = copy_fixture(tmp);
  ManualClock clock(kWrittenAt);
  const SessionId alice1 = id_of("6MI1ICKyDqZBZ5kzn57hzuqHGQ3deXIgiA41c_hD6l0");
  const SessionId alice2 = id_of("PkmIqYqCrZJja7DEkQqUY8rKGGlLxIDGhvOOBRpgCUw");
  const SessionId anonymous = id_of("w-4qJLbJDkf28uX_EG7fdu5oXOtYMysofAuX3c9vkyI");
  const SessionId bob = id_of("xZHDU3Gfq5qX0HW73mb6CyzaWjzw1_RYSirrE4Qy21c");
  const SessionId destroyed = id_of("A8M9xDAoax7sKQu5KKAdXhi3cgqXr80xfRHWOtRtmXg");
  {
    auto store = Store::open(options_at(path), clock);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_TRUE((*store)->needs_upgrade());
    SessionTable table(TableOptions{}, clock, store->get());
    auto report = table.recover();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->loaded, 6u) << "4 sessions and 2 RESP keys";
    EXPECT_FALSE((*store)->needs_upgrade());

    Session s;
    ASSERT_TRUE(table.get(alice1, {}, &s).ok());
    EXPECT_EQ(s.user_id, "alice");
    ASSERT_EQ(s.fields.size(), 2u);
    EXPECT_EQ(s.fields[0].name, "cart");
    EXPECT_EQ(s.fields[0].value, "3");
    EXPECT_EQ(s.preset, Preset::kGaming);
    ASSERT_TRUE(s.context);
    EXPECT_EQ(s.context->ip, "203.0.113.0/24");
    EXPECT_EQ(s.created_at_ms, 1796164904219);
    EXPECT_EQ(s.cap_ms, s.created_at_ms + TableOptions{}.max_lifetime_ms)
        << "the lifetime cap counts from the session's creation";
    ASSERT_TRUE(table.get(anonymous, {}, &s).ok());
    EXPECT_EQ(s.deadline_ms(), s.created_at_ms + 30 * kDay) << "no timeouts: the cap ends it";
    ASSERT_TRUE(table.get(bob, {}, &s).ok());
    EXPECT_EQ(s.fields[0].value, "admin");
    EXPECT_EQ(table.get(destroyed, {}, &s).code(), StatusCode::kNotFound);

    // Ids without a route key stay reachable through their user, and revocable.
    EXPECT_EQ(table.list_user("alice").size(), 2u);
    auto kept = table.create(NewSession{"alice", {}, {}, {}, {}, false, {}});
    ASSERT_TRUE(kept.ok());
    EXPECT_EQ(table.revoke_user("alice", &kept->id).value(), 2u);
    EXPECT_EQ(table.get(alice2, {}, &s).code(), StatusCode::kNotFound);
    EXPECT_TRUE(table.get(kept->id, {}, &s).ok());
  }
  // Reopened: the current format, every record rewritten in it, nothing lost.
  auto store = Store::open(options_at(path), clock);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_FALSE((*store)->needs_upgrade());
  int sessions = 0;
  ASSERT_TRUE((*store)
                  ->for_each_session([&](std::string_view, std::string_view value) {
                    const auto format = detail::value_format(value);
                    EXPECT_NE(format, detail::kValueFormatV1) << "a record was not rewritten";
                    if (format == detail::kValueFormat) ++sessions;
                    return Status();
                  })
                  .ok());
  EXPECT_EQ(sessions, 5) << "alice's kept session, the anonymous one, bob's, 2 RESP keys";
  SessionTable table(TableOptions{}, clock, store->get());
  ASSERT_TRUE(table.recover().ok());
  Session s;
  EXPECT_EQ(table.get(alice1, {}, &s).code(), StatusCode::kNotFound) << "revoked for good";
  EXPECT_TRUE(table.get(bob, {}, &s).ok());
}

}  // namespace
}  // namespace sessiond::storage
