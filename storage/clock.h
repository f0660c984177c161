// Where the engine gets the time. Production uses SystemClock: wall time (deadlines are persisted
// and shared between nodes) anchored to a monotonic clock, so that a step of the wall clock
// neither moves the engine's time back nor expires every session at once (docs/operations.md,
// "Clock steps"). Tests use ManualClock and move time without sleeping.
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

struct AnchoredClockOptions {
  // A wall clock reading further than this from where the monotonic clock says it should be
  // is a step: counted and reported. chrony's default `makestep` threshold; smaller
  // differences are NTP's routine corrections.
  std::int64_t step_threshold_ms = 1000;
  // How often now_ms() compares the wall clock with its own time (the caller that notices the
  // interval has passed does it).
  std::int64_t check_interval_ms = 1000;
  // How fast the clock closes a gap with the wall clock: it runs this many percent faster (wall
  // clock ahead) or slower (behind) than the monotonic clock until the gap is gone, so a step
  // of D ms is absorbed in D * 100 / slew_percent ms. 0 to 90; 0: never follow the wall clock.
  int slew_percent = 10;
};

// One step of the wall clock, as the clock saw it.
struct ClockStep {
  std::int64_t size_ms = 0;  // > 0: the wall clock jumped forward; < 0: backward
  std::int64_t wall_ms = 0;  // the wall clock's reading after the step
  std::int64_t time_ms = 0;  // this clock's time when the step was seen (it does not jump)
};

// Wall time that never goes backwards and never jumps: the wall clock read once, at
// construction, plus what the monotonic clock counted since. Every check_interval_ms it
// compares the wall clock with that; a difference over step_threshold_ms is a step (counted,
// reported to the observer). Any difference, a step or not, is closed gradually at
// slew_percent. now_ms() is lock-free: one monotonic clock read and a little arithmetic, plus a
// wall clock read once per interval. Thread-safe.
class AnchoredClock : public Clock {
 public:
  // Called by the thread that saw a step, once per step, holding no lock of the clock's.
  using StepObserver = void (*)(const ClockStep& step);

  // `wall`: milliseconds since the epoch; `monotonic`: milliseconds from any origin, never
  // decreasing. Both must outlive this clock.
  AnchoredClock(const Clock& wall, const Clock& monotonic, AnchoredClockOptions options = {});
  AnchoredClock(const AnchoredClock&) = delete;
  AnchoredClock& operator=(const AnchoredClock&) = delete;

  // Never less than a value returned before, by any thread.
  std::int64_t now_ms() const override;
  // Compares with the wall clock now, instead of waiting for the interval.
  void check();
  // From now on at least `ms` (e.g. the last time a previous run of the node persisted), even
  // when the wall clock is behind it; the gap then closes as after a backward step. Not a step.
  void advance_to(std::int64_t ms);

  // Steps seen since construction.
  std::uint64_t steps() const { return steps_.load(std::memory_order_relaxed); }
  // The size of the last step seen (signed, as ClockStep::size_ms); 0 before the first.
  std::int64_t last_step_ms() const { return last_step_ms_.load(std::memory_order_relaxed); }
  // The observer of steps; nullptr: none. Thread-safe.
  void set_step_observer(StepObserver observer) {
    observer_.store(observer, std::memory_order_relaxed);
  }
  const AnchoredClockOptions& options() const { return options_; }

 private:
  // Time since the last re-anchoring: `base_ms` at monotonic time `base_monotonic_ms`, then
  // the monotonic clock's pace with `gap_ms` (wall minus this clock then) closed at
  // slew_percent.
  struct Segment {
    std::int64_t base_ms;
    std::int64_t base_monotonic_ms;
    std::int64_t gap_ms;
  };
  std::int64_t at(const Segment& segment, std::int64_t monotonic_ms) const;
  Segment load_segment(std::int64_t* monotonic_ms) const;
  // Compares with the wall clock and re-anchors; `force`: wait for a concurrent check instead
  // of leaving it the work. `floor_ms`: the least time to re-anchor at (advance_to).
  void recheck(bool force, std::int64_t floor_ms) const;

  const Clock& wall_;
  const Clock& monotonic_;
  const AnchoredClockOptions options_;

  // The segment, published as a seqlock (odd sequence: being written) so that readers take
  // no lock. Written only by the holder of checking_.
  mutable std::atomic<std::uint64_t> sequence_{0};
  mutable std::atomic<std::int64_t> base_ms_{0};
  mutable std::atomic<std::int64_t> base_monotonic_ms_{0};
  mutable std::atomic<std::int64_t> gap_ms_{0};
  mutable std::atomic<std::int64_t> next_check_monotonic_ms_{0};
  // The greatest time returned: what makes "never less than before" hold across threads and
  // across a re-anchoring that races a reader.
  mutable std::atomic<std::int64_t> high_water_ms_{0};

  // Held by the one thread that compares with the wall clock and re-anchors; guards the
  // writes to the segment and last_wall_*.
  mutable std::atomic<bool> checking_{false};
  // The wall clock at the last check, and the monotonic time it was read at: where the wall
  // clock should be now, if it did not step.
  mutable std::int64_t last_wall_ms_ = 0;
  mutable std::int64_t last_wall_monotonic_ms_ = 0;

  mutable std::atomic<std::uint64_t> steps_{0};
  mutable std::atomic<std::int64_t> last_step_ms_{0};
  std::atomic<StepObserver> observer_{nullptr};
};

// The process's clock: AnchoredClock over the system's wall clock (CLOCK_REALTIME) and
// CLOCK_BOOTTIME, which keeps counting while the machine is suspended, so that a resume is not
// a step (the sessions that came due meanwhile expire at once, as they should).
class SystemClock final : public AnchoredClock {
 public:
  // The process-wide instance, default options.
  static SystemClock& instance();
#ifdef SESSIOND_TEST_HOOKS
  // Builds with test hooks only (CMake SESSIOND_TEST_HOOKS): the wall clock read as off by
  // `ms`, as on a node whose clock is wrong (the tests of the skew bound). Call before
  // instance() is first used.
  static void set_test_offset_ms(std::int64_t ms);
#endif

 private:
  SystemClock();
};

}  // namespace sessiond::storage
