// base64url without padding (RFC 4648 §5): session ids (32 bytes = 43 characters, the last one
// carrying 4 bits of data and 2 zero bits; signed ids 48 bytes = 64 characters) and tokens.
#include "sessiond/session_id.h"

#include <array>
#include <cstdint>

namespace sessiond {
namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Value of a base64url character, or -1.
constexpr std::array<std::int8_t, 256> make_decode_table() {
  std::array<std::int8_t, 256> table{};
  for (auto& entry : table) entry = -1;
  for (std::size_t i = 0; i < kAlphabet.size(); ++i) {
    table[static_cast<unsigned char>(kAlphabet[i])] = static_cast<std::int8_t>(i);
  }
  return table;
}
constexpr auto kDecode = make_decode_table();

}  // namespace

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::uint32_t bits = 0;
  int bit_count = 0;
  for (char c : bytes) {
    bits = (bits << 8) | static_cast<unsigned char>(c);
    bit_count += 8;
    while (bit_count >= 6) {
      bit_count -= 6;
      out.push_back(kAlphabet[(bits >> bit_count) & 63]);
    }
  }
  if (bit_count > 0) out.push_back(kAlphabet[(bits << (6 - bit_count)) & 63]);
  return out;
}

Result<std::string> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) return Status::InvalidArgument("not base64url (length)");
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t bits = 0;
  int bit_count = 0;
  for (char c : text) {
    const int value = kDecode[static_cast<unsigned char>(c)];
    if (value < 0) return Status::InvalidArgument("not base64url (character)");
    bits = (bits << 6) | static_cast<std::uint32_t>(value);
    bit_count += 6;
    if (bit_count >= 8) {
      bit_count -= 8;
      out.push_back(static_cast<char>((bits >> bit_count) & 0xFF));
    }
  }
  // The bits left over must be zero for the text to be canonical.
  if ((bits & ((1u << bit_count) - 1)) != 0) {
    return Status::InvalidArgument("not base64url (trailing bits)");
  }
  return out;
}

std::optional<std::string> session_id_to_bytes(std::string_view text) {
  if (text.size() != kSessionIdTextLength && text.size() != kSignedSessionIdTextLength) {
    return std::nullopt;
  }
  auto bytes = base64url_decode(text);
  if (!bytes.ok()) return std::nullopt;
  return std::move(bytes).value();
}

bool is_valid_session_id(std::string_view text) { return session_id_to_bytes(text).has_value(); }

std::string session_id_from_bytes(std::string_view bytes) {
  if (bytes.size() != kSessionIdBytes && bytes.size() != kSignedSessionIdBytes) return {};
  return base64url_encode(bytes);
}

}  // namespace sessiond
