#include "daemon/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>

#include <array>

namespace sessiond::daemon {
namespace {

std::array<unsigned char, SHA256_DIGEST_LENGTH> digest(std::string_view text) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> out{};
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), out.data());
  return out;
}

}  // namespace

std::string_view role_name(Role role) {
  switch (role) {
    case Role::kApp:
      return "app";
    case Role::kAdmin:
      return "admin";
    case Role::kPeer:
      return "peer";
    case Role::kNone:
      break;
  }
  return "none";
}

Role AuthConfig::authenticate(std::string_view secret) const {
  const auto given = digest(secret);
  Role found = Role::kNone;
  // Every configured secret is compared, whichever matches, so the time does not say which.
  for (const auto& [configured, role] :
       {std::pair<const std::string&, Role>{admin_secret, Role::kAdmin},
        {app_secret, Role::kApp},
        {peer_secret, Role::kPeer}}) {
    if (configured.empty()) continue;
    const auto expected = digest(configured);
    if (CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0 && found == Role::kNone) {
      found = role;
    }
  }
  return found;
}

std::string AuthFailures::record(std::string_view peer) {
  total_.fetch_add(1, std::memory_order_relaxed);
  unlogged_.fetch_add(1, std::memory_order_relaxed);
  const std::int64_t now = clock_.now_ms();
  std::int64_t last = last_log_ms_.load(std::memory_order_relaxed);
  // A wall clock stepped back (now < last) does not silence the log until it catches up.
  if (last != kNever && now >= last && now - last < log_interval_ms_) return {};
  // Of the threads that find the interval over, the one that moves last_log_ms_ logs.
  if (!last_log_ms_.compare_exchange_strong(last, now, std::memory_order_relaxed)) return {};
  const std::uint64_t count = unlogged_.exchange(0, std::memory_order_relaxed);
  std::string line = fmt::format("{} failed AUTH attempt{}", count, count == 1 ? "" : "s");
  if (last != kNever && now >= last) {
    line += fmt::format(" in the last {:.1f} s", static_cast<double>(now - last) / 1000.0);
  }
  line += fmt::format(", latest from {}", peer.empty() ? "an unknown address" : peer);
  spdlog::warn("{}", line);
  return line;
}

}  // namespace sessiond::daemon
