// eventually(): waits for a condition with a deadline, for tests that watch real processes
// (a node sees a new topology, a lease runs out). The condition, not a fixed pause, ends the
// wait; the short poll interval only bounds how soon it is seen.
#pragma once

#include <chrono>
#include <thread>

namespace sessiond::testing {

// Whether `condition` held before `patience` ran out (checked every 20 ms, and once more at
// the end).
template <typename Condition>
bool eventually(Condition condition,
                std::chrono::milliseconds patience = std::chrono::milliseconds(15'000)) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

}  // namespace sessiond::testing
