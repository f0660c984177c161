// Client authentication and roles (DESIGN §9): a connection authenticates with a shared secret
// and gets the role whose secret it gave. app: session operations; admin: those and node
// statistics and administration; peer: node-to-node operations. With no secret configured,
// authentication is off and every connection is admin (a node on a trusted loopback).
#pragma once

#include <string>
#include <string_view>

namespace sessiond::daemon {

enum class Role { kNone, kApp, kAdmin, kPeer };

std::string_view role_name(Role role);

struct AuthConfig {
  std::string app_secret;
  std::string admin_secret;
  std::string peer_secret;

  bool enabled() const {
    return !app_secret.empty() || !admin_secret.empty() || !peer_secret.empty();
  }
  // The role a connection starts with: kNone when authentication is on, else kAdmin.
  Role initial_role() const { return enabled() ? Role::kNone : Role::kAdmin; }
  // The role of `secret`, compared in constant time (as SHA-256 digests, so that neither the
  // content nor the length of a configured secret shows in the time taken); kNone if none
  // matches.
  Role authenticate(std::string_view secret) const;
};

}  // namespace sessiond::daemon
