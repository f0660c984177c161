// The session record of DESIGN §2, as the engine hands it to its callers, and the helpers that
// belong to it: ids, timeouts, policy presets, versions.
//
// Times are milliseconds since the Unix epoch (wall clock), durations are milliseconds, and 0
// as a timeout means "none". A session is alive while now < deadline.
#pragma once

#include <algorithm>
#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sessiond::storage {

// 256 random bits from OpenSSL's CSPRNG. Its text form is base64url without padding (43 chars).
using SessionId = std::array<std::uint8_t, 32>;

// A fresh id from RAND_bytes. Aborts if the CSPRNG cannot be seeded: handing out a guessable id
// is worse than stopping.
SessionId new_session_id();
std::string session_id_to_text(const SessionId& id);
// Parses the 43-character text form; nullopt for anything else.
std::optional<SessionId> session_id_from_text(std::string_view text);

// Version of a write: a hybrid logical clock timestamp (see hlc.h), the region and the node (in
// its region) that made it. Ordered by (hlc, region, node), so two writers never tie (DESIGN §7).
// Region and node numbers are below kMaxOrigin.
struct Version {
  std::uint64_t hlc = 0;
  std::uint32_t region = 0;
  std::uint32_t node = 0;
  friend auto operator<=>(const Version&, const Version&) = default;
};
inline constexpr std::uint32_t kMaxOrigin = 1u << 16;

struct Timeouts {
  std::int64_t idle_ms = 0;      // sliding: expires this long after the last access; 0 = none
  std::int64_t absolute_ms = 0;  // expires this long after creation, whatever the access; 0 = none
  friend bool operator==(const Timeouts&, const Timeouts&) = default;
};

// Industry presets (absolute / idle): finance 30 min / 10 min, healthcare 60 min / 15 min,
// ecommerce 24 h / 30 min, media 7 d / 1 h, gaming 30 d / 2 h.
enum class Preset { kFinance, kHealthcare, kEcommerce, kMedia, kGaming };
Timeouts preset_timeouts(Preset preset);
std::string_view preset_name(Preset preset);
// Case-sensitive lower-case name ("finance"); nullopt if unknown.
std::optional<Preset> preset_from_name(std::string_view name);

// The first instant at which a session is no longer valid: min(last_access + idle,
// created + absolute), ignoring a timeout of 0. kNoDeadline when both are 0.
inline constexpr std::int64_t kNoDeadline = INT64_MAX;
std::int64_t compute_deadline(std::int64_t created_at_ms, std::int64_t last_access_ms,
                              const Timeouts& timeouts);

struct Field {
  std::string name;
  std::string value;
  Version version;  // version of the write that last set this field (per-field LWW, DESIGN §7)
  friend bool operator==(const Field&, const Field&) = default;
};

// Longest IP text (or prefix) of a client context or an access entry.
inline constexpr std::size_t kMaxIpBytes = 64;

// Client context a session can be bound to (DESIGN §9): an IP address or prefix, and a hash of
// the user-agent string.
struct ClientContext {
  std::string
      ip;  // an address, or (bound contexts only) a prefix: "203.0.113.0/24", "2001:db8::/64"
  std::uint64_t user_agent_hash = 0;
  friend bool operator==(const ClientContext&, const ClientContext&) = default;
};

// Whether a request's context matches the one a session is bound to: the same user-agent hash,
// and the same address, an address inside the bound prefix (IPv4 or IPv6), or any address
// when the bound ip is empty. Addresses are
// compared as parsed, so "::ffff:0:0" style spellings of one address match.
bool context_matches(const ClientContext& bound, const ClientContext& given);
// INVALID_ARGUMENT text when `ip` is neither an address nor a prefix (bits within the family's
// length); empty when it is fine. An empty ip binds only the user agent.
std::string context_ip_error(std::string_view ip);

// One entry of the access history.
struct AccessEntry {
  std::int64_t time_ms = 0;
  std::string ip;
  std::uint64_t user_agent_hash = 0;
  bool has_location = false;
  double latitude = 0;
  double longitude = 0;
  friend bool operator==(const AccessEntry&, const AccessEntry&) = default;
};

struct Session {
  SessionId id{};
  std::string user_id;        // may be empty; indexed when not
  std::vector<Field> fields;  // sorted by name, names unique
  std::int64_t created_at_ms = 0;
  std::int64_t last_access_ms = 0;
  Timeouts timeouts;
  // The lifetime cap (DESIGN §7): created_at + the node's max lifetime, which no update raises;
  // kNoDeadline for keyed (RESP) records without one.
  std::int64_t cap_ms = kNoDeadline;
  std::optional<ClientContext> context;
  std::vector<AccessEntry> access_log;  // oldest first, at most the configured length
  Version version;                      // version of the last write to the session
  std::optional<Preset> preset;         // the policy preset it was created with, if any
  bool signed_id = false;               // its id is handed out with an HMAC tag (DESIGN §9)

  std::int64_t deadline_ms() const {
    return std::min(compute_deadline(created_at_ms, last_access_ms, timeouts), cap_ms);
  }
  // Pointer to the field with this name, or nullptr.
  const Field* field(std::string_view name) const;
  friend bool operator==(const Session&, const Session&) = default;
};

}  // namespace sessiond::storage
