// HS256 JSON Web Tokens. The JSON here is only what a JWT needs: writing a flat object of
// strings and integers, and reading one object whose members may be any JSON value (nested
// values are skipped, with a depth limit), so that tokens made by other libraries verify too.
#include "sessiond/tokens.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <optional>
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

// ---- JSON --------------------------------------------------------------------------------

void append_json_string(std::string* out, std::string_view s) {
  out->push_back('"');
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (u < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      out->append("\\u00");
      out->push_back(kHex[u >> 4]);
      out->push_back(kHex[u & 15]);
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

void append_utf8(std::string* out, std::uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// A reader for one JSON text (RFC 8259) that holds an object.
class JsonReader {
 public:
  explicit JsonReader(std::string_view text) : s_(text) {}

  // Calls member(name) for each member, positioned at its value, which member must consume
  // (with string(), number() or skip()). False on any syntax error or trailing bytes.
  template <typename Member>
  bool object(Member member) {
    space();
    if (!eat('{')) return false;
    space();
    if (eat('}')) return end();
    for (;;) {
      std::string name;
      space();
      if (!string(&name)) return false;
      space();
      if (!eat(':')) return false;
      space();
      if (!member(name)) return false;
      space();
      if (eat('}')) return end();
      if (!eat(',')) return false;
    }
  }

  bool string(std::string* out) {
    if (!eat('"')) return false;
    out->clear();
    while (i_ < s_.size()) {
      const char c = s_[i_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (i_ == s_.size()) return false;
      const char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          std::uint32_t cp = 0;
          if (!hex4(&cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00) {  // a high surrogate needs its low half
            std::uint32_t low = 0;
            if (!eat('\\') || !eat('u') || !hex4(&low) || low < 0xDC00 || low > 0xDFFF) {
              return false;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return false;
          }
          append_utf8(out, cp);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }

  // A JSON number; NumericDate values may carry a fraction, which is dropped.
  bool number(std::int64_t* out) {
    const std::size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ == s_.size() || !digit(s_[i_])) return false;
    if (s_[i_] == '0') {
      ++i_;
    } else {
      while (i_ < s_.size() && digit(s_[i_])) ++i_;
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (i_ == s_.size() || !digit(s_[i_])) return false;
      while (i_ < s_.size() && digit(s_[i_])) ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (i_ == s_.size() || !digit(s_[i_])) return false;
      while (i_ < s_.size() && digit(s_[i_])) ++i_;
    }
    const std::string text(s_.substr(start, i_ - start));
    const double value = std::strtod(text.c_str(), nullptr);
    if (!std::isfinite(value) || std::fabs(value) > 9.2e18) return false;
    *out = static_cast<std::int64_t>(value);
    return true;
  }

  // Any JSON value, nested up to 32 levels.
  bool skip(int depth = 0) {
    if (depth > 32 || i_ == s_.size()) return false;
    const char c = s_[i_];
    if (c == '"') {
      std::string ignored;
      return string(&ignored);
    }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++i_;
      space();
      if (eat(close)) return true;
      for (;;) {
        space();
        if (c == '{') {
          std::string ignored;
          if (!string(&ignored)) return false;
          space();
          if (!eat(':')) return false;
          space();
        }
        if (!skip(depth + 1)) return false;
        space();
        if (eat(close)) return true;
        if (!eat(',')) return false;
      }
    }
    for (std::string_view word : {"true", "false", "null"}) {
      if (s_.substr(i_, word.size()) == word) {
        i_ += word.size();
        return true;
      }
    }
    std::int64_t ignored = 0;
    return number(&ignored);
  }

 private:
  static bool digit(char c) { return c >= '0' && c <= '9'; }
  void space() {
    while (i_ < s_.size() &&
           (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) {
      ++i_;
    }
  }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool end() {
    space();
    return i_ == s_.size();
  }
  bool hex4(std::uint32_t* out) {
    if (s_.size() - i_ < 4) return false;
    *out = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      const int v = digit(c)                 ? c - '0'
                    : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                             : -1;
      if (v < 0) return false;
      *out = *out * 16 + static_cast<std::uint32_t>(v);
    }
    return true;
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

Status unauthenticated(std::string message) {
  return Status(StatusCode::kUnauthenticated, std::move(message));
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
  std::string payload = "{";
  auto member = [&](std::string_view name) {
    if (payload.size() > 1) payload.push_back(',');
    append_json_string(&payload, name);
    payload.push_back(':');
  };
  if (!claims.issuer.empty()) {
    member("iss");
    append_json_string(&payload, claims.issuer);
  }
  if (!claims.subject.empty()) {
    member("sub");
    append_json_string(&payload, claims.subject);
  }
  for (const auto& [name, value] :
       {std::pair<std::string_view, std::int64_t>{"iat", claims.issued_at},
        {"nbf", claims.not_before},
        {"exp", claims.expires_at}}) {
    if (value == 0) continue;
    member(name);
    payload += std::to_string(value);
  }
  payload.push_back('}');
  std::string token = base64url_encode(R"({"alg":"HS256","typ":"JWT"})");
  token.push_back('.');
  token += base64url_encode(payload);
  const auto mac = hmac_sha256(key_, token);
  token.push_back('.');
  token +=
      base64url_encode(std::string_view(reinterpret_cast<const char*>(mac.data()), mac.size()));
  return token;
}

Result<TokenClaims> TokenSigner::verify(std::string_view token, std::int64_t now_s,
                                        std::int64_t leeway_s) const {
  const auto first = token.find('.');
  const auto second = first == std::string_view::npos ? first : token.find('.', first + 1);
  if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos) {
    return unauthenticated("not a compact JWT (three base64url parts)");
  }
  auto header = base64url_decode(token.substr(0, first));
  auto payload = base64url_decode(token.substr(first + 1, second - first - 1));
  auto signature = base64url_decode(token.substr(second + 1));
  if (!header.ok() || !payload.ok() || !signature.ok()) {
    return unauthenticated("a part of the token is not base64url");
  }
  std::string alg;
  JsonReader header_reader(*header);
  const bool header_ok = header_reader.object([&](const std::string& name) {
    return name == "alg" ? header_reader.string(&alg) : header_reader.skip();
  });
  if (!header_ok) return unauthenticated("the token's header is not a JSON object");
  if (alg != "HS256") return unauthenticated("the token is not signed with HS256");
  // The signature is checked before anything in the payload is read.
  const auto mac = hmac_sha256(key_, token.substr(0, second));
  if (signature->size() != mac.size() ||
      CRYPTO_memcmp(signature->data(), mac.data(), mac.size()) != 0) {
    return unauthenticated("the token's signature does not match");
  }
  TokenClaims claims;
  JsonReader reader(*payload);
  const bool payload_ok = reader.object([&](const std::string& name) {
    if (name == "iss") return reader.string(&claims.issuer);
    if (name == "sub") return reader.string(&claims.subject);
    if (name == "iat") return reader.number(&claims.issued_at);
    if (name == "nbf") return reader.number(&claims.not_before);
    if (name == "exp") return reader.number(&claims.expires_at);
    return reader.skip();
  });
  if (!payload_ok) return unauthenticated("the token's claims are not a JSON object");
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
