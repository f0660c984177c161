// AnchoredClock over two ManualClocks: the "wall" clock is stepped back and forth, the
// "monotonic" one only advances, and the engine's time is held to its promises: never back,
// never a jump, steps over the threshold counted with their size, smaller differences closed
// without a count. No sleeps: time moves when a test moves it.
#include "storage/clock.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

namespace sessiond::storage {
namespace {

constexpr std::int64_t kStart = 1'700'000'000'000;
constexpr std::int64_t kSecond = 1000;
constexpr std::int64_t kHour = 3'600'000;

// A wall clock, a monotonic clock and an AnchoredClock over them. advance() is real time
// passing (both clocks move); wall.advance_ms() alone is the wall clock being set.
struct Clocks {
  explicit Clocks(AnchoredClockOptions options = {}) : clock(wall, monotonic, options) {}

  void advance(std::int64_t ms) {
    wall.advance_ms(ms);
    monotonic.advance_ms(ms);
  }

  ManualClock wall{kStart};
  ManualClock monotonic{42'000};
  AnchoredClock clock;
};

// Moves real time on by `total` ms, one second at a time (each second a lazy check), and
// fails on any reading that goes back or moves by more than the slew allows.
void run_for(Clocks& c, std::int64_t total) {
  std::int64_t before = c.clock.now_ms();
  for (std::int64_t done = 0; done < total; done += kSecond) {
    c.advance(kSecond);
    const std::int64_t now = c.clock.now_ms();
    ASSERT_GE(now - before, kSecond * 9 / 10) << "after " << done << " ms";
    ASSERT_LE(now - before, kSecond * 11 / 10) << "after " << done << " ms";
    before = now;
  }
}

TEST(AnchoredClock, StartsAtTheWallClockAndMovesWithTheMonotonicClock) {
  Clocks c;
  EXPECT_EQ(c.clock.now_ms(), kStart);
  c.advance(250);
  EXPECT_EQ(c.clock.now_ms(), kStart + 250);
  // Between checks the wall clock is not even read: only the monotonic clock counts.
  c.monotonic.advance_ms(100);
  EXPECT_EQ(c.clock.now_ms(), kStart + 350);
  EXPECT_EQ(c.clock.steps(), 0u);
}

TEST(AnchoredClock, BackwardStepNeverMovesTimeBackAndIsClosedAtTheSlewRate) {
  Clocks c;
  c.advance(10 * kSecond);
  const std::int64_t before = c.clock.now_ms();
  c.wall.advance_ms(-kHour);
  c.advance(kSecond);
  EXPECT_EQ(c.clock.now_ms(), before + kSecond);  // the check that sees the step
  EXPECT_EQ(c.clock.steps(), 1u);
  EXPECT_EQ(c.clock.last_step_ms(), -kHour);

  // 10% slower than real time: an hour's gap closes in ten hours, and never a step back.
  c.advance(kSecond);
  EXPECT_EQ(c.clock.now_ms(), before + kSecond + 900);
  run_for(c, 10 * kHour);
  EXPECT_EQ(c.clock.now_ms(), c.wall.now_ms());
  c.advance(kSecond);
  EXPECT_EQ(c.clock.now_ms(), c.wall.now_ms());
  EXPECT_EQ(c.clock.steps(), 1u);
}

TEST(AnchoredClock, ForwardStepDoesNotExpireEverythingAtOnce) {
  Clocks c;
  const std::int64_t before = c.clock.now_ms();
  c.wall.advance_ms(kHour);
  EXPECT_EQ(c.clock.now_ms(), before);  // no jump
  c.advance(kSecond);
  EXPECT_EQ(c.clock.now_ms(), before + kSecond);
  EXPECT_EQ(c.clock.steps(), 1u);
  EXPECT_EQ(c.clock.last_step_ms(), kHour);

  // 10% faster than real time until the wall clock is reached, then with it.
  c.advance(kSecond);
  EXPECT_EQ(c.clock.now_ms(), before + 2 * kSecond + 100);
  run_for(c, 10 * kHour);
  EXPECT_EQ(c.clock.now_ms(), c.wall.now_ms());
  c.advance(kSecond);
  EXPECT_EQ(c.clock.now_ms(), c.wall.now_ms());
  EXPECT_EQ(c.clock.steps(), 1u);
}

TEST(AnchoredClock, DifferencesWithinTheThresholdAreClosedButNotCounted) {
  Clocks c;
  c.wall.advance_ms(1000);  // exactly the threshold: NTP's routine correction
  c.advance(kSecond);
  c.clock.now_ms();
  c.wall.advance_ms(-600);
  c.advance(kSecond);
  c.clock.now_ms();
  c.wall.advance_ms(-999);
  run_for(c, 30 * kSecond);
  EXPECT_EQ(c.clock.steps(), 0u);
  EXPECT_EQ(c.clock.last_step_ms(), 0);
  EXPECT_EQ(c.clock.now_ms(), c.wall.now_ms());
}

TEST(AnchoredClock, StepsJustOverTheThresholdAreCountedWithTheirSign) {
  Clocks c;
  c.wall.advance_ms(1001);
  c.clock.check();
  EXPECT_EQ(c.clock.steps(), 1u);
  EXPECT_EQ(c.clock.last_step_ms(), 1001);
  c.wall.advance_ms(-1001);
  c.clock.check();
  EXPECT_EQ(c.clock.steps(), 2u);
  EXPECT_EQ(c.clock.last_step_ms(), -1001);
}

TEST(AnchoredClock, TheThresholdIsAnOption) {
  Clocks c(AnchoredClockOptions{.step_threshold_ms = 5000});
  c.wall.advance_ms(4000);
  c.clock.check();
  EXPECT_EQ(c.clock.steps(), 0u);
  c.wall.advance_ms(-5001);
  c.clock.check();
  EXPECT_EQ(c.clock.steps(), 1u);
  EXPECT_EQ(c.clock.last_step_ms(), -5001);
}

TEST(AnchoredClock, StepsAreSeenByTheFirstReadingAfterTheInterval) {
  Clocks c;
  c.wall.advance_ms(-kHour);
  c.advance(kSecond - 1);
  c.clock.now_ms();
  EXPECT_EQ(c.clock.steps(), 0u);  // not looked at yet
  c.advance(1);
  c.clock.now_ms();
  EXPECT_EQ(c.clock.steps(), 1u);
}

// Counts how often the clock reads the wall clock.
class CountingClock final : public Clock {
 public:
  explicit CountingClock(const Clock& clock) : clock_(clock) {}
  std::int64_t now_ms() const override {
    reads_.fetch_add(1, std::memory_order_relaxed);
    return clock_.now_ms();
  }
  int reads() const { return reads_.load(std::memory_order_relaxed); }

 private:
  const Clock& clock_;
  mutable std::atomic<int> reads_{0};
};

TEST(AnchoredClock, ReadsTheWallClockOncePerInterval) {
  ManualClock wall(kStart);
  ManualClock monotonic(0);
  CountingClock counted(wall);
  AnchoredClock clock(counted, monotonic);
  EXPECT_EQ(counted.reads(), 1);    // the anchor
  for (int i = 0; i < 5000; ++i) {  // five seconds, a reading every millisecond
    monotonic.advance_ms(1);
    wall.advance_ms(1);
    clock.now_ms();
  }
  EXPECT_EQ(counted.reads(), 1 + 5);
}

TEST(AnchoredClock, ReportsEachStepOnceToTheObserver) {
  static std::vector<ClockStep> seen;
  seen.clear();
  Clocks c;
  c.clock.set_step_observer([](const ClockStep& step) { seen.push_back(step); });
  c.advance(5 * kSecond);
  const std::int64_t engine = c.clock.now_ms();
  c.wall.advance_ms(-2 * kHour);
  c.clock.check();
  c.wall.advance_ms(3 * kHour);
  run_for(c, 30 * kSecond);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].size_ms, -2 * kHour);
  EXPECT_EQ(seen[0].wall_ms, kStart + 5 * kSecond - 2 * kHour);
  EXPECT_EQ(seen[0].time_ms, engine);
  EXPECT_EQ(seen[1].size_ms, 3 * kHour);
  EXPECT_EQ(c.clock.steps(), 2u);
  c.clock.set_step_observer(nullptr);
  c.wall.advance_ms(kHour);
  c.clock.check();
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_EQ(c.clock.steps(), 3u);
}

TEST(AnchoredClock, AdvanceToMovesForwardOnlyThenClosesTheGap) {
  Clocks c;
  c.advance(kSecond);
  const std::int64_t floor = c.clock.now_ms() + kHour;  // e.g. persisted before a backward step
  c.clock.advance_to(floor);
  EXPECT_EQ(c.clock.now_ms(), floor);
  c.clock.advance_to(floor - kSecond);
  EXPECT_EQ(c.clock.now_ms(), floor);
  EXPECT_EQ(c.clock.steps(), 0u);  // the wall clock did not step
  c.advance(kSecond);
  EXPECT_EQ(c.clock.now_ms(), floor + 900);
  run_for(c, 10 * kHour);
  EXPECT_EQ(c.clock.now_ms(), c.wall.now_ms());
}

TEST(AnchoredClock, SlewZeroKeepsTheAnchorForever) {
  Clocks c(AnchoredClockOptions{.slew_percent = 0});
  c.wall.advance_ms(kHour);
  c.advance(10 * kHour);
  c.clock.check();
  c.advance(kHour);
  EXPECT_EQ(c.clock.now_ms(), kStart + 11 * kHour);
  EXPECT_EQ(c.clock.steps(), 1u);
}

// Random histories of real time passing, wall clock steps and small corrections, checked after
// every change against a model that counts the steps: time never goes back, moves with real
// time within the slew, and ends on the wall clock once real time has passed long enough.
TEST(AnchoredClock, RandomHistoriesKeepTimeMonotonicAndConverge) {
  std::mt19937_64 random(20261201);
  for (int history = 0; history < 20; ++history) {
    Clocks c;
    std::uint64_t steps = 0;
    std::int64_t last_step = 0;
    std::int64_t before = c.clock.now_ms();
    for (int i = 0; i < 2000; ++i) {
      const int action = static_cast<int>(random() % 20);
      if (action == 0) {  // a step
        const std::int64_t size = static_cast<std::int64_t>(random() % (4 * kHour)) - 2 * kHour;
        c.wall.advance_ms(size);
        c.clock.check();
        if (size > 1000 || size < -1000) {
          ++steps;
          last_step = size;
        }
        const std::int64_t now = c.clock.now_ms();
        ASSERT_GE(now, before);
        ASSERT_LE(now, before + 1);  // a check does not move time (rounding aside)
        before = now;
      } else if (action == 1) {  // a small correction
        c.wall.advance_ms(static_cast<std::int64_t>(random() % 1999) - 999);
        c.clock.check();
      } else {
        const auto elapsed = static_cast<std::int64_t>(random() % 5000);
        c.advance(elapsed);
        const std::int64_t now = c.clock.now_ms();
        ASSERT_GE(now - before, elapsed - elapsed / 10 - 1);
        ASSERT_LE(now - before, elapsed + elapsed / 10 + 1);
        before = now;
      }
      ASSERT_EQ(c.clock.steps(), steps);
      ASSERT_EQ(c.clock.last_step_ms(), last_step);
    }
    const std::int64_t gap = c.wall.now_ms() - c.clock.now_ms();
    run_for(c, (gap < 0 ? -gap : gap) * 10 + 2 * kSecond);
    EXPECT_EQ(c.clock.now_ms(), c.wall.now_ms()) << "history " << history;
  }
}

// Readers on several threads while the wall clock steps back and forth and every reading is a
// re-anchoring (interval 0): each reader's time only grows.
TEST(AnchoredClock, ConcurrentReadersNeverSeeTimeGoBack) {
  Clocks c(AnchoredClockOptions{.check_interval_ms = 0});
  std::atomic<bool> done{false};
  std::atomic<int> back{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      std::int64_t before = c.clock.now_ms();
      while (!done.load(std::memory_order_relaxed)) {
        const std::int64_t now = c.clock.now_ms();
        if (now < before) back.fetch_add(1);
        before = now;
      }
    });
  }
  std::mt19937_64 random(7);
  for (int i = 0; i < 300'000; ++i) {
    c.advance(1);
    if (i % 100 == 0) c.wall.advance_ms(static_cast<std::int64_t>(random() % 20'000) - 10'000);
    if (i % 1000 == 0) c.clock.advance_to(c.clock.now_ms() + 5000);
  }
  done = true;
  for (auto& reader : readers) reader.join();
  EXPECT_EQ(back.load(), 0);
}

TEST(SystemClock, StartsOnTheWallClock) {
  const auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  const std::int64_t first = SystemClock::instance().now_ms();
  EXPECT_LE(std::abs(first - wall), 1000);  // unless the machine's clock steps right now
  EXPECT_GE(SystemClock::instance().now_ms(), first);
}

}  // namespace
}  // namespace sessiond::storage
