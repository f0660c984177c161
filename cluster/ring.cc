#include "cluster/ring.h"

#include <xxhash.h>

#include <algorithm>
#include <string>

namespace sessiond::cluster {

std::uint64_t ring_position(std::string_view id) {
  std::uint64_t p = 0;
  for (std::size_t i = 0; i < 8; ++i) p = p << 8 | static_cast<std::uint8_t>(id[i]);
  return p;
}

Ring::Ring(std::span<const Node> nodes, std::uint32_t vnodes_per_weight) {
  std::string name;
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    const std::uint64_t count = std::uint64_t{nodes[n].weight} * vnodes_per_weight;
    for (std::uint64_t v = 0; v < count; ++v) {
      // The point depends on the node's id and the vnode's index only, so a node keeps its
      // points whatever else joins or leaves (only the keys a new node's points take move).
      name = nodes[n].id;
      name += '#';
      name += std::to_string(v);
      points_.push_back({XXH3_64bits(name.data(), name.size()), static_cast<std::uint32_t>(n)});
    }
  }
  // Equal positions (astronomically rare) are ordered by node id so every build agrees.
  std::sort(points_.begin(), points_.end(), [&](const Point& a, const Point& b) {
    if (a.position != b.position) return a.position < b.position;
    return nodes[a.node].id < nodes[b.node].id;
  });
}

std::size_t Ring::owner(std::uint64_t position) const {
  auto it = std::lower_bound(points_.begin(), points_.end(), position,
                             [](const Point& p, std::uint64_t x) { return p.position < x; });
  if (it == points_.end()) it = points_.begin();
  return it->node;
}

std::vector<std::size_t> Ring::owners(std::uint64_t position, std::size_t count) const {
  std::vector<std::size_t> out;
  if (points_.empty()) return out;
  auto it = std::lower_bound(points_.begin(), points_.end(), position,
                             [](const Point& p, std::uint64_t x) { return p.position < x; });
  std::size_t i = static_cast<std::size_t>(it - points_.begin());
  for (std::size_t seen = 0; seen < points_.size() && out.size() < count; ++seen, ++i) {
    const std::size_t node = points_[i % points_.size()].node;
    if (std::find(out.begin(), out.end(), node) == out.end()) out.push_back(node);
  }
  return out;
}

Placement place(const Ring& ring, std::span<const Node> nodes, std::uint32_t replication_factor,
                std::uint64_t position) {
  Placement out;
  const auto& points = ring.points();
  if (points.empty()) return out;
  const std::size_t rf = std::max<std::uint32_t>(replication_factor, 1);
  auto it = std::lower_bound(points.begin(), points.end(), position,
                             [](const Ring::Point& p, std::uint64_t x) { return p.position < x; });
  std::size_t i = static_cast<std::size_t>(it - points.begin());
  std::vector<std::size_t> seen;  // distinct nodes in ring order
  seen.reserve(rf + 2);
  std::vector<std::size_t> up;  // the up nodes among them
  bool owner_settled = false;
  for (std::size_t step = 0; step < points.size(); ++step, ++i) {
    const std::size_t node = points[i % points.size()].node;
    if (std::find(seen.begin(), seen.end(), node) != seen.end()) continue;
    seen.push_back(node);
    const Node& n = nodes[node];
    if (seen.size() == 1) {
      if (!n.down) out.owner = node;
      owner_settled = !n.down || rf == 1;
    } else if (!owner_settled && seen.size() <= rf) {
      const auto& in_sync = nodes[seen.front()].in_sync;
      if (!n.down && std::find(in_sync.begin(), in_sync.end(), n.id) != in_sync.end()) {
        out.owner = node;
        owner_settled = true;
      }
    }
    if (!owner_settled && seen.size() >= rf) owner_settled = true;  // nobody may take it
    if (!n.down) up.push_back(node);
    std::size_t replicas = 0;
    for (std::size_t u : up) replicas += out.owner != u;
    if (owner_settled && replicas >= rf - 1) break;
  }
  for (std::size_t u : up) {
    if (out.replicas.size() + 1 >= rf) break;
    if (out.owner != u) out.replicas.push_back(u);
  }
  return out;
}

}  // namespace sessiond::cluster
