// Status and Result<T>: how every fallible operation in sessiond reports its outcome.
//
// StatusCode is the one enum shared by the engine, the daemon, the wire protocol and the client
// (DESIGN §4). Expected outcomes (NOT_FOUND, EXPIRED, VERSION_CONFLICT) are statuses, not
// errors to log. A Status carries a message a human can act on; an OK status allocates nothing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace sessiond {

// Wire values are fixed: never renumber, only append.
enum class StatusCode : std::uint8_t {
  kOk = 0,
  kNotFound = 1,
  kExpired = 2,
  kContextMismatch = 3,
  kVersionConflict = 4,
  kWrongNode = 5,
  kUnauthenticated = 6,
  kForbidden = 7,
  kInvalidArgument = 8,
  kTooLarge = 9,
  kOverloaded = 10,
  kUnavailable = 11,
  kInternal = 12,
  kHijackSuspected = 13,  // hijack detection ended the session (or the user's sessions)
  // A read asked for at least a version this node has not reached yet (read-your-writes across
  // regions, docs/regions.md): another region may have it.
  kBehind = 14,
};

// Upper-case protocol name of a code ("NOT_FOUND"); "UNKNOWN" for values outside the enum.
std::string_view status_code_name(StatusCode code);

class Status {
 public:
  // An OK status.
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  static Status NotFound(std::string msg = {}) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status Expired(std::string msg = {}) { return {StatusCode::kExpired, std::move(msg)}; }
  static Status ContextMismatch(std::string msg = {}) {
    return {StatusCode::kContextMismatch, std::move(msg)};
  }
  static Status VersionConflict(std::string msg = {}) {
    return {StatusCode::kVersionConflict, std::move(msg)};
  }
  static Status InvalidArgument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status TooLarge(std::string msg) { return {StatusCode::kTooLarge, std::move(msg)}; }
  static Status Overloaded(std::string msg) { return {StatusCode::kOverloaded, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "OK", or "NOT_FOUND" / "NOT_FOUND: <message>".
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or the Status that explains why there is none. Never holds an OK status without a
// value.
template <typename T>
class Result {
 public:
  Result(T value) : state_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : state_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(state_); }
  // The status: OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(state_); }
  StatusCode code() const { return ok() ? StatusCode::kOk : std::get<Status>(state_).code(); }

  // The value; only valid when ok().
  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace sessiond
