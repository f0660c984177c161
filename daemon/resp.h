// RESP2, the Redis protocol, as far as the RESP listener (DESIGN §10) needs it: parsing the
// commands clients send (arrays of bulk strings, and inline commands as redis-cli and telnet
// send them) and encoding replies.
//
// The parser never allocates on a length a client claims: it checks every array size and bulk
// length against Limits before anything else, and returns the arguments as views into the
// caller's buffer. Error texts are the ones Redis 7 sends, so clients that match on them work.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sessiond::daemon::resp {

struct Limits {
  std::size_t max_bulk_bytes = 1u << 20;     // one argument; Redis: proto-max-bulk-len
  std::size_t max_arguments = 1u << 16;      // per command
  std::size_t max_inline_bytes = 64u << 10;  // one inline command line (Redis: 64 KiB)
  // One whole command, all arguments together. Not checked by parse_command (which does not
  // see partial commands' totals); the reader refuses to buffer more than this.
  std::size_t max_command_bytes = 8u << 20;
};

struct Parsed {
  enum class Kind {
    kCommand,   // `args` holds the command and its arguments; `consumed` bytes used
    kNeedMore,  // not a whole command yet
    kEmpty,     // an empty inline line (skipped, as Redis does); `consumed` bytes used
    kError,     // a protocol error: reply `error` (an "ERR Protocol error: ..." text), then
                // close the connection, as Redis does
  };
  Kind kind = Kind::kNeedMore;
  std::size_t consumed = 0;
  std::string error;
};

// Parses the first command in `buffer`. With kCommand, `args` holds views into `buffer`, or,
// for quoted inline arguments, into decoded copies kept per thread: they are valid until the
// buffer changes or parse_command is called again on this thread.
Parsed parse_command(std::string_view buffer, const Limits& limits,
                     std::vector<std::string_view>* args);

// Reply encoders: each appends one RESP2 value to *out.
void append_simple(std::string* out, std::string_view text);    // +OK
void append_error(std::string* out, std::string_view text);     // -ERR ... (no CR/LF inside)
void append_integer(std::string* out, std::int64_t value);      // :42
void append_bulk(std::string* out, std::string_view value);     // $5\r\nhello
void append_null(std::string* out);                             // $-1 (nil)
void append_array_header(std::string* out, std::size_t count);  // *3
void append_null_array(std::string* out);                       // *-1

// A command as a client sends it: an array of bulk strings (for forwarding to another node).
void append_command(std::string* out, std::span<const std::string_view> args);
// The length of the first whole RESP2 reply in `buffer` (simple string, error, integer, bulk,
// array, nested): 0 when it is not complete yet; std::string_view::npos when it is not RESP.
std::size_t reply_length(std::string_view buffer);

// Where a command's keys are (cluster routing, docs/cluster.md "RESP in a cluster").
enum class KeySpan {
  kNone,       // no key (PING, AUTH, INFO, ...): run where it arrives
  kFirst,      // args[1]
  kAll,        // args[1..] (MGET, DEL, UNLINK, EXISTS)
  kFirstTwo,   // args[1], args[2] (RENAME)
  kWatch,      // args[1..] (WATCH): like kAll, but never forwarded (the watch is the connection's)
  kNodeLocal,  // this node's keys, as in Redis Cluster (SCAN, KEYS, DBSIZE)
  kRegion,     // would change every key of the region (FLUSHDB, FLUSHALL): refused
};
KeySpan key_span(std::string_view command);  // any case
// Whether a command may end keys' sessions (DEL, UNLINK, GETDEL, RENAME's source, the EXPIRE
// family, GETEX, HDEL/SREM/ZREM of the last member, EXEC): what --replica-ack terminal waits
// for (docs/cluster.md). Any case.
bool may_end_keys(std::string_view command);

}  // namespace sessiond::daemon::resp
