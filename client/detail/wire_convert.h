// Conversions between the public types (sessiond/types.h) and the wire messages (internal).
// Requests are validated here, before anything is sent: an id that is not a session id or a
// negative timeout is INVALID_ARGUMENT without a round trip.
#pragma once

#include <string_view>
#include <vector>

#include "protocol/sessiond.pb.h"
#include "protocol/status.h"
#include "sessiond/types.h"

namespace sessiond::client_detail {

// The raw id of a text id, into `out`; INVALID_ARGUMENT naming `what` when it is malformed.
Status id_to_wire(std::string_view text, std::string_view what, std::string* out);

Status to_wire(const CreateOptions& in, wire::CreateRequest* out);
Status to_wire(std::string_view id, const GetOptions& in, wire::GetRequest* out);
Status to_wire(std::string_view id, const UpdateOptions& in, wire::UpdateRequest* out);
Status to_wire(std::string_view id, const RegenerateOptions& in, wire::RegenerateRequest* out);

SessionMeta from_wire(const wire::SessionMeta& in);
// The session and what hijack detection reported with it. Its strings are moved out of `in`
// (a parsed answer, about to be dropped) rather than copied.
Session from_wire(wire::GetResponse&& in);
AccessEntry from_wire(const wire::AccessEntry& in);
PingResult from_wire(const wire::PingResponse& in);
Stats from_wire(const wire::StatsResponse& in);

}  // namespace sessiond::client_detail
