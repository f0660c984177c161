#include "daemon/resp.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sessiond::daemon::resp {
namespace {

using Kind = Parsed::Kind;

std::vector<std::string> parse_all(std::string_view input, Kind expect = Kind::kCommand) {
  std::vector<std::string_view> args;
  Parsed p = parse_command(input, Limits{}, &args);
  EXPECT_EQ(p.kind, expect) << p.error;
  return {args.begin(), args.end()};
}

TEST(Resp, ParsesAnArrayOfBulkStrings) {
  const std::string in = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\r\nl\r\n";
  std::vector<std::string_view> args;
  Parsed p = parse_command(in, Limits{}, &args);
  ASSERT_EQ(p.kind, Kind::kCommand);
  EXPECT_EQ(p.consumed, in.size());
  ASSERT_EQ(args.size(), 3u);
  EXPECT_EQ(args[0], "SET");
  EXPECT_EQ(args[2], "va\r\nl");  // binary-safe
}

TEST(Resp, EveryPrefixOfACommandNeedsMore) {
  const std::string in = "*2\r\n$4\r\nECHO\r\n$11\r\nhello world\r\n";
  for (std::size_t n = 0; n < in.size(); ++n) {
    std::vector<std::string_view> args;
    Parsed p = parse_command(std::string_view(in).substr(0, n), Limits{}, &args);
    EXPECT_EQ(p.kind, Kind::kNeedMore) << n;
    EXPECT_TRUE(args.empty()) << n;
  }
}

TEST(Resp, PipelinedCommandsParseOneAfterAnother) {
  std::string in;
  for (int i = 0; i < 50; ++i)
    in += "*2\r\n$3\r\nGET\r\n$" + std::to_string(std::to_string(i).size()) + "\r\n" +
          std::to_string(i) + "\r\n";
  in += "PING\r\n";
  std::string_view rest = in;
  std::vector<std::string_view> args;
  for (int i = 0; i < 50; ++i) {
    Parsed p = parse_command(rest, Limits{}, &args);
    ASSERT_EQ(p.kind, Kind::kCommand) << i;
    EXPECT_EQ(args[1], std::to_string(i));
    rest.remove_prefix(p.consumed);
  }
  Parsed p = parse_command(rest, Limits{}, &args);
  ASSERT_EQ(p.kind, Kind::kCommand);
  EXPECT_EQ(args[0], "PING");
  EXPECT_EQ(p.consumed, rest.size());
}

TEST(Resp, InlineCommandsAsRedisCliAndTelnetSendThem) {
  EXPECT_EQ(parse_all("PING\r\n"), (std::vector<std::string>{"PING"}));
  EXPECT_EQ(parse_all("SET  k   v\n"), (std::vector<std::string>{"SET", "k", "v"}));
  EXPECT_EQ(parse_all("SET k \"a b\\n\\x41\"\r\n"),
            (std::vector<std::string>{"SET", "k", "a b\nA"}));
  EXPECT_EQ(parse_all("SET k 'it\\'s'\r\n"), (std::vector<std::string>{"SET", "k", "it's"}));
  parse_all("\r\n", Kind::kEmpty);
  parse_all("PING", Kind::kNeedMore);  // no end of line yet
}

TEST(Resp, ProtocolErrorsUseRedisTexts) {
  std::vector<std::string_view> args;
  auto err = [&](std::string_view in) { return parse_command(in, Limits{}, &args); };
  EXPECT_EQ(err("SET k \"open\r\n").error, "ERR Protocol error: unbalanced quotes in request");
  EXPECT_EQ(err("*x\r\n").error, "ERR Protocol error: invalid multibulk length");
  EXPECT_EQ(err("*1\r\n+PING\r\n").error, "ERR Protocol error: expected '$', got '+'");
  EXPECT_EQ(err("*1\r\n$-5\r\n").error, "ERR Protocol error: invalid bulk length");
  EXPECT_EQ(err("*1\r\n$3\r\nGETxx").kind, Kind::kError);  // no CRLF after the bulk
  EXPECT_EQ(err("*0\r\n").kind, Kind::kEmpty);
  EXPECT_EQ(err("*-1\r\n").kind, Kind::kEmpty);
}

TEST(Resp, LimitsAreCheckedBeforeWaitingForTheBytes) {
  Limits small;
  small.max_bulk_bytes = 10;
  small.max_arguments = 3;
  small.max_inline_bytes = 16;
  std::vector<std::string_view> args;
  // Claims 4 GB: refused from the length line alone.
  EXPECT_EQ(parse_command("*1\r\n$4294967296\r\n", small, &args).error,
            "ERR Protocol error: invalid bulk length");
  EXPECT_EQ(parse_command("*1\r\n$11\r\n", small, &args).kind, Kind::kError);
  EXPECT_EQ(parse_command("*1\r\n$10\r\n", small, &args).kind, Kind::kNeedMore);
  EXPECT_EQ(parse_command("*4\r\n", small, &args).error,
            "ERR Protocol error: invalid multibulk length");
  EXPECT_EQ(parse_command("*999999999999999999999\r\n", small, &args).kind, Kind::kError);
  EXPECT_EQ(parse_command(std::string(17, 'a'), small, &args).error,
            "ERR Protocol error: too big inline request");
}

TEST(Resp, RepliesEncodeAsRedisDoes) {
  std::string out;
  append_simple(&out, "OK");
  append_error(&out, "ERR bad\r\nthing");
  append_integer(&out, -3);
  append_bulk(&out, "hi");
  append_null(&out);
  append_array_header(&out, 2);
  append_null_array(&out);
  EXPECT_EQ(out, "+OK\r\n-ERR bad  thing\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*2\r\n*-1\r\n");
}

}  // namespace
}  // namespace sessiond::daemon::resp
