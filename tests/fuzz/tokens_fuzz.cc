// libFuzzer target for the checks of credentials that clients hold (docs/security.md): HS256
// tokens (TokenSigner::verify), sealed cookies (CookieSealer::open), session id texts as the
// client library reads them, and signed ids' tags as the node checks them (IdSigner::verify).
// The first byte says what the rest is:
//   0: text as it arrives from a client: verified as a token (with and without an audience),
//      opened as a cookie, read as a session id;
//   1: a header and a claims set, split at the first NUL, signed with the token key, so that
//      the JSON behind the signature check is reached;
//   2: a value, sealed and opened again;
//   3: raw bytes of an id and its tag (48), or of an id (32), checked by IdSigner.
// Beyond "nothing crashes, throws or leaks", each checks what the API promises: an accepted
// token's claims survive issue() and verify() again, naming an audience only ever refuses more,
// a sealed value opens to itself, a text id parses back to the same text, and a tag verifies
// exactly when it is the id's under the current or (within its grace period) previous key.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "daemon/security.h"
#include "sessiond/session_id.h"
#include "sessiond/tokens.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// The keys the seed corpus (tests/fuzz/corpus/tokens) was made with.
const std::string kTokenKey(32, 'k');
constexpr std::int64_t kNowS = 1'700'000'000;
constexpr std::int64_t kRotatedAtMs = kNowS * 1000;  // the previous id key's grace period ends

struct Verifiers {
  Verifiers()
      : signer(*sessiond::TokenSigner::create(kTokenKey)),
        sealer(*sessiond::CookieSealer::create(
            {{1, std::string(32, '1')}, {2, std::string(32, '2')}}, 1)),
        ids(sessiond::daemon::IdKeys{std::string(32, 'i'), std::string(32, 'p'), kRotatedAtMs,
                                     false}),
        previous_ids(sessiond::daemon::IdKeys{std::string(32, 'p'), "", 0, false}) {}
  sessiond::TokenSigner signer;
  sessiond::CookieSealer sealer;
  sessiond::daemon::IdSigner ids;
  sessiond::daemon::IdSigner previous_ids;  // signs as `ids` did before the rotation
};

const Verifiers& verifiers() {
  static const Verifiers* v = new Verifiers;
  return *v;
}

bool same_claims(const sessiond::TokenClaims& a, const sessiond::TokenClaims& b) {
  return a.issuer == b.issuer && a.subject == b.subject && a.audience == b.audience &&
         a.issued_at == b.issued_at && a.not_before == b.not_before && a.expires_at == b.expires_at;
}

void verify_token(std::string_view token) {
  const auto& v = verifiers();
  const auto claims = v.signer.verify(token, kNowS);
  sessiond::TokenVerifyOptions api;
  api.audience = "api";
  const auto for_api = v.signer.verify(token, kNowS, api);
  check(!for_api.ok() || claims.ok());  // naming an audience never lets more through
  if (!claims.ok()) return;
  check(claims->expires_at == 0 || kNowS < claims->expires_at);
  check(claims->not_before <= kNowS && claims->issued_at <= kNowS);
  // Claims read from JSON are UTF-8, so issue() writes them as they are.
  const auto again = v.signer.verify(v.signer.issue(*claims), kNowS);
  check(again.ok() && same_claims(*again, *claims));
  std::string forged(token);  // another header: the signature no longer matches
  forged[0] = forged[0] == 'A' ? 'B' : 'A';
  check(!v.signer.verify(forged, kNowS).ok());
}

void open_cookie(std::string_view cookie) {
  const auto value = verifiers().sealer.open(cookie, kNowS);
  check(value.ok() || value.status().code() == sessiond::StatusCode::kUnauthenticated ||
        value.status().code() == sessiond::StatusCode::kExpired);
}

void read_session_id(std::string_view text) {
  const auto bytes = sessiond::session_id_to_bytes(text);
  check(bytes.has_value() == sessiond::is_valid_session_id(text));
  if (bytes) check(sessiond::session_id_from_bytes(*bytes) == text);
}

std::string sign_token(std::string_view header, std::string_view claims) {
  std::string token = sessiond::base64url_encode(header) + "." + sessiond::base64url_encode(claims);
  unsigned char mac[32];
  unsigned int size = 0;
  check(HMAC(EVP_sha256(), kTokenKey.data(), static_cast<int>(kTokenKey.size()),
             reinterpret_cast<const unsigned char*>(token.data()), token.size(), mac,
             &size) != nullptr &&
        size == sizeof mac);
  return token + "." +
         sessiond::base64url_encode(std::string_view(reinterpret_cast<const char*>(mac), size));
}

void seal_and_open(std::string_view value) {
  const auto& v = verifiers();
  const auto cookie = v.sealer.seal(value, kNowS + 1);
  if (!cookie.ok()) {
    check(cookie.status().code() == sessiond::StatusCode::kTooLarge);
    return;
  }
  check(cookie->size() <= sessiond::CookieSealer::kMaxCookieBytes);
  const auto opened = v.sealer.open(*cookie, kNowS);
  check(opened.ok() && *opened == value);
  check(v.sealer.open(*cookie, kNowS + 1).status().code() == sessiond::StatusCode::kExpired);
}

void check_id_tag(std::string_view raw) {
  const auto& v = verifiers();
  sessiond::storage::SessionId id{};
  if (raw.size() < id.size()) return;
  std::memcpy(id.data(), raw.data(), id.size());
  const std::string current = v.ids.sign(id);
  const std::string previous = v.previous_ids.sign(id);
  check(current.size() == sessiond::daemon::kSignedIdBytes);
  const auto tag_of = [&](std::string_view signed_id) {
    return std::span(reinterpret_cast<const std::uint8_t*>(signed_id.data()) + id.size(),
                     signed_id.size() - id.size());
  };
  check(v.ids.verify(id, tag_of(current), kRotatedAtMs + 1));
  check(v.ids.verify(id, tag_of(previous), kRotatedAtMs - 1));
  check(!v.ids.verify(id, tag_of(previous), kRotatedAtMs + 1));  // the grace period is over
  const std::string_view tag = raw.substr(id.size());
  const bool expected = tag == std::string_view(current).substr(id.size());
  check(v.ids.verify(id, tag_of(raw), kRotatedAtMs + 1) == expected);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      verify_token(rest);
      open_cookie(rest);
      read_session_id(rest);
      break;
    case 1: {
      const auto nul = rest.find('\0');
      if (nul == std::string_view::npos) return 0;
      verify_token(sign_token(rest.substr(0, nul), rest.substr(nul + 1)));
      break;
    }
    case 2:
      seal_and_open(rest);
      break;
    default:
      check_id_tag(rest);
      break;
  }
  return 0;
}
