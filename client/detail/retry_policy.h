// When and how soon the client tries again after a connection failed (internal).
//
// A call that was never written to a socket can always be tried again: the node cannot have
// seen it. A call that was written is tried again only when it is idempotent (reading it twice
// does no harm). Either way only while its deadline has not passed and it has attempts left.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>

namespace sessiond::client_detail {

struct RetryPolicy {
  std::chrono::milliseconds initial{10};
  std::chrono::milliseconds max{1000};
  double multiplier = 2.0;
  int max_retries = 4;

  // Wait before reconnecting after `failures` consecutive failures (>= 1): initial,
  // initial * multiplier, ... capped at max.
  std::chrono::milliseconds delay(int failures) const {
    if (failures <= 1) return std::min(initial, max);
    const double factor = std::pow(std::max(multiplier, 1.0), failures - 1);
    const double ms = static_cast<double>(initial.count()) * factor;
    if (!(ms < static_cast<double>(max.count()))) return max;  // also catches inf
    return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
  }

  // Whether a call whose connection failed may be attempted again. `attempts` counts the
  // attempts made so far (sends, or connects while it waited).
  bool may_retry(bool idempotent, bool sent, int attempts,
                 std::chrono::steady_clock::time_point deadline,
                 std::chrono::steady_clock::time_point now) const {
    if (now >= deadline) return false;
    if (sent && !idempotent) return false;
    return attempts <= max_retries;
  }
};

}  // namespace sessiond::client_detail
