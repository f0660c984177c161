// Session ids as the client library hands them out: the 43-character text form, or 64 characters
// for a signed id (docs/security.md).
//
// On the wire an id is 32 raw bytes, or 48 when the node signs it (the id and a 16-byte HMAC
// tag; docs/protocol.md); everywhere in this library's API it is its text form, base64url
// without padding (RFC 4648 §5), which is what applications put in cookies and logs. These
// helpers convert between the two.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/base64url.h"  // base64url_encode, base64url_decode
#include "protocol/status.h"

namespace sessiond {

inline constexpr std::size_t kSessionIdBytes = 32;
inline constexpr std::size_t kSessionIdTextLength = 43;
inline constexpr std::size_t kSignedSessionIdBytes = 48;
inline constexpr std::size_t kSignedSessionIdTextLength = 64;

// True when `text` is a well-formed id: 43 (or, signed, 64) characters of [A-Za-z0-9_-] whose
// last character carries no stray bits (so every id has exactly one text form). Whether a
// signed id's tag is right only the node can tell.
bool is_valid_session_id(std::string_view text);

// The 32 (or 48) raw bytes of a text id; nullopt when `text` is not a well-formed id.
std::optional<std::string> session_id_to_bytes(std::string_view text);

// The text form of 32 or 48 raw bytes; an empty string for any other length.
std::string session_id_from_bytes(std::string_view bytes);

}  // namespace sessiond
