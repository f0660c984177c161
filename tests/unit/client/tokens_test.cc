// HS256 tokens: the example of RFC 7515 Appendix A.1 (the token of RFC 7519 §3.1), round
// trips, the time claims with leeway, the audience, and the attacks: every single-bit flip, alg
// "none" and other algorithms, "crit", wrong keys, malformed tokens and claims of the wrong type
// (signed with the right key, so that only the JSON is wrong).
#include "sessiond/tokens.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

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

// A token of `header` and `claims` (JSON texts, taken as they are) signed with test_signer()'s
// key: tokens another library could make, or a careless one.
std::string hand_made(std::string_view header, std::string_view claims, char fill = 'k') {
  const std::string key(32, fill);
  std::string token = base64url_encode(header) + "." + base64url_encode(claims);
  unsigned char mac[32];
  unsigned int size = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(token.data()), token.size(), mac, &size);
  EXPECT_EQ(size, sizeof mac);
  return token + "." + base64url_encode(std::string_view(reinterpret_cast<char*>(mac), size));
}

constexpr std::string_view kHs256 = R"({"alg":"HS256","typ":"JWT"})";

TEST(Tokens, HandMadeTokensVerifyLikeIssuedOnes) {
  const TokenSigner signer = test_signer();
  auto claims = signer.verify(
      hand_made(kHs256, R"({"sub":"alice","exp":2000.75,"x":{"y":[1,2.5,{"z":null}],"w":true}})"),
      1000);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ(claims->subject, "alice");
  EXPECT_EQ(claims->expires_at, 2000);  // a NumericDate's fraction is dropped
  // Whitespace around the JSON, and the header's members in any order.
  EXPECT_TRUE(signer.verify(hand_made(" {\"typ\":\"JWT\", \"alg\":\"HS256\"}\n", " {} "), 0).ok());
}

TEST(Tokens, AudienceMustMatchWhenTheVerifierNamesOne) {
  const TokenSigner signer = test_signer();
  TokenVerifyOptions api;
  api.audience = "api";
  TokenClaims c;
  c.subject = "alice";
  c.audience = {"api"};
  const std::string for_api = signer.issue(c);
  auto ok = signer.verify(for_api, 0, api);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->audience, std::vector<std::string>{"api"});
  const std::size_t dot = for_api.find('.');
  EXPECT_EQ(*base64url_decode(for_api.substr(dot + 1, for_api.rfind('.') - dot - 1)),
            R"({"sub":"alice","aud":"api"})");

  c.audience = {"web"};
  auto wrong = signer.verify(signer.issue(c), 0, api);
  EXPECT_EQ(wrong.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(wrong.status().message().find("not for audience \"api\""), std::string::npos)
      << wrong.status().ToString();

  c.audience.clear();
  auto missing = signer.verify(signer.issue(c), 0, api);
  EXPECT_EQ(missing.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(missing.status().message().find("names no audience"), std::string::npos)
      << missing.status().ToString();

  // An array holding the audience, as issue() writes several.
  c.audience = {"web", "api"};
  auto several = signer.verify(signer.issue(c), 0, api);
  ASSERT_TRUE(several.ok()) << several.status().ToString();
  EXPECT_EQ(several->audience, (std::vector<std::string>{"web", "api"}));
  EXPECT_TRUE(signer.verify(hand_made(kHs256, R"({"aud":["api"]})"), 0, api).ok());
  EXPECT_FALSE(signer.verify(hand_made(kHs256, R"({"aud":["web","apis"]})"), 0, api).ok());
  EXPECT_FALSE(signer.verify(hand_made(kHs256, R"({"aud":[]})"), 0, api).ok());

  // A verifier that names no audience accepts a token for any, as before aud was read.
  EXPECT_TRUE(signer.verify(for_api, 0).ok());
  EXPECT_TRUE(signer.verify(hand_made(kHs256, R"({"aud":["web","api"]})"), 0).ok());
  // The audience is checked before the times: leeway still applies.
  api.leeway_s = 10;
  c.audience = {"api"};
  c.expires_at = 100;
  EXPECT_TRUE(signer.verify(signer.issue(c), 105, api).ok());
  EXPECT_EQ(signer.verify(signer.issue(c), 110, api).status().code(), StatusCode::kExpired);
}

TEST(Tokens, CritInTheHeaderIsRefused) {
  const TokenSigner signer = test_signer();
  for (std::string_view header :
       {R"({"alg":"HS256","crit":["exp"]})", R"({"alg":"HS256","crit":["b64"],"b64":false})",
        R"({"alg":"HS256","crit":[]})", R"({"crit":"x","alg":"HS256"})"}) {
    auto claims = signer.verify(hand_made(header, R"({"sub":"alice"})"), 0);
    EXPECT_EQ(claims.status().code(), StatusCode::kUnauthenticated) << header;
    EXPECT_NE(claims.status().message().find("crit"), std::string::npos)
        << claims.status().ToString();
  }
  // Other header parameters are ignored.
  EXPECT_TRUE(signer.verify(hand_made(R"({"alg":"HS256","kid":"k1","cty":"x"})", "{}"), 0).ok());
}

TEST(Tokens, RepeatedMembersAndWrongTypesAreRefused) {
  const TokenSigner signer = test_signer();
  const auto refused = [&](std::string_view header, std::string_view claims,
                           std::string_view message) {
    auto result = signer.verify(hand_made(header, claims), 1000);
    EXPECT_EQ(result.status().code(), StatusCode::kUnauthenticated) << header << " " << claims;
    EXPECT_NE(result.status().message().find(message), std::string::npos)
        << header << " " << claims << ": " << result.status().ToString();
  };
  // Which of two "exp" (or "alg") was meant is never guessed.
  refused(kHs256, R"({"exp":1,"exp":99999999999})", R"(repeats the member "exp")");
  refused(R"({"alg":"none","alg":"HS256"})", "{}", R"(repeats the member "alg")");
  // Members sessiond reads must have their registered types.
  refused(kHs256, R"({"exp":"2001"})", R"("exp" is not a number)");
  refused(kHs256, R"({"nbf":null})", R"("nbf" is not a number)");
  refused(kHs256, R"({"iat":true})", R"("iat" is not a number)");
  refused(kHs256, R"({"exp":1e300})", R"("exp" is not a number)");
  refused(kHs256, R"({"exp":1e400})", "claims set is not a JSON object");  // not a double
  refused(kHs256, R"({"exp":18446744073709551615})", R"("exp" is not a number)");
  refused(kHs256, R"({"sub":5})", R"("sub" is not a string)");
  refused(kHs256, R"({"iss":["a"]})", R"("iss" is not a string)");
  refused(kHs256, R"({"aud":5})", R"("aud" is not a string or an array of strings)");
  refused(kHs256, R"({"aud":["api",1]})", R"("aud" is not a string or an array of strings)");
  refused(R"({"alg":["HS256"]})", "{}", "not signed with HS256");
  refused(R"({"typ":"JWT"})", "{}", "not signed with HS256");
  // Not one JSON object: another value, trailing bytes, bad syntax, bad UTF-8, too deep.
  refused("[]", "{}", "header is not a JSON object");
  refused(kHs256, R"("sub")", "claims set is not a JSON object");
  refused(kHs256, R"({"sub":"a"} x)", "claims set is not a JSON object");
  refused(kHs256, R"({"sub":"a",})", "claims set is not a JSON object");
  refused(kHs256, "{\"sub\":\"\xff\"}", "claims set is not a JSON object");
  refused(kHs256, "", "claims set is not a JSON object");
  refused(kHs256, R"({"x":)" + std::string(40, '[') + std::string(40, ']') + "}",
          "nests deeper than");
  EXPECT_TRUE(
      signer
          .verify(hand_made(kHs256, R"({"x":)" + std::string(30, '[') + std::string(30, ']') + "}"),
                  0)
          .ok());
}

TEST(Tokens, IssueWritesBytesThatAreNotUtf8AsReplacementCharacters) {
  const TokenSigner signer = test_signer();
  TokenClaims c;
  c.subject =
      "a\xff"
      "b";
  auto out = signer.verify(signer.issue(c), 0);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->subject,
            "a\xef\xbf\xbd"
            "b");
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
