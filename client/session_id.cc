// Session ids in text form: base64url (protocol/base64url.h) of 32 bytes = 43 characters, the last
// one carrying 4 bits of data and 2 zero bits; signed ids 48 bytes = 64 characters.
#include "sessiond/session_id.h"

namespace sessiond {

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
