// Internal to storage: the merge of DESIGN §7, a state-based CRDT over session records.
//
// The state of one id is a record or a tombstone. Two records of the same id are compared by
// their epoch, (incarnation, birth version): a higher epoch wins whole (a keyed record written
// again after a delete, or replaced, starts a new incarnation). Records of one epoch are joined:
//   fields      per name, the write (value or field tombstone) with the higher version
//   timeouts    from the policy write with the higher version
//   last access the later one; the cap the earlier one; the access history the union, ordered
//               by time and trimmed to the newest N
//   the rest    (user, created_at, stamp, context, preset) is fixed at birth, so equal on both;
//               taken from the higher-versioned record so the result is deterministic anyway
//   version     the higher one
// A tombstone beats every record of an incarnation up to its own, whatever the versions; two
// tombstones join to the higher incarnation, version and keep-until. Each join is commutative,
// associative and idempotent (tests/unit/storage/merge_test.cc checks it on random histories),
// so replicas that receive the same writes in any order, any number of times, end equal.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

#include "storage/detail/record.h"

namespace sessiond::storage::detail {

// The epoch of a record: its incarnation, then the version of the write that began it.
inline std::tuple<std::uint32_t, Version> epoch_of(const Record& r) {
  const BlobMeta meta = blob_meta(r.blob(), r.version());
  return {meta.incarnation, meta.birth};
}

// The join of two records of the same id. Both must be valid; the result is a new record with
// no unpersisted state and no heap position.
RecordPtr merge_records(const Record& a, const Record& b, std::size_t access_log_length);

// A deep copy of a record (no unpersisted state, no heap position), with `blob` in place of its
// own when given (the same session, re-encoded).
RecordPtr copy_record(const Record& r, std::optional<std::string_view> blob = std::nullopt);

// Whether two records hold the same state (everything the merge looks at).
bool same_state(const Record& a, const Record& b);

// The join of two tombstones of one id.
Tombstone merge_tombstones(const Tombstone& a, const Tombstone& b);

// Whether the tombstone ends the record (DESIGN §7: destroy is final).
inline bool tombstone_ends(const Tombstone& t, const Record& r) {
  return blob_meta(r.blob(), r.version()).incarnation <= t.incarnation;
}

// The join of two revocation generations of one user.
Generation merge_generations(const Generation& a, const Generation& b);

// Sorts an access history by time (then by content), drops duplicates and keeps the newest n:
// the one form in which two histories of the same accesses are equal.
void canonical_access_log(std::vector<AccessEntry>* log, std::size_t n);

}  // namespace sessiond::storage::detail
