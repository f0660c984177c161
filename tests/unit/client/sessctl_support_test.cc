#include "sessctl_support.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

namespace sessiond::sessctl {
namespace {

TEST(ParseKeyValue, SplitsAtTheFirstEqualsSign) {
  auto field = parse_key_value("cart=a=b");
  ASSERT_TRUE(field.ok());
  EXPECT_EQ(field->first, "cart");
  EXPECT_EQ(field->second, "a=b");
}

TEST(ParseKeyValue, AllowsAnEmptyValue) {
  auto field = parse_key_value("flag=");
  ASSERT_TRUE(field.ok());
  EXPECT_EQ(field->first, "flag");
  EXPECT_EQ(field->second, "");
}

TEST(ParseKeyValue, RejectsAMissingEqualsSignOrName) {
  EXPECT_EQ(parse_key_value("novalue").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse_key_value("=value").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse_key_value("").code(), StatusCode::kInvalidArgument);
}

TEST(ExitCodes, FollowTheDocumentedTable) {
  EXPECT_EQ(exit_code_for(StatusCode::kOk), 0);
  EXPECT_EQ(exit_code_for(StatusCode::kNotFound), 1);
  EXPECT_EQ(exit_code_for(StatusCode::kExpired), 1);
  EXPECT_EQ(exit_code_for(StatusCode::kInvalidArgument), 2);
  EXPECT_EQ(exit_code_for(StatusCode::kUnavailable), 3);
  EXPECT_EQ(exit_code_for(StatusCode::kOverloaded), 3);
  EXPECT_EQ(exit_code_for(StatusCode::kVersionConflict), 4);
  EXPECT_EQ(exit_code_for(StatusCode::kInternal), 4);
}

TEST(JsonString, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(json_string("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(json_string("line\nnext\ttab"), R"("line\nnext\ttab")");
  EXPECT_EQ(json_string(std::string("\x01\x00", 2)), R"("\u0001\u0000")");
}

// A byte that is not UTF-8 becomes U+00XX: the JSON value "\u00ff" would be, written as UTF-8.
TEST(JsonString, KeepsValidUtf8AndReadsInvalidBytesAsLatin1) {
  EXPECT_EQ(json_string("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
  EXPECT_EQ(json_string("\xe2\x82\xac"), "\"\xe2\x82\xac\"");              // euro sign
  EXPECT_EQ(json_string("\xff"), "\"\xc3\xbf\"");                          // U+00FF
  EXPECT_EQ(json_string("\xc3"), "\"\xc3\x83\"");                          // truncated sequence
  EXPECT_EQ(json_string("\xc0\xaf"), "\"\xc3\x80\xc2\xaf\"");              // overlong '/'
  EXPECT_EQ(json_string("\xed\xa0\x80"), "\"\xc3\xad\xc2\xa0\xc2\x80\"");  // a surrogate
}

TEST(Json, EveryOutputIsValidJsonWhateverTheBytes) {
  Session session;
  session.id = "id";
  session.user_id = std::string("\xff\x00\"", 3);
  session.fields = {{std::string("k\xfe", 2), "\xc3", {}}};
  session.context = ClientContext{"\x80", 7};
  HijackDetection detection;
  detection.message = "far \xe9";
  session.detections = {detection};
  AccessEntry entry;
  entry.ip = "\x01";
  entry.has_location = true;
  entry.latitude = 52.52;
  entry.longitude = -13.405;
  session.access_log = {entry};
  const std::string json = to_json(session);
  EXPECT_NE(json.find("\"user_id\":\"\xc3\xbf\\u0000\\\"\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"fields\":{\"k\xc3\xbe\":\"\xc3\x83\"}"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("latitude":52.52,"longitude":-13.405)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("context":{"ip":")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("detections":[")"), std::string::npos) << json;
  EXPECT_EQ(json_error(Status::NotFound("no \xff")),
            "{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"no \xc3\xbf\"}}");
}

TEST(FormatTime, PrintsUtcWithMillisecondsAndNeverForNoDeadline) {
  EXPECT_EQ(format_time_ms(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_time_ms(1'795'616'485'686), "2026-11-25T14:21:25.686Z");
  EXPECT_EQ(format_time_ms(std::numeric_limits<std::int64_t>::max()), "never");
}

TEST(Json, RendersASessionWithItsFields) {
  Session session;
  session.id = "id";
  session.user_id = "alice";
  session.fields = {{"cart", "3", {}}, {"role", "admin", {}}};
  session.deadline_ms = 42;
  const std::string json = to_json(session);
  EXPECT_NE(json.find(R"("user_id":"alice")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("fields":{"cart":"3","role":"admin"})"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("deadline_ms":42)"), std::string::npos) << json;
}

TEST(Json, RendersAnErrorWithItsCodeName) {
  EXPECT_EQ(json_error(Status::NotFound("gone")),
            R"({"error":{"code":"NOT_FOUND","message":"gone"}})");
}

// `stats` and `cluster status` write a peer region alike.
TEST(Json, StatsListTheirPeerRegions) {
  Stats stats;
  stats.creates = 5;
  PeerRegionStats region;
  region.region = "eu";
  region.lag_entries = 3;
  region.lag_max_ms = 40.5;
  region.error = "down \xff";
  stats.regions = {region};
  const std::string json = to_json(stats);
  EXPECT_EQ(json.rfind(R"({"sessions":0,"users":0,"memory_bytes":0,)", 0), 0u) << json;
  EXPECT_NE(json.find(R"("creates":5)"), std::string::npos) << json;
  const std::string one = to_json(region);
  EXPECT_EQ(one.rfind(R"({"region":"eu","lag_entries":3,)", 0), 0u) << one;
  EXPECT_NE(one.find("\"lag_max_ms\":40.5,\"error\":\"down \xc3\xbf\"}"), std::string::npos) << one;
  EXPECT_NE(json.find(R"("regions":[)" + one + "]}"), std::string::npos) << json;
}

TEST(Topology, TextAndJsonListEveryNode) {
  Topology topology;
  topology.epoch = 7;
  topology.region = "eu";
  topology.source = "10.0.0.1:7400";
  for (int i = 1; i <= 2; ++i) {
    TopologyNode node;
    node.id = "n" + std::to_string(i);
    node.address = "10.0.0." + std::to_string(i) + ":7400";
    node.region = "eu";
    node.number = static_cast<std::uint32_t>(i);
    node.weight = 2;
    topology.nodes.push_back(node);
  }
  const std::string text = to_text(topology);
  EXPECT_NE(text.find("epoch 7, region eu, from 10.0.0.1:7400\n"), std::string::npos) << text;
  EXPECT_NE(text.find("n2                   10.0.0.2:7400                 2      2\n"),
            std::string::npos)
      << text;
  const std::string json = to_json(topology);
  EXPECT_NE(json.find(R"("epoch":7,"region":"eu","migrating":false)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"({"id":"n1","address":"10.0.0.1:7400","number":1,"weight":2)"),
            std::string::npos)
      << json;
  topology.epoch = 0;
  EXPECT_NE(to_text(topology).find("epoch 0 (no cluster)"), std::string::npos);
}

}  // namespace
}  // namespace sessiond::sessctl
