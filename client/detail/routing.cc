#include "detail/routing.h"

#include <algorithm>
#include <numeric>

#include "protocol/crypto.h"

namespace sessiond::client_detail {
namespace {

constexpr std::size_t kRequestIdBytes = 16;
constexpr std::uint8_t kEpochTag = 15 << 3;  // field 15, wire type 0 (varint)

std::string_view trimmed(std::string_view text) {
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!text.empty() && blank(text.front())) text.remove_prefix(1);
  while (!text.empty() && blank(text.back())) text.remove_suffix(1);
  return text;
}

}  // namespace

std::vector<std::string> seed_addresses(const ClientOptions& options) {
  std::vector<std::string> seeds;
  const auto add = [&](std::string_view text) {
    text = trimmed(text);
    if (text.empty() || std::find(seeds.begin(), seeds.end(), text) != seeds.end()) return;
    seeds.emplace_back(text);
  };
  if (!options.seeds.empty()) {
    for (const auto& seed : options.seeds) add(seed);
  } else {
    std::string_view rest = options.address;
    while (true) {
      const auto comma = rest.find(',');
      add(rest.substr(0, comma));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  if (seeds.empty()) seeds.emplace_back(trimmed(options.address));
  return seeds;
}

RoutingTable RoutingTable::from_wire(const wire::TopologyResponse& response) {
  RoutingTable table;
  table.epoch = response.epoch();
  table.region = response.region();
  table.migrating = response.migrating();
  // Sorted by id (as the node sends them, and as the daemon builds its ring), whatever order
  // arrived: the ring's owner() is an index into this order.
  std::vector<int> order(static_cast<std::size_t>(response.nodes_size()));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return response.nodes(a).id() < response.nodes(b).id(); });
  for (int i : order) {
    const wire::Node& in = response.nodes(i);
    cluster::Node node;
    node.id = in.id();
    node.address = in.address();
    node.resp_address = in.resp_address();
    node.number = in.number();
    node.weight = in.weight();
    node.down = in.down();
    node.in_sync.assign(in.in_sync().begin(), in.in_sync().end());
    table.nodes.push_back(std::move(node));
    table.regions.push_back(in.region());
  }
  table.replication_factor = std::max<std::uint32_t>(response.replication_factor(), 1);
  table.ring = cluster::Ring(table.nodes);
  return table;
}

std::string RoutingTable::owner_of(std::string_view raw_id) const {
  if (!routes() || raw_id.size() < 8) return {};
  const auto p = cluster::place(ring, nodes, replication_factor, cluster::ring_position(raw_id));
  return p.owner ? nodes[*p.owner].address : std::string();
}

std::string RoutingTable::replica_of(std::string_view raw_id) const {
  if (!routes() || raw_id.size() < 8) return {};
  const auto p = cluster::place(ring, nodes, replication_factor, cluster::ring_position(raw_id));
  return p.replicas.empty() ? std::string() : nodes[p.replicas.front()].address;
}

Topology RoutingTable::to_public() const {
  Topology out;
  out.epoch = epoch;
  out.region = region;
  out.migrating = migrating;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    TopologyNode node;
    node.id = nodes[i].id;
    node.address = nodes[i].address;
    node.region = regions[i];
    node.weight = nodes[i].weight;
    node.number = nodes[i].number;
    node.resp_address = nodes[i].resp_address;
    out.nodes.push_back(std::move(node));
  }
  return out;
}

std::string epoch_field(std::uint64_t epoch) {
  std::string out;
  if (epoch == 0) return out;
  out.push_back(static_cast<char>(kEpochTag));
  while (epoch >= 0x80) {
    out.push_back(static_cast<char>((epoch & 0x7F) | 0x80));
    epoch >>= 7;
  }
  out.push_back(static_cast<char>(epoch));
  return out;
}

std::string with_epoch(std::string body, std::uint64_t epoch) { return body + epoch_field(epoch); }

Result<std::string> new_request_id() {
  std::string id(kRequestIdBytes, '\0');
  if (!random_bytes(id.data(), id.size())) {
    return Status::Internal("no random bytes for a request id (OpenSSL RAND_bytes failed)");
  }
  return id;
}

}  // namespace sessiond::client_detail
