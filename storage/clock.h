// Where the engine gets the time. Production uses SystemClock (wall time, because deadlines are
// persisted and shared between nodes); tests use ManualClock and move time without sleeping.
#pragma once

#include <atomic>
#include <cstdint>

namespace sessiond::storage {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch. Thread-safe.
  virtual std::int64_t now_ms() const = 0;
};

// std::chrono::system_clock.
class SystemClock final : public Clock {
 public:
  std::int64_t now_ms() const override;
  // The process-wide instance.
  static SystemClock& instance();
};

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  std::int64_t now_ms() const override { return now_.load(std::memory_order_relaxed); }
  void set_ms(std::int64_t ms) { now_.store(ms, std::memory_order_relaxed); }
  void advance_ms(std::int64_t ms) { now_.fetch_add(ms, std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> now_;
};

}  // namespace sessiond::storage
