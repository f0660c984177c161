#include "protocol/host_port.h"

#include <gtest/gtest.h>

#include <string>

namespace sessiond {
namespace {

TEST(ParseHostPort, AcceptsNamesAddressesAndBracketedIpv6) {
  auto v4 = parse_host_port("127.0.0.1:7400");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 7400);
  auto v6 = parse_host_port("[::1]:80");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 80);
  auto name = parse_host_port("localhost:65535");
  ASSERT_TRUE(name.ok());
  EXPECT_EQ(name->host, "localhost");
  EXPECT_EQ(name->port, 65535);
}

TEST(ParseHostPort, PortZeroIsLeftToTheCaller) {
  // A listener takes 0 as "any free port"; the client refuses it (client_test).
  auto any = parse_host_port("0.0.0.0:0");
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->port, 0);
}

TEST(ParseHostPort, RefusesMalformedAddresses) {
  for (const char* bad : {"", "7400", ":7400", "host:", "host:65536", "host:12a", "host:-1",
                          "host:+80", "::1:80", "[]:80", "host:123456", "host: 80"}) {
    auto parsed = parse_host_port(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParseHostPort, MessagesQuoteTheTextAndSayWhatIsWrong) {
  EXPECT_EQ(parse_host_port("nowhere").status().message(), "'nowhere' is not HOST:PORT");
  EXPECT_EQ(parse_host_port("host:").status().message(), "'host:' is not HOST:PORT");
  EXPECT_EQ(parse_host_port(":80").status().message(), "':80' has no host");
  EXPECT_EQ(parse_host_port("host:99999").status().message(),
            "'host:99999' has no valid port (0-65535)");
  EXPECT_EQ(parse_host_port("::1:80").status().message(),
            "'::1:80' has an IPv6 host without brackets ([::1]:7400)");
}

}  // namespace
}  // namespace sessiond
