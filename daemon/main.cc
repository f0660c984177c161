// sessiond: opens the store, recovers the sessions, serves the native protocol until SIGTERM,
// SIGINT or SIGQUIT, then finishes in-flight requests, flushes and exits 0. SIGHUP reloads what
// can change without a restart (daemon/reload.h); SIGUSR1 and SIGUSR2 are logged and ignored
// (docs/operations.md, "Signals"). Exit 1: could not start (the log says why); exit 2: bad
// command line.
#include <absl/synchronization/mutex.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include <asio.hpp>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "cluster/membership.h"
#include "cluster/topology.h"
#include "daemon/admin.h"
#include "daemon/config.h"
#include "daemon/handlers.h"
#include "daemon/health.h"
#include "daemon/metrics.h"
#include "daemon/regions.h"
#include "daemon/reload.h"
#include "daemon/resp_commands.h"
#include "daemon/security.h"
#include "daemon/server.h"
#include "protocol/host_port.h"
#include "protocol/version.h"
#include "storage/clock.h"
#include "storage/session_table.h"
#include "storage/store.h"
#include "storage/test_hooks.h"

namespace {

using namespace sessiond;

// Up to the hard limit: each connection is a descriptor, and the default soft limit (1024) is
// far below --max-connections.
void raise_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

const char* signal_name(int number) {
  switch (number) {
    case SIGHUP:
      return "SIGHUP";
    case SIGINT:
      return "SIGINT";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGUSR2:
      return "SIGUSR2";
    default:
      return "a signal";
  }
}

// A node restored from a backup must not serve its ranges with what it held then: sessions
// destroyed since would come back. In a cluster it must come back failed over (down in the
// topology, or not in it), so that it rejoins: what it holds is merged into the current owners
// (tombstones winning) and its ranges stream back to it (docs/cluster.md, "Rejoin").
Status check_restore_in_cluster(const daemon::ServerOptions& options) {
  auto info = daemon::read_backup(options.restore_from);
  if (!info.ok()) return info.status();
  if (!info->region.empty() && info->region != options.cluster.region) {
    return Status::InvalidArgument("the backup is of region " + info->region +
                                   ", this node serves region " + options.cluster.region);
  }
  // Tombstones are kept --max-lifetime-ms: a session destroyed longer ago than that is
  // forgotten everywhere, and an older backup's copy of it would come back.
  const std::int64_t age_ms = storage::SystemClock::instance().now_ms() - info->created_ms;
  if (age_ms > options.table.max_lifetime_ms) {
    return Status::InvalidArgument(
        "the backup is " + std::to_string(age_ms / 86'400'000) +
        " days old, older than --max-lifetime-ms: the region no longer remembers every session "
        "destroyed since, and they would come back (restore it alone, outside the region, to "
        "read from it)");
  }
  std::string node_id = options.cluster.node_id;
  if (node_id.empty()) {
    std::ifstream in(std::filesystem::path(options.restore_from) / "node-id");
    std::getline(in, node_id);
  }
  if (node_id.empty()) return {};  // a new node: it owns nothing until added
  auto endpoints = cluster::EtcdClient::parse_endpoints(options.cluster.etcd);
  if (!endpoints.ok()) return endpoints.status();
  const cluster::EtcdClient etcd(*endpoints);
  auto kv = etcd.get(cluster::topology_key(options.cluster.region));
  if (!kv.ok()) return kv.status();
  if (!kv->has_value()) return {};
  auto topology = cluster::Topology::from_json((*kv)->value);
  if (!topology.ok()) return topology.status();
  for (const cluster::Node& n : topology->nodes) {
    if (n.id == node_id && !n.down) {
      return Status::InvalidArgument(
          "node " + node_id + " is up in region " + options.cluster.region +
          "'s topology: a restored node must rejoin. Stop it with SIGTERM (it hands its ranges "
          "over), or wait until its lease has expired and the region has failed it over, then "
          "restore (docs/operations.md, \"Backup and restore\")");
    }
  }
  return {};
}

// Reads of a large table are chains of cache and TLB misses; with transparent huge pages for
// the heap they are about a third faster, writes about a tenth slower (docs/operations.md,
// "Memory"). glibc asks for them only with the tunable glibc.malloc.hugetlb=1, which must be in
// the environment at exec: say which way this node runs.
void log_huge_pages() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  const bool asked = tunables != nullptr && std::string_view(tunables).find(
                                                "glibc.malloc.hugetlb=1") != std::string_view::npos;
  std::string mode;
  if (std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled"); thp) {
    std::getline(thp, mode);
  }
  const bool never = mode.find("[never]") != std::string::npos;
  if (asked && !never) {
    spdlog::info("memory: transparent huge pages for the heap (glibc.malloc.hugetlb=1; kernel: {})",
                 mode);
  } else if (!asked && !never) {
    spdlog::info(
        "memory: the heap uses 4 KiB pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1 in the "
        "environment: huge pages, reads of large tables faster, writes slower; "
        "docs/operations.md)");
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's Abseil is built with its lock-order checker on, which does bookkeeping on every
  // absl::Mutex acquisition (the RESP transactions' lock is taken per read); the unit tests
  // keep it, the daemon does not pay for it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  auto parsed = daemon::parse_options(argc, argv);
  if (parsed.exit) {
    std::fputs(parsed.message.c_str(), parsed.exit_code == 0 ? stdout : stderr);
    std::fputc('\n', parsed.exit_code == 0 ? stdout : stderr);
    return parsed.exit_code;
  }
  const daemon::ServerOptions& options = parsed.options;
#ifdef SESSIOND_TEST_HOOKS
  storage::SystemClock::set_test_offset_ms(options.test_clock_offset_ms);  // before instance()
  if (Status s = storage::set_sabotage(options.test_sabotage); !s.ok()) {
    std::fprintf(stderr, "sessiond: %s\n", s.message().c_str());
    return 2;
  }
  if (!options.test_sabotage.empty()) {
    std::fprintf(stderr, "sessiond: SABOTAGED (%s): a rule is broken on purpose\n",
                 options.test_sabotage.c_str());
  }
#endif
  spdlog::set_default_logger(spdlog::stderr_color_mt("sessiond"));  // stdout stays free
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(options.log_level));
  ::signal(SIGPIPE, SIG_IGN);
  // Until the signal handling below is in place (after recovery): the default action of these
  // would end the node, and none of them asks for that.
  for (int number : {SIGHUP, SIGUSR1, SIGUSR2}) ::signal(number, SIG_IGN);
  raise_file_limit();
  // Once per step, from whichever thread read the time when the clock compared (at most once a
  // second): a step is rare, and the operator must hear of it.
  storage::SystemClock::instance().set_step_observer([](const storage::ClockStep& step) {
    const auto& clock = storage::SystemClock::instance();
    spdlog::warn(
        "the wall clock stepped {} by {} ms (now {} ms since the epoch); the node's time stays at "
        "{} and closes the gap at {}% of real time (docs/operations.md, \"Clock steps\")",
        step.size_ms > 0 ? "forward" : "back", step.size_ms > 0 ? step.size_ms : -step.size_ms,
        step.wall_ms, step.time_ms, clock.options().slew_percent);
  });

  spdlog::info("sessiond {} starting: data dir {}, durability {}, {} worker threads", kVersion,
               options.store.path, storage::durability_name(options.store.durability),
               options.threads);
  log_huge_pages();
  // Under systemd (Type=notify; packaging/sessiond.service): STATUS lines as the node comes up,
  // READY once it serves, STOPPING when it stops. Without NOTIFY_SOCKET these do nothing.
  sd_notify(0, "STATUS=starting");
  // The admin listener comes first, so that /health answers 503 through the recovery.
  const std::string route_key_path =
      options.route_key_file.empty()
          ? (std::filesystem::path(options.store.path) / "route-key").string()
          : options.route_key_file;
  std::unique_ptr<daemon::Admin> admin;
  if (options.admin_port >= 0) {
    daemon::AdminOptions ao;
    ao.host = options.admin_host;
    ao.port = static_cast<std::uint16_t>(options.admin_port);
    ao.auth = options.auth;
    ao.version = kVersion;
    ao.started_ms = storage::SystemClock::instance().now_ms();
    ao.backup_files = {
        {route_key_path, "route-key"},
        {options.id_key_file.empty()
             ? (std::filesystem::path(options.store.path) / "id-keys").string()
             : options.id_key_file,
         "id-keys"},
        {(std::filesystem::path(options.store.path) / "node-id").string(), "node-id"}};
    admin = std::make_unique<daemon::Admin>(std::move(ao));
    if (Status s = admin->bind(); !s.ok()) {
      spdlog::error("cannot start: {}", s.ToString());
      return 1;
    }
    admin->start();
    spdlog::info("admin HTTP listener on {} (/health, /metrics, /cluster, the console)",
                 admin->address());
  }
  if (!options.restore_from.empty() && !options.cluster.etcd.empty()) {
    if (Status s = check_restore_in_cluster(options); !s.ok()) {
      spdlog::error("cannot start: --restore-from: {}", s.message());
      return 1;
    }
  }
  if (!options.restore_from.empty()) {
    auto restored = daemon::restore_backup(options.restore_from, options.store.path);
    if (!restored.ok()) {
      spdlog::error("cannot start: --restore-from: {}", restored.status().ToString());
      return 1;
    }
    spdlog::info("restored the backup in {} into {}: {}", options.restore_from, options.store.path,
                 *restored);
  }
  // Unusable certificate files fail the start before a recovery that may take a while.
  SslCtxPtr tls_context;
  if (options.tls.enabled()) {
    auto made = daemon::make_server_context(options.tls);
    if (!made.ok()) {
      spdlog::error("cannot start: {}", made.status().ToString());
      return 1;
    }
    tls_context = std::move(made).value();
  }
  auto store = storage::Store::open(options.store, storage::SystemClock::instance());
  if (!store.ok()) {
    spdlog::error("cannot start: {}", store.status().ToString());
    return 1;
  }
  // Sessions of a user share a route key derived from this secret (docs/security.md).
  auto route_key = daemon::load_route_key(route_key_path, options.route_key_file.empty());
  if (!route_key.ok()) {
    spdlog::error("cannot start: {}", route_key.status().ToString());
    return 1;
  }
  const storage::IdGenerator ids(*route_key);
  storage::TableOptions table_options = options.table;
  // A cluster node (docs/cluster.md): its number comes from etcd before the engine opens, since
  // every version it writes carries it.
  std::unique_ptr<cluster::Membership> membership;
  std::unique_ptr<daemon::Migrator> migrator;  // moves ranges when membership changes
  std::unique_ptr<daemon::Replicas> replicas;  // feeds the replicas of what this node owns
  std::unique_ptr<daemon::Regions> regions;    // ships to peer regions, takes what they ship
  // Every version this node writes carries its region's number (DESIGN §7).
  table_options.region = cluster::region_number(options.cluster.region);
  // Touches ship to peer regions within 5 s (DESIGN §7): a user active here stays alive there.
  if (!options.regions.peers.empty()) table_options.pending_touch_ship_ms = 5000;
  if (!options.cluster.etcd.empty()) {
    auto endpoints = cluster::EtcdClient::parse_endpoints(options.cluster.etcd);
    if (!endpoints.ok()) {
      spdlog::error("cannot start: --etcd: {}", endpoints.status().message());
      return 1;
    }
    auto node_id = daemon::resolve_node_id(options.store.path, options.cluster.node_id);
    if (!node_id.ok()) {
      spdlog::error("cannot start: {}", node_id.status().ToString());
      return 1;
    }
    cluster::MembershipOptions m;
    m.etcd = *endpoints;
    m.region = options.cluster.region;
    m.node_id = *node_id;
    m.lease_ttl = std::chrono::milliseconds(options.cluster.lease_ttl_ms);
    m.replication_factor = options.cluster.replication_factor;
    {
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx",
                    static_cast<unsigned long long>(
                        ids.route_key_of_user(std::string_view("\0sessiond route-key check", 25))));
      m.route_key_check = hex;
    }
    m.log = [](bool warning, const std::string& message) {
      if (warning) {
        spdlog::warn("cluster: {}", message);
      } else {
        spdlog::info("cluster: {}", message);
      }
    };
    auto connected = cluster::Membership::connect(std::move(m));
    if (!connected.ok()) {
      spdlog::error("cannot start: {}", connected.status().ToString());
      return 1;
    }
    membership = std::move(connected).value();
    table_options.node = membership->number();
    spdlog::info("cluster: region {}, node {} (number {}), etcd {}", options.cluster.region,
                 *node_id, membership->number(), options.cluster.etcd);
  }
  table_options.ids = &ids;
  table_options.on_touch_refused = [](const Status& why) {
    spdlog::warn("reads with touch are served without sliding the idle deadline: {}",
                 why.message());
  };
  storage::SessionTable table(table_options, storage::SystemClock::instance(), store->get());
  if (admin) admin->set_phase(daemon::Phase::kRecovering, "recovering the sessions from disk");
  sd_notify(0, "STATUS=recovering the sessions from disk");
  auto recovered = table.recover();
  if (!recovered.ok()) {
    spdlog::error("cannot start: {}", recovered.status().ToString());
    return 1;
  }
  spdlog::info("recovered {} sessions ({} expired skipped, {} tombstones) in {} ms{}",
               recovered->loaded, recovered->skipped_expired, recovered->tombstones,
               recovered->duration_ms,
               recovered->upgraded ? " (upgraded from the former format)" : "");
  // The engine's time never runs below what this node wrote before, even after the wall clock
  // stepped back across a restart (docs/operations.md, "Clock steps").
  storage::SystemClock::instance().advance_to(recovered->clock_high_water_ms);
  if (admin && membership) {
    admin->set_phase(daemon::Phase::kJoining, "joining region " + options.cluster.region);
  }
  if (membership) sd_notify(0, "STATUS=joining the region");

  daemon::Counters counters;
  daemon::Handlers handlers(table, store->get(), counters, "", options.max_frame_bytes,
                            options.auth);
  // The keys of signed ids (daemon/reload.h says which file, and when it is made).
  auto keys = daemon::load_node_id_keys(options);
  if (!keys.ok()) {
    spdlog::error("cannot start: {}", keys.status().ToString());
    return 1;
  }
  if (keys->keys.generated) {
    spdlog::warn(
        "made a new id signing key in {}: every node of a group needs the same file "
        "(docs/security.md)",
        keys->path);
  }
  if (keys->loaded) {
    spdlog::info("signed session ids: keys from {}{}", keys->path,
                 keys->keys.previous.empty()
                     ? std::string()
                     : " (the previous key is accepted until " +
                           std::to_string(keys->keys.previous_until_ms) + " ms since the epoch)");
  }
  daemon::IdSigner signer;
  if (keys->loaded) signer = daemon::IdSigner(keys->keys);
  handlers.set_security(options.security, std::move(signer));
  // Hijack detection sees only the kept access history: say so when a check cannot fire.
  const auto& rules = options.security.hijack;
  if (options.table.access_log_length < 2 &&
      (rules.max_speed_kmh > 0 || rules.max_distinct_ips > 0)) {
    spdlog::warn("--access-log-length {} keeps too few accesses for hijack detection",
                 options.table.access_log_length);
  } else if (rules.max_distinct_ips >= options.table.access_log_length) {
    spdlog::warn("--hijack-max-ips {} can never be passed with --access-log-length {}",
                 rules.max_distinct_ips, options.table.access_log_length);
  }
  spdlog::info(
      "limits: frames up to {} bytes, session data up to {} bytes, {} bytes of replies waiting "
      "per connection",
      options.max_frame_bytes, options.table.max_session_bytes, options.max_output_bytes);
  if (options.auth.enabled()) spdlog::info("authentication on: clients must AUTH first");
  daemon::resp::Commands resp_commands(
      table, storage::SystemClock::instance(),
      {&counters.resp_connections, 0, storage::SystemClock::instance().now_ms(), &options.auth,
       options.max_output_bytes, &counters.auth_failures, options.idle_timeout_ms,
       options.max_connections, membership != nullptr});
  daemon::Server server(options, handlers, counters, &resp_commands);
  daemon::RequestMetrics request_metrics;
  server.set_metrics(&request_metrics);
  if (tls_context) server.use_tls_context(std::move(tls_context));
  if (Status s = server.bind(); !s.ok()) {
    spdlog::error("cannot start: {}", s.ToString());
    return 1;
  }
  handlers.set_address(server.address());
  if (membership) {
    const std::string advertise =
        options.cluster.advertise.empty() ? server.address() : options.cluster.advertise;
    if (auto hp = parse_host_port(advertise); !hp.ok() || hp->port == 0) {
      spdlog::error("cannot start: --advertise {}: {}", advertise,
                    hp.ok() ? std::string("needs a port") : hp.status().message());
      return 1;
    }
    if (Status s = membership->start(advertise, server.resp_address(),
                                     admin ? admin->address() : std::string());
        !s.ok()) {
      spdlog::error("cannot start: {}", s.ToString());
      return 1;
    }
    migrator = std::make_unique<daemon::Migrator>(table, *membership, ids, options.auth.peer_secret,
                                                  [](bool warning, const std::string& message) {
                                                    if (warning) {
                                                      spdlog::warn("cluster: {}", message);
                                                    } else {
                                                      spdlog::info("cluster: {}", message);
                                                    }
                                                  });
    const auto routing = membership->routing();
    if (options.cluster.replication_factor_given &&
        options.cluster.replication_factor != routing->topology.replication_factor) {
      spdlog::warn(
          "cluster: region {} keeps {} copies of each session (its topology's replication "
          "factor); --replication-factor {} applies only to a new region",
          routing->topology.region, routing->topology.replication_factor,
          options.cluster.replication_factor);
    }
    daemon::Replicas::Options ro;
    ro.ack = options.cluster.replica_ack == "none"  ? daemon::ReplicaAck::kNone
             : options.cluster.replica_ack == "all" ? daemon::ReplicaAck::kAll
                                                    : daemon::ReplicaAck::kTerminal;
    ro.peer_secret = options.auth.peer_secret;
    ro.ack_timeout = std::chrono::milliseconds(options.cluster.replica_ack_timeout_ms);
    ro.in_sync_lag = std::chrono::milliseconds(options.cluster.replica_max_lag_ms);
    ro.anti_entropy_interval = std::chrono::milliseconds(options.cluster.anti_entropy_interval_ms);
    ro.log = [](bool warning, const std::string& message) {
      if (warning) {
        spdlog::warn("replicas: {}", message);
      } else {
        spdlog::info("replicas: {}", message);
      }
    };
    replicas = std::make_unique<daemon::Replicas>(table, **store, *membership, ids, std::move(ro));
    replicas->on_progress([&server] { server.wake_replica_waits(); });
    handlers.set_cluster(membership.get(), &ids, migrator.get(), replicas.get());
    server.set_cluster(membership.get(), replicas.get());
    migrator->start();
    replicas->start();
    if (routing->self) {
      spdlog::info("cluster: serving in region {} at epoch {} with {} nodes",
                   routing->topology.region, routing->topology.epoch,
                   routing->topology.nodes.size());
    } else {
      spdlog::warn(
          "cluster: this node is not in region {}'s topology yet: it owns nothing until "
          "`sessctl cluster add-node {} {}` adds it",
          routing->topology.region, membership->options().node_id, advertise);
    }
  }
  if (!options.regions.peers.empty()) {
    daemon::Regions::Options ro;
    ro.node_id = membership ? membership->options().node_id : std::string("local");
    ro.region = options.cluster.region;
    ro.peers = options.regions.peers;
    ro.peer_secret = options.auth.peer_secret;
    ro.batch_delay = std::chrono::milliseconds(options.regions.batch_delay_ms);
    ro.anti_entropy_interval = std::chrono::milliseconds(options.regions.anti_entropy_interval_ms);
    ro.max_frame_bytes = options.max_frame_bytes;
    ro.log = [](bool warning, const std::string& message) {
      if (warning) {
        spdlog::warn("regions: {}", message);
      } else {
        spdlog::info("regions: {}", message);
      }
    };
    regions = std::make_unique<daemon::Regions>(table, **store, ids, membership.get(),
                                                replicas.get(), migrator.get(), std::move(ro));
    handlers.set_regions(regions.get(), options.cluster.region);
    regions->start();
    std::string names;
    for (const auto& p : options.regions.peers) names += (names.empty() ? "" : ", ") + p.name;
    spdlog::info("regions: region {} (number {}) ships to {}", options.cluster.region,
                 cluster::region_number(options.cluster.region), names);
  } else {
    handlers.set_regions(nullptr, options.cluster.region);
  }
  if (!server.resp_address().empty()) {
    const std::string address = server.resp_address();
    resp_commands.set_port(
        static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
  }
  table.start_expirer(options.expiry_interval_ms);

  // Health rules and the figures behind /metrics, the console and `sessctl top`.
  daemon::NodeParts parts;
  parts.table = &table;
  parts.store = store->get();
  parts.ids = &ids;
  parts.counters = &counters;
  parts.requests = &request_metrics;
  parts.membership = membership.get();
  parts.replicas = replicas.get();
  parts.regions = regions.get();
  parts.node_id = membership ? membership->options().node_id : std::string("local");
  parts.region = options.cluster.region;
  parts.address = server.address();
  parts.resp_address = server.resp_address();
  daemon::Health health(options.health, [](bool warning, const std::string& message) {
    if (warning) {
      spdlog::warn("{}", message);
    } else {
      spdlog::info("{}", message);
    }
  });
  parts.health = &health;
  health.start([parts] { return daemon::sample_node(parts); });
  if (admin) {
    admin->attach(parts);
    admin->set_phase(daemon::Phase::kReady);
  }

  // The signals, handled on a thread of their own (docs/operations.md, "Signals"): every one
  // that stops the node lets it finish and flush; SIGHUP reloads; SIGUSR1/2, whose default
  // action would end the node without a flush, are logged and ignored.
  daemon::Reloader reloader(argc, argv, options, keys->keys, handlers, server);
  asio::io_context signal_context(1);
  asio::signal_set signals(signal_context, SIGINT, SIGTERM, SIGQUIT);
  for (int number : {SIGHUP, SIGUSR1, SIGUSR2}) signals.add(number);
  std::function<void(const asio::error_code&, int)> on_signal = [&](const asio::error_code& ec,
                                                                    int number) {
    if (ec) return;
    if (number == SIGHUP) {
      spdlog::info("received SIGHUP: reloading the command line and config file");
      sd_notify(0, "RELOADING=1");
      if (Status s = reloader.reload(); !s.ok()) {
        spdlog::warn("reload failed, every setting keeps its running value: {}", s.message());
        sd_notify(0, ("READY=1\nSTATUS=reload failed: " + s.message()).c_str());
      } else {
        sd_notify(0, "READY=1\nSTATUS=reloaded");
      }
    } else if (number == SIGUSR1 || number == SIGUSR2) {
      spdlog::info("received {}: ignored (it has no use here)", signal_name(number));
    } else {
      spdlog::info("received {}, stopping: finishing in-flight requests", signal_name(number));
      sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing in-flight requests");
      if (admin) admin->set_phase(daemon::Phase::kStopping, "stopping");
      // In a region with replicas: hand this node's ranges to them first (their replicas have
      // everything it acknowledged), so that a restart costs no write outage.
      // SIGINT and SIGQUIT stop without handing over (a whole region going down: `scripts/
      // cluster down`); the ranges of a node stopped so move when its lease is gone.
      if (replicas && number == SIGTERM && replicas->step_down(std::chrono::seconds(5))) {
        // A moment more of serving: requests already on their way get WRONG_NODE (and the
        // newer-epoch flag) and follow it, instead of finding the connection closed.
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
      if (replicas) replicas->begin_stop();
      server.stop();
    }
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  std::thread signal_thread([&] { signal_context.run(); });

  if (options.tls.enabled()) {
    spdlog::info("TLS on the native listener: certificate {}, client certificates {}",
                 options.tls.cert_file, daemon::client_auth_name(options.tls.client_auth));
  }
  spdlog::info("listening on {}", server.address());
  if (!server.resp_address().empty()) {
    spdlog::info("RESP listening on {}", server.resp_address());
    if (options.tls.enabled()) {
      spdlog::warn("the RESP listener is plaintext: TLS covers the native listener only");
    }
  }
  // systemd's watchdog (WatchdogSec=): a ping every half period while every worker thread
  // still runs what is posted to it; a stuck worker stops the pings and systemd restarts us.
  std::uint64_t watchdog_usec = 0;
  std::mutex watchdog_mu;
  std::condition_variable watchdog_wake;
  bool watchdog_stop = false;
  std::thread watchdog;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
    const auto period = std::chrono::microseconds(watchdog_usec / 2);
    spdlog::info("systemd watchdog: a ping every {} ms", period.count() / 1000);
    watchdog = std::thread([&, period] {
      std::unique_lock lock(watchdog_mu);
      while (!watchdog_stop) {
        lock.unlock();
        if (server.workers_respond(std::chrono::duration_cast<std::chrono::milliseconds>(period))) {
          sd_notify(0, "WATCHDOG=1");
        } else {
          spdlog::error("systemd watchdog: a worker thread is stuck; not pinging");
        }
        lock.lock();
        watchdog_wake.wait_for(lock, period, [&] { return watchdog_stop; });
      }
    });
  }
  sd_notify(0, ("READY=1\nSTATUS=serving on " + server.address()).c_str());
  server.run();
  {
    std::lock_guard lock(watchdog_mu);
    watchdog_stop = true;
  }
  watchdog_wake.notify_all();
  if (watchdog.joinable()) watchdog.join();
  // The admin listener reads the parts below: it goes first.
  if (admin) admin->stop();
  health.stop();

  signal_context.stop();
  signal_thread.join();
  regions.reset();
  replicas.reset();
  migrator.reset();
  membership.reset();  // the liveness key goes with the lease
  table.stop_expirer();
  if (Status s = table.flush(); !s.ok()) {
    spdlog::error("stopped, but the final flush failed: {}", s.ToString());
    return 1;
  }
  spdlog::info("stopped cleanly");
  return 0;
}
