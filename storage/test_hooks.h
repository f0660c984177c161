// Rules broken on purpose, for the chaos suite's proof that its checker catches what they break
// (docs/chaos.md, "Sabotage"). Only builds with SESSIOND_TEST_HOOKS have them: `sessiond
// --test-sabotage NAME` sets one at start; everywhere else sabotaged() is a constant false.
#pragma once

#include <string_view>

#include "protocol/status.h"

namespace sessiond::storage {

enum class Sabotage {
  kNone,
  // Writes are acknowledged without waiting for an in-sync replica (--replica-ack ignored).
  kAckUnreplicated,
  // The merge lets a state older than a session's tombstone bring the session back.
  kResurrect,
  // A region shipper that fails to deliver a batch moves its cursor past it anyway.
  kSkipRegionCursor,
  // A node accepts writes after its lease ran out (no fencing).
  kNoFencing,
  // Merging two states of a session keeps the older last access (deadlines drift apart).
  kKeepOlderAccess,
};

#ifdef SESSIOND_TEST_HOOKS
// Sets the sabotage by name (ack-unreplicated, resurrect, skip-region-cursor, no-fencing,
// keep-older-access);
// INVALID_ARGUMENT naming the known ones otherwise. Call once, before any thread reads it.
Status set_sabotage(std::string_view name);
bool sabotaged(Sabotage which);
#else
constexpr bool sabotaged(Sabotage) { return false; }
#endif

}  // namespace sessiond::storage
