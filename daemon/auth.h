// Client authentication and roles (DESIGN §9): a connection authenticates with a shared secret
// and gets the role whose secret it gave. app: session operations; admin: those and node
// statistics and administration; peer: node-to-node operations. With no secret configured,
// authentication is off and every connection is admin (a node on a trusted loopback).
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "storage/clock.h"

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

// A connection is closed after this many failed AUTHs on it (the last failure is still
// answered). A client that holds the secret needs one attempt and a typo a second; a guesser
// has to open a new connection, a TCP handshake, every 3 guesses, and each failure is counted.
inline constexpr unsigned kMaxAuthFailures = 3;

// The failed AUTHs of the node (both listeners): counted for STATS, and logged as warnings at
// most once per interval, so that a guesser cannot flood the log. A line counts the failures
// since the previous line: "N failed AUTH attempts in the last S s, latest from PEER".
// Thread-safe and lock-free.
class AuthFailures {
 public:
  explicit AuthFailures(const storage::Clock& clock = storage::SystemClock::instance(),
                        std::int64_t log_interval_ms = 1000)
      : clock_(clock), log_interval_ms_(log_interval_ms) {}

  // Counts one failure from `peer` (an address, "" when unknown). Logs a warning unless one
  // was logged within the interval, and returns what it logged ("" when nothing).
  std::string record(std::string_view peer);
  // Failures since the start.
  std::uint64_t total() const { return total_.load(std::memory_order_relaxed); }

 private:
  static constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::min();
  const storage::Clock& clock_;
  const std::int64_t log_interval_ms_;
  std::atomic<std::uint64_t> total_{0};
  std::atomic<std::uint64_t> unlogged_{0};         // failures no line has reported yet
  std::atomic<std::int64_t> last_log_ms_{kNever};  // when the last line was logged
};

}  // namespace sessiond::daemon
