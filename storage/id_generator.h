// Where session ids come from (DESIGN §2, §6): an 8-byte route key, then 24 bytes from
// OpenSSL's CSPRNG (192 bits). The ring places a session by its route key, so a user's
// sessions share one: the first 8 bytes of HMAC-SHA256(route-key secret, user id), which every
// node of every region must compute alike (the secret is shared like the id-signing keys) and
// which does not reveal the user id. An anonymous session gets a random route key.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>

#include "protocol/crypto.h"
#include "storage/session.h"

namespace sessiond::storage {

using RouteKey = std::uint64_t;
using RouteKeySecret = std::array<std::uint8_t, 32>;

class IdGenerator {
 public:
  // `secret` keys the route keys of users' sessions.
  explicit IdGenerator(const RouteKeySecret& secret);
  // A generator with a random secret: placement is stable only for this process (a one-node
  // table, tests).
  static IdGenerator with_random_secret();

  // A fresh id for a session of `user_id` (empty: anonymous). Thread-safe.
  SessionId next_id(std::string_view user_id) const;
  // A fresh id with the given route key (REGENERATE keeps its session's). Thread-safe.
  static SessionId id_with_route_key(RouteKey key);
  // The route key sessions of `user_id` get.
  RouteKey route_key_of_user(std::string_view user_id) const;

 private:
  std::shared_ptr<const HmacSha256> mac_;  // keyed with the secret; shared by copies
};

// The route key of an id: its first 8 bytes, big-endian.
RouteKey route_key_of(const SessionId& id);

}  // namespace sessiond::storage
