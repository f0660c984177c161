// Mutations on the wire between nodes (wire::MutationEntry): what a migration streams and what
// replicas and peer regions will be shipped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "protocol/status.h"
#include "storage/id_generator.h"
#include "storage/mutation.h"

namespace sessiond::wire {
class MutationEntry;
}

namespace sessiond::replication {

// A mutation with the bytes its views point into (a Mutation only borrows them).
struct OwnedMutation {
  storage::Mutation m;
  std::string user;
  std::string value;
  std::vector<storage::AccessEntry> access_log;

  OwnedMutation() = default;
  explicit OwnedMutation(const storage::Mutation& from);
  OwnedMutation(const OwnedMutation& other) : OwnedMutation(other.m) {}
  OwnedMutation& operator=(const OwnedMutation&) = delete;
};

// Where a mutation lives on the ring: its session's route key, or for a revocation generation
// its user's (the same as cluster::ring_position of the id).
inline std::uint64_t position_of(const storage::Mutation& m, const storage::IdGenerator& ids) {
  return m.kind == storage::Mutation::Kind::kGeneration ? ids.route_key_of_user(m.user)
                                                        : storage::route_key_of(m.id);
}

// Node-to-node batches (REPLICATE, MIGRATE, a DIGEST's answer) carry entries up to about this
// many bytes (one entry at least, which a session's size limit keeps within a frame), so that
// they fit a peer's --max-frame-bytes, which a region node keeps above twice this.
inline constexpr std::size_t kMaxBatchBytes = 256u << 10;

void to_wire(const storage::Mutation& m, wire::MutationEntry* out);
// INVALID_ARGUMENT for an unknown kind or an id that is not 32 bytes; the value's own checks
// happen in SessionTable::apply().
Result<OwnedMutation> from_wire(const wire::MutationEntry& entry);

}  // namespace sessiond::replication
