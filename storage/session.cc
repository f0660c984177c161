#include "storage/session.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "protocol/base64url.h"
#include "protocol/crypto.h"

namespace sessiond::storage {
namespace {

constexpr std::size_t kIdTextLength = base64url_encoded_size(std::tuple_size_v<SessionId>);  // 43

}  // namespace

SessionId new_session_id() {
  SessionId id;
  if (!random_bytes(id.data(), id.size())) {
    std::fputs("sessiond: OpenSSL RAND_bytes failed; refusing to issue a guessable id\n", stderr);
    std::abort();
  }
  return id;
}

std::string session_id_to_text(const SessionId& id) {
  return base64url_encode(std::string_view(reinterpret_cast<const char*>(id.data()), id.size()));
}

std::optional<SessionId> session_id_from_text(std::string_view text) {
  // 43 characters carry 258 bits: the decoder refuses the text unless the last 2 are zero, or
  // two texts would name one id.
  if (text.size() != kIdTextLength) return std::nullopt;
  SessionId id{};
  if (!base64url_decode_to(text, id).ok()) return std::nullopt;
  return id;
}

Timeouts preset_timeouts(Preset preset) {
  constexpr std::int64_t kMinute = 60'000;
  constexpr std::int64_t kHour = 60 * kMinute;
  constexpr std::int64_t kDay = 24 * kHour;
  switch (preset) {
    case Preset::kFinance:
      return {10 * kMinute, 30 * kMinute};
    case Preset::kHealthcare:
      return {15 * kMinute, 60 * kMinute};
    case Preset::kEcommerce:
      return {30 * kMinute, 24 * kHour};
    case Preset::kMedia:
      return {1 * kHour, 7 * kDay};
    case Preset::kGaming:
      return {2 * kHour, 30 * kDay};
  }
  return {};
}

std::string_view preset_name(Preset preset) {
  switch (preset) {
    case Preset::kFinance:
      return "finance";
    case Preset::kHealthcare:
      return "healthcare";
    case Preset::kEcommerce:
      return "ecommerce";
    case Preset::kMedia:
      return "media";
    case Preset::kGaming:
      return "gaming";
  }
  return "unknown";
}

std::optional<Preset> preset_from_name(std::string_view name) {
  for (Preset p : {Preset::kFinance, Preset::kHealthcare, Preset::kEcommerce, Preset::kMedia,
                   Preset::kGaming}) {
    if (preset_name(p) == name) return p;
  }
  return std::nullopt;
}

std::int64_t compute_deadline(std::int64_t created_at_ms, std::int64_t last_access_ms,
                              const Timeouts& timeouts) {
  std::int64_t deadline = kNoDeadline;
  if (timeouts.idle_ms > 0) deadline = std::min(deadline, last_access_ms + timeouts.idle_ms);
  if (timeouts.absolute_ms > 0) {
    deadline = std::min(deadline, created_at_ms + timeouts.absolute_ms);
  }
  return deadline;
}

const Field* Session::field(std::string_view name) const {
  auto it = std::lower_bound(fields.begin(), fields.end(), name,
                             [](const Field& f, std::string_view n) { return f.name < n; });
  return it != fields.end() && it->name == name ? &*it : nullptr;
}

namespace {

// An address as 16 bytes (IPv4 as its IPv4-mapped IPv6 form) and, for a prefix, its length in
// those 128 bits; nullopt when the text is not an address or prefix.
struct Network {
  std::array<unsigned char, 16> bytes{};
  int bits = 128;
};

std::optional<Network> parse_network(std::string_view text, bool allow_prefix) {
  Network n;
  std::string address(text);
  int prefix = -1;
  if (const auto slash = address.find('/'); slash != std::string::npos) {
    if (!allow_prefix) return std::nullopt;
    const std::string digits = address.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 ||
        digits.find_first_not_of("0123456789") != std::string::npos) {
      return std::nullopt;
    }
    prefix = std::stoi(digits);
    address.resize(slash);
  }
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) {
    if (prefix > 32) return std::nullopt;
    n.bytes[10] = n.bytes[11] = 0xFF;
    std::memcpy(n.bytes.data() + 12, &v4, 4);
    n.bits = prefix < 0 ? 128 : 96 + prefix;
  } else if (inet_pton(AF_INET6, address.c_str(), &v6) == 1) {
    if (prefix > 128) return std::nullopt;
    std::memcpy(n.bytes.data(), &v6, 16);
    n.bits = prefix < 0 ? 128 : prefix;
  } else {
    return std::nullopt;
  }
  return n;
}

bool in_network(const Network& net, const Network& address) {
  for (int bit = 0; bit < net.bits; bit += 8) {
    const int take = std::min(8, net.bits - bit);
    const auto mask = static_cast<unsigned char>(0xFF << (8 - take));
    if ((net.bytes[static_cast<std::size_t>(bit / 8)] & mask) !=
        (address.bytes[static_cast<std::size_t>(bit / 8)] & mask)) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string context_ip_error(std::string_view ip) {
  if (ip.empty() || parse_network(ip, true)) return {};
  return "'" + std::string(ip) + "' is not an IP address or prefix (a.b.c.d/n, x:x::/n)";
}

bool context_matches(const ClientContext& bound, const ClientContext& given) {
  if (bound.user_agent_hash != given.user_agent_hash) return false;
  if (bound.ip.empty() || bound.ip == given.ip) return true;  // empty: the user agent only
  const auto net = parse_network(bound.ip, true);
  const auto address = parse_network(given.ip, false);
  return net && address && in_network(*net, *address);
}

}  // namespace sessiond::storage
