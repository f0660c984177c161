// Mutation: one change to the engine's state, as the one write path of DESIGN §6 carries it.
//
// Every change the table makes (create, update, a touch that must persist, destroy, regenerate,
// revoke, the expirer's catch-up, a keyed write, a merge from a peer) is described by one or
// more Mutations. The Store turns them into one WriteBatch (session record or revocation
// generation, replication-log entry) and the table then hands each to its observers (shippers,
// the migration forwarder, metrics), which register with SessionTable::on_change instead of
// being written into every operation.
//
// Views inside a Mutation are valid only for the call that receives it: an observer copies what
// it keeps.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

#include "storage/session.h"

namespace sessiond::storage {

// Who made a change: this node, or the peer whose mutation apply() merged. A remote mutation is
// marked so that it is never shipped back to where it came from.
struct Origin {
  std::uint32_t region = 0;
  std::uint32_t node = 0;
  bool remote = false;
  friend bool operator==(const Origin&, const Origin&) = default;
};

struct Mutation {
  enum class Kind : std::uint8_t {
    kPut = 1,    // the session's whole state (value): create, update, regenerate's new id, merge
    kTouch = 2,  // the last access moved (a coalesced touch, recorded accesses): the whole state
                 // on disk, a small entry (last access and access log) in the replication log
    kEnd = 3,    // the session ended for good: destroy, regenerate's old id, revoke, eviction,
                 // a keyed delete; value holds its tombstone (empty: none)
    kGeneration = 4,  // a user's revocation generation was raised (REVOKE_USER): value holds
                      // it; id is unused
  };
  Kind kind = Kind::kPut;
  SessionId id{};
  std::string_view user;   // the session's user (kGeneration: the user whose generation it is)
  std::string_view value;  // kPut/kTouch: the encoded record; kEnd: the tombstone; kGeneration:
                           // the generation
  std::int64_t deadline_ms = 0;             // kPut/kTouch: the persisted deadline; kEnd: the
                                            // tombstone's keep_until
  std::int64_t last_access_ms = 0;          // kTouch
  std::span<const AccessEntry> access_log;  // kTouch: the session's access history
  Origin origin;
};

// Sees every mutation after it was written, under the lock of the session it names (so the
// mutations of one session arrive in the order they were applied), with its replication-log
// sequence number (0 when the log is off). It must be quick and must not call the table.
using MutationObserver = std::function<void(const Mutation&, std::uint64_t log_seq)>;

}  // namespace sessiond::storage
