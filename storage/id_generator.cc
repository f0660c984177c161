#include "storage/id_generator.h"

#include <cstdio>
#include <cstdlib>

#include "protocol/crypto.h"

namespace sessiond::storage {
namespace {

void random_bytes(std::uint8_t* out, std::size_t n) {
  if (!sessiond::random_bytes(out, n)) {
    std::fputs("sessiond: OpenSSL RAND_bytes failed; refusing to issue a guessable id\n", stderr);
    std::abort();
  }
}

}  // namespace

IdGenerator IdGenerator::with_random_secret() {
  RouteKeySecret secret;
  random_bytes(secret.data(), secret.size());
  return IdGenerator(secret);
}

IdGenerator::IdGenerator(const RouteKeySecret& secret)
    : mac_(std::make_shared<const HmacSha256>(
          std::string_view(reinterpret_cast<const char*>(secret.data()), secret.size()))) {}

RouteKey IdGenerator::route_key_of_user(std::string_view user_id) const {
  const auto mac = (*mac_)(user_id);
  RouteKey key = 0;
  for (int i = 0; i < 8; ++i) key = (key << 8) | mac[i];
  return key;
}

SessionId IdGenerator::id_with_route_key(RouteKey key) {
  SessionId id;
  for (int i = 7; i >= 0; --i, key >>= 8)
    id[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(key);
  random_bytes(id.data() + 8, id.size() - 8);
  return id;
}

SessionId IdGenerator::next_id(std::string_view user_id) const {
  if (user_id.empty()) return new_session_id();
  return id_with_route_key(route_key_of_user(user_id));
}

RouteKey route_key_of(const SessionId& id) {
  RouteKey key = 0;
  for (int i = 0; i < 8; ++i) key = (key << 8) | id[static_cast<std::size_t>(i)];
  return key;
}

}  // namespace sessiond::storage
