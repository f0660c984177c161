#include "daemon/admin.h"

#include <fmt/format.h>
#include <httplib.h>
#include <openssl/evp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "cluster/membership.h"
#include "cluster/ring.h"
#include "daemon/console_assets.h"
#include "daemon/handlers.h"
#include "daemon/health.h"
#include "daemon/metrics.h"
#include "daemon/regions.h"
#include "daemon/replicas.h"
#include "protocol/base64url.h"
#include "protocol/host_port.h"
#include "storage/clock.h"
#include "storage/id_generator.h"
#include "storage/session_table.h"
#include "storage/store.h"

namespace sessiond::daemon {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kJson = "application/json";
// Requests to other nodes' admin listeners (/cluster, lookups routed to the owner).
constexpr int kPeerTimeoutMs = 1000;

void reply_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), kJson);
}

void reply_error(httplib::Response& res, int status, const std::string& message) {
  reply_json(res, status, {{"error", message}});
}

// The secret of an Authorization header: "Bearer SECRET", or Basic with SECRET as the password.
std::string secret_of(const std::string& header) {
  if (header.rfind("Bearer ", 0) == 0) return header.substr(7);
  if (header.rfind("Basic ", 0) != 0) return {};
  const std::string encoded = header.substr(6);
  if (encoded.empty() || encoded.size() > 4096 || encoded.size() % 4 != 0) return {};
  std::string decoded(encoded.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(decoded.data()),
                                reinterpret_cast<const unsigned char*>(encoded.data()),
                                static_cast<int>(encoded.size()));
  if (n < 0) return {};
  std::size_t size = static_cast<std::size_t>(n);
  for (std::size_t i = encoded.size(); i > 0 && encoded[i - 1] == '=' && size > 0; --i) --size;
  decoded.resize(size);
  const auto colon = decoded.find(':');
  return colon == std::string::npos ? std::string() : decoded.substr(colon + 1);
}

std::string_view preset_label(std::size_t slot) {
  if (slot == 0) return "none";
  return storage::preset_name(static_cast<storage::Preset>(slot - 1));
}

std::string version_text(const storage::Version& v) {
  return std::to_string(v.hlc) + "." + std::to_string(v.region) + "." + std::to_string(v.node);
}

json alerts_json(const std::vector<Alert>& alerts) {
  json out = json::array();
  for (const Alert& a : alerts) {
    out.push_back({{"rule", a.rule}, {"detail", a.detail}, {"since_ms", a.since_ms}});
  }
  return out;
}

// Marks a request one node's admin listener sends another's: it is answered there, never
// passed on again (two nodes that disagree about an owner for a moment cannot bounce it).
constexpr const char* kForwarded = "X-Sessiond-Forwarded";

// A GET to another node's admin listener, with the caller's Authorization.
Result<json> fetch_json(const std::string& address, const std::string& path,
                        const std::string& authorization) {
  auto hp = parse_host_port(address);
  if (!hp.ok()) return hp.status();
  httplib::Client client(hp->host, hp->port);
  client.set_connection_timeout(std::chrono::milliseconds(kPeerTimeoutMs));
  client.set_read_timeout(std::chrono::milliseconds(kPeerTimeoutMs));
  client.set_write_timeout(std::chrono::milliseconds(kPeerTimeoutMs));
  httplib::Headers headers = {{kForwarded, "1"}};
  if (!authorization.empty()) headers.emplace("Authorization", authorization);
  auto res = client.Get(path.c_str(), headers);
  if (!res) {
    return Status::Unavailable(address + ": " + httplib::to_string(res.error()));
  }
  json body = json::parse(res->body, nullptr, false);
  if (body.is_discarded()) {
    return Status::Unavailable(address + ": HTTP " + std::to_string(res->status) + " without JSON");
  }
  if (res->status != 200) body["http_status"] = res->status;
  return body;
}

// The admin addresses of the region's live nodes, by id, from their liveness keys.
std::map<std::string, std::string> live_nodes(const cluster::Membership& membership) {
  std::map<std::string, std::string> out;
  auto live = membership.etcd().get_prefix(cluster::nodes_prefix(membership.options().region));
  if (!live.ok()) return out;
  const std::string prefix = cluster::nodes_prefix(membership.options().region);
  for (const auto& kv : live->kvs) {
    const json v = json::parse(kv.value, nullptr, false);
    out[kv.key.substr(std::min(prefix.size(), kv.key.size()))] =
        v.is_object() ? v.value("admin_address", std::string()) : std::string();
  }
  return out;
}

Status copy_one(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return Status::Unavailable("cannot copy " + from.string() + ": " + ec.message());
  return {};
}

}  // namespace

std::string_view phase_name(Phase phase) {
  switch (phase) {
    case Phase::kStarting:
      return "starting";
    case Phase::kRecovering:
      return "recovering";
    case Phase::kJoining:
      return "joining";
    case Phase::kReady:
      return "ready";
    case Phase::kStopping:
      return "stopping";
  }
  return "unknown";
}

HealthSample sample_node(const NodeParts& p) {
  HealthSample s;
  s.t_ms = storage::SystemClock::instance().now_ms();
  if (p.requests) s.requests = p.requests->snapshot().all();
  if (p.table) {
    const storage::TableStats st = p.table->stats();
    s.sessions = st.sessions;
    s.memory_bytes = st.memory_bytes;
    s.memory_budget = p.table->options().memory_budget_bytes;
    s.creates = st.creates;
    s.read_hits = st.read_hits;
    s.read_misses = st.read_misses;
  }
  s.clock_steps = storage::SystemClock::instance().steps();
  if (p.store) s.disk_failure = p.store->write_failure();
  if (p.regions) {
    for (const auto& r : p.regions->stats()) {
      s.region_lag_ms.emplace_back(r.region, std::max<std::int64_t>(0, r.shipped.lag_ms));
    }
  }
  if (p.replicas) {
    const auto lag = p.replicas->lag();
    s.replicas = lag.replicas;
    s.replicas_in_sync = lag.in_sync;
  }
  return s;
}

struct Admin::Impl {
  AdminOptions options;
  httplib::Server server;
  std::thread thread;
  int port = -1;
  std::atomic<Phase> phase{Phase::kStarting};
  mutable std::mutex mu;  // guards reason
  std::string reason;
  std::atomic<bool> attached{false};
  NodeParts parts;       // written once by attach(), before `attached`
  std::mutex backup_mu;  // one backup at a time

  explicit Impl(AdminOptions o) : options(std::move(o)) {}

  void routes();
  bool authorized(const httplib::Request& req, httplib::Response& res);
  void health(httplib::Response& res);
  json overview(bool with_history) const;
  json cluster_view(const std::string& authorization) const;
  void session(const httplib::Request& req, httplib::Response& res);
  void user(const httplib::Request& req, httplib::Response& res);
  void backup(const httplib::Request& req, httplib::Response& res);
  std::string metrics() const;
  // In a cluster: the admin address of the node that owns `position` when that is another
  // node ("" when it is this one, unknown, or `req` was forwarded here already).
  std::string owner_admin(const httplib::Request& req, std::uint64_t position) const;
};

bool Admin::Impl::authorized(const httplib::Request& req, httplib::Response& res) {
  if (!options.auth.enabled()) return true;
  const std::string header = req.get_header_value("Authorization");
  const std::string secret = secret_of(header);
  if (!secret.empty() && options.auth.authenticate(secret) == Role::kAdmin) return true;
  if (!secret.empty() && attached.load()) parts.counters->auth_failures.record(req.remote_addr);
  res.set_header("WWW-Authenticate", "Basic realm=\"sessiond admin\"");
  reply_error(res, 401,
              secret.empty() ? "the admin secret is required (Authorization: Bearer SECRET)"
                             : "wrong secret: the admin role is required");
  return false;
}

void Admin::Impl::routes() {
  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (!authorized(req, res)) return httplib::Server::HandlerResponse::Handled;
    if (!attached.load() && req.path != "/" && !req.path.ends_with(".js") &&
        !req.path.ends_with(".css")) {
      reply_error(res, 503, std::string("the node is ") + std::string(phase_name(phase.load())));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.Get("/health", [this](const httplib::Request&, httplib::Response& res) { health(res); });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/cluster", [this](const httplib::Request& req, httplib::Response& res) {
    reply_json(res, 200, cluster_view(req.get_header_value("Authorization")));
  });
  server.Get("/api/overview", [this](const httplib::Request& req, httplib::Response& res) {
    reply_json(res, 200, overview(req.get_param_value("history") != "0"));
  });
  server.Get("/api/session",
             [this](const httplib::Request& req, httplib::Response& res) { session(req, res); });
  server.Get("/api/user",
             [this](const httplib::Request& req, httplib::Response& res) { user(req, res); });
  server.Post("/api/backup",
              [this](const httplib::Request& req, httplib::Response& res) { backup(req, res); });
  for (const ConsoleFile& f : console_files()) {
    const std::string path = f.path == "/index.html" ? "/" : std::string(f.path);
    server.Get(path, [&f](const httplib::Request&, httplib::Response& res) {
      res.set_content(std::string(f.body), std::string(f.content_type));
      res.set_header("Cache-Control", "no-cache");
    });
  }
}

void Admin::Impl::health(httplib::Response& res) {
  const Phase now = phase.load();
  auto unavailable = [&](const std::string& why) {
    reply_json(res, 503, {{"status", "unavailable"}, {"phase", phase_name(now)}, {"reason", why}});
  };
  if (now != Phase::kReady || !attached.load()) {
    std::lock_guard lock(mu);
    return unavailable(reason.empty() ? std::string(phase_name(now)) : reason);
  }
  if (parts.store) {
    if (std::string failure = parts.store->write_failure(); !failure.empty()) {
      return unavailable("the store refuses writes: " + failure);
    }
  }
  if (parts.membership) {
    if (!parts.membership->writable()) {
      return unavailable(parts.membership->fenced_status().message());
    }
    const auto routing = parts.membership->routing();
    if (!routing->self) {
      return unavailable("not in region " + routing->topology.region +
                         "'s topology yet: `sessctl cluster add-node " + parts.node_id + " " +
                         parts.address + "` adds it");
    }
    if (routing->topology.nodes[*routing->self].down) {
      return unavailable("failed over: the node is rejoining its region");
    }
  }
  json body = {{"status", "ok"}, {"phase", phase_name(now)}, {"node", parts.node_id}};
  body["alerts"] = alerts_json(parts.health ? parts.health->alerts() : std::vector<Alert>{});
  reply_json(res, 200, body);
}

json Admin::Impl::overview(bool with_history) const {
  const storage::TableStats st = parts.table->stats();
  const HealthPoint latest = parts.health ? parts.health->latest() : HealthPoint{};
  json out = {
      {"node", parts.node_id},
      {"region", parts.region},
      {"address", parts.address},
      {"admin_address", options.host + ":" + std::to_string(port)},
      {"version", options.version},
      {"phase", phase_name(phase.load())},
      {"uptime_s", (storage::SystemClock::instance().now_ms() - options.started_ms) / 1000},
      {"sessions", st.sessions},
      {"users", st.users},
      {"memory_bytes", st.memory_bytes},
      {"disk_bytes", parts.store ? parts.store->disk_bytes() : 0},
      {"connections", parts.counters->connections.load(std::memory_order_relaxed)},
      {"ops_per_s", latest.ops_per_s},
      {"p50_ms", latest.p50_ms},
      {"p99_ms", latest.p99_ms},
      {"creates_per_s", latest.creates_per_s},
      {"hit_ratio", parts.health ? parts.health->hit_ratio() : 1.0},
  };
  json regions = json::array();
  if (parts.regions) {
    for (const auto& r : parts.regions->stats()) {
      regions.push_back({{"region", r.region},
                         {"lag_ms", std::max<std::int64_t>(0, r.shipped.lag_ms)},
                         {"lag_entries", r.shipped.lag_entries}});
    }
  }
  out["regions"] = regions;
  out["replica_lag_entries"] = parts.replicas ? parts.replicas->lag().max_entries : 0;
  out["alerts"] = alerts_json(parts.health ? parts.health->alerts() : std::vector<Alert>{});
  if (with_history && parts.health) {
    json history = json::array();
    for (const HealthPoint& p : parts.health->history()) {
      json lag = json::object();
      for (const auto& [region, ms] : p.region_lag_ms) lag[region] = ms;
      history.push_back({{"t_ms", p.t_ms},
                         {"ops_per_s", p.ops_per_s},
                         {"p50_ms", p.p50_ms},
                         {"p99_ms", p.p99_ms},
                         {"sessions", p.sessions},
                         {"memory_bytes", p.memory_bytes},
                         {"creates_per_s", p.creates_per_s},
                         {"region_lag_ms", lag}});
    }
    out["history"] = std::move(history);
  }
  return out;
}

json Admin::Impl::cluster_view(const std::string& authorization) const {
  json out;
  if (!parts.membership) {
    json self = overview(false);
    out = {{"region", parts.region}, {"epoch", 0}, {"cluster", false}, {"migration", nullptr}};
    out["nodes"] = json::array({{{"id", parts.node_id},
                                 {"address", parts.address},
                                 {"admin_address", self["admin_address"]},
                                 {"weight", 1},
                                 {"share", 1.0},
                                 {"up", true},
                                 {"down", false},
                                 {"overview", self}}});
    return out;
  }
  const auto routing = parts.membership->routing();
  const cluster::Topology& t = routing->topology;
  const auto live = live_nodes(*parts.membership);
  const std::vector<double> shares = cluster::ring_shares(routing->ring, t.nodes.size());
  out = {{"region", t.region},
         {"epoch", t.epoch},
         {"cluster", true},
         {"replication_factor", t.replication_factor}};
  json nodes = json::array();
  for (std::size_t i = 0; i < t.nodes.size(); ++i) {
    const cluster::Node& n = t.nodes[i];
    const auto alive = live.find(n.id);
    json node = {{"id", n.id},
                 {"address", n.address},
                 {"admin_address", alive != live.end() ? alive->second : std::string()},
                 {"weight", n.weight},
                 {"share", shares[i]},
                 {"up", alive != live.end() && !n.down},
                 {"down", n.down},
                 {"overview", nullptr}};
    if (n.id == parts.node_id) {
      node["overview"] = overview(false);
    } else if (alive != live.end() && !alive->second.empty()) {
      auto fetched = fetch_json(alive->second, "/api/overview?history=0", authorization);
      if (fetched.ok() && !fetched->contains("http_status")) {
        node["overview"] = std::move(fetched).value();
      } else {
        node["error"] = fetched.ok() ? fetched->value("error", std::string("unreadable answer"))
                                     : fetched.status().message();
      }
    } else if (alive == live.end()) {
      node["error"] = "no liveness key in etcd (stopped, or cut off)";
    }
    nodes.push_back(std::move(node));
  }
  out["nodes"] = std::move(nodes);
  out["migration"] = nullptr;
  if (t.migration) {
    json progress = json::object();
    if (auto marks = cluster::read_migration_progress(parts.membership->etcd(), t); marks.ok()) {
      for (const auto& [id, p] : *marks) {
        progress[id] = {{"state", p.handed_over ? "handed over" : "streaming"},
                        {"sessions", p.sessions},
                        {"bytes", p.bytes}};
      }
    }
    out["migration"] = {{"id", t.migration->id},
                        {"reason", t.migration->reason},
                        {"started_ms", t.migration->started_ms},
                        {"progress", progress}};
  }
  return out;
}

std::string Admin::Impl::owner_admin(const httplib::Request& req, std::uint64_t position) const {
  if (!parts.membership || req.has_header(kForwarded)) return {};
  const auto routing = parts.membership->routing();
  const cluster::Node* owner = routing->owner(position);
  if (owner == nullptr || owner->id == parts.node_id) return {};
  const auto live = live_nodes(*parts.membership);
  const auto it = live.find(owner->id);
  return it == live.end() ? std::string() : it->second;
}

void Admin::Impl::session(const httplib::Request& req, httplib::Response& res) {
  const std::string text = req.get_param_value("id");
  auto bytes = base64url_decode(text);
  if (text.empty() || !bytes.ok() || (bytes->size() != 32 && bytes->size() != 48)) {
    return reply_error(res, 400, "id: a session id in base64url (32 bytes, 48 when signed)");
  }
  storage::SessionId id;
  std::memcpy(id.data(), bytes->data(), id.size());
  if (const std::string owner = owner_admin(req, storage::route_key_of(id)); !owner.empty()) {
    auto fetched = fetch_json(owner, req.target, req.get_header_value("Authorization"));
    if (!fetched.ok()) return reply_error(res, 502, fetched.status().message());
    const int status = fetched->value("http_status", 200);
    fetched->erase("http_status");
    return reply_json(res, status, *fetched);
  }
  storage::Session s;
  if (Status st = parts.table->get(id, storage::ReadOptions{}, &s); !st.ok()) {
    return reply_error(res, st.code() == StatusCode::kInternal ? 500 : 404,
                       st.code() == StatusCode::kNotFound || st.code() == StatusCode::kExpired
                           ? std::string("no such session on node ") + parts.node_id
                           : st.message());
  }
  const bool values = req.get_param_value("values") == "1";
  json fields = json::array();
  for (const storage::Field& f : s.fields) {
    json field = {{"name", f.name}, {"bytes", f.value.size()}};
    if (values) field["value"] = f.value;
    fields.push_back(std::move(field));
  }
  json access = json::array();
  for (const storage::AccessEntry& a : s.access_log) {
    // As hex text: a 64-bit number does not survive JavaScript's doubles.
    access.push_back({{"t_ms", a.time_ms},
                      {"ip", a.ip},
                      {"user_agent_hash", fmt::format("{:016x}", a.user_agent_hash)}});
  }
  reply_json(res, 200,
             {{"id", base64url_encode(std::string_view(reinterpret_cast<const char*>(s.id.data()),
                                                       s.id.size()))},
              {"node", parts.node_id},
              {"user", s.user_id},
              {"created_ms", s.created_at_ms},
              {"last_access_ms", s.last_access_ms},
              {"deadline_ms",
               s.deadline_ms() == storage::kNoDeadline ? json(nullptr) : json(s.deadline_ms())},
              {"preset", s.preset ? json(storage::preset_name(*s.preset)) : json(nullptr)},
              {"signed", s.signed_id},
              {"version", version_text(s.version)},
              {"fields", fields},
              {"access_log", access}});
}

void Admin::Impl::user(const httplib::Request& req, httplib::Response& res) {
  const std::string name = req.get_param_value("user");
  if (name.empty() || name.size() > parts.table->options().max_user_id_bytes) {
    return reply_error(res, 400, "user: a user id");
  }
  if (parts.ids) {
    if (const std::string owner = owner_admin(req, parts.ids->route_key_of_user(name));
        !owner.empty()) {
      auto fetched = fetch_json(owner, req.target, req.get_header_value("Authorization"));
      if (!fetched.ok()) return reply_error(res, 502, fetched.status().message());
      const int status = fetched->value("http_status", 200);
      fetched->erase("http_status");
      return reply_json(res, status, *fetched);
    }
  }
  const bool reveal = req.get_param_value("reveal") == "1";
  json sessions = json::array();
  for (const storage::SessionMeta& m : parts.table->list_user(name)) {
    const std::string id =
        base64url_encode(std::string_view(reinterpret_cast<const char*>(m.id.data()), m.id.size()));
    json one = {{"id_prefix", id.substr(0, 8)},
                {"created_ms", m.created_at_ms},
                {"last_access_ms", m.last_access_ms},
                {"deadline_ms",
                 m.deadline_ms == storage::kNoDeadline ? json(nullptr) : json(m.deadline_ms)}};
    if (reveal) one["id"] = id;
    sessions.push_back(std::move(one));
  }
  reply_json(res, 200, {{"user", name}, {"node", parts.node_id}, {"sessions", sessions}});
}

void Admin::Impl::backup(const httplib::Request& req, httplib::Response& res) {
  const std::string dir = req.get_param_value("dir");
  if (dir.empty() || !fs::path(dir).is_absolute()) {
    return reply_error(res, 400, "dir: an absolute path on the node's machine that does not exist");
  }
  std::unique_lock lock(backup_mu, std::try_to_lock);
  if (!lock.owns_lock()) return reply_error(res, 409, "a backup is running already");
  const auto started = std::chrono::steady_clock::now();
  const std::uint64_t sessions = parts.table->size();
  if (Status s = parts.store->checkpoint(dir); !s.ok()) {
    return reply_error(res, s.code() == StatusCode::kInvalidArgument ? 400 : 500, s.message());
  }
  std::vector<std::string> files;
  for (const auto& [from, name] : options.backup_files) {
    std::error_code ec;
    if (!fs::exists(from, ec)) continue;
    if (Status s = copy_one(from, fs::path(dir) / name); !s.ok()) {
      return reply_error(res, 500, s.message());
    }
    files.push_back(name);
  }
  const json marker = {{"node", parts.node_id},
                       {"region", parts.region},
                       {"created_ms", storage::SystemClock::instance().now_ms()},
                       {"sessions", sessions},
                       {"files", files},
                       {"version", options.version}};
  {
    std::ofstream out(fs::path(dir) / kBackupMarker);
    out << marker.dump(2) << "\n";
    if (!out.flush()) return reply_error(res, 500, "cannot write the backup's marker in " + dir);
  }
  json body = marker;
  body["dir"] = dir;
  body["duration_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - started)
                            .count();
  reply_json(res, 200, body);
}

std::string Admin::Impl::metrics() const {
  PromWriter w;
  using L = PromWriter::Labels;
  const storage::TableStats st = parts.table->stats();
  const Counters& c = *parts.counters;
  auto load = [](const std::atomic<std::uint64_t>& a) {
    return static_cast<double>(a.load(std::memory_order_relaxed));
  };
  auto counter = [&](std::string_view name, std::string_view help, double value) {
    w.family(name, "counter", help);
    w.sample(name, value);
  };
  auto gauge = [&](std::string_view name, std::string_view help, double value) {
    w.family(name, "gauge", help);
    w.sample(name, value);
  };
  w.family("sessiond_build_info", "gauge", "The running version (value 1).");
  w.sample("sessiond_build_info", L{{"version", options.version}}, 1);
  gauge("sessiond_start_time_seconds", "When the node started (Unix time).",
        static_cast<double>(options.started_ms) / 1000);
  gauge("sessiond_ready", "1 when /health answers 200.", phase.load() == Phase::kReady ? 1 : 0);

  // Sessions.
  w.family("sessiond_sessions", "gauge", "Sessions held, by the preset they were created with.");
  for (std::size_t i = 0; i < storage::kPresetSlots; ++i) {
    w.sample("sessiond_sessions", L{{"preset", std::string(preset_label(i))}},
             static_cast<double>(st.sessions_by_preset[i]));
  }
  gauge("sessiond_users", "Users with at least one session.", static_cast<double>(st.users));
  gauge("sessiond_tombstones", "Ended sessions remembered so that they never come back.",
        static_cast<double>(st.tombstones));
  counter("sessiond_sessions_created_total", "Sessions created here.",
          static_cast<double>(st.creates));
  counter("sessiond_sessions_updated_total", "Session updates applied here.",
          static_cast<double>(st.updates));
  counter("sessiond_sessions_destroyed_total",
          "Sessions ended here by destroy, revocation or policy.",
          static_cast<double>(st.destroys));
  counter("sessiond_sessions_expired_total", "Sessions that expired here.",
          static_cast<double>(st.expiries));
  counter("sessiond_sessions_regenerated_total", "Session ids regenerated here.",
          static_cast<double>(st.regenerates));
  const RequestSnapshot requests = parts.requests->snapshot();
  counter(
      "sessiond_user_revocations_total", "REVOKE_USER requests answered.",
      static_cast<double>(
          requests.latency[0][native_op(static_cast<std::uint16_t>(protocol::Opcode::kRevokeUser))]
              .count));
  {
    std::vector<double> bounds(storage::kLifetimeBucketsS.begin(),
                               storage::kLifetimeBucketsS.end());
    w.family("sessiond_session_lifetime_seconds", "histogram",
             "How long sessions lived, counted when one is destroyed or expires.");
    w.histogram("sessiond_session_lifetime_seconds", {}, bounds, st.lifetimes,
                static_cast<double>(st.lifetime_sum_ms) / 1000);
  }
  w.family("sessiond_reads_total", "counter", "Session reads, by whether they found it.");
  w.sample("sessiond_reads_total", L{{"result", "hit"}}, static_cast<double>(st.read_hits));
  w.sample("sessiond_reads_total", L{{"result", "miss"}}, static_cast<double>(st.read_misses));
  gauge("sessiond_read_hit_ratio", "Reads that found their session, over the health window.",
        parts.health ? parts.health->hit_ratio() : 1.0);
  w.family("sessiond_touches_total", "counter", "Reads that slid an idle deadline.");
  w.sample("sessiond_touches_total", L{{"kind", "persisted"}},
           static_cast<double>(st.touches_persisted));
  w.sample("sessiond_touches_total", L{{"kind", "coalesced"}},
           static_cast<double>(st.touches_coalesced));
  w.sample("sessiond_touches_total", L{{"kind", "refused"}},
           static_cast<double>(st.touches_refused));
  w.family("sessiond_merges_total", "counter", "Writes of other nodes merged here, by outcome.");
  w.sample("sessiond_merges_total", L{{"outcome", "applied"}},
           static_cast<double>(st.merges_applied));
  w.sample("sessiond_merges_total", L{{"outcome", "unchanged"}},
           static_cast<double>(st.merges_unchanged));
  w.sample("sessiond_merges_total", L{{"outcome", "set_aside"}},
           static_cast<double>(st.merges_set_aside));
  w.sample("sessiond_merges_total", L{{"outcome", "dropped"}},
           static_cast<double>(st.merges_dropped));

  // Memory and disk.
  w.family("sessiond_memory_bytes", "gauge", "Memory by part.");
  w.sample("sessiond_memory_bytes", L{{"part", "table"}}, static_cast<double>(st.memory_bytes));
  if (parts.store) {
    const storage::Store::Memory m = parts.store->memory();
    w.sample("sessiond_memory_bytes", L{{"part", "rocksdb_memtables"}},
             static_cast<double>(m.memtables));
    w.sample("sessiond_memory_bytes", L{{"part", "rocksdb_block_cache"}},
             static_cast<double>(m.block_cache));
    w.sample("sessiond_memory_bytes", L{{"part", "rocksdb_table_readers"}},
             static_cast<double>(m.table_readers));
  }
  gauge("sessiond_memory_budget_bytes", "--memory-budget (0: none).",
        static_cast<double>(parts.table->options().memory_budget_bytes));
  gauge("sessiond_disk_bytes", "Live SST files and WAL of the data directory.",
        parts.store ? static_cast<double>(parts.store->disk_bytes()) : 0);

  // Requests.
  w.family("sessiond_request_duration_seconds", "histogram",
           "Time from the read that completed a request to its answer, by listener and "
           "operation.");
  std::vector<double> bounds;
  for (std::uint32_t us : kLatencyBoundsUs) bounds.push_back(us * 1e-6);
  for (std::size_t l = 0; l < kListeners; ++l) {
    for (std::size_t op = 0; op < kOps; ++op) {
      const Latency& lat = requests.latency[l][op];
      if (lat.count == 0) continue;
      const auto listener = static_cast<Listener>(l);
      w.histogram("sessiond_request_duration_seconds",
                  L{{"listener", std::string(listener_name(listener))},
                    {"op", std::string(op_name(listener, op))}},
                  bounds, lat.buckets, static_cast<double>(lat.sum_ns) * 1e-9);
    }
  }
  w.family("sessiond_responses_total", "counter", "Native-protocol answers by status.");
  for (std::size_t i = 0; i < requests.statuses.size(); ++i) {
    if (requests.statuses[i] == 0 && i != 0) continue;
    w.sample("sessiond_responses_total",
             L{{"status", std::string(status_code_name(static_cast<StatusCode>(i)))}},
             static_cast<double>(requests.statuses[i]));
  }
  w.family("sessiond_connections", "gauge", "Open connections by listener.");
  const double resp = load(c.resp_connections);
  w.sample("sessiond_connections", L{{"listener", "native"}}, load(c.connections) - resp);
  w.sample("sessiond_connections", L{{"listener", "resp"}}, resp);
  w.family("sessiond_connections_refused_total", "counter", "Connections refused, by limit.");
  w.sample("sessiond_connections_refused_total", L{{"limit", "max_connections"}},
           load(c.connections_refused));
  w.sample("sessiond_connections_refused_total", L{{"limit", "per_ip"}},
           load(c.connections_refused_per_ip));
  counter("sessiond_connection_timeouts_total", "Connections closed idle or with a stalled frame.",
          load(c.timeouts));
  counter("sessiond_slow_readers_total", "Connections closed for not reading their answers.",
          load(c.slow_readers));
  counter("sessiond_protocol_errors_total", "Malformed frames and commands.",
          load(c.protocol_errors));
  counter("sessiond_tls_handshake_failures_total", "TLS connections that never got going.",
          load(c.tls_handshake_failures));
  counter("sessiond_auth_failures_total", "AUTHs with a wrong secret (all listeners).",
          static_cast<double>(c.auth_failures.total()));

  // Security.
  counter("sessiond_forged_ids_total", "Session ids refused before lookup (bad signature).",
          load(c.forged_ids));
  counter("sessiond_context_mismatches_total", "Reads from another client context.",
          load(c.context_mismatches));
  w.family("sessiond_hijack_findings_total", "counter", "Hijack detections, by rule.");
  w.sample("sessiond_hijack_findings_total", L{{"rule", "impossible_travel"}},
           load(c.hijack_travel));
  w.sample("sessiond_hijack_findings_total", L{{"rule", "many_ips"}}, load(c.hijack_many_ips));
  counter("sessiond_clock_steps_total", "Steps of the wall clock the node saw.",
          static_cast<double>(storage::SystemClock::instance().steps()));

  // Replication.
  if (parts.replicas) {
    const auto lag = parts.replicas->lag();
    gauge("sessiond_replicas", "Replicas of the node's ranges.", static_cast<double>(lag.replicas));
    gauge("sessiond_replicas_in_sync", "Of them, those in the in-sync set.",
          static_cast<double>(lag.in_sync));
    gauge("sessiond_replica_lag_entries", "Log entries the furthest-behind replica lacks.",
          static_cast<double>(lag.max_entries));
    counter("sessiond_replica_anti_entropy_rounds_total", "Digest rounds with the replicas.",
            static_cast<double>(lag.repairs.rounds));
  }
  if (parts.regions) {
    const auto stats = parts.regions->stats();
    w.family("sessiond_region_lag_seconds", "gauge",
             "Since the peer region was last caught up with this node's log.");
    for (const auto& r : stats) {
      w.sample("sessiond_region_lag_seconds", L{{"region", r.region}},
               static_cast<double>(std::max<std::int64_t>(0, r.shipped.lag_ms)) / 1000);
    }
    w.family("sessiond_region_lag_entries", "gauge", "Log entries the peer region lacks.");
    for (const auto& r : stats) {
      w.sample("sessiond_region_lag_entries", L{{"region", r.region}},
               static_cast<double>(r.shipped.lag_entries));
    }
    w.family("sessiond_region_entries_shipped_total", "counter", "Entries shipped to the region.");
    for (const auto& r : stats) {
      w.sample("sessiond_region_entries_shipped_total", L{{"region", r.region}},
               static_cast<double>(r.shipped.entries_shipped));
    }
    w.family("sessiond_region_entries_received_total", "counter",
             "Entries applied here from the region.");
    for (const auto& r : stats) {
      w.sample("sessiond_region_entries_received_total", L{{"region", r.region}},
               static_cast<double>(r.received));
    }
  }

  // The cluster.
  if (parts.membership) {
    const auto routing = parts.membership->routing();
    gauge("sessiond_etcd_lease_valid", "1 while the node's etcd lease lets it write (fencing).",
          parts.membership->writable() ? 1 : 0);
    gauge("sessiond_cluster_epoch", "The topology's epoch.",
          static_cast<double>(routing->topology.epoch));
    std::size_t down = 0;
    for (const auto& n : routing->topology.nodes) down += n.down ? 1 : 0;
    w.family("sessiond_cluster_nodes", "gauge", "Nodes in the region's topology, by state.");
    w.sample("sessiond_cluster_nodes", L{{"state", "up"}},
             static_cast<double>(routing->topology.nodes.size() - down));
    w.sample("sessiond_cluster_nodes", L{{"state", "down"}}, static_cast<double>(down));
    gauge("sessiond_migration_running", "1 while a migration moves ranges in the region.",
          routing->topology.migration ? 1 : 0);
    if (routing->topology.migration) {
      if (auto marks =
              cluster::read_migration_progress(parts.membership->etcd(), routing->topology);
          marks.ok()) {
        w.family("sessiond_migration_sessions_moved", "gauge",
                 "Sessions the running migration has moved, by source node.");
        for (const auto& [id, p] : *marks) {
          w.sample("sessiond_migration_sessions_moved", L{{"node", id}},
                   static_cast<double>(p.sessions));
        }
      }
    }
  }

  // Health rules.
  w.family("sessiond_alert", "gauge", "1 while a health rule fires (docs/operations.md).");
  const std::vector<Alert> alerts = parts.health ? parts.health->alerts() : std::vector<Alert>{};
  for (std::string_view rule : kHealthRules) {
    const bool firing =
        std::any_of(alerts.begin(), alerts.end(), [&](const Alert& a) { return a.rule == rule; });
    w.sample("sessiond_alert", L{{"rule", std::string(rule)}}, firing ? 1 : 0);
  }
  return w.text();
}

Admin::Admin(AdminOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  Impl& i = *impl_;
  i.server.new_task_queue = [] { return new httplib::ThreadPool(8); };
  // A slow or silent client holds one of the 8 threads for a few seconds at most.
  i.server.set_read_timeout(5, 0);
  i.server.set_write_timeout(5, 0);
  i.server.set_keep_alive_timeout(2);
  i.server.set_keep_alive_max_count(100);
  i.server.set_payload_max_length(64 << 10);
  i.routes();
}

Admin::~Admin() { stop(); }

Status Admin::bind() {
  Impl& i = *impl_;
  if (i.options.port == 0) {
    i.port = i.server.bind_to_any_port(i.options.host);
  } else {
    i.port = i.server.bind_to_port(i.options.host, i.options.port) ? i.options.port : -1;
  }
  if (i.port < 0) {
    return Status::Unavailable("cannot listen on " + i.options.host + ":" +
                               std::to_string(i.options.port) +
                               " (--admin-listen): in use, or not an address of this machine");
  }
  return {};
}

std::string Admin::address() const {
  return impl_->options.host + ":" + std::to_string(impl_->port);
}

void Admin::start() {
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
}

void Admin::stop() {
  if (impl_->thread.joinable()) {
    impl_->server.stop();
    impl_->thread.join();
  }
}

void Admin::set_phase(Phase phase, std::string reason) {
  std::lock_guard lock(impl_->mu);
  impl_->reason = std::move(reason);
  impl_->phase.store(phase);
}

Phase Admin::phase() const { return impl_->phase.load(); }

void Admin::attach(NodeParts parts) {
  impl_->parts = std::move(parts);
  impl_->attached.store(true);
}

std::string Admin::metrics_text() const { return impl_->metrics(); }

Result<BackupInfo> read_backup(const std::string& backup_dir) {
  std::ifstream in(fs::path(backup_dir) / kBackupMarker);
  const json j = json::parse(in, nullptr, false);
  if (!in || !j.is_object()) {
    return Status::InvalidArgument(backup_dir + " is not a sessiond backup (no readable " +
                                   kBackupMarker + "): make one with `sessctl backup DIR`");
  }
  BackupInfo info;
  info.node = j.value("node", std::string());
  info.region = j.value("region", std::string());
  info.version = j.value("version", std::string());
  info.created_ms = j.value("created_ms", std::int64_t{0});
  info.sessions = j.value("sessions", std::uint64_t{0});
  return info;
}

Result<std::string> restore_backup(const std::string& backup_dir, const std::string& data_dir) {
  std::error_code ec;
  const fs::path from(backup_dir);
  const fs::path marker = from / kBackupMarker;
  if (!fs::is_regular_file(marker, ec) || !fs::is_regular_file(from / "CURRENT", ec)) {
    return Status::InvalidArgument(backup_dir + " is not a sessiond backup (no " + kBackupMarker +
                                   " or no database): make one with `sessctl backup DIR`");
  }
  if (fs::exists(data_dir, ec) && !fs::is_empty(data_dir, ec)) {
    return Status::InvalidArgument(
        "the data directory " + data_dir +
        " is not empty: a backup is restored into an empty one (move the old one away first)");
  }
  fs::create_directories(data_dir, ec);
  if (ec) return Status::Unavailable("cannot create " + data_dir + ": " + ec.message());
  for (const auto& entry : fs::directory_iterator(from, ec)) {
    if (!entry.is_regular_file() || entry.path().filename() == kBackupMarker) continue;
    if (Status s = copy_one(entry.path(), fs::path(data_dir) / entry.path().filename()); !s.ok()) {
      return s;
    }
  }
  if (ec) return Status::Unavailable("cannot read " + backup_dir + ": " + ec.message());
  std::ifstream in(marker);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text;
}

}  // namespace sessiond::daemon
