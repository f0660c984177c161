// Stateless session tokens (DESIGN §9), for applications that keep a session in the client
// instead of in sessiond: JSON Web Tokens signed with HS256 (RFC 7519, RFC 7515), and sealed
// cookies (AES-256-GCM).
//
// Only HS256 is accepted when verifying: a token whose header names any other algorithm
// ("none" included) is refused, as is any token whose signature does not match (compared in
// constant time), that does not have exactly three base64url parts, whose header carries
// "crit" (RFC 7515 §4.1.11: this verifier implements no extensions), or whose header or
// claims are not one JSON object without repeated member names.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/status.h"
#include "sessiond/client.h"
#include "sessiond/session_id.h"  // base64url_encode, base64url_decode

namespace sessiond {

// The registered claims sessiond reads and writes. Strings are UTF-8 (issue() writes a byte
// that is not as U+FFFD). Times are seconds since the Unix epoch; 0 means the claim is absent.
struct TokenClaims {
  std::string issuer;                 // "iss"
  std::string subject;                // "sub"
  std::vector<std::string> audience;  // "aud": written as a string when it holds one
  std::int64_t issued_at = 0;         // "iat"
  std::int64_t not_before = 0;        // "nbf"
  std::int64_t expires_at = 0;        // "exp"
};

// What TokenSigner::verify checks besides the form and the signature.
struct TokenVerifyOptions {
  // Seconds of tolerance for clock skew on exp, nbf and iat.
  std::int64_t leeway_s = 0;
  // When set, a token must name this audience ("aud" equal to it, or an array holding it):
  // UNAUTHENTICATED otherwise, a token without "aud" included. When empty, "aud" is not
  // checked, so a token for any audience verifies: name the audience whenever tokens for other
  // services share the key (RFC 7519 §4.1.3 asks a verifier to identify itself).
  std::string audience;
};

class TokenSigner {
 public:
  // HS256 needs a key of at least 32 bytes (RFC 7518 §3.2): INVALID_ARGUMENT otherwise.
  static Result<TokenSigner> create(std::string key);

  // A compact JWT: base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256).
  std::string issue(const TokenClaims& claims) const;

  // Checks the form, the header and the signature (UNAUTHENTICATED when any is wrong, before
  // anything in the claims is trusted), the claims' types (UNAUTHENTICATED), the audience
  // (see TokenVerifyOptions), then the times against now_s with options.leeway_s of tolerance:
  // EXPIRED at or after exp, UNAUTHENTICATED before nbf or for an iat in the future. Claims
  // other than those of TokenClaims are ignored. Never throws, whatever the token holds.
  Result<TokenClaims> verify(std::string_view token, std::int64_t now_s,
                             const TokenVerifyOptions& options) const;
  // The same with no audience named and leeway_s of tolerance.
  Result<TokenClaims> verify(std::string_view token, std::int64_t now_s,
                             std::int64_t leeway_s = 0) const;

 private:
  explicit TokenSigner(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

// Sealed cookies: a value encrypted and authenticated with AES-256-GCM, its expiry inside, under
// one of a set of numbered keys so that keys can rotate: the current key seals, every key in
// the set opens. The cookie is base64url of: format (1), key id, a random 12-byte nonce, then
// the encrypted expiry (8 bytes) and value, then the 16-byte tag; the format and key id are
// authenticated too.
class CookieSealer {
 public:
  // Browsers keep at most 4096 bytes of a cookie.
  static constexpr std::size_t kMaxCookieBytes = 4096;

  // `keys` maps key ids to 32-byte keys and must hold `current`: INVALID_ARGUMENT otherwise.
  static Result<CookieSealer> create(std::map<std::uint8_t, std::string> keys,
                                     std::uint8_t current);

  // TOO_LARGE when the cookie would pass kMaxCookieBytes (a value of more than 3,034 bytes).
  Result<std::string> seal(std::string_view value, std::int64_t expires_at_s) const;
  // The value: UNAUTHENTICATED for a cookie that is malformed, tampered with or sealed under a
  // key id not in the set; EXPIRED at or after its expiry.
  Result<std::string> open(std::string_view cookie, std::int64_t now_s) const;

 private:
  CookieSealer(std::map<std::uint8_t, std::string> keys, std::uint8_t current)
      : keys_(std::move(keys)), current_(current) {}
  std::map<std::uint8_t, std::string> keys_;
  std::uint8_t current_;
};

// Federated sessions: one master session in sessiond and, for each service the user reaches, a
// service token bound to the master's id and the service's name by an HMAC. A service checks
// its token's HMAC and then asks sessiond that the master is alive and still lists the service
// (field kServicesField, comma-separated), so ending the master session (logout, REVOKE_USER,
// expiry) ends every service token at once, and withdrawing a service ends its token alone.
class Federation {
 public:
  static constexpr std::string_view kServicesField = "sessiond.services";

  // `key` (at least 32 bytes) is shared by whoever grants and validates service tokens.
  static Result<Federation> create(std::string key);

  // Authorises `service` on the master session and returns its token: "service.master-id.mac"
  // (service and mac in base64url). Service names are 1-128 bytes without ','.
  Result<std::string> grant(Client& client, std::string_view master_id,
                            std::string_view service) const;
  // Removes `service` from the master's list; its token stops validating.
  Status withdraw(Client& client, std::string_view master_id, std::string_view service) const;
  // The master session's id when `token` is the one for `service`: UNAUTHENTICATED for a
  // forged, tampered or other service's token (checked in constant time, before sessiond is
  // asked), NOT_FOUND / EXPIRED when the master session has ended, FORBIDDEN when the master
  // no longer lists the service.
  Result<std::string> validate(Client& client, std::string_view token,
                               std::string_view service) const;

 private:
  explicit Federation(std::string key) : key_(std::move(key)) {}
  std::string mac_of(std::string_view master_id, std::string_view service) const;
  std::string key_;
};

}  // namespace sessiond
