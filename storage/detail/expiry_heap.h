// Internal to storage: each shard's expiry heap.
//
// A binary min-heap of the shard's records keyed by the *persisted* deadline (the deadline as
// of the last write to disk), with each record holding its heap position. The key never exceeds
// the true deadline, so when the expirer pops a due record it either expires it (true deadline
// passed) or finds a touch that was coalesced in memory, persists it, and pushes the record
// down: the on-disk deadline thus catches up before it can drop a live session, and touches
// reach the disk at most once per idle_timeout * touch_persist_fraction.
#pragma once

#include <cstdint>
#include <vector>

#include "storage/detail/record.h"

namespace sessiond::storage::detail {

inline std::int64_t heap_key(const Record* r) { return r->persisted_deadline_ms(); }

inline void heap_place(std::vector<Record*>& heap, std::size_t i, Record* r) {
  heap[i] = r;
  r->heap_index = static_cast<std::uint32_t>(i);
}

inline void heap_sift_up(std::vector<Record*>& heap, std::size_t i) {
  Record* r = heap[i];
  const std::int64_t key = heap_key(r);
  while (i > 0) {
    const std::size_t parent = (i - 1) / 2;
    if (heap_key(heap[parent]) <= key) break;
    heap_place(heap, i, heap[parent]);
    i = parent;
  }
  heap_place(heap, i, r);
}

inline void heap_sift_down(std::vector<Record*>& heap, std::size_t i) {
  Record* r = heap[i];
  const std::int64_t key = heap_key(r);
  const std::size_t n = heap.size();
  for (;;) {
    std::size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap_key(heap[child + 1]) < heap_key(heap[child])) ++child;
    if (key <= heap_key(heap[child])) break;
    heap_place(heap, i, heap[child]);
    i = child;
  }
  heap_place(heap, i, r);
}

inline void heap_push(std::vector<Record*>& heap, Record* r) {
  heap.push_back(r);
  heap_sift_up(heap, heap.size() - 1);
}

inline void heap_remove(std::vector<Record*>& heap, Record* r) {
  const std::size_t i = r->heap_index;
  Record* last = heap.back();
  heap.pop_back();
  if (last == r) return;
  heap_place(heap, i, last);
  heap_sift_up(heap, i);
  heap_sift_down(heap, last->heap_index);
}

// Restores the heap after r's key changed in either direction.
inline void heap_fix(std::vector<Record*>& heap, Record* r) {
  heap_sift_up(heap, r->heap_index);
  heap_sift_down(heap, r->heap_index);
}

}  // namespace sessiond::storage::detail
