// The consistent-hash ring of a region (DESIGN §6): each node places weight x vnodes points on a
// 64-bit circle; a session belongs to the first point at or after its position, which is its
// route key (the first 8 bytes of its id, big-endian), so a user's sessions share an owner.
// Client and daemon link this one implementation and so always agree on owners.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "cluster/topology.h"

namespace sessiond::cluster {

// Points per unit of weight. With 256 the most loaded of 8 equal nodes held at most 1.24x the
// mean over 500 random node-id sets; with 128 (DESIGN's first figure) 2 sets in 500 passed 1.3x
// (docs/cluster.md, "The ring").
inline constexpr std::uint32_t kDefaultVnodesPerWeight = 256;

// A session's position: its id's first 8 bytes (the route key) read big-endian, so that ring
// order is byte order. `id` must hold at least 8 bytes.
std::uint64_t ring_position(std::string_view id);

class Ring {
 public:
  Ring() = default;  // no nodes: owns nothing
  explicit Ring(std::span<const Node> nodes,
                std::uint32_t vnodes_per_weight = kDefaultVnodesPerWeight);

  // Whether some node has a weight above 0 (otherwise owner() must not be called).
  bool empty() const { return points_.empty(); }
  // The index (into the nodes given at construction) of the node that owns `position`.
  std::size_t owner(std::uint64_t position) const;
  // Up to `count` distinct nodes in ring order from `position`, the owner first (replicas).
  std::vector<std::size_t> owners(std::uint64_t position, std::size_t count) const;

  struct Point {
    std::uint64_t position;
    std::uint32_t node;  // index into the nodes given at construction
  };
  // Sorted by position; a point owns the positions after the previous point up to its own.
  const std::vector<Point>& points() const { return points_; }

 private:
  std::vector<Point> points_;
};

}  // namespace sessiond::cluster
