#include "sessctl_cluster.h"

#include <chrono>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "cluster/etcd.h"
#include "cluster/membership.h"
#include "cluster/topology.h"
#include "protocol/host_port.h"
#include "sessctl_support.h"
#include "sessiond/client.h"

namespace sessiond::sessctl {
namespace {

using nlohmann::json;

struct ClusterArgs {
  std::string etcd = "127.0.0.1:2379";
  std::string region = "local";
  std::string node_id;
  std::string address;
  std::uint32_t weight = 1;
  std::int64_t wait_ms = 0;
  std::string secret;
  bool unclean = false;
};

int fail(const Status& s, bool as_json) {
  if (as_json) std::cout << json_error(s) << "\n";
  std::cerr << "sessctl: " << s.ToString() << "\n";
  return exit_code_for(s.code());
}

// The topology and its revision; NOT_FOUND when the region has none.
Result<std::pair<cluster::Topology, std::int64_t>> read(const cluster::EtcdClient& etcd,
                                                        const std::string& region) {
  auto kv = etcd.get(cluster::topology_key(region));
  if (!kv.ok()) return kv.status();
  if (!kv->has_value()) {
    return Status::NotFound("region " + region + " has no topology in etcd (no node started)");
  }
  auto t = cluster::Topology::from_json((*kv)->value);
  if (!t.ok()) return t.status();
  return std::make_pair(std::move(t).value(), (*kv)->mod_revision);
}

std::string bar(double fraction) {
  const int width = 30;
  const int full = static_cast<int>(fraction * width + 0.5);
  return "[" + std::string(static_cast<std::size_t>(full), '#') +
         std::string(static_cast<std::size_t>(width - full), '.') + "]";
}

int status(const cluster::EtcdClient& etcd, const ClusterArgs& a, bool as_json) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(a.wait_ms);
  for (;;) {
    auto current = read(etcd, a.region);
    if (!current.ok()) return fail(current.status(), as_json);
    const cluster::Topology& t = current->first;
    auto live = etcd.get_prefix("/sessiond/" + a.region + "/nodes/");
    if (!live.ok()) return fail(live.status(), as_json);
    auto alive = [&](const std::string& id) {
      for (const auto& kv : live->kvs) {
        if (kv.key.ends_with("/nodes/" + id)) return true;
      }
      return false;
    };
    json progress = json::object();
    std::size_t done = 0;
    auto marks = cluster::read_migration_progress(etcd, t);
    if (!marks.ok()) return fail(marks.status(), as_json);
    for (const auto& [id, p] : *marks) {
      progress[id] = {{"state", p.handed_over ? "handed over" : "streaming"},
                      {"sessions", p.sessions},
                      {"bytes", p.bytes}};
      if (p.handed_over) ++done;
    }
    if (a.wait_ms > 0 && t.migration && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    // Replication to peer regions, from each live node's STATS (docs/regions.md).
    std::map<std::string, Stats> stats;
    for (const cluster::Node& n : t.nodes) {
      if (!alive(n.id)) continue;
      ClientOptions o;
      o.address = n.address;
      o.secret = a.secret;
      o.timeout = std::chrono::milliseconds(1000);
      o.pool_size = 1;
      Client node(o);
      if (auto st = node.stats(); st.ok()) stats[n.id] = std::move(st).value();
    }
    if (as_json) {
      json out = json::parse(t.to_json());
      for (auto& n : out["nodes"]) {
        const std::string id = n["id"].get<std::string>();
        n["alive"] = alive(id);
        const auto st = stats.find(id);
        if (st == stats.end()) continue;
        n["tombstones"] = st->second.tombstones;
        json regions = json::array();
        for (const PeerRegionStats& r : st->second.regions) {
          regions.push_back(json::parse(to_json(r)));  // as in `stats`
        }
        n["regions"] = regions;
      }
      if (t.migration) out["migration"]["progress"] = progress;
      std::cout << out.dump() << "\n";
    } else {
      std::cout << "region " << t.region << ", epoch " << t.epoch << ", " << t.nodes.size()
                << " nodes, replication factor " << t.replication_factor << "\n";
      for (const cluster::Node& n : t.nodes) {
        std::cout << "  " << n.id << "  " << n.address << "  number " << n.number << "  weight "
                  << n.weight << "  " << (alive(n.id) ? "alive" : "NOT ALIVE");
        if (n.down) {
          std::string in_sync;
          for (const std::string& r : n.in_sync) in_sync += (in_sync.empty() ? "" : ", ") + r;
          std::cout << "  DOWN, ranges with "
                    << (in_sync.empty() ? std::string("no writer (no replica was in sync)")
                                        : in_sync);
        }
        std::cout << "\n";
        const auto st = stats.find(n.id);
        if (st == stats.end() || st->second.regions.empty()) continue;
        std::cout << "    " << st->second.tombstones << " tombstones held\n";
        for (const PeerRegionStats& r : st->second.regions) std::cout << "    " << to_text(r);
      }
      if (t.migration) {
        const double fraction =
            t.nodes.empty() ? 1.0 : static_cast<double>(done) / static_cast<double>(t.nodes.size());
        std::cout << "migration " << t.migration->id << " (" << t.migration->reason
                  << "): " << bar(fraction) << " " << done << "/" << t.nodes.size()
                  << " nodes handed over\n";
        for (const auto& [id, p] : progress.items()) {
          std::cout << "  " << id << ": " << p["state"].get<std::string>() << ", "
                    << p["sessions"].get<std::uint64_t>() << " sessions, "
                    << p["bytes"].get<std::uint64_t>() << " bytes moved\n";
        }
      } else {
        std::cout << "no migration running\n";
      }
    }
    if (a.wait_ms > 0 && t.migration) {
      return fail(Status::Unavailable("the migration is still running after --wait-ms"), as_json);
    }
    return kExitOk;
  }
}

// Writes `next` (with a migration towards `target`) if the topology is still at `revision`.
// Writes `next` (validated) if the topology is still at `revision`; UNAVAILABLE when someone
// changed it first.
Status write_topology(const cluster::EtcdClient& etcd, const std::string& region,
                      const cluster::Topology& next, std::int64_t revision) {
  if (Status s = next.validate(); !s.ok()) return s;
  cluster::Txn swap{
      {{cluster::topology_key(region), cluster::Compare::Target::kModRevision, revision, ""}},
      {{cluster::TxnOp::Kind::kPut, cluster::topology_key(region), next.to_json(), 0}},
      {}};
  auto swapped = etcd.txn(swap);
  if (!swapped.ok()) return swapped.status();
  if (!*swapped) return Status::Unavailable("the topology changed meanwhile; look again and retry");
  return {};
}

int start_migration(const cluster::EtcdClient& etcd, const ClusterArgs& a,
                    const cluster::Topology& current, std::int64_t revision,
                    std::vector<cluster::Node> target, const std::string& reason, bool as_json) {
  if (current.migration) {
    return fail(Status::Unavailable("migration " + std::to_string(current.migration->id) + " (" +
                                    current.migration->reason +
                                    ") is still running; wait for it (sessctl cluster status)"),
                as_json);
  }
  cluster::Topology next = current;
  next.epoch = current.epoch + 1;
  std::sort(target.begin(), target.end(),
            [](const cluster::Node& x, const cluster::Node& y) { return x.id < y.id; });
  cluster::Migration m;
  m.id = next.epoch;
  m.reason = reason;
  m.target = std::move(target);
  m.started_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  next.migration = std::move(m);
  if (Status s = write_topology(etcd, a.region, next, revision); !s.ok()) return fail(s, as_json);
  if (as_json) {
    std::cout << json{{"migration", next.epoch}, {"reason", reason}}.dump() << "\n";
  } else {
    std::cout << "migration " << next.epoch << " started (" << reason
              << "); follow it with: sessctl cluster status\n";
  }
  return kExitOk;
}

std::size_t weighted(const std::vector<cluster::Node>& nodes) {
  return static_cast<std::size_t>(std::count_if(
      nodes.begin(), nodes.end(), [](const cluster::Node& n) { return n.weight > 0; }));
}

int add_node(const cluster::EtcdClient& etcd, const ClusterArgs& a, bool as_json) {
  if (!cluster::valid_node_id(a.node_id)) {
    return fail(Status::InvalidArgument("invalid node id \"" + a.node_id + "\""), as_json);
  }
  if (auto hp = parse_host_port(a.address); !hp.ok() || hp->port == 0) {
    return fail(Status::InvalidArgument("address \"" + a.address + "\" is not HOST:PORT"), as_json);
  }
  if (a.weight == 0) return fail(Status::InvalidArgument("--weight must be at least 1"), as_json);
  auto current = read(etcd, a.region);
  if (!current.ok()) return fail(current.status(), as_json);
  const cluster::Topology& t = current->first;
  if (t.find(a.node_id) != nullptr) {
    return fail(Status::InvalidArgument("node " + a.node_id + " is in region " + a.region +
                                        " already (a duplicate node id)"),
                as_json);
  }
  // The node must be running and registered under this id at this address: its number comes
  // from its registration.
  auto live = etcd.get(cluster::node_key(a.region, a.node_id));
  if (!live.ok()) return fail(live.status(), as_json);
  if (!live->has_value()) {
    return fail(
        Status::InvalidArgument("no node " + a.node_id + " is running in region " + a.region +
                                " (start it with --etcd and --node-id " + a.node_id + " first)"),
        as_json);
  }
  const json reg = json::parse((*live)->value, nullptr, false);
  if (!reg.is_object() || reg.value("address", std::string()) != a.address) {
    return fail(Status::InvalidArgument(
                    "node " + a.node_id + " is registered at " +
                    (reg.is_object() ? reg.value("address", std::string("?")) : std::string("?")) +
                    ", not " + a.address),
                as_json);
  }
  // And answer there.
  ClientOptions options;
  options.address = a.address;
  options.timeout = std::chrono::milliseconds(2000);
  options.secret = a.secret;
  options.max_retries = 1;
  Client client(options);
  if (auto pong = client.ping(); !pong.ok()) {
    return fail(Status::Unavailable("node " + a.node_id + " does not answer at " + a.address +
                                    ": " + pong.status().message()),
                as_json);
  }
  std::vector<cluster::Node> target = t.nodes;
  target.push_back({a.node_id,
                    a.address,
                    reg.value("resp_address", std::string()),
                    reg.value("number", 0u),
                    a.weight,
                    false,
                    {}});
  return start_migration(etcd, a, t, current->second, std::move(target), "add-node " + a.node_id,
                         as_json);
}

int remove_or_drain(const cluster::EtcdClient& etcd, const ClusterArgs& a, bool remove,
                    bool as_json) {
  auto current = read(etcd, a.region);
  if (!current.ok()) return fail(current.status(), as_json);
  const cluster::Topology& t = current->first;
  if (t.find(a.node_id) == nullptr) {
    return fail(Status::InvalidArgument("no node " + a.node_id + " in region " + a.region),
                as_json);
  }
  std::vector<cluster::Node> target;
  for (const cluster::Node& n : t.nodes) {
    if (n.id != a.node_id) {
      target.push_back(n);
    } else if (!remove) {
      target.push_back(n);
      target.back().weight = 0;
    }
  }
  if (weighted(target) == 0) {
    return fail(Status::InvalidArgument(std::string(remove ? "removing " : "draining ") +
                                        a.node_id + " would leave no node to own the sessions"),
                as_json);
  }
  return start_migration(etcd, a, t, current->second, std::move(target),
                         std::string(remove ? "remove-node " : "drain ") + a.node_id, as_json);
}

// promote ID --unclean: the replicas of a down node whose replicas were all out of sync take
// its ranges anyway (what only it had is lost).
int promote(const cluster::EtcdClient& etcd, const ClusterArgs& a, bool as_json) {
  auto current = read(etcd, a.region);
  if (!current.ok()) return fail(current.status(), as_json);
  cluster::Topology next = current->first;
  cluster::Node* node = nullptr;
  for (cluster::Node& n : next.nodes) {
    if (n.id == a.node_id) node = &n;
  }
  if (node == nullptr) {
    return fail(Status::InvalidArgument("no node " + a.node_id + " in region " + a.region),
                as_json);
  }
  if (!node->down) {
    return fail(
        Status::InvalidArgument("node " + a.node_id + " is not down: its ranges have their writer"),
        as_json);
  }
  std::vector<std::string> up;
  for (const cluster::Node& n : next.nodes) {
    if (!n.down && n.id != node->id && n.weight > 0) up.push_back(n.id);
  }
  if (up.empty()) {
    return fail(Status::InvalidArgument("no node is up to take " + a.node_id + "'s ranges"),
                as_json);
  }
  if (!a.unclean) {
    return fail(Status::InvalidArgument(
                    "node " + a.node_id + " is down" +
                    (node->in_sync.empty()
                         ? " and none of its replicas was in sync with it: promoting them loses "
                           "what only " +
                               a.node_id +
                               " had (acknowledged writes included); pass --unclean to do it "
                               "anyway, or bring " +
                               a.node_id + " back"
                         : "; its in-sync replicas have its ranges already")),
                as_json);
  }
  node->in_sync = up;  // every replica may take them
  next.epoch = current->first.epoch + 1;
  if (Status s = write_topology(etcd, a.region, next, current->second); !s.ok()) {
    return fail(s, as_json);
  }
  if (as_json) {
    std::cout << R"({"promoted":")" << a.node_id << R"(","epoch":)" << next.epoch << "}\n";
  } else {
    std::cout << "promoted the replicas of " << a.node_id << " uncleanly at epoch " << next.epoch
              << ": what only " << a.node_id << " had is lost\n";
  }
  return 0;
}

}  // namespace

void add_cluster_commands(CLI::App& app, std::function<int()>& run, const bool& json_out) {
  static ClusterArgs a;
  auto* cluster =
      app.add_subcommand("cluster", "a region's membership through its etcd (docs/cluster.md)");
  cluster->require_subcommand(1);
  cluster->add_option("--etcd", a.etcd, "etcd endpoints of the region (URL[,URL...])")
      ->envname("SESSIOND_ETCD")
      ->capture_default_str();
  cluster->add_option("--region", a.region, "the region")->capture_default_str();
  cluster
      ->add_option("--secret", a.secret,
                   "admin secret: STATS of the nodes (status), PING of a new node (add-node)")
      ->envname("SESSIOND_SECRET");
  auto with_etcd = [&](std::function<int(const cluster::EtcdClient&)> f) {
    return [&, f] {
      run = [&, f] {
        auto endpoints = cluster::EtcdClient::parse_endpoints(a.etcd);
        if (!endpoints.ok()) return fail(endpoints.status(), json_out);
        const cluster::EtcdClient etcd(*endpoints);
        return f(etcd);
      };
    };
  };
  auto* status_command = cluster->add_subcommand(
      "status", "the topology, which nodes are alive, and a running migration's progress");
  status_command->add_option("--wait-ms", a.wait_ms,
                             "wait up to this long for a running migration to finish");
  status_command->callback(
      with_etcd([&](const cluster::EtcdClient& etcd) { return status(etcd, a, json_out); }));
  auto* add = cluster->add_subcommand("add-node",
                                      "add a running node; its share of the sessions moves to it");
  add->add_option("id", a.node_id, "the node's --node-id")->required();
  add->add_option("address", a.address, "HOST:PORT it serves at (its --advertise)")->required();
  add->add_option("--weight", a.weight, "its share of the ring")->capture_default_str();
  add->callback(
      with_etcd([&](const cluster::EtcdClient& etcd) { return add_node(etcd, a, json_out); }));
  auto* remove =
      cluster->add_subcommand("remove-node", "move a node's sessions away and remove it");
  remove->add_option("id", a.node_id, "the node's id")->required();
  remove->callback(with_etcd(
      [&](const cluster::EtcdClient& etcd) { return remove_or_drain(etcd, a, true, json_out); }));
  auto* drain =
      cluster->add_subcommand("drain", "move a node's sessions away; it stays, owning none");
  drain->add_option("id", a.node_id, "the node's id")->required();
  drain->callback(with_etcd(
      [&](const cluster::EtcdClient& etcd) { return remove_or_drain(etcd, a, false, json_out); }));
  auto* promote_command = cluster->add_subcommand(
      "promote",
      "let the replicas of a down node take its ranges although none was in sync with it "
      "(loses what only it had; needs --unclean)");
  promote_command->add_option("id", a.node_id, "the down node's id")->required();
  promote_command->add_flag("--unclean", a.unclean, "accept the loss");
  promote_command->callback(
      with_etcd([&](const cluster::EtcdClient& etcd) { return promote(etcd, a, json_out); }));
}

}  // namespace sessiond::sessctl
