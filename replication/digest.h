// Anti-entropy (DESIGN §6, §7): digests of what two nodes hold for the same ranges, compared to
// find where they differ, so that only the states in differing buckets move.
//
// The buckets are fixed slices of the route-key space (the top kDigestBucketBits bits of a
// state's ring position), independent of any ring: an owner and its replica, or two regions,
// compute them alike. A bucket's digest is the count of its states and the sum of their
// fingerprints' hashes (SessionTable::fingerprints: id or user, kind, version), so it does not
// depend on the order the table is walked in.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "storage/id_generator.h"
#include "storage/session_table.h"

namespace sessiond::wire {
class DigestRequest;
}

namespace sessiond::replication {

inline constexpr unsigned kDigestBucketBits = 10;
inline constexpr std::size_t kDigestBuckets = std::size_t{1} << kDigestBucketBits;

inline std::uint32_t digest_bucket(std::uint64_t position) {
  return static_cast<std::uint32_t>(position >> (64 - kDigestBucketBits));
}

struct Digest {
  std::vector<std::uint32_t> counts = std::vector<std::uint32_t>(kDigestBuckets);
  std::vector<std::uint64_t> sums = std::vector<std::uint64_t>(kDigestBuckets);
  std::uint64_t states = 0;
};

// The digest of the states of `table` whose ring position `wanted` selects.
Digest compute_digest(storage::SessionTable& table, const storage::IdGenerator& ids,
                      const std::function<bool(std::uint64_t position)>& wanted);
// The buckets (ascending) whose digests differ.
std::vector<std::uint32_t> differing_buckets(const Digest& a, const Digest& b);
// A selection of the states in `buckets` (sorted) that `wanted` selects, for export_states.
storage::SessionTable::Selection bucket_selection(
    const storage::IdGenerator& ids, std::vector<std::uint32_t> buckets,
    std::function<bool(std::uint64_t position)> wanted);

// One state at a time (anti-entropy with a peer region compares the states of differing buckets
// one by one): a fingerprint's key says which session (its id, alive or ended) or which user's
// generation it is, the same on both sides whatever the version; its hash covers the version too.
std::uint64_t fingerprint_key(const storage::SessionTable::Fingerprint& f);
std::uint64_t fingerprint_hash(const storage::SessionTable::Fingerprint& f);
std::uint64_t key_of_session(const storage::SessionId& id);
std::uint64_t key_of_generation(std::string_view user);

// Ring positions as inclusive [first, last] pairs, sorted and disjoint.
using Ranges = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
bool in_ranges(const Ranges& ranges, std::uint64_t position);
Ranges intersect(const Ranges& a, const Ranges& b);
// The arcs of `ring_points` (sorted positions; point i closes the arc after point i-1, the
// first one the arc that wraps around) for which `mine(i)` holds.
Ranges ring_ranges(const std::vector<std::uint64_t>& ring_points,
                   const std::function<bool(std::size_t point)>& mine);

void to_wire(const Digest& digest, wire::DigestRequest* out);
// INVALID_ARGUMENT unless it has kDigestBuckets counts and sums.
Result<Digest> digest_from_wire(const wire::DigestRequest& request);

}  // namespace sessiond::replication
