#include "cluster/topology.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

namespace sessiond::cluster {
namespace {

using nlohmann::json;

json node_to_json(const Node& n) {
  json j = {{"id", n.id}, {"address", n.address}, {"number", n.number}, {"weight", n.weight}};
  if (!n.resp_address.empty()) j["resp_address"] = n.resp_address;
  if (n.down) j["down"] = {{"in_sync", n.in_sync}};
  return j;
}

Node node_from_json(const json& j) {
  Node n;
  n.id = j.at("id").get<std::string>();
  n.address = j.at("address").get<std::string>();
  n.resp_address = j.value("resp_address", std::string());
  n.number = j.at("number").get<std::uint32_t>();
  n.weight = j.value("weight", 1u);
  if (j.contains("down") && !j["down"].is_null()) {
    n.down = true;
    n.in_sync = j["down"].value("in_sync", std::vector<std::string>());
  }
  return n;
}

std::vector<Node> nodes_from_json(const json& j) {
  std::vector<Node> out;
  for (const json& n : j) out.push_back(node_from_json(n));
  std::sort(out.begin(), out.end(), [](const Node& a, const Node& b) { return a.id < b.id; });
  return out;
}

Status validate_nodes(const std::vector<Node>& nodes, std::string_view what) {
  std::set<std::string_view> ids;
  std::set<std::uint32_t> numbers;
  bool weighted = false;
  for (const Node& n : nodes) {
    if (!valid_node_id(n.id)) {
      return Status::InvalidArgument(std::string(what) + ": invalid node id \"" + n.id +
                                     "\" (1-64 of A-Z a-z 0-9 . _ -)");
    }
    if (!ids.insert(n.id).second) {
      return Status::InvalidArgument(std::string(what) + ": node id " + n.id + " appears twice");
    }
    if (n.number == 0 || n.number > 0xffff || !numbers.insert(n.number).second) {
      return Status::InvalidArgument(std::string(what) + ": node " + n.id + " has number " +
                                     std::to_string(n.number) +
                                     " (must be 1-65535 and unique in the region)");
    }
    if (n.address.empty()) {
      return Status::InvalidArgument(std::string(what) + ": node " + n.id + " has no address");
    }
    weighted = weighted || n.weight > 0;
  }
  for (const Node& n : nodes) {
    for (const std::string& r : n.in_sync) {
      if (!n.down || r == n.id || !ids.contains(r)) {
        return Status::InvalidArgument(
            std::string(what) + ": node " + n.id + " lists in-sync replica " + r +
            (n.down ? ", which is not another node of the region" : " but is not down"));
      }
    }
  }
  if (!nodes.empty() && !weighted) {
    return Status::InvalidArgument(std::string(what) + ": no node has a weight above 0");
  }
  return {};
}

}  // namespace

std::uint32_t region_number(std::string_view region) {
  std::uint32_t h = 2166136261u;
  for (char c : region) {
    h ^= static_cast<unsigned char>(c);
    h *= 16777619u;
  }
  return (h ^ (h >> 16)) % 0xffff + 1;
}

bool valid_node_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

const Node* Topology::find(std::string_view id) const {
  for (const Node& n : nodes) {
    if (n.id == id) return &n;
  }
  return nullptr;
}

std::uint32_t Topology::free_number() const {
  std::set<std::uint32_t> used;
  for (const Node& n : nodes) used.insert(n.number);
  if (migration) {
    for (const Node& n : migration->target) used.insert(n.number);
  }
  for (std::uint32_t candidate = 1; candidate <= 0xffff; ++candidate) {
    if (!used.contains(candidate)) return candidate;
  }
  return 0;
}

Status Topology::validate() const {
  if (region.empty()) return Status::InvalidArgument("topology: no region name");
  if (replication_factor < 1 || replication_factor > kMaxReplicationFactor) {
    return Status::InvalidArgument("topology: replication factor " +
                                   std::to_string(replication_factor) + " (must be 1-" +
                                   std::to_string(kMaxReplicationFactor) + ")");
  }
  if (Status s = validate_nodes(nodes, "topology"); !s.ok()) return s;
  if (migration) {
    if (Status s = validate_nodes(migration->target, "migration target"); !s.ok()) return s;
    if (migration->target.empty()) {
      return Status::InvalidArgument("migration target: no nodes");
    }
  }
  return {};
}

std::string Topology::to_json() const {
  json j = {{"region", region},
            {"epoch", epoch},
            {"replication_factor", replication_factor},
            {"nodes", json::array()}};
  for (const Node& n : nodes) j["nodes"].push_back(node_to_json(n));
  if (migration) {
    json m = {{"id", migration->id},
              {"reason", migration->reason},
              {"started_ms", migration->started_ms},
              {"target", json::array()}};
    for (const Node& n : migration->target) m["target"].push_back(node_to_json(n));
    j["migration"] = std::move(m);
  }
  return j.dump();
}

Result<Topology> Topology::from_json(std::string_view text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("topology: not a JSON object");
  }
  try {
    Topology t;
    t.region = j.at("region").get<std::string>();
    t.epoch = j.at("epoch").get<std::uint64_t>();
    t.nodes = nodes_from_json(j.at("nodes"));
    t.replication_factor = j.value("replication_factor", 1u);
    if (j.contains("migration") && !j["migration"].is_null()) {
      const json& m = j["migration"];
      Migration migration;
      migration.id = m.at("id").get<std::uint64_t>();
      migration.reason = m.value("reason", std::string());
      migration.started_ms = m.value("started_ms", std::int64_t{0});
      migration.target = nodes_from_json(m.at("target"));
      t.migration = std::move(migration);
    }
    if (Status s = t.validate(); !s.ok()) return s;
    return t;
  } catch (const json::exception& e) {
    return Status::InvalidArgument(std::string("topology: ") + e.what());
  }
}

}  // namespace sessiond::cluster
