#include "protocol/frame.h"

#include <google/protobuf/message_lite.h>

#include <algorithm>
#include <functional>
#include <string>
#include <string_view>

namespace sessiond::protocol {
namespace {

constexpr std::uint8_t kMagic0 = 'S';
constexpr std::uint8_t kMagic1 = 'D';

std::uint16_t load16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}

std::uint32_t load32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

void store16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v);
  p[1] = static_cast<std::uint8_t>(v >> 8);
}

void store32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

Decoded error(Status status, bool framing_lost) {
  Decoded d;
  d.kind = Decoded::Kind::kError;
  d.error = std::move(status);
  d.framing_lost = framing_lost;
  return d;
}

}  // namespace

bool is_known_opcode(std::uint16_t opcode) {
  return (opcode >= static_cast<std::uint16_t>(Opcode::kPing) &&
          opcode <= static_cast<std::uint16_t>(Opcode::kRepair)) ||
         (opcode >= static_cast<std::uint16_t>(Opcode::kReplicate) &&
          opcode <= static_cast<std::uint16_t>(Opcode::kDigest));
}

std::string_view opcode_name(Opcode opcode) {
  switch (opcode) {
    case Opcode::kPing:
      return "PING";
    case Opcode::kAuth:
      return "AUTH";
    case Opcode::kCreate:
      return "CREATE";
    case Opcode::kGet:
      return "GET";
    case Opcode::kUpdate:
      return "UPDATE";
    case Opcode::kTouch:
      return "TOUCH";
    case Opcode::kDestroy:
      return "DESTROY";
    case Opcode::kRegenerate:
      return "REGENERATE";
    case Opcode::kListUser:
      return "LIST_USER";
    case Opcode::kRevokeUser:
      return "REVOKE_USER";
    case Opcode::kAccessLog:
      return "ACCESS_LOG";
    case Opcode::kStats:
      return "STATS";
    case Opcode::kTopology:
      return "TOPOLOGY";
    case Opcode::kRepair:
      return "REPAIR";
    case Opcode::kReplicate:
      return "REPLICATE";
    case Opcode::kMigrate:
      return "MIGRATE";
    case Opcode::kDigest:
      return "DIGEST";
  }
  return "UNKNOWN";
}

void encode_header(const FrameHeader& h, std::uint8_t* out) {
  out[0] = kMagic0;
  out[1] = kMagic1;
  out[2] = h.version;
  out[3] = h.flags;
  store16(out + 4, h.opcode);
  out[6] = static_cast<std::uint8_t>(h.status);
  out[7] = 0;
  store32(out + 8, h.request_id);
  store32(out + 12, h.body_length);
}

Decoded decode_frame(std::span<const std::uint8_t> buffer, std::uint32_t max_body) {
  Decoded d;
  if (buffer.size() < kHeaderSize) {
    // Reject a wrong magic as soon as its bytes are there, so that a client speaking another
    // protocol (HTTP, RESP, TLS) is told at once instead of waiting for 16 bytes.
    if ((!buffer.empty() && buffer[0] != kMagic0) || (buffer.size() > 1 && buffer[1] != kMagic1)) {
      return error(Status::InvalidArgument("not a sessiond frame (bad magic)"), true);
    }
    d.need = kHeaderSize;
    return d;
  }
  const std::uint8_t* p = buffer.data();
  if (p[0] != kMagic0 || p[1] != kMagic1) {
    return error(Status::InvalidArgument("not a sessiond frame (bad magic)"), true);
  }
  FrameHeader& h = d.header;
  h.version = p[2];
  h.flags = p[3];
  h.opcode = load16(p + 4);
  h.status = static_cast<StatusCode>(p[6]);
  h.request_id = load32(p + 8);
  h.body_length = load32(p + 12);
  if (h.version != kProtocolVersion) {
    Decoded e = error(
        Status::InvalidArgument("unsupported protocol version " + std::to_string(h.version) +
                                " (this node speaks " + std::to_string(kProtocolVersion) + ")"),
        true);
    e.header = h;
    return e;
  }
  const std::uint8_t allowed = (h.flags & kFlagResponse) != 0
                                   ? (kFlagResponse | kFlagNewerEpoch | kFlagPossiblyStale)
                                   : kFlagResponse;
  if ((h.flags & ~allowed) != 0 || p[7] != 0) {
    Decoded e = error(Status::InvalidArgument("reserved header bits are set"), true);
    e.header = h;
    return e;
  }
  if (h.body_length > max_body) {
    Decoded e = error(Status::TooLarge("frame body of " + std::to_string(h.body_length) +
                                       " bytes exceeds the limit of " + std::to_string(max_body)),
                      true);
    e.header = h;
    return e;
  }
  const std::size_t total = kHeaderSize + h.body_length;
  if (buffer.size() < total) {
    d.need = total;
    return d;
  }
  // Only requests must name a known operation: a response echoes whatever its request named
  // (an error answering an unknown opcode, or opcode 0 when no request was read) and is
  // matched by its request id.
  if (!h.is_response() && !is_known_opcode(h.opcode)) {
    Decoded e = error(Status::InvalidArgument("unknown opcode " + std::to_string(h.opcode)), false);
    e.header = h;
    e.consumed = total;
    return e;
  }
  d.kind = Decoded::Kind::kFrame;
  d.body = buffer.subspan(kHeaderSize, h.body_length);
  d.consumed = total;
  return d;
}

std::string printable_text(std::string_view text, std::size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  for (std::size_t i = 0; i < text.size();) {
    const unsigned char c = byte(i);
    // Length and first continuation range of a well-formed sequence (Unicode Table 3-7):
    // no overlong forms, no surrogates, nothing past U+10FFFF.
    std::size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      n = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
      if (c == 0xC2) lo = 0xA0;  // not the C1 controls U+0080..U+009F
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    bool ok = n > 0 && i + n <= text.size();
    for (std::size_t k = 1; ok && k < n; ++k) {
      const unsigned char b = byte(i + k);
      ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    }
    // U+202A..U+202E and U+2066..U+2069 (E2 80 AA..AE, E2 81 A6..A9) reorder text on display.
    if (ok && n == 3 && c == 0xE2) {
      const unsigned char b1 = byte(i + 1), b2 = byte(i + 2);
      if ((b1 == 0x80 && b2 >= 0xAA && b2 <= 0xAE) || (b1 == 0x81 && b2 >= 0xA6 && b2 <= 0xA9)) {
        ok = false;
      }
    }
    const std::size_t adds = ok ? n : 4;
    if (out.size() + adds > max_bytes) {
      out += "...";
      break;
    }
    if (ok) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
      ++i;
    }
  }
  return out;
}

Status append_frame(FrameHeader header, const google::protobuf::MessageLite& body, std::string* out,
                    std::uint32_t max_body) {
  const std::size_t size = body.ByteSizeLong();
  if (size > max_body) {
    return Status::TooLarge("response body of " + std::to_string(size) +
                            " bytes exceeds the frame limit of " + std::to_string(max_body));
  }
  header.body_length = static_cast<std::uint32_t>(size);
  const std::size_t start = out->size();
  out->resize(start + kHeaderSize + size);
  auto* dst = reinterpret_cast<std::uint8_t*>(out->data() + start);
  encode_header(header, dst);
  body.SerializeWithCachedSizesToArray(dst + kHeaderSize);
  return {};
}

Status parse_body(std::span<const std::uint8_t> body, Opcode opcode,
                  google::protobuf::MessageLite* message) {
  if (!message->ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return Status::InvalidArgument("body of " + std::string(opcode_name(opcode)) +
                                   " does not parse as " + message->GetTypeName());
  }
  return {};
}

namespace {

bool read_varint(std::span<const std::uint8_t> body, std::size_t* at, std::uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*at >= body.size()) return false;
    const std::uint8_t b = body[(*at)++];
    *v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// Calls fn(field, begin, end, value_empty) for each top-level field ([begin, end) spans its tag
// and value); false when the body is not well-formed.
template <typename Fn>
bool for_each_field(std::span<const std::uint8_t> body, Fn&& fn) {
  std::size_t at = 0;
  while (at < body.size()) {
    const std::size_t begin = at;
    std::uint64_t tag = 0;
    if (!read_varint(body, &at, &tag)) return false;
    const auto field = static_cast<std::uint32_t>(tag >> 3);
    if (field == 0) return false;
    std::uint64_t value = 0;
    bool empty = false;
    switch (tag & 7) {
      case 0:
        if (!read_varint(body, &at, &value)) return false;
        empty = value == 0;
        break;
      case 1:
        if (body.size() - at < 8) return false;
        at += 8;
        break;
      case 2:
        if (!read_varint(body, &at, &value) || value > body.size() - at) return false;
        at += static_cast<std::size_t>(value);
        empty = value == 0;
        break;
      case 5:
        if (body.size() - at < 4) return false;
        at += 4;
        break;
      default:
        return false;
    }
    fn(field, begin, at, empty);
  }
  return true;
}

std::uint64_t hash_bytes(std::span<const std::uint8_t> bytes) {
  return std::hash<std::string_view>{}(
      std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace

bool has_field(std::span<const std::uint8_t> body, std::uint32_t field) {
  bool found = false;
  const bool ok = for_each_field(body, [&](std::uint32_t f, std::size_t, std::size_t, bool empty) {
    if (f == field && !empty) found = true;
  });
  return ok && found;
}

std::uint64_t hash_without_field(std::span<const std::uint8_t> body, std::uint32_t skip) {
  // The common case, the skipped field last or absent, hashes a prefix without a copy.
  std::size_t kept_end = 0;
  bool contiguous = true;
  bool skipped = false;
  const bool ok =
      for_each_field(body, [&](std::uint32_t f, std::size_t begin, std::size_t end, bool) {
        if (f == skip) {
          skipped = true;
        } else {
          if (skipped || begin != kept_end) contiguous = false;
          kept_end = end;
        }
      });
  if (!ok) return hash_bytes(body);
  if (contiguous) return hash_bytes(body.first(kept_end));
  std::string kept;
  for_each_field(body, [&](std::uint32_t f, std::size_t begin, std::size_t end, bool) {
    if (f != skip) kept.append(reinterpret_cast<const char*>(body.data()) + begin, end - begin);
  });
  return std::hash<std::string_view>{}(kept);
}

}  // namespace sessiond::protocol
