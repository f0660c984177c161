// A session as the native protocol sends it (internal to the daemon): the wire::Session and
// wire::SessionMeta messages built from the engine's, and the bodies of the answers that carry
// them (GET; CREATE, UPDATE, TOUCH, REGENERATE) written straight from the engine's structs.
//
// These are most of what a node answers. Building the message costs an allocation per field
// name, value, version and nested message, and then a pass to serialize it; the writers here
// size the body first and put the same bytes into the output buffer in one pass with no
// allocation. tests/unit/daemon/session_wire_test.cc holds them to protobuf's serialization of
// the messages to_wire builds, byte for byte.
#pragma once

#include <string>
#include <string_view>

#include "protocol/sessiond.pb.h"
#include "storage/session.h"
#include "storage/session_table.h"

namespace sessiond::daemon {

// The message for an access-history entry.
void to_wire(const storage::AccessEntry& e, wire::AccessEntry* out);

// The message for `s`, whose id goes on the wire as `wire_id` (raw, or signed: id || tag).
void to_wire(const storage::Session& s, std::string wire_id, wire::Session* out);

// The message for `m`, whose id goes on the wire as `wire_id`.
void to_wire(const storage::SessionMeta& m, std::string wire_id, wire::SessionMeta* out);

// Append what wire::GetResponse{session = to_wire(s, wire_id)} (no detections), and what
// wire::{Create,Update,Touch,Regenerate}Response{session = to_wire(m, wire_id)} serialize to;
// return the number of bytes appended.
std::size_t append_get_response(const storage::Session& s, std::string_view wire_id,
                                std::string* out);
std::size_t append_meta_response(const storage::SessionMeta& m, std::string_view wire_id,
                                 std::string* out);

}  // namespace sessiond::daemon
