// The receiving side of every node-to-node stream (MIGRATE, REPLICATE; peer regions later):
// merges what a peer sent into the table with SessionTable::apply(), original versions and
// origins kept, in the order sent.
#pragma once

#include <cstdint>
#include <span>

#include "protocol/status.h"
#include "replication/codec.h"
#include "storage/session_table.h"

namespace sessiond::replication {

struct Applied {
  std::uint64_t applied = 0;
  std::uint64_t set_aside = 0;  // clocks too far ahead of this node's: kept and retried here
  std::uint64_t conflicts = 0;  // applied, merged with a concurrent write here (kMerged)
};

// Stops at the first entry the table cannot write (a full disk): what came before it stays
// applied, and the sender sends the whole batch again (apply() is idempotent).
Result<Applied> apply_entries(storage::SessionTable& table, std::span<const OwnedMutation> entries);

}  // namespace sessiond::replication
