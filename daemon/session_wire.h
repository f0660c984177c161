// A session as the native protocol sends it (internal to the daemon): the wire::Session message
// built from a storage::Session, and the body of a GET answer written straight from one.
//
// GET is most of what a node answers. Building its wire::GetResponse costs an allocation per
// field name, value, version and nested message, and then a pass to serialize it; the writer
// here puts the same bytes into the output buffer in one pass with no allocation.
// tests/unit/daemon/session_wire_test.cc holds it to protobuf's serialization of the message
// to_wire builds, byte for byte.
#pragma once

#include <string>
#include <string_view>

#include "protocol/sessiond.pb.h"
#include "storage/session.h"

namespace sessiond::daemon {

// The message for an access-history entry.
void to_wire(const storage::AccessEntry& e, wire::AccessEntry* out);

// The message for `s`, whose id goes on the wire as `wire_id` (raw, or signed: id || tag).
void to_wire(const storage::Session& s, std::string wire_id, wire::Session* out);

// Appends what wire::GetResponse{session = to_wire(s, wire_id)} serializes to (no detections).
void append_get_response(const storage::Session& s, std::string_view wire_id, std::string* out);

}  // namespace sessiond::daemon
