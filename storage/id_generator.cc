#include "storage/id_generator.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdio>
#include <cstdlib>

namespace sessiond::storage {
namespace {

void random_bytes(std::uint8_t* out, std::size_t n) {
  if (RAND_bytes(out, static_cast<int>(n)) != 1) {
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

RouteKey IdGenerator::route_key_of_user(std::string_view user_id) const {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()),
       reinterpret_cast<const unsigned char*>(user_id.data()), user_id.size(), mac, &len);
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
