#include "replication/applier.h"

namespace sessiond::replication {

Result<Applied> apply_entries(storage::SessionTable& table,
                              std::span<const OwnedMutation> entries) {
  Applied out;
  for (const OwnedMutation& e : entries) {
    auto outcome = table.apply(e.m);
    if (!outcome.ok()) return outcome.status();
    if (*outcome == storage::ApplyOutcome::kSetAside) {
      ++out.set_aside;
    } else {
      ++out.applied;
      if (*outcome == storage::ApplyOutcome::kMerged) ++out.conflicts;
    }
  }
  return out;
}

}  // namespace sessiond::replication
