// The node's options for peer regions (issue 14, docs/regions.md): --peer-region parsing and the
// checks at start (own region, repeats, region numbers, the frame limit for merged sessions).
#include "daemon/config.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sessiond::daemon {
namespace {

ParsedOptions parse(std::vector<std::string> args) {
  args.insert(args.begin(), "sessiond");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

TEST(PeerRegionOption, NamesARegionAndItsSeeds) {
  auto spec = parse_peer_region("west=10.0.0.1:7400,[::1]:7401");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->name, "west");
  EXPECT_EQ(spec->seeds, (std::vector<std::string>{"10.0.0.1:7400", "[::1]:7401"}));
  for (const char* bad : {"west", "west=", "we/st=h:1", "west=host", "west=h:0", "=h:1"}) {
    EXPECT_FALSE(parse_peer_region(bad).ok()) << bad;
  }
}

TEST(PeerRegionOption, IsCheckedAgainstTheNodesOwnRegion) {
  const auto ok = parse({"--region", "east", "--peer-region", "west=127.0.0.1:7500",
                         "--peer-region", "north=127.0.0.1:7600"});
  ASSERT_FALSE(ok.exit) << ok.message;
  ASSERT_EQ(ok.options.regions.peers.size(), 2u);
  EXPECT_TRUE(ok.options.store.replication_log) << "shipping reads the replication log";
  const auto own = parse({"--region", "east", "--peer-region", "east=127.0.0.1:7500"});
  EXPECT_TRUE(own.exit);
  EXPECT_NE(own.message.find("own region"), std::string::npos) << own.message;
  const auto twice = parse({"--region", "east", "--peer-region", "west=127.0.0.1:7500",
                            "--peer-region", "west=127.0.0.1:7501"});
  EXPECT_TRUE(twice.exit);
  EXPECT_NE(twice.message.find("twice"), std::string::npos) << twice.message;
  EXPECT_TRUE(parse({"--region", "no/slash"}).exit);
}

TEST(PeerRegionOption, TheFrameLimitMustHoldASessionMergedFromEveryRegion) {
  // Alone, a 600 KiB session fits a 1 MiB frame; with one peer region it may double.
  EXPECT_FALSE(parse({"--max-session-bytes", "614400"}).exit);
  const auto merged = parse({"--region", "east", "--peer-region", "west=127.0.0.1:7500",
                             "--max-session-bytes", "614400"});
  ASSERT_TRUE(merged.exit);
  EXPECT_NE(merged.message.find("--max-frame-bytes"), std::string::npos) << merged.message;
  EXPECT_NE(merged.message.find("2 x --max-session-bytes"), std::string::npos) << merged.message;
  // The default leaves room for it.
  const auto defaulted = parse({"--region", "east", "--peer-region", "west=127.0.0.1:7500"});
  ASSERT_FALSE(defaulted.exit) << defaulted.message;
  const auto alone = parse({});
  EXPECT_LT(2 * defaulted.options.table.max_session_bytes, alone.options.max_frame_bytes);
  EXPECT_LT(defaulted.options.table.max_session_bytes, alone.options.table.max_session_bytes);
}

}  // namespace
}  // namespace sessiond::daemon
