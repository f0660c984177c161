// The client's routing decisions (internal), as pure functions the router applies and the unit
// tests check: which seeds the options name, which node owns an id under a topology, and how
// a request is stamped with the epoch it was routed by.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/ring.h"
#include "cluster/topology.h"
#include "protocol/sessiond.pb.h"
#include "protocol/status.h"
#include "sessiond/client.h"
#include "sessiond/types.h"

namespace sessiond::client_detail {

// The seed addresses of `options`: options.seeds when it is not empty, otherwise
// options.address split at commas; blanks around each trimmed, empty and repeated entries
// dropped. Never empty: with nothing usable, the one entry is the (empty) address, which the
// transport then refuses as not HOST:PORT.
std::vector<std::string> seed_addresses(const ClientOptions& options);

// A topology as the client routes by it: the TOPOLOGY answer and its ring.
struct RoutingTable {
  std::uint64_t epoch = 0;  // 0: the node has no cluster; route nothing
  std::string region;
  bool migrating = false;
  std::uint32_t replication_factor = 1;
  std::vector<cluster::Node> nodes;  // sorted by id, as the ring is built from them
  std::vector<std::string> regions;  // nodes[i]'s region
  cluster::Ring ring;

  static RoutingTable from_wire(const wire::TopologyResponse& response);
  // Whether calls are routed by this table: a cluster (epoch above 0) with some weight.
  bool routes() const { return epoch != 0 && !ring.empty(); }
  // The address of the node that owns the session whose raw id (32 bytes, or 48 signed: the
  // route key is the first 8 either way) is `raw_id`; "" when the table does not route.
  std::string owner_of(std::string_view raw_id) const;
  // The address of the session's first replica, which serves reads while its owner is down;
  // "" when it has none.
  std::string replica_of(std::string_view raw_id) const;
  // The public form (Client::topology()).
  Topology to_public() const;
};

// `body` (a request serialized without its epoch) with field 15, the epoch, appended: byte for
// byte what protobuf would have serialized with the epoch set, since 15 is the highest field
// number of every request. `body` unchanged for epoch 0 (proto3 does not encode a default).
std::string with_epoch(std::string body, std::uint64_t epoch);
// What with_epoch appends: field 15 with the epoch, or nothing for epoch 0.
std::string epoch_field(std::uint64_t epoch);

// 16 random bytes for CreateRequest/RegenerateRequest.request_id; INTERNAL if the system's
// random source fails.
Result<std::string> new_request_id();

}  // namespace sessiond::client_detail
