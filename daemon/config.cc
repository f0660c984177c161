#include "daemon/config.h"

#include <openssl/rand.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cluster/topology.h"
#include "daemon/handlers.h"
#include "protocol/frame.h"
#include "protocol/host_port.h"
#include "protocol/version.h"
#include "replication/codec.h"

namespace sessiond::daemon {

namespace {

// Whether the TOML file at `path` (one CLI11 has read already) sets a role's secret.
bool config_holds_secret(const std::string& path) {
  try {
    for (const CLI::ConfigItem& item : CLI::ConfigTOML().from_file(path)) {
      std::string name = item.name;
      std::replace(name.begin(), name.end(), '_', '-');
      const bool secret = name == "app-secret" || name == "admin-secret" || name == "peer-secret";
      const bool set = std::any_of(item.inputs.begin(), item.inputs.end(),
                                   [](const std::string& value) { return !value.empty(); });
      if (secret && set) return true;
    }
  } catch (const CLI::Error&) {
    return true;  // unreadable now: be safe, the mode check says what is wrong
  }
  return false;
}

}  // namespace

ParsedOptions parse_options(int argc, const char* const* argv) {
  ParsedOptions out;
  ServerOptions& o = out.options;
  o.store.path = "var";

  CLI::App app{"sessiond: a session store for web applications (docs/operations.md)"};
  app.set_version_flag("--version", "sessiond " + std::string(kVersion) + " (protocol " +
                                        std::to_string(protocol::kProtocolVersion) + ")");
  app.set_config("--config", "", "read options from this TOML file (keys = long flag names)");
  app.option_defaults()->always_capture_default();

  std::string listen = "127.0.0.1:7400";
  std::string durability = "async";
  std::string preset = "ecommerce";
  std::string user_limit_policy = "revoke-oldest";
  std::string mismatch_policy = "report";
  std::string hijack_policy = "report";
  std::string signed_ids = "presets";
  std::vector<std::string> preset_policies;
  HijackRules& hijack = o.security.hijack;
  double ip_window_s = static_cast<double>(hijack.ip_window_ms) / 1000.0;
  std::string client_auth = "none";
  app.add_option("--listen", listen, "HOST:PORT of the native protocol listener (port 0: any)");
  app.add_option("--resp-port", o.resp_port,
                 "port of the Redis-protocol (RESP2) listener on the --listen host; -1: off, 0: "
                 "any (docs/resp.md)")
      ->check(CLI::Range(-1, 65535));
  app.add_option("--context-mismatch-policy", mismatch_policy,
                 "a GET from another client context than the session is bound to: report "
                 "(CONTEXT_MISMATCH) | destroy (CONTEXT_MISMATCH, and the session is destroyed)")
      ->check(CLI::IsMember({"report", "destroy"}));
  app.add_option("--hijack-policy", hijack_policy,
                 "a GET that records an access and looks like a hijack (impossible travel, too "
                 "many IPs): report (in the answer) | destroy (the session) | revoke-user (every "
                 "session of its user); HIJACK_SUSPECTED unless report")
      ->check(CLI::IsMember({"report", "destroy", "revoke-user"}));
  app.add_option("--hijack-max-speed-kmh", hijack.max_speed_kmh,
                 "impossible travel: faster than this between two located accesses (0: off)")
      ->check(CLI::Range(0.0, 1e9));
  app.add_option("--hijack-min-distance-km", hijack.min_distance_km,
                 "impossible travel: nearer accesses never count (geolocation is coarse)")
      ->check(CLI::Range(0.0, 40'000.0));
  app.add_option("--hijack-max-ips", hijack.max_distinct_ips,
                 "too many IPs: more distinct client IPs than this within the window (0: off; "
                 "at most --access-log-length are seen)");
  app.add_option("--hijack-ip-window-s", ip_window_s, "the window of --hijack-max-ips")
      ->check(CLI::Range(1.0, 86'400.0 * 365));
  app.add_option("--signed-ids", signed_ids,
                 "off (no id is signed) | presets (sessions of presets with signed-ids=on: "
                 "finance and healthcare by default) | all (every id, and bare ids are refused)")
      ->check(CLI::IsMember({"off", "presets", "all"}));
  app.add_option("--id-key-file", o.id_key_file,
                 "keys of signed ids ('current HEX', optional 'previous HEX UNTIL_MS'); default "
                 "<data-dir>/id-keys, made on first start. Every node of a group needs the same");
  app.add_option("--route-key-file", o.route_key_file,
                 "secret that places a user's sessions together ('route-key HEX'); default "
                 "<data-dir>/route-key, made on first start. Every node of every region needs "
                 "the same (docs/security.md)");
  app.add_option("--etcd", o.cluster.etcd,
                 "etcd endpoints (URL[,URL...]) of the region's cluster; without it the node is "
                 "a one-node region (docs/cluster.md)");
  app.add_option("--region", o.cluster.region, "the region this node serves (default local)");
  app.add_option("--node-id", o.cluster.node_id,
                 "this node's id in the region; default: <data-dir>/node-id, made on first start");
  app.add_option("--advertise", o.cluster.advertise,
                 "HOST:PORT clients and peers dial to reach this node (default: the listen "
                 "address)");
  app.add_option("--lease-ttl-ms", o.cluster.lease_ttl_ms,
                 "etcd lease of this node: writes stop this long (less a tenth) after the last "
                 "renewal etcd acknowledged (default 5000)")
      ->check(CLI::Range(std::int64_t{2'000}, std::int64_t{600'000}));
  auto* replication_factor =
      app.add_option("--replication-factor", o.cluster.replication_factor,
                     "copies of each session in a cluster: the owner and N-1 replicas on the next "
                     "nodes of the ring (default 2; the region's first node sets it, the others "
                     "follow the topology)")
          ->check(CLI::Range(1, 5));
  app.add_option("--replica-ack", o.cluster.replica_ack,
                 "what waits for an in-sync replica before it is acknowledged: terminal writes "
                 "(destroy, regenerate, revoke; the default), all writes, or none "
                 "(docs/cluster.md)")
      ->check(CLI::IsMember({"none", "terminal", "all"}));
  app.add_option("--replica-ack-timeout-ms", o.cluster.replica_ack_timeout_ms,
                 "how long an answer waits for its replicas before it becomes UNAVAILABLE (the "
                 "change stays made here, unacknowledged; default 2000)")
      ->check(CLI::Range(std::int64_t{10}, std::int64_t{60'000}));
  app.add_option("--replica-max-lag-ms", o.cluster.replica_max_lag_ms,
                 "a replica that has not caught up with this node's log for this long leaves "
                 "the in-sync set, which alone may take over this node's ranges (default 2000)")
      ->check(CLI::Range(std::int64_t{100}, std::int64_t{600'000}));
  app.add_option("--replication-log-retention", o.store.replication_log_retention,
                 "log entries kept for replicas that are behind, at most; a replica further "
                 "behind is resynced from memory (default 1000000; docs/cluster.md)")
      ->check(CLI::Range(std::uint64_t{1024}, std::uint64_t{1'000'000'000}));
  app.add_option("--anti-entropy-interval-ms", o.cluster.anti_entropy_interval_ms,
                 "how often this node compares digests with each replica of its ranges and "
                 "repairs what differs; 0 turns it off (default 60000; docs/cluster.md)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{86'400'000}));
#ifdef SESSIOND_TEST_HOOKS
  app.add_option("--test-clock-offset-ms", o.test_clock_offset_ms,
                 "TESTS ONLY: run with the wall clock off by this much (a wrong clock); "
                 "builds without SESSIOND_TEST_HOOKS have no such flag")
      ->group("");
  app.add_option("--test-sabotage", o.test_sabotage,
                 "TESTS ONLY: break one rule on purpose (docs/chaos.md, \"Sabotage\"): "
                 "ack-unreplicated | resurrect | skip-region-cursor | no-fencing | "
                 "keep-older-access")
      ->group("");
#endif
  std::vector<std::string> peer_regions;
  app.add_option("--peer-region", peer_regions,
                 "NAME=HOST:PORT[,HOST:PORT...]: a peer region and seeds of it; every write this "
                 "node accepts is shipped there (repeatable; docs/regions.md)");
  app.add_option("--region-batch-delay-ms", o.regions.batch_delay_ms,
                 "how long a batch for a peer region waits for more entries (default 5)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{10'000}));
  app.add_option("--region-anti-entropy-interval-ms", o.regions.anti_entropy_interval_ms,
                 "how often this node compares digests with each peer region and repairs what "
                 "differs; 0: only after ownership changes and on demand (default 300000)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{86'400'000}));
  app.add_option("--max-lifetime-ms", o.table.max_lifetime_ms,
                 "no session outlives its creation by more than this, whatever its timeouts; "
                 "tombstones of ended sessions are kept as long (default 30 days, the longest "
                 "preset)")
      ->check(CLI::Range(std::int64_t{60'000}, std::int64_t{100LL * 365 * 24 * 3600 * 1000}));
  app.add_option("--max-clock-skew-ms", o.table.max_clock_skew_ms,
                 "a write from another node whose clock is further ahead is set aside until "
                 "ours catches up")
      ->check(CLI::Range(std::int64_t{1'000}, std::int64_t{3'600'000}));
  app.add_option("--preset-policy", preset_policies,
                 "PRESET:KEY=VALUE[,...] with context-mismatch=report|destroy, "
                 "hijack=report|destroy|revoke-user, signed-ids=on|off; repeatable "
                 "(docs/security.md has the defaults)");
  app.add_option("--app-secret", o.auth.app_secret,
                 "shared secret of the app role (session operations); put secrets in the "
                 "--config file, not on the command line (docs/security.md)");
  app.add_option("--admin-secret", o.auth.admin_secret,
                 "shared secret of the admin role (sessions, STATS, FLUSHDB)");
  app.add_option("--peer-secret", o.auth.peer_secret,
                 "shared secret of the peer role (node-to-node operations)");
  app.add_option("--tls-cert", o.tls.cert_file,
                 "PEM certificate (chain) of the node: TLS on the native listener; needs "
                 "--tls-key (docs/tls.md)");
  app.add_option("--tls-key", o.tls.key_file, "PEM private key of --tls-cert (unencrypted)");
  app.add_option("--tls-client-ca", o.tls.client_ca_file,
                 "PEM CA bundle that client certificates must chain to (with --tls-client-auth)");
  app.add_option("--tls-client-auth", client_auth,
                 "client certificates: none | optional (verified when given) | require; a "
                 "certificate with OU app, admin or peer grants that role")
      ->check(CLI::IsMember({"none", "optional", "require"}));
  app.add_option("--data-dir", o.store.path, "data directory (created when missing)");
  app.add_option("--durability", durability, "memory | async | sync (see docs/operations.md)")
      ->check(CLI::IsMember({"memory", "async", "sync"}));
  app.add_option("--threads", o.threads, "worker threads (0: one per core)");
  std::size_t memtable_mb = o.store.write_buffer_bytes >> 20;
  app.add_option("--memtable-mb", memtable_mb,
                 "RocksDB memtable size per column family in MiB (up to 3 per family are held; "
                 "larger ones let overwritten and ended sessions die before they are flushed)")
      ->check(CLI::Range(4, 4096))
      ->capture_default_str();
  std::size_t max_session_bytes = 0;
  app.add_option("--max-session-bytes", max_session_bytes,
                 "largest session data (user id, field names and values); 0: what the frame "
                 "limit leaves room for (every session must fit a GET answer)");
  app.add_option("--max-frame-bytes", o.max_frame_bytes, "largest accepted frame body")
      ->check(CLI::Range(1024u, 64u << 20));
  app.add_option("--max-connections", o.max_connections, "connections served at once");
  app.add_option("--max-connections-per-ip", o.max_connections_per_ip,
                 "connections one client address may hold at once (0: no limit)");
  app.add_option("--max-output-bytes", o.max_output_bytes,
                 "replies one connection may have waiting to be sent: past this it is not read "
                 "until they are; a RESP reply larger than this is refused")
      ->check(CLI::Range(std::size_t{64} << 10, std::size_t{1} << 30));
  app.add_option("--send-timeout-ms", o.send_timeout_ms,
                 "close a connection that takes none of its replies for this long")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3'600'000}));
  app.add_option("--idle-timeout-ms", o.idle_timeout_ms,
                 "close a connection idle this long (0: never)");
  app.add_option("--frame-timeout-ms", o.frame_timeout_ms,
                 "close a connection whose frame (RESP command) is not complete this long after "
                 "its first byte")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3'600'000}));
  app.add_option("--default-preset", preset,
                 "timeouts of sessions created without any: finance | healthcare | ecommerce "
                 "| media | gaming")
      ->check(CLI::IsMember({"finance", "healthcare", "ecommerce", "media", "gaming"}));
  app.add_option("--shards", o.table.shard_count, "table shards (rounded up to a power of 2)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 16));
  app.add_option("--access-log-length", o.table.access_log_length, "accesses kept per session");
  app.add_option("--touch-persist-fraction", o.table.touch_persist_fraction,
                 "persist a touch once it moves the deadline by this fraction of the idle "
                 "timeout")
      ->check(CLI::Range(0.0, 1.0));
  auto* per_user_limit =
      app.add_option("--max-sessions-per-user", o.table.max_sessions_per_user,
                     "sessions one user may hold (0: no limit; default 0, or 100 with --etcd); see "
                     "--user-limit-policy");
  app.add_option("--user-limit-policy", user_limit_policy,
                 "past --max-sessions-per-user: revoke-oldest (make room) | refuse (FORBIDDEN)")
      ->check(CLI::IsMember({"revoke-oldest", "refuse"}));
  app.add_option("--memory-budget-bytes", o.table.memory_budget_bytes,
                 "refuse new sessions past this many bytes of records (0: no limit)");
  app.add_option("--expiry-interval-ms", o.expiry_interval_ms, "how often the expirer runs")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{60'000}));
  std::string admin_listen = "127.0.0.1:7480";
  app.add_option("--admin-listen", admin_listen,
                 "HOST:PORT of the admin HTTP listener (/health, /metrics, /cluster, the web "
                 "console; port 0: any); off: none")
      ->capture_default_str();
  app.add_option(
      "--restore-from", o.restore_from,
      "restore the backup in this directory (`sessctl backup`) into the empty --data-dir, "
      "then start");
  app.add_option("--health-memory-share", o.health.memory_share,
                 "health rule memory_high: share of --memory-budget-bytes")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--health-min-hit-ratio", o.health.min_hit_ratio,
                 "health rule hit_ratio_low: reads that find their session, over a minute")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--health-max-lag-ms", o.health.max_lag_ms,
                 "health rule replication_lag: a peer region further behind")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{86'400'000}))
      ->capture_default_str();
  app.add_option("--log-level", o.log_level, "trace | debug | info | warn | error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    out.exit = true;
    out.exit_code = e.get_exit_code() == 0 ? 0 : 2;
    out.message = e.get_exit_code() == 0 && e.get_name() == "CallForHelp" ? app.help()
                  : e.get_name() == "CallForVersion"
                      ? std::string(e.what())
                      : std::string("sessiond: ") + e.what() + "\nRun with --help for the options.";
    if (e.get_name() == "CallForAllHelp") out.message = app.help("", CLI::AppFormatMode::All);
    return out;
  }
  // A usage error: exit 2 with `message`.
  const auto usage_error = [&](const std::string& message) {
    out.exit = true;
    out.exit_code = 2;
    out.message = "sessiond: " + message;
    return out;
  };
  // A config file that holds a role's secret is refused unless only its owner may read and
  // write it, as the id key file is: exit 1, the start is refused (the command line is fine).
  if (const CLI::Option* config = app.get_config_ptr(); config != nullptr && config->count() > 0) {
    const std::string path = config->as<std::string>();
    if (config_holds_secret(path)) {
      if (Status s = require_owner_only(path, "the config file", "change the secrets in it");
          !s.ok()) {
        out.exit = true;
        out.exit_code = 1;
        out.message = "sessiond: cannot start: " + s.message();
        return out;
      }
    }
  }
  if (auto endpoint = parse_host_port(listen); endpoint.ok()) {
    o.listen_host = std::move(endpoint->host);
    o.listen_port = endpoint->port;
  } else {
    return usage_error("--listen: " + endpoint.status().message());
  }
  if (admin_listen == "off") {
    o.admin_port = -1;
  } else if (auto endpoint = parse_host_port(admin_listen); endpoint.ok()) {
    o.admin_host = std::move(endpoint->host);
    o.admin_port = endpoint->port;
  } else {
    return usage_error("--admin-listen: " + endpoint.status().message() + " (or off)");
  }
  o.tls.client_auth = client_auth == "require"    ? TlsOptions::ClientAuth::kRequire
                      : client_auth == "optional" ? TlsOptions::ClientAuth::kOptional
                                                  : TlsOptions::ClientAuth::kNone;
  if (Status s = validate_tls_options(o.tls); !s.ok()) return usage_error(s.message());
  o.store.durability = *storage::durability_from_name(durability);
  o.store.write_buffer_bytes = memtable_mb << 20;
  o.table.default_timeouts = storage::preset_timeouts(*storage::preset_from_name(preset));
  SecurityPolicy& sec = o.security;
  sec.node.destroy_on_context_mismatch = mismatch_policy == "destroy";
  sec.node.on_hijack = *hijack_action_from_name(hijack_policy);
  hijack.ip_window_ms = static_cast<std::int64_t>(ip_window_s * 1000.0);
  sec.default_preset = *storage::preset_from_name(preset);
  for (const std::string& spec : preset_policies) {
    if (Status s = apply_preset_policy(spec, &sec); !s.ok()) return usage_error(s.message());
  }
  if (signed_ids == "off") {
    for (auto& p : sec.presets) p.sign_ids = false;
  } else if (signed_ids == "all") {
    sec.node.sign_ids = true;
    sec.require_signed_ids = true;
  }
  // In a cluster all of a user's sessions live on one node: a limit keeps one user from
  // pinning it (docs/cluster.md, "Placement").
  if (!o.cluster.etcd.empty() && per_user_limit->count() == 0) {
    o.table.max_sessions_per_user = o.cluster.max_sessions_per_user;
  }
  o.cluster.replication_factor_given = replication_factor->count() > 0;
  if (!cluster::valid_node_id(o.cluster.region)) {
    return usage_error("--region \"" + o.cluster.region +
                       "\" is not a valid region name (1-64 of A-Z a-z 0-9 . _ -)");
  }
  for (const std::string& spec : peer_regions) {
    auto peer = parse_peer_region(spec);
    if (!peer.ok()) return usage_error("--peer-region " + spec + ": " + peer.status().message());
    if (peer->name == o.cluster.region) {
      return usage_error("--peer-region " + spec + ": that is this node's own region");
    }
    if (cluster::region_number(peer->name) == cluster::region_number(o.cluster.region)) {
      return usage_error("--peer-region " + spec + ": regions " + peer->name + " and " +
                         o.cluster.region +
                         " get the same region number (versions would tie); rename one");
    }
    for (const auto& other : o.regions.peers) {
      if (other.name == peer->name) {
        return usage_error("--peer-region " + peer->name + " is given twice");
      }
      if (cluster::region_number(other.name) == cluster::region_number(peer->name)) {
        return usage_error("--peer-region: regions " + peer->name + " and " + other.name +
                           " get the same region number (versions would tie); rename one");
      }
    }
    o.regions.peers.push_back(std::move(peer).value());
  }
  // A node with peer regions ships from the replication log too.
  if (!o.regions.peers.empty()) o.store.replication_log = true;
  // A cluster node ships its writes to replicas from the replication log.
  if (!o.cluster.etcd.empty()) o.store.replication_log = true;
  // Node-to-node batches carry up to replication::kMaxBatchBytes of entries.
  if ((!o.cluster.etcd.empty() || !o.regions.peers.empty()) &&
      o.max_frame_bytes < 2 * replication::kMaxBatchBytes) {
    return usage_error("--max-frame-bytes " + std::to_string(o.max_frame_bytes) +
                       " is too small for a node of a region: nodes send each other batches of "
                       "up to " +
                       std::to_string(replication::kMaxBatchBytes) + " bytes; use at least " +
                       std::to_string(2 * replication::kMaxBatchBytes));
  }
  o.table.user_limit_policy = user_limit_policy == "refuse"
                                  ? storage::TableOptions::UserLimitPolicy::kRefuse
                                  : storage::TableOptions::UserLimitPolicy::kRevokeOldest;
  // Every session the node accepts must fit the answer that returns it, also once merged with
  // what each peer region wrote to it concurrently: per-field last-writer-wins keeps the union
  // of the fields, so a session can reach (1 + peer regions) x --max-session-bytes, with as many
  // times --max-fields (docs/regions.md, "Sizes").
  const std::size_t copies = 1 + o.regions.peers.size();
  storage::TableOptions merged = o.table;
  merged.max_fields *= copies;
  const std::size_t overhead = Handlers::session_answer_overhead(merged);
  constexpr std::size_t kMinSessionBytes = 1024;
  if (o.max_frame_bytes < overhead + kMinSessionBytes) {
    return usage_error("--max-frame-bytes " + std::to_string(o.max_frame_bytes) +
                       " leaves no room for session data: a GET answer needs up to " +
                       std::to_string(overhead) + " bytes besides it (with --access-log-length " +
                       std::to_string(o.table.access_log_length) + "); raise --max-frame-bytes " +
                       "to at least " + std::to_string(overhead + kMinSessionBytes));
  }
  const std::size_t room = (o.max_frame_bytes - overhead) / copies;
  if (copies > 1 && max_session_bytes > room) {
    return usage_error("--max-session-bytes " + std::to_string(max_session_bytes) +
                       " does not fit --max-frame-bytes " + std::to_string(o.max_frame_bytes) +
                       " once merged: with " + std::to_string(copies - 1) +
                       " peer regions a session can hold " + std::to_string(copies) +
                       " x --max-session-bytes (concurrent writes of different fields in each "
                       "region) and a GET answer needs up to " +
                       std::to_string(overhead) +
                       " bytes besides; lower --max-session-bytes to at most " +
                       std::to_string(room) + " or raise --max-frame-bytes to at least " +
                       std::to_string(copies * max_session_bytes + overhead));
  }
  if (max_session_bytes > room) {
    return usage_error("--max-session-bytes " + std::to_string(max_session_bytes) +
                       " does not fit --max-frame-bytes " + std::to_string(o.max_frame_bytes) +
                       ": a GET answer needs up to " + std::to_string(overhead) +
                       " bytes besides the data; lower --max-session-bytes to at most " +
                       std::to_string(room) + " or raise --max-frame-bytes to at least " +
                       std::to_string(max_session_bytes + overhead));
  }
  o.table.max_session_bytes = max_session_bytes == 0 ? room : max_session_bytes;
  if (o.threads == 0) o.threads = std::max(1u, std::thread::hardware_concurrency());
  return out;
}

Result<PeerRegionSpec> parse_peer_region(std::string_view spec) {
  const auto eq = spec.find('=');
  if (eq == std::string_view::npos) return Status::InvalidArgument("expected NAME=HOST:PORT[,...]");
  PeerRegionSpec out;
  out.name = std::string(spec.substr(0, eq));
  if (!cluster::valid_node_id(out.name)) {
    return Status::InvalidArgument("\"" + out.name +
                                   "\" is not a valid region name (1-64 of A-Z a-z 0-9 . _ -)");
  }
  std::string_view rest = spec.substr(eq + 1);
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view seed = rest.substr(0, comma);
    auto hp = parse_host_port(seed);
    if (!hp.ok() || hp->port == 0) {
      return Status::InvalidArgument("seed \"" + std::string(seed) + "\" is not HOST:PORT");
    }
    out.seeds.emplace_back(seed);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (out.seeds.empty()) return Status::InvalidArgument("no seed address after =");
  return out;
}

Result<std::string> resolve_node_id(const std::string& data_dir, const std::string& given) {
  const std::filesystem::path path = std::filesystem::path(data_dir) / "node-id";
  std::string stored;
  if (std::ifstream in(path); in) {
    std::getline(in, stored);
    if (!cluster::valid_node_id(stored)) {
      return Status::InvalidArgument(path.string() + " holds no valid node id");
    }
  }
  if (!given.empty() && !cluster::valid_node_id(given)) {
    return Status::InvalidArgument("--node-id \"" + given +
                                   "\" is not valid (1-64 of A-Z a-z 0-9 . _ -)");
  }
  if (!stored.empty()) {
    if (!given.empty() && given != stored) {
      return Status::InvalidArgument("--node-id " + given + " but the data directory belongs to " +
                                     stored + " (" + path.string() + ")");
    }
    return stored;
  }
  std::string id = given;
  if (id.empty()) {
    std::uint32_t random = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&random), sizeof random) != 1) {
      return Status::Internal("the CSPRNG failed to make a node id");
    }
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", random);
    id = std::string("node-") + hex;
  }
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  std::ofstream out(path, std::ios::trunc);
  out << id << "\n";
  if (!out.flush()) return Status::Unavailable("cannot write " + path.string());
  return id;
}

}  // namespace sessiond::daemon
