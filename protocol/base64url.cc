#include "protocol/base64url.h"

#include <array>

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

// Bytes that `length` characters decode to (the leftover 2 or 4 bits must be zero).
constexpr std::size_t decoded_size(std::size_t length) { return length * 6 / 8; }

}  // namespace

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve(base64url_encoded_size(bytes.size()));
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

Status base64url_decode_to(std::string_view text, std::span<std::uint8_t> out) {
  if (text.size() % 4 == 1 || out.size() != decoded_size(text.size())) {
    return Status::InvalidArgument("not base64url (length)");
  }
  std::uint32_t bits = 0;
  int bit_count = 0;
  std::size_t pos = 0;
  for (char c : text) {
    const int value = kDecode[static_cast<unsigned char>(c)];
    if (value < 0) return Status::InvalidArgument("not base64url (character)");
    bits = (bits << 6) | static_cast<std::uint32_t>(value);
    bit_count += 6;
    if (bit_count >= 8) {
      bit_count -= 8;
      out[pos++] = static_cast<std::uint8_t>((bits >> bit_count) & 0xFF);
    }
  }
  // The bits left over must be zero for the text to be canonical.
  if ((bits & ((1u << bit_count) - 1)) != 0) {
    return Status::InvalidArgument("not base64url (trailing bits)");
  }
  return {};
}

Result<std::string> base64url_decode(std::string_view text) {
  // Checked here too, so that a bad length never sizes the buffer.
  if (text.size() % 4 == 1) return Status::InvalidArgument("not base64url (length)");
  std::string out(decoded_size(text.size()), '\0');
  if (Status s = base64url_decode_to(
          text, std::span(reinterpret_cast<std::uint8_t*>(out.data()), out.size()));
      !s.ok()) {
    return s;
  }
  return out;
}

}  // namespace sessiond
