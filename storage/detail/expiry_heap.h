// Internal to storage: each shard's expiry heap.
//
// A min-heap of the shard's records keyed by the *persisted* deadline (the deadline as of the
// last write to disk), with each record holding its heap position. The key never exceeds the
// true deadline, so when the expirer pops a due record it either expires it (true deadline
// passed) or finds a touch that was coalesced in memory, persists it, and pushes the record
// down: the on-disk deadline thus catches up before it can drop a live session, and touches
// reach the disk at most once per idle_timeout * touch_persist_fraction.
//
// Layout, for a table much larger than the caches: each slot holds its key beside the record
// pointer, so a sift compares without touching (or recomputing the deadline of) any record, and
// the heap is 4-ary, so the four children of a slot share one cache line and a sift moves half as
// many records (each move writes the record's heap_index) as a binary heap would.
#pragma once

#include <cstdint>
#include <vector>

#include "storage/detail/record.h"

namespace sessiond::storage::detail {

inline std::int64_t heap_key(const Record* r) { return r->persisted_deadline_ms(); }

class ExpiryHeap {
 public:
  bool empty() const { return slots_.empty(); }
  std::size_t size() const { return slots_.size(); }
  void clear() { slots_.clear(); }
  Record* front() const { return slots_.front().record; }
  // The front record's key as of its last push or fix.
  std::int64_t front_key() const { return slots_.front().key; }

  void push(Record* r) {
    slots_.push_back({heap_key(r), r});
    sift_up(slots_.size() - 1);
  }

  void remove(Record* r) {
    const std::size_t i = r->heap_index;
    const Slot last = slots_.back();
    slots_.pop_back();
    if (last.record == r) return;
    place(i, last);
    sift_up(i);
    sift_down(last.record->heap_index);
  }

  // Restores the heap after r's key changed in either direction.
  void fix(Record* r) {
    const std::size_t i = r->heap_index;
    slots_[i].key = heap_key(r);
    sift_up(i);
    sift_down(r->heap_index);
  }

  // Puts `fresh` into `old`'s slot (old leaves the heap) and restores the order.
  void replace(Record* old, Record* fresh) {
    place(old->heap_index, {heap_key(fresh), fresh});
    fix(fresh);
  }

 private:
  static constexpr std::size_t kArity = 4;
  struct Slot {
    std::int64_t key;
    Record* record;
  };

  void place(std::size_t i, const Slot& s) {
    slots_[i] = s;
    s.record->heap_index = static_cast<std::uint32_t>(i);
  }

  void sift_up(std::size_t i) {
    const Slot s = slots_[i];
    while (i > 0) {
      const std::size_t parent = (i - 1) / kArity;
      if (slots_[parent].key <= s.key) break;
      place(i, slots_[parent]);
      i = parent;
    }
    place(i, s);
  }

  void sift_down(std::size_t i) {
    const Slot s = slots_[i];
    const std::size_t n = slots_.size();
    for (;;) {
      const std::size_t first = kArity * i + 1;
      if (first >= n) break;
      std::size_t best = first;
      const std::size_t end = first + kArity < n ? first + kArity : n;
      for (std::size_t c = first + 1; c < end; ++c) {
        if (slots_[c].key < slots_[best].key) best = c;
      }
      if (s.key <= slots_[best].key) break;
      place(i, slots_[best]);
      i = best;
    }
    place(i, s);
  }

  std::vector<Slot> slots_;
};

}  // namespace sessiond::storage::detail
