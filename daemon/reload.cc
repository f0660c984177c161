// A reload first prepares everything it would install (parses the options, reads the key file,
// builds the TLS context) and installs only when all of that worked, so a typo in one file never
// leaves the node half reloaded. What it installs is swapped whole: the security policy and the
// signer as one snapshot (Handlers::set_security), the TLS context between two accepts
// (Server::reload_tls), the log level by spdlog's atomic level.
#include "daemon/reload.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <string_view>

#include "daemon/tls.h"
#include "storage/session.h"

namespace sessiond::daemon {
namespace {

std::string joined(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (const auto& part : parts) out += (out.empty() ? "" : std::string(separator)) + part;
  return out;
}

// "finance signed-ids on -> off" for each key of one policy that changed.
void policy_changes(std::string_view who, const SessionPolicy& was, const SessionPolicy& now,
                    std::vector<std::string>* out) {
  const auto on_off = [](bool on) { return on ? "on" : "off"; };
  const auto mismatch = [](bool destroy) { return destroy ? "destroy" : "report"; };
  if (was.destroy_on_context_mismatch != now.destroy_on_context_mismatch) {
    out->push_back(fmt::format("{} context-mismatch {} -> {}", who,
                               mismatch(was.destroy_on_context_mismatch),
                               mismatch(now.destroy_on_context_mismatch)));
  }
  if (was.on_hijack != now.on_hijack) {
    out->push_back(fmt::format("{} hijack {} -> {}", who, hijack_action_name(was.on_hijack),
                               hijack_action_name(now.on_hijack)));
  }
  if (was.sign_ids != now.sign_ids) {
    out->push_back(
        fmt::format("{} signed-ids {} -> {}", who, on_off(was.sign_ids), on_off(now.sign_ids)));
  }
}

std::vector<std::string> security_changes(const SecurityPolicy& was, const SecurityPolicy& now) {
  std::vector<std::string> out;
  policy_changes("node", was.node, now.node, &out);
  for (std::size_t i = 0; i < was.presets.size(); ++i) {
    policy_changes(storage::preset_name(static_cast<storage::Preset>(i)), was.presets[i],
                   now.presets[i], &out);
  }
  if (was.require_signed_ids != now.require_signed_ids) {
    out.push_back(now.require_signed_ids ? "bare ids refused (--signed-ids all)"
                                         : "bare ids accepted again");
  }
  const HijackRules& a = was.hijack;
  const HijackRules& b = now.hijack;
  if (a.max_speed_kmh != b.max_speed_kmh || a.min_distance_km != b.min_distance_km ||
      a.max_distinct_ips != b.max_distinct_ips || a.ip_window_ms != b.ip_window_ms) {
    out.push_back(fmt::format(
        "hijack rules: max speed {} km/h, min distance {} km, max {} IPs in {} s", b.max_speed_kmh,
        b.min_distance_km, b.max_distinct_ips, static_cast<double>(b.ip_window_ms) / 1000.0));
  }
  return out;
}

}  // namespace

Result<NodeIdKeys> load_node_id_keys(const ServerOptions& options) {
  NodeIdKeys out;
  const bool default_file = options.id_key_file.empty();
  out.path = default_file ? (std::filesystem::path(options.store.path) / "id-keys").string()
                          : options.id_key_file;
  // Loaded whenever ids are signed, and whenever a key file is there, so that the ids handed
  // out before --signed-ids was turned off keep verifying.
  if (!options.needs_id_keys() && default_file && !std::filesystem::exists(out.path)) return out;
  auto keys = load_id_keys(out.path, default_file && options.needs_id_keys());
  if (!keys.ok()) return keys.status();
  out.keys = std::move(keys).value();
  out.loaded = true;
  return out;
}

std::vector<std::string> settings_needing_restart(const ServerOptions& running,
                                                  const ServerOptions& wanted) {
  // Every option of ServerOptions is either here or applied by Reloader::reload; a new option
  // goes to one of the two (and to docs/operations.md, "Signals").
  std::vector<std::string> out;
  const auto check = [&](bool differs, const char* flag) {
    if (differs) out.emplace_back(flag);
  };
  const auto& r = running;
  const auto& w = wanted;
  check(r.listen_host != w.listen_host || r.listen_port != w.listen_port, "--listen");
  check(r.resp_port != w.resp_port, "--resp-port");
  check(r.admin_host != w.admin_host || r.admin_port != w.admin_port, "--admin-listen");
  check(r.health.memory_share != w.health.memory_share, "--health-memory-share");
  check(r.health.min_hit_ratio != w.health.min_hit_ratio, "--health-min-hit-ratio");
  check(r.health.max_lag_ms != w.health.max_lag_ms, "--health-max-lag-ms");
  check(r.threads != w.threads, "--threads");
  check(r.max_frame_bytes != w.max_frame_bytes, "--max-frame-bytes");
  check(r.max_connections != w.max_connections, "--max-connections");
  check(r.idle_timeout_ms != w.idle_timeout_ms, "--idle-timeout-ms");
  check(r.frame_timeout_ms != w.frame_timeout_ms, "--frame-timeout-ms");
  check(r.max_output_bytes != w.max_output_bytes, "--max-output-bytes");
  check(r.send_timeout_ms != w.send_timeout_ms, "--send-timeout-ms");
  check(r.max_connections_per_ip != w.max_connections_per_ip, "--max-connections-per-ip");
  check(r.table.max_session_bytes != w.table.max_session_bytes, "--max-session-bytes");
  check(r.table.max_lifetime_ms != w.table.max_lifetime_ms, "--max-lifetime-ms");
  check(r.table.max_clock_skew_ms != w.table.max_clock_skew_ms, "--max-clock-skew-ms");
  check(r.route_key_file != w.route_key_file, "--route-key-file");
  check(r.expiry_interval_ms != w.expiry_interval_ms, "--expiry-interval-ms");
  check(r.auth.app_secret != w.auth.app_secret, "--app-secret");
  check(r.auth.admin_secret != w.auth.admin_secret, "--admin-secret");
  check(r.auth.peer_secret != w.auth.peer_secret, "--peer-secret");
  check(r.tls.enabled() != w.tls.enabled(), "--tls-cert/--tls-key (TLS on or off)");
  check(r.tls.client_auth != w.tls.client_auth, "--tls-client-auth");
  check(r.security.default_preset != w.security.default_preset, "--default-preset");
  check(r.store.path != w.store.path, "--data-dir");
  check(r.store.durability != w.store.durability, "--durability");
  check(r.table.shard_count != w.table.shard_count, "--shards");
  check(r.table.access_log_length != w.table.access_log_length, "--access-log-length");
  check(r.table.touch_persist_fraction != w.table.touch_persist_fraction,
        "--touch-persist-fraction");
  check(r.table.max_sessions_per_user != w.table.max_sessions_per_user, "--max-sessions-per-user");
  check(r.table.user_limit_policy != w.table.user_limit_policy, "--user-limit-policy");
  check(r.table.memory_budget_bytes != w.table.memory_budget_bytes, "--memory-budget-bytes");
  return out;
}

Reloader::Reloader(int argc, const char* const* argv, ServerOptions running, IdKeys keys,
                   Handlers& handlers, Server& server)
    : argc_(argc),
      argv_(argv),
      running_(std::move(running)),
      keys_(std::move(keys)),
      handlers_(handlers),
      server_(server) {}

Status Reloader::reload() {
  // Prepare: nothing below changes the node.
  ParsedOptions parsed = parse_options(argc_, argv_);
  if (parsed.exit) {
    // The first line: the rest is the hint to run --help.
    return Status::InvalidArgument("the command line and config file do not parse: " +
                                   parsed.message.substr(0, parsed.message.find('\n')));
  }
  ServerOptions& wanted = parsed.options;
  const std::vector<std::string> restart = settings_needing_restart(running_, wanted);
  // The default preset sets the table's default timeouts too: it takes a restart.
  wanted.security.default_preset = running_.security.default_preset;
  auto keys = load_node_id_keys(wanted);
  if (!keys.ok()) return Status::InvalidArgument("id keys: " + keys.status().message());
  SslCtxPtr tls_context;
  const bool reload_tls = running_.tls.enabled() && wanted.tls.enabled();
  if (reload_tls) {
    TlsOptions tls = wanted.tls;
    tls.client_auth = running_.tls.client_auth;  // the handshake's rule takes a restart
    Status valid = validate_tls_options(tls);
    if (!valid.ok()) return Status::InvalidArgument("TLS: " + valid.message());
    auto made = make_server_context(tls);
    if (!made.ok()) return Status::InvalidArgument("TLS: " + made.status().message());
    tls_context = std::move(made).value();
  }

  // Install, and say what was installed.
  const auto policies = security_changes(running_.security, wanted.security);
  const bool keys_rotated = keys->keys.current != keys_.current ||
                            keys->keys.previous != keys_.previous ||
                            keys->keys.previous_until_ms != keys_.previous_until_ms;
  handlers_.set_security(wanted.security, IdSigner(keys->keys));
  spdlog::info("reload: security policies {}",
               policies.empty() ? "unchanged" : "now: " + joined(policies, "; "));
  if (keys->loaded) {
    spdlog::info("reload: id keys from {} ({}{})", keys->path,
                 keys_rotated ? "changed" : "unchanged",
                 keys->keys.previous.empty()
                     ? std::string(", no previous key")
                     : ", the previous key is accepted until " +
                           std::to_string(keys->keys.previous_until_ms) + " ms since the epoch");
  } else {
    spdlog::info("reload: id keys: none (no key file, and no policy signs ids)");
  }
  running_.security = wanted.security;
  running_.id_key_file = wanted.id_key_file;
  keys_ = std::move(keys->keys);
  if (reload_tls) {
    server_.reload_tls(std::move(tls_context));
    running_.tls.cert_file = wanted.tls.cert_file;
    running_.tls.key_file = wanted.tls.key_file;
    running_.tls.client_ca_file = wanted.tls.client_ca_file;
    spdlog::info(
        "reload: TLS certificate {}, key {}{}: new connections use them, open ones keep theirs",
        running_.tls.cert_file, running_.tls.key_file,
        running_.tls.client_ca_file.empty() ? std::string()
                                            : ", client CA " + running_.tls.client_ca_file);
  }
  if (!restart.empty()) {
    spdlog::warn("reload: {} changed in the config but needs a restart; the running value stays",
                 joined(restart, ", "));
  }
  // Last, so that the lines above are logged whatever the new level hides.
  spdlog::info("reload: log level {} ({})", wanted.log_level,
               wanted.log_level == running_.log_level ? "unchanged" : "was " + running_.log_level);
  spdlog::set_level(spdlog::level::from_str(wanted.log_level));
  running_.log_level = wanted.log_level;
  return {};
}

}  // namespace sessiond::daemon
