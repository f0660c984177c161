// The admin HTTP listener (DESIGN §5, §11; docs/operations.md, "The admin listener"), on
// Debian's cpp-httplib: /health, /metrics (Prometheus text), /cluster (JSON), the web console
// (files compiled into the binary, Chart.js from Debian's libjs-chart.js), its JSON API, and
// online backups.
//
// It is bound before recovery, so /health can answer 503 while the node recovers or joins;
// everything else answers 503 until attach() gives it the node's parts. With authentication
// on, every path but /health needs the admin secret: `Authorization: Bearer SECRET`, or HTTP
// Basic with SECRET as the password (what a browser asks for).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "daemon/auth.h"
#include "protocol/status.h"

namespace sessiond::storage {
class SessionTable;
class Store;
class IdGenerator;
}  // namespace sessiond::storage
namespace sessiond::cluster {
class Membership;
}

namespace sessiond::daemon {

struct Counters;
class Health;
class Regions;
class Replicas;
class RequestMetrics;
struct HealthSample;

// Where the node is in its life, as /health reports it.
enum class Phase { kStarting, kRecovering, kJoining, kReady, kStopping };
std::string_view phase_name(Phase phase);

// What the listener reads; pointers stay valid until stop().
struct NodeParts {
  storage::SessionTable* table = nullptr;
  storage::Store* store = nullptr;
  const storage::IdGenerator* ids = nullptr;
  Counters* counters = nullptr;
  RequestMetrics* requests = nullptr;
  Health* health = nullptr;
  cluster::Membership* membership = nullptr;  // null outside a cluster
  Replicas* replicas = nullptr;               // null without replicas
  Regions* regions = nullptr;                 // null without peer regions
  std::string node_id;                        // "local" outside a cluster
  std::string region;
  std::string address;       // the native listener
  std::string resp_address;  // "" without RESP
};

struct AdminOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 7480;  // 0: any free port
  AuthConfig auth;            // wrong secrets are counted in NodeParts::counters once attached
  std::string version;
  std::int64_t started_ms = 0;
  // Files a backup holds beside the database: (path now, name in the backup), e.g. the
  // route-key secret, the id keys and the node id. Missing files are skipped.
  std::vector<std::pair<std::string, std::string>> backup_files;
};

// The figures the health rules sample (daemon/health.h), read from the node's parts.
HealthSample sample_node(const NodeParts& parts);

// The name of the file that marks a directory as a sessiond backup (JSON: node, region, time,
// sessions, version); `sessiond --restore-from` requires it.
inline constexpr const char* kBackupMarker = "sessiond-backup.json";

// What a backup's marker says.
struct BackupInfo {
  std::string node, region, version;
  std::int64_t created_ms = 0;
  std::uint64_t sessions = 0;
};
// Reads DIR's marker; INVALID_ARGUMENT when DIR is not a sessiond backup.
Result<BackupInfo> read_backup(const std::string& backup_dir);

// Restores a backup made by POST /api/backup (`sessctl backup`) into `data_dir`, which must
// not exist or be empty: the database and the files beside it. INVALID_ARGUMENT naming what is
// wrong (not a backup, data dir in use), UNAVAILABLE on an I/O error. Returns the marker's JSON.
Result<std::string> restore_backup(const std::string& backup_dir, const std::string& data_dir);

class Admin {
 public:
  explicit Admin(AdminOptions options);
  ~Admin();
  Admin(const Admin&) = delete;
  Admin& operator=(const Admin&) = delete;

  // Binds; UNAVAILABLE naming the address when it cannot (in use, no permission).
  Status bind();
  std::string address() const;  // the bound host:port
  // Serves on threads of its own until stop().
  void start();
  void stop();
  void set_phase(Phase phase, std::string reason = {});
  Phase phase() const;
  // The node is up: the parts /metrics, /cluster and the API read. Call once, before
  // set_phase(kReady).
  void attach(NodeParts parts);
  // /metrics' text (for tests and the STATS-less scrape).
  std::string metrics_text() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sessiond::daemon
