// Hybrid logical clock (DESIGN §7): stamps every write with a timestamp that follows wall time,
// never goes backwards on this node, and moves past every timestamp the node has observed.
//
// A timestamp is one uint64: physical milliseconds in the high 48 bits, a logical counter in
// the low 16. It lives in storage because every record carries a version from its first write;
// replication uses the same clock to merge.
#pragma once

#include <atomic>
#include <cstdint>

#include "storage/clock.h"

namespace sessiond::storage {

class HybridLogicalClock {
 public:
  explicit HybridLogicalClock(const Clock& clock) : clock_(clock) {}

  // A timestamp greater than every one returned or observed before. Thread-safe, lock-free.
  std::uint64_t now() { return now_at(clock_.now_ms()); }
  // The same, with the clock's time already read by the caller (one reading instead of two).
  std::uint64_t now_at(std::int64_t wall_ms);
  // Moves the clock past `timestamp` (from a loaded record or a peer). Thread-safe.
  void observe(std::uint64_t timestamp);
  // The last timestamp returned or observed (the high-water mark to persist).
  std::uint64_t last() const { return last_.load(std::memory_order_relaxed); }

  static constexpr std::uint64_t physical_ms(std::uint64_t ts) { return ts >> 16; }
  static constexpr std::uint64_t pack(std::uint64_t ms, std::uint64_t logical) {
    return (ms << 16) | (logical & 0xffff);
  }

 private:
  const Clock& clock_;
  std::atomic<std::uint64_t> last_{0};
};

}  // namespace sessiond::storage
