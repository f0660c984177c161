// Anti-entropy with a peer region (DESIGN §7; docs/regions.md, "Anti-entropy"): what repairs a
// peer region after anything shipping cannot (a cut past the log's retention, a node lost with
// entries it never shipped, a bug), and proves two regions equal.
//
// One round, for the ring positions this node owns in its region (`owned`), against each node of
// the peer region for the part of them it owns there (the two rings intersected):
//   1. DIGEST with this node's bucket digest of those positions (replication/digest.h: fixed
//      route-key buckets, independent of either ring); the peer node answers the buckets that
//      differ with its fingerprints (key, hash) in them, a bounded number per answer;
//   2. the keys whose fingerprints differ or that only the peer holds are asked for (DIGEST with
//      `want`) and merged here; then this node's states of the keys that differ or that only it
//      holds go there (REPLICATE, as snapshot entries, merged there).
// So only differing sessions, tombstones and generations move, whichever side lacks them.
// Applying anything twice changes nothing, so a round cut short is harmless.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "protocol/status.h"
#include "replication/digest.h"
#include "replication/region_shipper.h"
#include "storage/session_table.h"

namespace sessiond::wire {
class DigestRequest;
class DigestResponse;
}  // namespace sessiond::wire

namespace sessiond::replication {

struct RepairReport {
  std::uint64_t buckets_differing = 0;
  std::uint64_t pulled = 0;  // states merged here from the peer region
  std::uint64_t pushed = 0;  // states sent there
  std::uint64_t bytes = 0;   // request and answer bodies
  std::chrono::milliseconds duration{0};
};

struct RepairOptions {
  std::string self;
  std::string region;
  std::uint32_t region_number = 0;
  std::string peer_region;
  std::string peer_secret;
  const storage::IdGenerator* ids = nullptr;
  // When set and true, the round ends early (UNAVAILABLE): the node is stopping.
  const std::atomic<bool>* stop = nullptr;
};

// One round against `view` for the positions in `owned`. Stops at the first failure (the
// report so far is lost; the next round starts again). With `check_only` it compares the
// digests and reports the differing buckets, moving nothing.
Result<RepairReport> repair_with_region(storage::SessionTable& table, const RepairOptions& options,
                                        const PeerRegionView& view, const Ranges& owned,
                                        bool check_only = false);

// The receiving side of DIGEST from a peer region, for `ranges` this node owns: the differing
// buckets with this node's fingerprints in them, or the states `want` names.
Status answer_region_digest(storage::SessionTable& table, const storage::IdGenerator& ids,
                            const Ranges& ranges, const wire::DigestRequest& request,
                            wire::DigestResponse* response);

// The request's ranges, checked: sorted, disjoint, first <= last, at most `max_ranges`.
Result<Ranges> ranges_from_wire(const wire::DigestRequest& request, std::size_t max_ranges);

}  // namespace sessiond::replication
