// base64url without padding (RFC 4648 §5): the text form of session ids (storage, the client
// library) and the parts of tokens and cookies (client/tokens). One implementation for every
// module; it depends on nothing but Status.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "protocol/status.h"

namespace sessiond {

// Characters that `bytes` bytes encode to: ceil(8 * bytes / 6).
constexpr std::size_t base64url_encoded_size(std::size_t bytes) { return (bytes * 8 + 5) / 6; }

// base64url without padding, as session ids and JWTs use it.
std::string base64url_encode(std::string_view bytes);

// Refuses padding, characters outside the alphabet, lengths no encoding has (4k + 1) and
// non-canonical trailing bits (so every byte string has exactly one text form).
Result<std::string> base64url_decode(std::string_view text);

// As base64url_decode, into `out`, which must be exactly as long as `text` decodes to
// (INVALID_ARGUMENT otherwise): no allocation, for fixed-size values such as session ids.
Status base64url_decode_to(std::string_view text, std::span<std::uint8_t> out);

}  // namespace sessiond
