#include "daemon/security.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

namespace sessiond::daemon {
namespace {

Result<std::string> from_hex(std::string_view hex) {
  if (hex.size() != 2 * kIdKeyBytes) {
    return Status::InvalidArgument("a key is " + std::to_string(2 * kIdKeyBytes) +
                                   " hex digits, got " + std::to_string(hex.size()));
  }
  std::string out(kIdKeyBytes, '\0');
  for (std::size_t i = 0; i < kIdKeyBytes; ++i) {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, value, 16);
    if (ec != std::errc() || ptr != hex.data() + 2 * i + 2) {
      return Status::InvalidArgument("a key is hex digits only");
    }
    out[i] = static_cast<char>(value);
  }
  return out;
}

std::string to_hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

// Writes a fresh secret file where none is: a temporary file in the same directory, written and
// synced, owner-only, linked into place (so a crash leaves no empty file and a concurrent start
// cannot overwrite one), then the directory synced (so the name survives a power loss).
Status write_new_secret_file(const std::string& path, const std::string& text) {
  const std::string temp = path + ".new";
  ::unlink(temp.c_str());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return Status::Unavailable("cannot create " + temp + ": " + std::strerror(errno));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       ::fsync(fd) == 0;
  ::close(fd);
  const bool linked = written && ::link(temp.c_str(), path.c_str()) == 0;
  const int error = errno;
  ::unlink(temp.c_str());
  if (!linked) return Status::Unavailable("cannot write " + path + ": " + std::strerror(error));
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

Result<IdKeys> make_id_key_file(const std::string& path) {
  IdKeys keys;
  keys.current.resize(kIdKeyBytes);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(keys.current.data()),
                 static_cast<int>(kIdKeyBytes)) != 1) {
    return Status::Internal("the CSPRNG failed to make an id key");
  }
  keys.generated = true;
  if (Status s = write_new_secret_file(path, id_keys_text(keys)); !s.ok()) {
    return Status(s.code(), "the id key file: " + s.message());
  }
  return keys;
}

}  // namespace

Status require_owner_only(const std::string& path, std::string_view what, std::string_view advice) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status::InvalidArgument("cannot read " + std::string(what) + " " + path + ": " +
                                   std::strerror(errno));
  }
  if ((st.st_mode & 077) != 0) {
    return Status::InvalidArgument(std::string(what) + " " + path +
                                   " is readable or writable by others than its owner; chmod "
                                   "600 it (and " +
                                   std::string(advice) + " if others may have read it)");
  }
  return {};
}

Result<IdKeys> load_id_keys(const std::string& path, bool create_if_missing) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT && create_if_missing) {
    return make_id_key_file(path);
  }
  if (Status s = require_owner_only(path, "the id key file", "make new keys"); !s.ok()) return s;
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument("cannot read the id key file " + path);
  IdKeys keys;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const auto where = [&] { return path + ":" + std::to_string(number) + ": "; };
    std::istringstream words(line);
    std::string kind, hex, until;
    if (!(words >> kind) || kind.front() == '#') continue;
    words >> hex >> until;
    std::string extra;
    if (words >> extra) return Status::InvalidArgument(where() + "unexpected '" + extra + "'");
    auto key = from_hex(hex);
    if (!key.ok()) return Status::InvalidArgument(where() + key.status().message());
    if (kind == "current" && until.empty()) {
      if (!keys.current.empty()) return Status::InvalidArgument(where() + "a second 'current' key");
      keys.current = *key;
    } else if (kind == "previous") {
      if (!keys.previous.empty()) {
        return Status::InvalidArgument(where() + "a second 'previous' key");
      }
      std::int64_t ms = 0;
      auto [ptr, ec] = std::from_chars(until.data(), until.data() + until.size(), ms);
      if (until.empty() || ec != std::errc() || ptr != until.data() + until.size() || ms < 0) {
        return Status::InvalidArgument(where() +
                                       "previous needs the end of its grace period (ms since "
                                       "the epoch) after the key");
      }
      keys.previous = *key;
      keys.previous_until_ms = ms;
    } else {
      return Status::InvalidArgument(where() + "expected 'current HEX' or 'previous HEX UNTIL_MS'");
    }
  }
  if (keys.current.empty()) return Status::InvalidArgument(path + " has no 'current' key");
  return keys;
}

Result<storage::RouteKeySecret> load_route_key(const std::string& path, bool create_if_missing) {
  storage::RouteKeySecret secret{};
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT && create_if_missing) {
    if (RAND_bytes(secret.data(), static_cast<int>(secret.size())) != 1) {
      return Status::Internal("the CSPRNG failed to make a route key");
    }
    const std::string text =
        "# sessiond route-key secret (docs/security.md): sessions of a user are placed by "
        "HMAC(this, user id).\n# Every node of every region needs the same file.\nroute-key " +
        to_hex(std::string_view(reinterpret_cast<const char*>(secret.data()), secret.size())) +
        "\n";
    if (Status s = write_new_secret_file(path, text); !s.ok()) {
      return Status(s.code(), "the route-key file: " + s.message());
    }
    return secret;
  }
  if (Status s = require_owner_only(path, "the route-key file", "make a new one on every node");
      !s.ok()) {
    return s;
  }
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument("cannot read the route-key file " + path);
  std::string line;
  bool found = false;
  for (int number = 1; std::getline(in, line); ++number) {
    std::istringstream words(line);
    std::string kind, hex, extra;
    if (!(words >> kind) || kind.front() == '#') continue;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    if (kind != "route-key" || !(words >> hex) || (words >> extra) || found) {
      return Status::InvalidArgument(where + "expected one line 'route-key HEX'");
    }
    auto bytes = from_hex(hex);
    if (!bytes.ok()) return Status::InvalidArgument(where + bytes.status().message());
    if (bytes->size() != secret.size()) {
      return Status::InvalidArgument(where + "the route key must be 32 bytes (64 hex digits)");
    }
    std::memcpy(secret.data(), bytes->data(), secret.size());
    found = true;
  }
  if (!found) return Status::InvalidArgument(path + " has no 'route-key' line");
  return secret;
}

std::string id_keys_text(const IdKeys& keys) {
  std::string out =
      "# sessiond session-id signing keys (docs/security.md). Every node of a group needs the "
      "same file.\ncurrent " +
      to_hex(keys.current) + "\n";
  if (!keys.previous.empty()) {
    out +=
        "previous " + to_hex(keys.previous) + " " + std::to_string(keys.previous_until_ms) + "\n";
  }
  return out;
}

namespace {
std::string_view id_view(const storage::SessionId& id) {
  return {reinterpret_cast<const char*>(id.data()), id.size()};
}
}  // namespace

IdSigner::IdSigner(IdKeys keys) : keys_(std::move(keys)) {
  if (!keys_.current.empty()) current_.emplace(keys_.current);
  if (!keys_.previous.empty()) previous_.emplace(keys_.previous);
}
IdSigner::IdSigner() = default;
IdSigner::~IdSigner() = default;
IdSigner::IdSigner(IdSigner&&) noexcept = default;
IdSigner& IdSigner::operator=(IdSigner&&) noexcept = default;

std::string IdSigner::sign(const storage::SessionId& id) const {
  const auto mac = (*current_)(id_view(id));
  std::string out(reinterpret_cast<const char*>(id.data()), id.size());
  out.append(reinterpret_cast<const char*>(mac.data()), kIdTagBytes);
  return out;
}

bool IdSigner::verify(const storage::SessionId& id, std::span<const std::uint8_t> tag,
                      std::int64_t now_ms) const {
  if (!current_ || tag.size() != kIdTagBytes) return false;
  if (CRYPTO_memcmp((*current_)(id_view(id)).data(), tag.data(), kIdTagBytes) == 0) return true;
  return previous_ && now_ms < keys_.previous_until_ms &&
         CRYPTO_memcmp((*previous_)(id_view(id)).data(), tag.data(), kIdTagBytes) == 0;
}

double distance_km(double lat1, double lon1, double lat2, double lon2) {
  constexpr double kEarthRadiusKm = 6371.0088;
  constexpr double kRad = 3.14159265358979323846 / 180.0;
  const double dlat = (lat2 - lat1) * kRad;
  const double dlon = (lon2 - lon1) * kRad;
  const double a =
      std::sin(dlat / 2) * std::sin(dlat / 2) +
      std::cos(lat1 * kRad) * std::cos(lat2 * kRad) * std::sin(dlon / 2) * std::sin(dlon / 2);
  return 2 * kEarthRadiusKm * std::asin(std::min(1.0, std::sqrt(a)));
}

std::vector<HijackFinding> detect_hijack(std::span<const storage::AccessEntry> log,
                                         const HijackRules& rules) {
  std::vector<HijackFinding> findings;
  if (log.empty()) return findings;
  const storage::AccessEntry& now = log.back();
  const auto earlier = log.first(log.size() - 1);
  if (rules.max_speed_kmh > 0 && now.has_location) {
    const auto from = std::find_if(earlier.rbegin(), earlier.rend(),
                                   [](const storage::AccessEntry& e) { return e.has_location; });
    if (from != earlier.rend()) {
      const double km = distance_km(from->latitude, from->longitude, now.latitude, now.longitude);
      // Accesses out of order (the clock stepped back) say nothing about speed; two at the same
      // millisecond count as one millisecond apart.
      const std::int64_t interval = std::max<std::int64_t>(now.time_ms - from->time_ms, 1);
      const double kmh = km / (static_cast<double>(interval) / 3'600'000.0);
      if (now.time_ms >= from->time_ms && km >= rules.min_distance_km &&
          kmh > rules.max_speed_kmh) {
        char text[160];
        std::snprintf(text, sizeof text,
                      "impossible travel: %.0f km in %.1f min (%.0f km/h > %.0f)", km,
                      static_cast<double>(interval) / 60'000.0, kmh, rules.max_speed_kmh);
        findings.push_back({HijackFinding::Kind::kImpossibleTravel, text, km, kmh, interval, 0});
      }
    }
  }
  if (rules.max_distinct_ips > 0 && !now.ip.empty()) {
    std::vector<std::string_view> ips;
    bool seen_before = false;
    for (const auto& e : earlier) {
      if (e.time_ms < now.time_ms - rules.ip_window_ms || e.ip.empty()) continue;
      if (e.ip == now.ip) seen_before = true;
      if (std::find(ips.begin(), ips.end(), e.ip) == ips.end()) ips.push_back(e.ip);
    }
    if (!seen_before) ips.push_back(now.ip);
    if (!seen_before && ips.size() > rules.max_distinct_ips) {
      const auto n = static_cast<std::uint32_t>(ips.size());
      findings.push_back({HijackFinding::Kind::kManyIps,
                          "many IPs: " + std::to_string(n) + " distinct in " +
                              std::to_string(rules.ip_window_ms / 1000) + " s (limit " +
                              std::to_string(rules.max_distinct_ips) + ")",
                          0, 0, 0, n});
    }
  }
  return findings;
}

std::string_view hijack_action_name(HijackAction action) {
  switch (action) {
    case HijackAction::kReport:
      return "report";
    case HijackAction::kDestroy:
      return "destroy";
    case HijackAction::kRevokeUser:
      return "revoke-user";
  }
  return "report";
}

std::optional<HijackAction> hijack_action_from_name(std::string_view name) {
  for (auto a : {HijackAction::kReport, HijackAction::kDestroy, HijackAction::kRevokeUser}) {
    if (hijack_action_name(a) == name) return a;
  }
  return std::nullopt;
}

std::array<SessionPolicy, 5> SecurityPolicy::preset_policy_defaults() {
  const SessionPolicy strict{true, HijackAction::kRevokeUser, true};
  return {strict, strict, SessionPolicy{}, SessionPolicy{}, SessionPolicy{}};
}

SessionPolicy SecurityPolicy::for_session(std::optional<storage::Preset> preset) const {
  if (!preset) return node;
  const SessionPolicy& p = presets[static_cast<std::size_t>(*preset)];
  return {node.destroy_on_context_mismatch || p.destroy_on_context_mismatch,
          std::max(node.on_hijack, p.on_hijack), node.sign_ids || p.sign_ids};
}

Status apply_preset_policy(std::string_view spec, SecurityPolicy* policy) {
  const auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("--preset-policy '" + std::string(spec) + "': " + why);
  };
  const auto colon = spec.find(':');
  if (colon == std::string_view::npos) return bad("expected PRESET:KEY=VALUE[,KEY=VALUE]");
  const auto preset = storage::preset_from_name(spec.substr(0, colon));
  if (!preset) return bad("unknown preset '" + std::string(spec.substr(0, colon)) + "'");
  SessionPolicy p = policy->presets[static_cast<std::size_t>(*preset)];
  std::string_view rest = spec.substr(colon + 1);
  if (rest.empty()) return bad("no settings");
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const auto eq = item.find('=');
    const std::string_view key = item.substr(0, eq);
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1);
    if (key == "context-mismatch" && (value == "report" || value == "destroy")) {
      p.destroy_on_context_mismatch = value == "destroy";
    } else if (key == "hijack" && hijack_action_from_name(value)) {
      p.on_hijack = *hijack_action_from_name(value);
    } else if (key == "signed-ids" && (value == "on" || value == "off")) {
      p.sign_ids = value == "on";
    } else {
      return bad("'" + std::string(item) +
                 "' is not context-mismatch=report|destroy, hijack=report|destroy|revoke-user "
                 "or signed-ids=on|off");
    }
  }
  policy->presets[static_cast<std::size_t>(*preset)] = p;
  return {};
}

}  // namespace sessiond::daemon
