#include "storage/hlc.h"

#include <algorithm>

namespace sessiond::storage {

std::uint64_t HybridLogicalClock::now_at(std::int64_t wall_ms) {
  const auto wall = pack(static_cast<std::uint64_t>(std::max<std::int64_t>(wall_ms, 0)), 0);
  std::uint64_t last = last_.load(std::memory_order_relaxed);
  for (;;) {
    // Wall time ahead: take it. Otherwise tick the logical counter (it overflows into the
    // physical part after 65536 writes in one ms, which keeps the order total).
    const std::uint64_t next = wall > last ? wall : last + 1;
    if (last_.compare_exchange_weak(last, next, std::memory_order_relaxed)) return next;
  }
}

void HybridLogicalClock::observe(std::uint64_t timestamp) {
  std::uint64_t last = last_.load(std::memory_order_relaxed);
  while (timestamp > last &&
         !last_.compare_exchange_weak(last, timestamp, std::memory_order_relaxed)) {
  }
}

}  // namespace sessiond::storage
