#include "storage/detail/expiry_heap.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace sessiond::storage::detail {
namespace {

// Records whose persisted deadline is their cap, which the test sets directly.
RecordPtr record_due_at(std::int64_t ms) {
  RecordPtr r = Record::make(new_session_id(), "");
  r->cap_ms = ms;
  return r;
}

// Pops everything: the keys come out in order and every record's heap_index was kept right.
std::vector<std::int64_t> drain(ExpiryHeap& heap) {
  std::vector<std::int64_t> out;
  while (!heap.empty()) {
    Record* r = heap.front();
    EXPECT_EQ(r->heap_index, 0u);
    EXPECT_EQ(heap.front_key(), r->persisted_deadline_ms());
    out.push_back(heap.front_key());
    heap.remove(r);
  }
  return out;
}

TEST(ExpiryHeap, RandomPushRemoveAndFixKeepOrderAndPositions) {
  std::mt19937_64 rng(20261202);
  for (int round = 0; round < 20; ++round) {
    ExpiryHeap heap;
    std::vector<RecordPtr> live;
    for (int step = 0; step < 2000; ++step) {
      const auto op = rng() % 4;
      if (op <= 1 || live.empty()) {
        live.push_back(record_due_at(static_cast<std::int64_t>(rng() % 1000)));
        heap.push(live.back().get());
      } else if (op == 2) {  // remove from anywhere
        const std::size_t i = rng() % live.size();
        heap.remove(live[i].get());
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      } else {  // a key moves in either direction
        Record* r = live[rng() % live.size()].get();
        r->cap_ms = static_cast<std::int64_t>(rng() % 1000);
        heap.fix(r);
      }
      ASSERT_EQ(heap.size(), live.size());
    }
    if (!live.empty()) {  // a record replaced in its slot by another with a different key
      RecordPtr fresh = record_due_at(static_cast<std::int64_t>(rng() % 1000));
      heap.replace(live.front().get(), fresh.get());
      live.front() = std::move(fresh);
    }
    std::vector<std::int64_t> expected;
    for (const RecordPtr& r : live) expected.push_back(r->persisted_deadline_ms());
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(drain(heap), expected);
  }
}

}  // namespace
}  // namespace sessiond::storage::detail
