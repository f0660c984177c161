// Stateless session tokens (DESIGN §9): JSON Web Tokens signed with HS256 (RFC 7519, RFC 7515),
// for applications that keep a session in the client instead of in sessiond.
//
// Only HS256 is accepted when verifying: a token whose header names any other algorithm
// ("none" included) is refused, as is any token whose signature does not match (compared in
// constant time) or that does not have exactly three base64url parts.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "protocol/status.h"

namespace sessiond {

// The registered claims sessiond reads and writes. Times are seconds since the Unix epoch;
// 0 means the claim is absent.
struct TokenClaims {
  std::string issuer;           // "iss"
  std::string subject;          // "sub"
  std::int64_t issued_at = 0;   // "iat"
  std::int64_t not_before = 0;  // "nbf"
  std::int64_t expires_at = 0;  // "exp"
};

class TokenSigner {
 public:
  // HS256 needs a key of at least 32 bytes (RFC 7518 §3.2): INVALID_ARGUMENT otherwise.
  static Result<TokenSigner> create(std::string key);

  // A compact JWT: base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256).
  std::string issue(const TokenClaims& claims) const;

  // Checks the form, the algorithm and the signature (UNAUTHENTICATED when any is wrong,
  // before anything in the claims is trusted), then the times against now_s with leeway_s of
  // tolerance for clock skew: EXPIRED at or after exp, UNAUTHENTICATED before nbf or for an
  // iat in the future. Claims other than the five above are ignored.
  Result<TokenClaims> verify(std::string_view token, std::int64_t now_s,
                             std::int64_t leeway_s = 0) const;

 private:
  explicit TokenSigner(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

// base64url without padding (RFC 4648 §5), as JWTs use it.
std::string base64url_encode(std::string_view bytes);
// Refuses padding, characters outside the alphabet and non-canonical trailing bits.
Result<std::string> base64url_decode(std::string_view text);

}  // namespace sessiond
