// The consistent-hash ring of a region (DESIGN §6): each node places weight x vnodes points on a
// 64-bit circle; a session belongs to the first point at or after its position, which is its
// route key (the first 8 bytes of its id, big-endian), so a user's sessions share an owner.
// Client and daemon link this one implementation and so always agree on owners.
#pragma once

#include <cstdint>
#include <optional>
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

// Where a position lives in a region with replicas and failed nodes (DESIGN §6; docs/cluster.md,
// "Replicas and failover"). Its preference list is the first `replication_factor` distinct nodes
// in ring order from it. The owner, who takes writes, is the first of them unless that one is
// down; then the first of the others that the down node listed as in sync and that is up; and
// otherwise none: no writer until the node returns or an operator promotes uncleanly. The
// replicas are the first replication_factor - 1 nodes in ring order that are up, other than the
// owner: the owner feeds them, and while there is no owner they serve reads, flagged possibly
// stale. Indices are into `nodes`, the nodes the ring was built from.
struct Placement {
  std::optional<std::size_t> owner;
  std::vector<std::size_t> replicas;
};
Placement place(const Ring& ring, std::span<const Node> nodes, std::uint32_t replication_factor,
                std::uint64_t position);

}  // namespace sessiond::cluster
