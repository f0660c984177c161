// The node's session-security policy (DESIGN §9, docs/security.md): signed ids, hijack
// detection on GET, and what a context mismatch or a detection does, per preset.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/crypto.h"
#include "protocol/status.h"
#include "storage/id_generator.h"
#include "storage/session.h"

namespace sessiond::daemon {

// ---- signed ids ---------------------------------------------------------------------------
// A signed id is the 32-byte id followed by the first 16 bytes of HMAC-SHA256(key, id): 48
// bytes on the wire, 64 base64url characters in a cookie.
inline constexpr std::size_t kIdTagBytes = 16;
inline constexpr std::size_t kSignedIdBytes = sizeof(storage::SessionId) + kIdTagBytes;
inline constexpr std::size_t kIdKeyBytes = 32;

// The node group's keys: ids are signed with `current`; tags made with `previous` are still
// accepted until `previous_until_ms` (the grace period of a rotation).
struct IdKeys {
  std::string current;   // kIdKeyBytes raw bytes; empty: no signing
  std::string previous;  // empty: none
  std::int64_t previous_until_ms = 0;
  bool generated = false;  // load_id_keys made the file just now
};

// Reads a key file ("current HEX" line, optional "previous HEX UNTIL_MS" line, '#' comments).
// When `create_if_missing` and the file does not exist, writes one with a fresh random key
// (mode 0600, atomically). A file that others than its owner may read or write is refused.
// Errors name the file and the line.
Result<IdKeys> load_id_keys(const std::string& path, bool create_if_missing);
// The key file's text for `keys` (what load_id_keys reads).
std::string id_keys_text(const IdKeys& keys);

// The route-key secret (DESIGN §2, §6): sessions of a user get the route key HMAC(secret, user
// id), so every node of every region needs the same one, like the id keys. A file holding
// 'route-key HEX' (32 bytes), owner-only; made (at random) when missing and create_if_missing.
Result<storage::RouteKeySecret> load_route_key(const std::string& path, bool create_if_missing);
// Refuses a file that holds secrets (the id key file, a config file with a role's secret)
// when others than its owner may read or write it: INVALID_ARGUMENT naming it as `what` ("the
// id key file"), saying to chmod 600 it, then `advice` (what to do if others read it).
Status require_owner_only(const std::string& path, std::string_view what, std::string_view advice);

// Thread-safe: the HMAC states of the keys are prepared once (HmacSha256).
class IdSigner {
 public:
  IdSigner();  // no keys: sign() must not be called, verify() refuses every tag
  explicit IdSigner(IdKeys keys);
  ~IdSigner();
  IdSigner(IdSigner&&) noexcept;
  IdSigner& operator=(IdSigner&&) noexcept;
  bool enabled() const { return !keys_.current.empty(); }
  // id || tag under the current key (kSignedIdBytes).
  std::string sign(const storage::SessionId& id) const;
  // Whether `tag` (kIdTagBytes) is the id's tag under the current key, or under the previous
  // key before its grace period ends. Compared in constant time.
  bool verify(const storage::SessionId& id, std::span<const std::uint8_t> tag,
              std::int64_t now_ms) const;

 private:
  IdKeys keys_;
  std::optional<HmacSha256> current_;
  std::optional<HmacSha256> previous_;
};

// ---- hijack detection ---------------------------------------------------------------------

struct HijackRules {
  double max_speed_kmh = 1000;       // impossible travel above this; 0: no travel check
  double min_distance_km = 100;      // nearer locations never count (geolocation is coarse)
  std::size_t max_distinct_ips = 4;  // more IPs than this within the window; 0: no check
  std::int64_t ip_window_ms = 600'000;
};

struct HijackFinding {
  enum class Kind { kImpossibleTravel, kManyIps };
  Kind kind = Kind::kImpossibleTravel;
  std::string message;  // for humans: what was seen
  double distance_km = 0;
  double speed_kmh = 0;
  std::int64_t interval_ms = 0;
  std::uint32_t distinct_ips = 0;
};
// Great-circle distance (haversine, mean Earth radius 6371.0088 km).
double distance_km(double lat1, double lon1, double lat2, double lon2);

// Judges the newest entry of `log` (the access just recorded; oldest first) against the
// earlier ones: impossible travel from the latest earlier located access, and a new IP that
// makes more than max_distinct_ips distinct IPs within the window (an IP already seen in the
// window is not a new finding). Empty when nothing is suspicious.
std::vector<HijackFinding> detect_hijack(std::span<const storage::AccessEntry> log,
                                         const HijackRules& rules);

// ---- policies -----------------------------------------------------------------------------

enum class HijackAction { kReport, kDestroy, kRevokeUser };  // ordered by strictness
std::string_view hijack_action_name(HijackAction action);
std::optional<HijackAction> hijack_action_from_name(std::string_view name);

struct SessionPolicy {
  bool destroy_on_context_mismatch = false;
  HijackAction on_hijack = HijackAction::kReport;
  bool sign_ids = false;
  friend bool operator==(const SessionPolicy&, const SessionPolicy&) = default;
};

struct SecurityPolicy {
  SessionPolicy node;  // --context-mismatch-policy, --hijack-policy, --signed-ids all
  // Per preset (index = Preset), defaults from preset_policy_defaults().
  std::array<SessionPolicy, 5> presets = preset_policy_defaults();
  bool require_signed_ids = false;  // --signed-ids all: bare ids refused before any lookup
  HijackRules hijack;
  storage::Preset default_preset = storage::Preset::kEcommerce;  // of creates that name none

  // The stricter of the node's policy and the session's preset's (a session created with
  // explicit timeouts has no preset: the node's alone).
  SessionPolicy for_session(std::optional<storage::Preset> preset) const;

  // finance and healthcare: destroy on a context mismatch, revoke the user on a hijack
  // finding, signed ids; the others report only.
  static std::array<SessionPolicy, 5> preset_policy_defaults();
};

// Applies one --preset-policy value, "PRESET:KEY=VALUE[,KEY=VALUE...]" with keys
// context-mismatch (report|destroy), hijack (report|destroy|revoke-user) and signed-ids
// (on|off). INVALID_ARGUMENT naming the part it does not understand.
Status apply_preset_policy(std::string_view spec, SecurityPolicy* policy);

}  // namespace sessiond::daemon
