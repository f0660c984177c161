// HS256 tokens: the example of RFC 7515 Appendix A.1 (the token of RFC 7519 §3.1), round
// trips, the time claims with leeway, and the attacks: every single-bit flip, alg "none" and
// other algorithms, wrong keys, malformed tokens.
#include "sessiond/tokens.h"

#include <gtest/gtest.h>

namespace sessiond {
namespace {

// RFC 7515 Appendix A.1: header {"typ":"JWT",\r\n "alg":"HS256"}, payload
// {"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}.
constexpr std::string_view kRfcToken =
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlf"
    "Q"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
constexpr std::string_view kRfcKey =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
constexpr std::int64_t kRfcExp = 1300819380;

TokenSigner rfc_signer() {
  auto key = base64url_decode(kRfcKey);
  EXPECT_TRUE(key.ok());
  auto signer = TokenSigner::create(*key);
  EXPECT_TRUE(signer.ok());
  return *signer;
}

TokenSigner test_signer(char fill = 'k') {
  auto signer = TokenSigner::create(std::string(32, fill));
  EXPECT_TRUE(signer.ok());
  return *signer;
}

TEST(Tokens, Rfc7515AppendixA1Verifies) {
  const TokenSigner signer = rfc_signer();
  auto claims = signer.verify(kRfcToken, kRfcExp - 1);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ(claims->issuer, "joe");
  EXPECT_EQ(claims->expires_at, kRfcExp);
  EXPECT_EQ(claims->subject, "");
  // At exp it has expired; a leeway of one second lets it through once more.
  EXPECT_EQ(signer.verify(kRfcToken, kRfcExp).status().code(), StatusCode::kExpired);
  EXPECT_TRUE(signer.verify(kRfcToken, kRfcExp, 1).ok());
}

TEST(Tokens, IssueThenVerifyRoundTrips) {
  const TokenSigner signer = test_signer();
  TokenClaims in;
  in.issuer = "sessiond";
  in.subject = "alice \"the\" \\admin\\ \x01 é";
  in.issued_at = 1'700'000'000;
  in.not_before = 1'700'000'000;
  in.expires_at = 1'700'000'900;
  const std::string token = signer.issue(in);
  auto out = signer.verify(token, 1'700'000'100);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->issuer, in.issuer);
  EXPECT_EQ(out->subject, in.subject);
  EXPECT_EQ(out->issued_at, in.issued_at);
  EXPECT_EQ(out->not_before, in.not_before);
  EXPECT_EQ(out->expires_at, in.expires_at);
}

TEST(Tokens, TimeClaimsWithLeeway) {
  const TokenSigner signer = test_signer();
  TokenClaims c;
  c.issued_at = 1000;
  c.not_before = 1000;
  c.expires_at = 2000;
  const std::string token = signer.issue(c);
  EXPECT_TRUE(signer.verify(token, 1000).ok());
  EXPECT_TRUE(signer.verify(token, 1999).ok());
  // A replay after expiry is refused, whatever the signature.
  EXPECT_EQ(signer.verify(token, 2000).status().code(), StatusCode::kExpired);
  EXPECT_EQ(signer.verify(token, 5000, 60).status().code(), StatusCode::kExpired);
  EXPECT_TRUE(signer.verify(token, 2059, 60).ok());
  EXPECT_EQ(signer.verify(token, 999).status().code(), StatusCode::kUnauthenticated);  // nbf
  EXPECT_TRUE(signer.verify(token, 990, 10).ok());
  TokenClaims future;
  future.issued_at = 5000;
  EXPECT_EQ(signer.verify(signer.issue(future), 4000).status().code(),
            StatusCode::kUnauthenticated);
}

// Every single-bit flip of a token is refused: in the header, the claims or the signature.
TEST(Tokens, EverySingleBitFlipIsRejected) {
  const TokenSigner signer = test_signer();
  TokenClaims c;
  c.subject = "alice";
  c.expires_at = 4'000'000'000;
  const std::string token = signer.issue(c);
  ASSERT_TRUE(signer.verify(token, 1000).ok());
  int flips = 0;
  for (std::size_t i = 0; i < token.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = token;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      EXPECT_FALSE(signer.verify(bad, 1000).ok()) << "byte " << i << " bit " << bit;
      ++flips;
    }
  }
  EXPECT_EQ(flips, static_cast<int>(token.size()) * 8);
  // The RFC's token too.
  const TokenSigner rfc = rfc_signer();
  for (std::size_t i = 0; i < kRfcToken.size(); ++i) {
    std::string bad(kRfcToken);
    bad[i] = static_cast<char>(bad[i] ^ 1);
    EXPECT_FALSE(rfc.verify(bad, kRfcExp - 1).ok()) << i;
  }
}

TEST(Tokens, OnlyHs256WithTheRightKey) {
  const TokenSigner signer = test_signer();
  TokenClaims c;
  c.subject = "alice";
  const std::string token = signer.issue(c);
  EXPECT_EQ(test_signer('x').verify(token, 0).status().code(), StatusCode::kUnauthenticated);
  const std::string claims =
      token.substr(token.find('.') + 1, token.rfind('.') - token.find('.') - 1);
  // alg "none" with an empty signature, and another algorithm with this token's signature.
  const std::string none = base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." + claims + ".";
  EXPECT_EQ(signer.verify(none, 0).status().code(), StatusCode::kUnauthenticated);
  const std::string hs512 =
      base64url_encode(R"({"alg":"HS512"})") + "." + claims + token.substr(token.rfind('.'));
  EXPECT_EQ(signer.verify(hs512, 0).status().code(), StatusCode::kUnauthenticated);
  for (std::string_view bad : {"", ".", "..", "a.b", "a.b.c.d", "e30.e30.", "!!.e30.e30"}) {
    EXPECT_EQ(signer.verify(bad, 0).status().code(), StatusCode::kUnauthenticated) << bad;
  }
  EXPECT_EQ(TokenSigner::create(std::string(31, 'k')).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sessiond

namespace sessiond {
namespace {

CookieSealer sealer(std::map<std::uint8_t, std::string> keys, std::uint8_t current) {
  auto s = CookieSealer::create(std::move(keys), current);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return *s;
}

const std::string kKey1(32, '1'), kKey2(32, '2');

TEST(SealedCookies, SealThenOpen) {
  const CookieSealer s = sealer({{1, kKey1}}, 1);
  const std::string binary("cart=3;user=alice\0\xff", 19);
  auto cookie = s.seal(binary, 2000);
  ASSERT_TRUE(cookie.ok());
  auto value = s.open(*cookie, 1999);
  ASSERT_TRUE(value.ok()) << value.status().ToString();
  EXPECT_EQ(*value, binary);
  EXPECT_EQ(s.open(*cookie, 2000).status().code(), StatusCode::kExpired);
  // A random nonce: the same value seals differently each time, and nothing of it shows.
  auto again = s.seal("cart=3;user=alice", 2000);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*again, *cookie);
  EXPECT_EQ(base64url_decode(*again)->find("alice"), std::string::npos);
  auto empty = s.seal("", 2000);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*s.open(*empty, 0), "");
}

TEST(SealedCookies, KeysRotate) {
  const CookieSealer old_only = sealer({{1, kKey1}}, 1);
  const CookieSealer rotating = sealer({{1, kKey1}, {2, kKey2}}, 2);
  const CookieSealer new_only = sealer({{2, kKey2}}, 2);
  const std::string old_cookie = *old_only.seal("v", 100);
  const std::string new_cookie = *rotating.seal("v", 100);
  EXPECT_EQ(*rotating.open(old_cookie, 0), "v");  // still accepted during the grace period
  EXPECT_EQ(*new_only.open(new_cookie, 0), "v");
  EXPECT_EQ(new_only.open(old_cookie, 0).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(old_only.open(new_cookie, 0).status().code(), StatusCode::kUnauthenticated);
  // The same key id with another key: the tag does not match.
  const CookieSealer impostor = sealer({{1, kKey2}}, 1);
  EXPECT_EQ(impostor.open(old_cookie, 0).status().code(), StatusCode::kUnauthenticated);
}

TEST(SealedCookies, EverySingleBitFlipIsRejected) {
  const CookieSealer s = sealer({{1, kKey1}, {2, kKey2}}, 1);
  const std::string cookie = *s.seal("user=alice", 4'000'000'000);
  const std::string raw = *base64url_decode(cookie);
  for (std::size_t i = 0; i < raw.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = raw;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      EXPECT_EQ(s.open(base64url_encode(bad), 0).status().code(), StatusCode::kUnauthenticated)
          << "byte " << i << " bit " << bit;
    }
  }
  for (std::size_t i = 0; i < cookie.size(); ++i) {  // and in its text form
    std::string bad = cookie;
    bad[i] = static_cast<char>(bad[i] ^ 2);
    EXPECT_FALSE(s.open(bad, 0).ok()) << i;
  }
  EXPECT_FALSE(s.open(cookie.substr(0, cookie.size() - 1), 0).ok());
  EXPECT_FALSE(s.open("", 0).ok());
}

TEST(SealedCookies, FourKibLimitAndBadKeys) {
  const CookieSealer s = sealer({{7, kKey1}}, 7);
  auto largest = s.seal(std::string(3034, 'v'), 100);
  ASSERT_TRUE(largest.ok());
  EXPECT_LE(largest->size(), CookieSealer::kMaxCookieBytes);
  EXPECT_EQ(s.seal(std::string(3035, 'v'), 100).status().code(), StatusCode::kTooLarge);
  EXPECT_EQ(CookieSealer::create({{1, kKey1}}, 2).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CookieSealer::create({{1, std::string(16, 'k')}}, 1).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sessiond
