// The parts of sessctl that do not talk to a node: argument parsing, exit codes, and the two
// output formats (human-readable text, and JSON written with nlohmann-json). Internal to
// sessctl and its tests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/status.h"
#include "sessiond/types.h"

namespace sessiond::sessctl {

// Exit codes (also in `sessctl --help`).
inline constexpr int kExitOk = 0;
inline constexpr int kExitNotFound = 1;     // NOT_FOUND or EXPIRED
inline constexpr int kExitUsage = 2;        // bad command line, or an argument the node refused
inline constexpr int kExitUnreachable = 3;  // no connection, no answer in time, node unavailable
inline constexpr int kExitRefused = 4;      // any other status (VERSION_CONFLICT, TOO_LARGE, ...)

// The exit code for a status code.
int exit_code_for(StatusCode code);

// Splits "name=value" at the first '='; the value may be empty or contain '='. INVALID_ARGUMENT
// when there is no '=' or the name is empty.
Result<FieldValue> parse_key_value(std::string_view text);

// `bytes` as text for JSON: valid UTF-8 is kept; every other byte becomes the character
// U+00XX (the byte read as Latin-1), so binary values survive as readable but not byte-exact
// text. The JSON output (nlohmann-json) holds only strings made by it: it cannot write others.
std::string readable_utf8(std::string_view bytes);
// readable_utf8(bytes) as a quoted JSON string.
std::string json_string(std::string_view bytes);

// "2026-11-25T14:12:03.123Z"; "never" for INT64_MAX.
std::string format_time_ms(std::int64_t ms_since_epoch);

std::string to_json(const SessionMeta& meta);
std::string to_json(const Session& session);
std::string to_json(const std::vector<SessionMeta>& sessions);
std::string to_json(const std::vector<AccessEntry>& entries);
std::string to_json(const Stats& stats);
// One peer region's replication and repair figures (in `stats` and `cluster status`).
std::string to_json(const PeerRegionStats& region);
std::string to_json(const PingResult& ping);
std::string to_json(const Topology& topology);
// {"error":{"code":"NOT_FOUND","message":"..."}}
std::string json_error(const Status& status);

std::string to_text(const SessionMeta& meta);
std::string to_text(const Session& session);
std::string to_text(const std::vector<SessionMeta>& sessions);
std::string to_text(const std::vector<AccessEntry>& entries);
std::string to_text(const Stats& stats);
// One line about a peer region (in `stats` and `cluster status`).
std::string to_text(const PeerRegionStats& region);
std::string to_text(const PingResult& ping);
// "epoch 7, region eu, from HOST:PORT", then one line per node: id, address, number, weight.
std::string to_text(const Topology& topology);

}  // namespace sessiond::sessctl
