// AnchoredClock: the engine's time is a piecewise linear function of the monotonic clock.
//
// A segment starts at a re-anchoring (construction, each check, advance_to): there the time is
// `base_ms`, the monotonic clock reads `base_monotonic_ms`, and the wall clock is `gap_ms`
// ahead (negative: behind). Within the segment the time moves with the monotonic clock plus
// (or minus) slew_percent of it, until the gap is closed; then it moves with the monotonic
// clock alone. Each segment starts where the previous one stood, and both slopes are positive
// (slew_percent <= 90), so the time never goes back and never jumps, whatever the wall clock
// does. A reader combines the three numbers of one segment (a seqlock keeps them consistent)
// with one monotonic clock read; the greatest value returned so far (high_water_ms_) covers a
// reader that raced a re-anchoring within the same millisecond.
//
// A step is told from drift by where the wall clock should be: its reading at the previous
// check plus the monotonic time since. Both clocks are disciplined by NTP at the same rate, so
// between two checks they differ only when the wall clock is set.
#include "storage/clock.h"

#include <time.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <thread>

namespace sessiond::storage {
namespace {

std::int64_t read_ms(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);  // the vDSO: no system call
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

#ifdef SESSIOND_TEST_HOOKS
std::atomic<std::int64_t> test_offset_ms{0};  // SystemClock::set_test_offset_ms
#endif

class RealtimeClock final : public Clock {
 public:
  std::int64_t now_ms() const override {
#ifdef SESSIOND_TEST_HOOKS
    return read_ms(CLOCK_REALTIME) + test_offset_ms.load(std::memory_order_relaxed);
#else
    return read_ms(CLOCK_REALTIME);
#endif
  }
};

class BoottimeClock final : public Clock {
 public:
  std::int64_t now_ms() const override { return read_ms(CLOCK_BOOTTIME); }
};

const Clock& realtime_clock() {
  static const RealtimeClock clock;
  return clock;
}

const Clock& boottime_clock() {
  static const BoottimeClock clock;
  return clock;
}

AnchoredClockOptions sanitized(AnchoredClockOptions options) {
  options.step_threshold_ms = std::max<std::int64_t>(options.step_threshold_ms, 0);
  options.check_interval_ms = std::max<std::int64_t>(options.check_interval_ms, 0);
  options.slew_percent = std::clamp(options.slew_percent, 0, 90);
  return options;
}

constexpr std::int64_t kNoFloor = std::numeric_limits<std::int64_t>::min();

}  // namespace

AnchoredClock::AnchoredClock(const Clock& wall, const Clock& monotonic,
                             AnchoredClockOptions options)
    : wall_(wall), monotonic_(monotonic), options_(sanitized(options)) {
  const std::int64_t monotonic_ms = monotonic_.now_ms();
  const std::int64_t wall_ms = wall_.now_ms();
  base_ms_.store(wall_ms, std::memory_order_relaxed);
  base_monotonic_ms_.store(monotonic_ms, std::memory_order_relaxed);
  gap_ms_.store(0, std::memory_order_relaxed);
  high_water_ms_.store(wall_ms, std::memory_order_relaxed);
  next_check_monotonic_ms_.store(monotonic_ms + options_.check_interval_ms,
                                 std::memory_order_relaxed);
  last_wall_ms_ = wall_ms;
  last_wall_monotonic_ms_ = monotonic_ms;
}

std::int64_t AnchoredClock::at(const Segment& segment, std::int64_t monotonic_ms) const {
  const std::int64_t elapsed = std::max<std::int64_t>(monotonic_ms - segment.base_monotonic_ms, 0);
  const std::int64_t closed = elapsed * options_.slew_percent / 100;
  if (segment.gap_ms >= 0) return segment.base_ms + elapsed + std::min(segment.gap_ms, closed);
  return segment.base_ms + elapsed - std::min(-segment.gap_ms, closed);
}

AnchoredClock::Segment AnchoredClock::load_segment(std::int64_t* monotonic_ms) const {
  for (;;) {
    const std::uint64_t before = sequence_.load(std::memory_order_acquire);
    if ((before & 1) != 0) continue;  // a re-anchoring: two clock reads long
    const Segment segment{base_ms_.load(std::memory_order_relaxed),
                          base_monotonic_ms_.load(std::memory_order_relaxed),
                          gap_ms_.load(std::memory_order_relaxed)};
    // Read within the section, so that a segment is never applied to a monotonic time read
    // after the next one began.
    *monotonic_ms = monotonic_.now_ms();
    std::atomic_thread_fence(std::memory_order_acquire);
    if (sequence_.load(std::memory_order_relaxed) == before) return segment;
  }
}

std::int64_t AnchoredClock::now_ms() const {
  std::int64_t monotonic_ms = 0;
  Segment segment = load_segment(&monotonic_ms);
  if (monotonic_ms >= next_check_monotonic_ms_.load(std::memory_order_relaxed)) {
    recheck(false, kNoFloor);
    segment = load_segment(&monotonic_ms);
  }
  const std::int64_t engine_ms = at(segment, monotonic_ms);
  std::int64_t high = high_water_ms_.load(std::memory_order_relaxed);
  while (high < engine_ms &&
         !high_water_ms_.compare_exchange_weak(high, engine_ms, std::memory_order_relaxed)) {
  }
  return std::max(high, engine_ms);
}

void AnchoredClock::check() { recheck(true, kNoFloor); }

void AnchoredClock::advance_to(std::int64_t ms) { recheck(true, ms); }

void AnchoredClock::recheck(bool force, std::int64_t floor_ms) const {
  bool busy = false;
  while (!checking_.compare_exchange_weak(busy, true, std::memory_order_acquire)) {
    if (busy && !force) return;  // another thread is doing it
    busy = false;
    std::this_thread::yield();
  }
  // Odd: readers wait. The clocks are read after this, so that no reader applies the old
  // segment to a monotonic time later than the new segment's start.
  const std::uint64_t sequence = sequence_.fetch_add(1, std::memory_order_acq_rel);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const std::int64_t monotonic_ms = monotonic_.now_ms();
  const std::int64_t wall_ms = wall_.now_ms();
  const Segment previous{base_ms_.load(std::memory_order_relaxed),
                         base_monotonic_ms_.load(std::memory_order_relaxed),
                         gap_ms_.load(std::memory_order_relaxed)};
  const std::int64_t engine_ms = std::max(
      {at(previous, monotonic_ms), floor_ms, high_water_ms_.load(std::memory_order_relaxed)});
  base_ms_.store(engine_ms, std::memory_order_relaxed);
  base_monotonic_ms_.store(monotonic_ms, std::memory_order_relaxed);
  gap_ms_.store(wall_ms - engine_ms, std::memory_order_relaxed);
  sequence_.store(sequence + 2, std::memory_order_release);
  next_check_monotonic_ms_.store(monotonic_ms + options_.check_interval_ms,
                                 std::memory_order_relaxed);

  const std::int64_t step_ms = wall_ms - (last_wall_ms_ + (monotonic_ms - last_wall_monotonic_ms_));
  last_wall_ms_ = wall_ms;
  last_wall_monotonic_ms_ = monotonic_ms;
  checking_.store(false, std::memory_order_release);

  if (step_ms > options_.step_threshold_ms || -step_ms > options_.step_threshold_ms) {
    steps_.fetch_add(1, std::memory_order_relaxed);
    last_step_ms_.store(step_ms, std::memory_order_relaxed);
    if (StepObserver observer = observer_.load(std::memory_order_relaxed)) {
      observer(ClockStep{step_ms, wall_ms, engine_ms});
    }
  }
}

SystemClock::SystemClock() : AnchoredClock(realtime_clock(), boottime_clock()) {}

SystemClock& SystemClock::instance() {
  static SystemClock clock;
  return clock;
}

#ifdef SESSIOND_TEST_HOOKS
void SystemClock::set_test_offset_ms(std::int64_t ms) { test_offset_ms = ms; }
#endif

}  // namespace sessiond::storage
