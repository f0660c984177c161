// What a SIGHUP reload takes from the config (daemon/reload.h): the settings that need a
// restart are named, the reloadable ones are not, and the id keys come from the same file a
// start would read.
#include "daemon/reload.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace sessiond::daemon {
namespace {

ServerOptions parse(std::vector<std::string> args) {
  args.insert(args.begin(), "sessiond");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  const auto parsed = parse_options(static_cast<int>(argv.size()), argv.data());
  EXPECT_FALSE(parsed.exit) << parsed.message;
  return parsed.options;
}

TEST(SettingsNeedingRestart, NamesEveryChangedRestartOnlyFlag) {
  const ServerOptions running = parse({});
  EXPECT_TRUE(settings_needing_restart(running, parse({})).empty());
  const std::vector<std::string> changed =
      settings_needing_restart(running, parse({"--listen",
                                               "127.0.0.1:7500",
                                               "--threads",
                                               "3",
                                               "--durability",
                                               "sync",
                                               "--data-dir",
                                               "elsewhere",
                                               "--max-connections",
                                               "5",
                                               "--app-secret",
                                               "s",
                                               "--default-preset",
                                               "finance",
                                               "--shards",
                                               "4",
                                               "--memory-budget-bytes",
                                               "1000",
                                               "--max-output-bytes",
                                               "100000",
                                               "--send-timeout-ms",
                                               "5",
                                               "--max-connections-per-ip",
                                               "2",
                                               "--max-session-bytes",
                                               "5000"}));
  EXPECT_EQ(changed, (std::vector<std::string>{
                         "--listen", "--threads", "--max-connections", "--max-output-bytes",
                         "--send-timeout-ms", "--max-connections-per-ip", "--max-session-bytes",
                         "--app-secret", "--default-preset", "--data-dir", "--durability",
                         "--shards", "--memory-budget-bytes"}));
}

TEST(SettingsNeedingRestart, ReloadableSettingsAreNotNamed) {
  const ServerOptions running = parse({});
  EXPECT_TRUE(
      settings_needing_restart(
          running, parse({"--log-level", "debug", "--preset-policy", "finance:signed-ids=off",
                          "--context-mismatch-policy", "destroy", "--hijack-policy", "destroy",
                          "--signed-ids", "all", "--hijack-max-ips", "9", "--id-key-file", "keys"}))
          .empty());
}

TEST(LoadNodeIdKeys, ReadsTheFileAStartWouldReadAndMakesItOnlyWhenIdsAreSigned) {
  testing::TempDir dir;
  // Nothing signs and there is no file: no keys, and no file made.
  auto none = load_node_id_keys(parse({"--data-dir", dir.sub("data"), "--signed-ids", "off"}));
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->loaded);
  EXPECT_FALSE(std::filesystem::exists(dir.sub("data/id-keys")));
  // The default: finance signs, so the data directory gets a key file.
  std::filesystem::create_directories(dir.sub("data"));
  auto made = load_node_id_keys(parse({"--data-dir", dir.sub("data")}));
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_TRUE(made->loaded);
  EXPECT_TRUE(made->keys.generated);
  EXPECT_EQ(made->path, dir.sub("data/id-keys"));
  // Read again (what a reload does): the same key.
  auto again = load_node_id_keys(parse({"--data-dir", dir.sub("data"), "--signed-ids", "off"}));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->loaded);
  EXPECT_FALSE(again->keys.generated);
  EXPECT_EQ(again->keys.current, made->keys.current);
  // A named file that is not there is an error naming it.
  auto missing = load_node_id_keys(parse({"--id-key-file", dir.sub("nowhere")}));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(dir.sub("nowhere")), std::string::npos)
      << missing.status().message();
}

}  // namespace
}  // namespace sessiond::daemon
