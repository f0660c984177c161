// A region's topology (DESIGN §6): its nodes, their weights and states, the replication factor
// and the migration in progress, at an epoch. etcd holds the one current copy (cluster/etcd.h;
// docs/cluster.md gives the JSON form); every node and client routes by a copy, and every change is
// a compare-and-swap on the epoch.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/status.h"

namespace sessiond::cluster {

inline constexpr std::uint32_t kMaxReplicationFactor = 5;

struct Node {
  std::string id;            // 1-64 of [A-Za-z0-9._-]
  std::string address;       // host:port of the native listener, what clients and peers dial
  std::string resp_address;  // host:port of the RESP listener; "" when it has none
  std::uint32_t number = 0;  // 1..65535, unique in the region: the node part of every version
  std::uint32_t weight = 1;  // share of the ring; 0 = owns nothing (drained)
  // Failover (DESIGN §6, docs/cluster.md "Replicas and failover"): the node's lease expired, or
  // it stopped and handed over, and its ranges went to replicas. `in_sync` names the replicas
  // that were in sync with it then: only they may take its ranges.
  bool down = false;
  std::vector<std::string> in_sync;
  friend bool operator==(const Node&, const Node&) = default;
};

// A membership change in progress: sessions move from the owners under `nodes` to the owners
// under `target`; until the handover's compare-and-swap, `nodes` decides ownership.
struct Migration {
  std::uint64_t id = 0;      // the epoch that started it; names its progress keys in etcd
  std::string reason;        // "add-node n4", "remove-node n2", "drain n3"
  std::vector<Node> target;  // the region's nodes once the migration is done, sorted by id
  std::int64_t started_ms = 0;
  friend bool operator==(const Migration&, const Migration&) = default;
};

struct Topology {
  std::string region = "local";
  std::uint64_t epoch = 0;
  std::vector<Node> nodes;  // sorted by id
  std::optional<Migration> migration;
  // Copies of each session: its owner and replication_factor - 1 replicas (1-5; a topology
  // from before replicas has 1).
  std::uint32_t replication_factor = 1;

  const Node* find(std::string_view id) const;
  // The smallest node number no node (current or target) uses; 0 when all 65535 are taken.
  std::uint32_t free_number() const;
  // Whether every node id is valid and unique, numbers unique and in range, addresses present,
  // and some node has a weight (the same for the migration's target).
  Status validate() const;

  std::string to_json() const;
  static Result<Topology> from_json(std::string_view json);
  friend bool operator==(const Topology&, const Topology&) = default;
};

bool valid_node_id(std::string_view id);

// A region's number (DESIGN §7): the region part of every version its nodes write, so that two
// regions' writes never tie. Derived from the region's name (FNV-1a, folded into 1..65535), so
// every node of every region computes it alike without asking anyone; two regions whose names
// give the same number cannot be peers (checked when a node starts and when peers connect).
std::uint32_t region_number(std::string_view region);

}  // namespace sessiond::cluster
