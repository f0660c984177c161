// HS256 JSON Web Tokens, sealed cookies and federated service tokens. A token's JSON is read
// and written with nlohmann-json, parsed without exceptions: a header or claims set must be one
// JSON object without repeated member names; members sessiond does not read may hold any JSON
// value (nested up to a limit), so that tokens made by other libraries verify too, and those it
// reads must have their registered types.
#include "sessiond/tokens.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

namespace sessiond {
namespace {

std::array<unsigned char, 32> hmac_sha256(std::string_view key, std::string_view data) {
  std::array<unsigned char, 32> mac{};
  unsigned int size = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac.data(),
           &size) == nullptr ||
      size != mac.size()) {
    std::abort();  // only when OpenSSL itself is broken: no token could be trusted
  }
  return mac;
}

using Json = nlohmann::json;

Status unauthenticated(std::string message) {
  return Status(StatusCode::kUnauthenticated, std::move(message));
}

// The claims sessiond reads are flat; deeper nesting than this in a token's header or claims set
// is refused, so that a hostile token cannot make the verifier build a deep tree.
constexpr int kMaxJsonDepth = 32;

// The header (`part` "header") or claims set ("claims set") of a token as a JSON object. RFC 7515
// §4 and RFC 7519 §4 let a verifier either refuse a repeated member name or keep the last one;
// refusing leaves no doubt about which "alg" or "exp" was signed. Never throws.
Result<Json> parse_object(std::string_view text, std::string_view part) {
  const std::string what = "the token's " + std::string(part);
  std::set<std::string> names;  // of the top-level members seen so far
  std::string repeated;
  bool too_deep = false;
  const Json::parser_callback_t callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) {
      too_deep = too_deep || depth >= kMaxJsonDepth;
      return !too_deep;  // false: the parser checks the rest's syntax but keeps none of it
    }
    if (event == Json::parse_event_t::key && depth == 1 && repeated.empty()) {
      const auto* name = parsed.get_ptr<const Json::string_t*>();
      if (name != nullptr && !names.insert(*name).second) repeated = name->substr(0, 64);
    }
    return true;
  };
  Json value = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/false);
  if (value.is_discarded() || !value.is_object()) {
    return unauthenticated(what + " is not a JSON object");
  }
  if (too_deep) {
    return unauthenticated(what + " nests deeper than " + std::to_string(kMaxJsonDepth) +
                           " levels");
  }
  if (!repeated.empty()) return unauthenticated(what + " repeats the member \"" + repeated + "\"");
  return value;
}

// A string claim; absent leaves *out as it is.
Status read_string(const Json& claims, const std::string& name, std::string* out) {
  const auto it = claims.find(name);
  if (it == claims.end()) return {};
  const auto* text = it->get_ptr<const Json::string_t*>();
  if (text == nullptr) return unauthenticated("the token's \"" + name + "\" is not a string");
  *out = *text;
  return {};
}

// A NumericDate (RFC 7519 §2): a JSON number of seconds, whose fraction is dropped. Absent
// leaves *out as it is.
Status read_numeric_date(const Json& claims, const std::string& name, std::int64_t* out) {
  const auto it = claims.find(name);
  if (it == claims.end()) return {};
  // is_number_integer() holds for unsigned values too, so they are looked at first.
  if (it->is_number_unsigned()) {
    const auto value = *it->get_ptr<const Json::number_unsigned_t*>();
    if (value <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      *out = static_cast<std::int64_t>(value);
      return {};
    }
  } else if (it->is_number_integer()) {
    *out = *it->get_ptr<const Json::number_integer_t*>();
    return {};
  } else if (it->is_number_float()) {
    const double value = *it->get_ptr<const Json::number_float_t*>();
    if (std::isfinite(value) && std::fabs(value) <= 9.2e18) {  // within int64_t
      *out = static_cast<std::int64_t>(value);
      return {};
    }
  }
  return unauthenticated("the token's \"" + name + "\" is not a number of seconds in range");
}

// "aud" (RFC 7519 §4.1.3): one string or an array of strings.
Status read_audience(const Json& claims, std::vector<std::string>* out) {
  const auto it = claims.find("aud");
  if (it == claims.end()) return {};
  if (const auto* one = it->get_ptr<const Json::string_t*>()) {
    out->assign(1, *one);
    return {};
  }
  const Status malformed =
      unauthenticated("the token's \"aud\" is not a string or an array of strings");
  if (!it->is_array()) return malformed;
  for (const Json& entry : *it) {
    const auto* text = entry.get_ptr<const Json::string_t*>();
    if (text == nullptr) return malformed;
    out->push_back(*text);
  }
  return {};
}

// The claims of TokenClaims, each checked for its type.
Status read_claims(const Json& payload, TokenClaims* claims) {
  Status s = read_string(payload, "iss", &claims->issuer);
  if (s.ok()) s = read_string(payload, "sub", &claims->subject);
  if (s.ok()) s = read_audience(payload, &claims->audience);
  if (s.ok()) s = read_numeric_date(payload, "iat", &claims->issued_at);
  if (s.ok()) s = read_numeric_date(payload, "nbf", &claims->not_before);
  if (s.ok()) s = read_numeric_date(payload, "exp", &claims->expires_at);
  return s;
}

}  // namespace

Result<TokenSigner> TokenSigner::create(std::string key) {
  if (key.size() < 32) {
    return Status::InvalidArgument("an HS256 key needs at least 32 bytes; this one has " +
                                   std::to_string(key.size()));
  }
  return TokenSigner(std::move(key));
}

std::string TokenSigner::issue(const TokenClaims& claims) const {
  nlohmann::ordered_json payload = nlohmann::ordered_json::object();  // members in RFC order
  if (!claims.issuer.empty()) payload["iss"] = claims.issuer;
  if (!claims.subject.empty()) payload["sub"] = claims.subject;
  if (claims.audience.size() == 1) {
    payload["aud"] = claims.audience.front();
  } else if (!claims.audience.empty()) {
    payload["aud"] = claims.audience;
  }
  if (claims.issued_at != 0) payload["iat"] = claims.issued_at;
  if (claims.not_before != 0) payload["nbf"] = claims.not_before;
  if (claims.expires_at != 0) payload["exp"] = claims.expires_at;
  // JSON text is UTF-8 (RFC 8259 §8.1): a byte that is not becomes U+FFFD rather than making a
  // token no JSON parser would accept.
  const std::string text = payload.dump(-1, ' ', false, Json::error_handler_t::replace);
  std::string token = base64url_encode(R"({"alg":"HS256","typ":"JWT"})");
  token.push_back('.');
  token += base64url_encode(text);
  const auto mac = hmac_sha256(key_, token);
  token.push_back('.');
  token +=
      base64url_encode(std::string_view(reinterpret_cast<const char*>(mac.data()), mac.size()));
  return token;
}

Result<TokenClaims> TokenSigner::verify(std::string_view token, std::int64_t now_s,
                                        std::int64_t leeway_s) const {
  TokenVerifyOptions options;
  options.leeway_s = leeway_s;
  return verify(token, now_s, options);
}

Result<TokenClaims> TokenSigner::verify(std::string_view token, std::int64_t now_s,
                                        const TokenVerifyOptions& options) const {
  const auto first = token.find('.');
  const auto second = first == std::string_view::npos ? first : token.find('.', first + 1);
  if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos) {
    return unauthenticated("not a compact JWT (three base64url parts)");
  }
  auto header_text = base64url_decode(token.substr(0, first));
  auto payload_text = base64url_decode(token.substr(first + 1, second - first - 1));
  auto signature = base64url_decode(token.substr(second + 1));
  if (!header_text.ok() || !payload_text.ok() || !signature.ok()) {
    return unauthenticated("a part of the token is not base64url");
  }
  auto header = parse_object(*header_text, "header");
  if (!header.ok()) return header.status();
  const auto alg = header->find("alg");
  const auto* alg_name = alg == header->end() ? nullptr : alg->get_ptr<const Json::string_t*>();
  if (alg_name == nullptr || *alg_name != "HS256") {
    return unauthenticated("the token is not signed with HS256");
  }
  // RFC 7515 §4.1.11: a verifier must refuse a token whose "crit" names an extension it does
  // not understand, and this one understands none.
  if (header->contains("crit")) {
    return unauthenticated(
        "the token's header has \"crit\": it needs extensions this verifier does not implement");
  }
  // The signature is checked before anything in the payload is read.
  const auto mac = hmac_sha256(key_, token.substr(0, second));
  if (signature->size() != mac.size() ||
      CRYPTO_memcmp(signature->data(), mac.data(), mac.size()) != 0) {
    return unauthenticated("the token's signature does not match");
  }
  auto payload = parse_object(*payload_text, "claims set");
  if (!payload.ok()) return payload.status();
  TokenClaims claims;
  if (Status s = read_claims(*payload, &claims); !s.ok()) return s;
  const bool for_audience = std::find(claims.audience.begin(), claims.audience.end(),
                                      options.audience) != claims.audience.end();
  if (!options.audience.empty() && !for_audience) {
    return unauthenticated(claims.audience.empty()
                               ? "the token names no audience (\"aud\"); this verifier needs \"" +
                                     options.audience + "\""
                               : "the token is not for audience \"" + options.audience + "\"");
  }
  const std::int64_t leeway_s = options.leeway_s;
  if (claims.expires_at != 0 && now_s - leeway_s >= claims.expires_at) {
    return Status::Expired("the token expired at " + std::to_string(claims.expires_at));
  }
  if (claims.not_before != 0 && now_s + leeway_s < claims.not_before) {
    return unauthenticated("the token is not valid before " + std::to_string(claims.not_before));
  }
  if (claims.issued_at != 0 && now_s + leeway_s < claims.issued_at) {
    return unauthenticated("the token was issued in the future");
  }
  return claims;
}

// ---- sealed cookies ---------------------------------------------------------------------

namespace {

constexpr std::uint8_t kCookieFormat = 1;
constexpr std::size_t kNonceBytes = 12;
constexpr std::size_t kTagBytes = 16;
constexpr std::size_t kHeaderBytes = 2 + kNonceBytes;  // format, key id, nonce
constexpr std::size_t kCookieOverhead = kHeaderBytes + 8 + kTagBytes;

struct CipherContext {
  CipherContext() : ctx(EVP_CIPHER_CTX_new()) {
    if (ctx == nullptr) std::abort();
  }
  ~CipherContext() { EVP_CIPHER_CTX_free(ctx); }
  CipherContext(const CipherContext&) = delete;
  CipherContext& operator=(const CipherContext&) = delete;
  EVP_CIPHER_CTX* ctx;
};

const unsigned char* bytes_of(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

Result<CookieSealer> CookieSealer::create(std::map<std::uint8_t, std::string> keys,
                                          std::uint8_t current) {
  if (!keys.contains(current)) {
    return Status::InvalidArgument("the current key id " + std::to_string(current) +
                                   " is not among the keys");
  }
  for (const auto& [id, key] : keys) {
    if (key.size() != 32) {
      return Status::InvalidArgument("key " + std::to_string(id) + " has " +
                                     std::to_string(key.size()) + " bytes; AES-256-GCM needs 32");
    }
  }
  return CookieSealer(std::move(keys), current);
}

Result<std::string> CookieSealer::seal(std::string_view value, std::int64_t expires_at_s) const {
  const std::size_t raw = kCookieOverhead + value.size();
  const std::size_t text = (raw * 4 + 2) / 3;
  if (text > kMaxCookieBytes) {
    return Status::TooLarge("a sealed cookie of " + std::to_string(value.size()) +
                            " bytes of value would be " + std::to_string(text) +
                            " bytes; browsers keep at most " + std::to_string(kMaxCookieBytes));
  }
  std::string out(kHeaderBytes, '\0');
  out[0] = static_cast<char>(kCookieFormat);
  out[1] = static_cast<char>(current_);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data() + 2), kNonceBytes) != 1) {
    return Status::Internal("no random bytes for the nonce");
  }
  std::string plain(8, '\0');
  for (int i = 0; i < 8; ++i) {
    plain[static_cast<std::size_t>(i)] =
        static_cast<char>(static_cast<std::uint64_t>(expires_at_s) >> (56 - 8 * i));
  }
  plain.append(value);
  out.resize(kHeaderBytes + plain.size() + kTagBytes);
  auto* cipher = reinterpret_cast<unsigned char*>(out.data() + kHeaderBytes);
  CipherContext c;
  int len = 0;
  const std::string& key = keys_.at(current_);
  if (EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, bytes_of(key),
                         bytes_of(std::string_view(out).substr(2, kNonceBytes))) != 1 ||
      EVP_EncryptUpdate(c.ctx, nullptr, &len, bytes_of(out), 2) != 1 ||
      EVP_EncryptUpdate(c.ctx, cipher, &len, bytes_of(plain), static_cast<int>(plain.size())) !=
          1 ||
      EVP_EncryptFinal_ex(c.ctx, cipher + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagBytes),
                          cipher + plain.size()) != 1) {
    return Status::Internal("AES-256-GCM encryption failed");
  }
  return base64url_encode(out);
}

Result<std::string> CookieSealer::open(std::string_view cookie, std::int64_t now_s) const {
  if (cookie.size() > kMaxCookieBytes) return unauthenticated("not a sealed cookie (size)");
  auto raw = base64url_decode(cookie);
  if (!raw.ok() || raw->size() < kCookieOverhead ||
      static_cast<std::uint8_t>((*raw)[0]) != kCookieFormat) {
    return unauthenticated("not a sealed cookie");
  }
  const auto key = keys_.find(static_cast<std::uint8_t>((*raw)[1]));
  if (key == keys_.end()) return unauthenticated("the cookie's key is not (or no longer) known");
  const std::string_view sealed(*raw);
  const std::size_t cipher_bytes = sealed.size() - kHeaderBytes - kTagBytes;
  std::string tag(sealed.substr(kHeaderBytes + cipher_bytes));
  std::string plain(cipher_bytes, '\0');
  CipherContext c;
  int len = 0;
  if (EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, bytes_of(key->second),
                         bytes_of(sealed.substr(2, kNonceBytes))) != 1 ||
      EVP_DecryptUpdate(c.ctx, nullptr, &len, bytes_of(sealed), 2) != 1 ||
      EVP_DecryptUpdate(c.ctx, reinterpret_cast<unsigned char*>(plain.data()), &len,
                        bytes_of(sealed.substr(kHeaderBytes)),
                        static_cast<int>(cipher_bytes)) != 1 ||
      EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes), tag.data()) !=
          1 ||
      EVP_DecryptFinal_ex(c.ctx, reinterpret_cast<unsigned char*>(plain.data()) + len, &len) <= 0) {
    return unauthenticated("the cookie does not authenticate");
  }
  std::uint64_t expiry = 0;
  for (int i = 0; i < 8; ++i) {
    expiry = (expiry << 8) | static_cast<unsigned char>(plain[static_cast<std::size_t>(i)]);
  }
  if (now_s >= static_cast<std::int64_t>(expiry)) {
    return Status::Expired("the cookie expired at " +
                           std::to_string(static_cast<std::int64_t>(expiry)));
  }
  return plain.substr(8);
}

// ---- federated sessions -------------------------------------------------------------------

namespace {

Status check_service(std::string_view service) {
  if (service.empty() || service.size() > 128 || service.find(',') != std::string_view::npos) {
    return Status::InvalidArgument("a service name is 1-128 bytes without ','");
  }
  return {};
}

std::vector<std::string> services_of(const Session& master) {
  std::vector<std::string> out;
  const Field* f = master.field(Federation::kServicesField);
  if (f == nullptr) return out;
  std::string_view rest = f->value;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    out.emplace_back(rest.substr(0, comma));
    rest.remove_prefix(comma == std::string_view::npos ? rest.size() : comma + 1);
  }
  return out;
}

// Rewrites the master's service list with `change`, retrying when another writer got there
// first (the update carries the version it read).
template <typename Change>
Status change_services(Client& client, std::string_view master_id, Change change) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto master = client.get(master_id);
    if (!master.ok()) return master.status();
    std::vector<std::string> services = services_of(*master);
    if (!change(&services)) return {};  // nothing to do
    std::string joined;
    for (const std::string& s : services) joined += (joined.empty() ? "" : ",") + s;
    UpdateOptions update;
    if (joined.empty()) {
      update.remove.emplace_back(Federation::kServicesField);
    } else {
      update.set.push_back(FieldValue{std::string(Federation::kServicesField), joined});
    }
    update.expected_version = master->version;
    auto done = client.update(master_id, update);
    if (done.ok()) return {};
    if (done.status().code() != StatusCode::kVersionConflict) return done.status();
  }
  return Status::Unavailable("the master session kept changing; try again");
}

}  // namespace

Result<Federation> Federation::create(std::string key) {
  if (key.size() < 32) {
    return Status::InvalidArgument("a federation key needs at least 32 bytes; this one has " +
                                   std::to_string(key.size()));
  }
  return Federation(std::move(key));
}

std::string Federation::mac_of(std::string_view master_id, std::string_view service) const {
  std::string input = "sessiond-federation";
  input.push_back('\0');
  input.append(master_id);
  input.push_back('\0');
  input.append(service);
  const auto mac = hmac_sha256(key_, input);
  return std::string(reinterpret_cast<const char*>(mac.data()), mac.size());
}

Result<std::string> Federation::grant(Client& client, std::string_view master_id,
                                      std::string_view service) const {
  if (Status s = check_service(service); !s.ok()) return s;
  const Status s = change_services(client, master_id, [&](std::vector<std::string>* services) {
    if (std::find(services->begin(), services->end(), service) != services->end()) return false;
    services->emplace_back(service);
    return true;
  });
  if (!s.ok()) return s;
  return base64url_encode(service) + "." + std::string(master_id) + "." +
         base64url_encode(mac_of(master_id, service));
}

Status Federation::withdraw(Client& client, std::string_view master_id,
                            std::string_view service) const {
  if (Status s = check_service(service); !s.ok()) return s;
  return change_services(client, master_id, [&](std::vector<std::string>* services) {
    const auto it = std::find(services->begin(), services->end(), service);
    if (it == services->end()) return false;
    services->erase(it);
    return true;
  });
}

Result<std::string> Federation::validate(Client& client, std::string_view token,
                                         std::string_view service) const {
  const auto first = token.find('.');
  const auto last = token.rfind('.');
  if (first == std::string_view::npos || first == last) {
    return unauthenticated("not a service token");
  }
  auto named = base64url_decode(token.substr(0, first));
  auto mac = base64url_decode(token.substr(last + 1));
  const std::string master_id(token.substr(first + 1, last - first - 1));
  if (!named.ok() || !mac.ok() || *named != service) {
    return unauthenticated("not a token for service '" + std::string(service) + "'");
  }
  const std::string expected = mac_of(master_id, service);
  if (mac->size() != expected.size() ||
      CRYPTO_memcmp(mac->data(), expected.data(), expected.size()) != 0) {
    return unauthenticated("the service token's MAC does not match");
  }
  auto master = client.get(master_id);
  if (!master.ok()) return master.status();
  const auto services = services_of(*master);
  if (std::find(services.begin(), services.end(), service) == services.end()) {
    return Status(StatusCode::kForbidden,
                  "the master session no longer authorises '" + std::string(service) + "'");
  }
  return master_id;
}

}  // namespace sessiond
