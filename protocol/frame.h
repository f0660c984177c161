// Frames of the sessiond wire protocol (docs/protocol.md is normative).
//
// A frame is a 16-byte little-endian header followed by a Protocol Buffers body:
//
//   offset size  field
//   0      2     magic, the bytes 'S' 'D'
//   2      1     protocol version (1)
//   3      1     flags: bit 0 = response; bit 1 = newer epoch (responses); others must be 0
//   4      2     opcode
//   6      1     status (responses; 0 in requests)
//   7      1     reserved, 0
//   8      4     request id, chosen by the client, echoed by the response
//   12     4     body length in bytes
//
// decode_frame() checks the whole header before it looks at a single body byte and never
// allocates: a length over the limit, an unknown opcode or a bad magic are answered from the
// header alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "protocol/status.h"

namespace google::protobuf {
class MessageLite;
}

namespace sessiond::protocol {

inline constexpr std::size_t kHeaderSize = 16;
inline constexpr std::uint8_t kProtocolVersion = 1;
inline constexpr std::uint32_t kDefaultMaxBody = 1u << 20;  // 1 MiB
inline constexpr std::uint8_t kFlagResponse = 0x01;
// In a response: the node's topology epoch is newer than the one the request carried (a routing
// client refreshes its topology; docs/cluster.md). Only set for requests with an epoch.
inline constexpr std::uint8_t kFlagNewerEpoch = 0x02;
// In a response: served by a replica (a GET with from_replica), which may not have the owner's
// latest writes.
inline constexpr std::uint8_t kFlagPossiblyStale = 0x04;

// Wire values are fixed: never renumber. 64 and up are internal (node to node).
enum class Opcode : std::uint16_t {
  kPing = 1,
  kAuth = 2,
  kCreate = 3,
  kGet = 4,
  kUpdate = 5,
  kTouch = 6,
  kDestroy = 7,
  kRegenerate = 8,
  kListUser = 9,
  kRevokeUser = 10,
  kAccessLog = 11,
  kStats = 12,
  kTopology = 13,
  kRepair = 14,
  kReplicate = 64,
  kMigrate = 65,
  kDigest = 66,
};

// True for every opcode above, internal ones included.
bool is_known_opcode(std::uint16_t opcode);
// "CREATE", or "UNKNOWN".
std::string_view opcode_name(Opcode opcode);

struct FrameHeader {
  std::uint8_t version = kProtocolVersion;
  std::uint8_t flags = 0;
  std::uint16_t opcode = 0;
  StatusCode status = StatusCode::kOk;
  std::uint32_t request_id = 0;
  std::uint32_t body_length = 0;

  bool is_response() const { return (flags & kFlagResponse) != 0; }
};

// Writes the 16 header bytes.
void encode_header(const FrameHeader& header, std::uint8_t* out);

struct Decoded {
  enum class Kind {
    kNeedMore,  // not a whole frame yet: read more bytes (at least `need` in all)
    kFrame,     // a frame: `header`, `body`; `consumed` bytes used
    kError,     // `error` says what is wrong; see framing_lost
  };
  Kind kind = Kind::kNeedMore;
  FrameHeader header;
  std::span<const std::uint8_t> body;
  std::size_t consumed = 0;  // bytes to drop from the front of the buffer
  std::size_t need = 0;      // with kNeedMore: total bytes the buffer must hold
  Status error;              // with kError
  // With kError: true when the stream can no longer be parsed (bad magic, version or reserved
  // bits, a body over the limit): answer if possible, then close. False when the frame was
  // well formed but unacceptable (unknown opcode): `consumed` skips it and the stream goes on.
  bool framing_lost = false;
};

// Decodes the first frame in `buffer`. Requests and responses alike; the caller checks
// header.is_response() against what it expects. The opcode is checked for requests only.
Decoded decode_frame(std::span<const std::uint8_t> buffer,
                     std::uint32_t max_body = kDefaultMaxBody);

// Appends a frame with `body` serialized after the header; header.body_length is set here.
// Fails with TOO_LARGE when the body would exceed max_body (nothing is appended).
Status append_frame(FrameHeader header, const google::protobuf::MessageLite& body, std::string* out,
                    std::uint32_t max_body = kDefaultMaxBody);

// `text` made fit for a protobuf `string` field (which must be valid UTF-8, or the receiver
// refuses the whole message) and for a terminal: valid UTF-8 sequences of printable characters
// are kept; every other byte (invalid UTF-8, C0 and C1 control characters, the bidirectional
// overrides and isolates that reorder what a terminal shows) and the backslash are written as
// \xNN. At most max_bytes of output, then "...". For error messages that quote a client.
std::string printable_text(std::string_view text, std::size_t max_bytes = SIZE_MAX);

// Parses a body into `message`; INVALID_ARGUMENT naming the opcode when it does not parse.
Status parse_body(std::span<const std::uint8_t> body, Opcode opcode,
                  google::protobuf::MessageLite* message);

// Reading a body's top-level fields without parsing it into a message (protobuf's wire format:
// varint, fixed64, length-delimited and fixed32 fields; a body with anything else, or cut
// short, is not well-formed here).
// Whether a well-formed body has field `field` at its top level with a non-empty value.
bool has_field(std::span<const std::uint8_t> body, std::uint32_t field);
// A hash of the body's bytes without its top-level occurrences of field `skip`: what tells two
// requests apart that differ in nothing else (a CREATE sent again under the same request id,
// routed by another epoch). A body that is not well-formed is hashed whole.
std::uint64_t hash_without_field(std::span<const std::uint8_t> body, std::uint32_t skip);

}  // namespace sessiond::protocol
