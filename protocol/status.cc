#include "protocol/status.h"

namespace sessiond {

std::string_view status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kExpired:
      return "EXPIRED";
    case StatusCode::kContextMismatch:
      return "CONTEXT_MISMATCH";
    case StatusCode::kVersionConflict:
      return "VERSION_CONFLICT";
    case StatusCode::kWrongNode:
      return "WRONG_NODE";
    case StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    case StatusCode::kForbidden:
      return "FORBIDDEN";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kTooLarge:
      return "TOO_LARGE";
    case StatusCode::kOverloaded:
      return "OVERLOADED";
    case StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case StatusCode::kInternal:
      return "INTERNAL";
    case StatusCode::kHijackSuspected:
      return "HIJACK_SUSPECTED";
    case StatusCode::kBehind:
      return "BEHIND";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  std::string out(status_code_name(code_));
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

}  // namespace sessiond
