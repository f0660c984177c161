// ServerOptions: every setting of a node, with its default, filled in one place from the
// command line and an optional config file (TOML; the same keys as the long flags).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/auth.h"
#include "daemon/health.h"
#include "daemon/security.h"
#include "daemon/tls.h"
#include "protocol/status.h"
#include "storage/session_table.h"
#include "storage/store.h"

namespace sessiond::daemon {

// A peer region as --peer-region names it: NAME=HOST:PORT[,HOST:PORT...].
struct PeerRegionSpec {
  std::string name;
  std::vector<std::string> seeds;  // host:port of some of its nodes' native listeners
};
// INVALID_ARGUMENT naming what is wrong (a bad name, a seed that is not HOST:PORT, none).
Result<PeerRegionSpec> parse_peer_region(std::string_view spec);

struct ServerOptions {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 7400;  // 0: any free port (logged at start)
  // The RESP (Redis protocol) listener on listen_host: -1 off, 0 any free port (logged).
  int resp_port = -1;
  unsigned threads = 0;  // 0: hardware concurrency
  std::uint32_t max_frame_bytes = 1u << 20;
  std::size_t max_connections = 10'000;
  std::int64_t idle_timeout_ms = 300'000;  // a connection with nothing to do; 0 = never
  std::int64_t frame_timeout_ms = 10'000;  // a frame must complete this long after its first byte
  // Replies a connection may have waiting to be sent; past it the connection is not read until
  // they are (backpressure), and a RESP reply that alone would pass it is refused.
  std::size_t max_output_bytes = 4u << 20;
  // A connection whose replies the kernel takes none of for this long (the client does not
  // read) is closed.
  std::int64_t send_timeout_ms = 10'000;
  std::size_t max_connections_per_ip = 0;  // 0: no limit
  // The admin HTTP listener (/health, /metrics, /cluster, the console): port -1 turns it off.
  std::string admin_host = "127.0.0.1";
  int admin_port = 7480;
  // A backup (`sessctl backup`) to restore into the empty data directory before starting.
  std::string restore_from;
  HealthOptions health;  // the health rules' thresholds (daemon/health.h)
  std::int64_t expiry_interval_ms = 100;
  std::string log_level = "info";
  AuthConfig auth;             // secrets of the roles; none: authentication off
  TlsOptions tls;              // TLS on the native listener; off by default
  SecurityPolicy security;     // context, hijack and signed-id policies
  std::string id_key_file;     // signed-id keys; empty: <data dir>/id-keys
  std::string route_key_file;  // route-key secret; empty: <data dir>/route-key
  // The cluster (docs/cluster.md): off without etcd endpoints (a one-node region).
  struct Cluster {
    std::string etcd;  // comma-separated endpoints; empty: no cluster
    std::string region = "local";
    std::string node_id;    // empty: <data dir>/node-id, made on first start
    std::string advertise;  // host:port peers and clients dial; empty: the listener's
    std::int64_t lease_ttl_ms = 5000;
    std::uint32_t max_sessions_per_user = 100;  // the per-user limit's default in a cluster
    // Copies of each session; the node that creates the region writes it into the topology,
    // whose value every node follows (docs/cluster.md, "Replicas and failover").
    std::uint32_t replication_factor = 2;
    bool replication_factor_given = false;
    std::string replica_ack = "terminal";        // none | terminal | all
    std::int64_t replica_ack_timeout_ms = 2000;  // how long an answer waits for its replicas
    std::int64_t replica_max_lag_ms = 2000;      // a replica further behind leaves the in-sync set
    std::int64_t anti_entropy_interval_ms = 60'000;  // digests with each replica; 0: never
  } cluster;
  // Peer regions (docs/regions.md): every node ships what it accepts to each of them.
  struct Regions {
    std::vector<PeerRegionSpec> peers;
    std::int64_t batch_delay_ms = 5;  // a batch waits this long for more entries
    // Digests with each peer region this often; 0: only after ownership changes and on demand.
    std::int64_t anti_entropy_interval_ms = 300'000;
  } regions;
  std::int64_t test_clock_offset_ms = 0;  // builds with SESSIOND_TEST_HOOKS only
  std::string test_sabotage;              // builds with SESSIOND_TEST_HOOKS only
  storage::StoreOptions store;            // path defaults to ./var
  storage::TableOptions table;

  // Whether some new session may get a signed id: then the node makes its key file when it
  // has none (it loads an existing one in any case, to verify ids handed out before).
  bool needs_id_keys() const {
    bool any = security.node.sign_ids || security.require_signed_ids;
    for (const auto& p : security.presets) any = any || p.sign_ids;
    return any;
  }
};

// Outcome of parsing: options to run with, or an exit code and text for the caller to print
// (--help, --version, or a usage error).
struct ParsedOptions {
  ServerOptions options;
  bool exit = false;
  int exit_code = 0;
  std::string message;
};

// Parses argv (and the file named by --config). Never throws.
ParsedOptions parse_options(int argc, const char* const* argv);

// The node's id in its region: `given` (--node-id) or the one in <data dir>/node-id, made on
// first start ("node-" and 8 random hex digits). A data directory belongs to one node: a
// --node-id that differs from the file's is refused.
Result<std::string> resolve_node_id(const std::string& data_dir, const std::string& given);

}  // namespace sessiond::daemon
