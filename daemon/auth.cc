#include "daemon/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

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

}  // namespace sessiond::daemon
