#include "storage/detail/memtable.h"

#include <rocksdb/slice.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

namespace sessiond::storage::detail {
namespace {

using rocksdb::MemTableRep;
using KeyComparator = MemTableRep::KeyComparator;

// How many entries ahead of a scan are prefetched.
constexpr std::size_t kPrefetchAhead = 8;

// An entry of the memtable: the first 16 bytes of its user key (zero-padded, big-endian, so
// that comparing (hi, lo) as integers is comparing the bytes), and RocksDB's encoded entry
// (varint32 length, internal key, value) in the memtable's arena.
struct Entry {
  std::uint64_t hi;
  std::uint64_t lo;
  const char* entry;
};
using Entries = std::vector<Entry>;

std::uint64_t load_be64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

// The prefix of an internal key (user key, then 8 bytes of sequence and type).
void set_prefix(const rocksdb::Slice& internal_key, Entry* e) {
  unsigned char bytes[16] = {};
  const std::size_t user_size = internal_key.size() >= 8 ? internal_key.size() - 8 : 0;
  std::memcpy(bytes, internal_key.data(), std::min<std::size_t>(user_size, sizeof(bytes)));
  e->hi = load_be64(bytes);
  e->lo = load_be64(bytes + 8);
}

Entry entry_of(const char* encoded) {
  Entry e{0, 0, encoded};
  set_prefix(rocksdb::GetLengthPrefixedSlice(encoded), &e);
  return e;
}

// The memtable's order: the prefixes first, RocksDB's comparator (user key, then sequence
// descending) when they are equal.
struct Less {
  const KeyComparator* cmp;
  bool operator()(const Entry& a, const Entry& b) const {
    if (a.hi != b.hi) return a.hi < b.hi;
    if (a.lo != b.lo) return a.lo < b.lo;
    return (*cmp)(a.entry, b.entry) < 0;
  }
};

// A seek target: an internal key and its prefix.
struct Target {
  Entry prefix;
  rocksdb::Slice internal_key;
};

int compare(const KeyComparator& cmp, const Entry& e, const Target& t) {
  if (e.hi != t.prefix.hi) return e.hi < t.prefix.hi ? -1 : 1;
  if (e.lo != t.prefix.lo) return e.lo < t.prefix.lo ? -1 : 1;
  return cmp(e.entry, t.internal_key);
}

Target target_of(const rocksdb::Slice& internal_key) {
  Target t{{0, 0, nullptr}, internal_key};
  set_prefix(internal_key, &t.prefix);
  return t;
}

class SortedIterator final : public MemTableRep::Iterator {
 public:
  SortedIterator(const KeyComparator& cmp, std::shared_ptr<const Entries> entries)
      : cmp_(cmp), entries_(std::move(entries)), pos_(entries_->size()) {}

  bool Valid() const override { return pos_ < entries_->size(); }
  const char* key() const override { return (*entries_)[pos_].entry; }
  void Next() override {
    ++pos_;
    prefetch(pos_ + kPrefetchAhead);
  }
  void Prev() override { pos_ = pos_ == 0 ? entries_->size() : pos_ - 1; }

  void Seek(const rocksdb::Slice& internal_key, const char* /*memtable_key*/) override {
    const Target t = target_of(internal_key);
    auto it = std::partition_point(entries_->begin(), entries_->end(),
                                   [&](const Entry& e) { return compare(cmp_, e, t) < 0; });
    go_to(static_cast<std::size_t>(it - entries_->begin()));
  }
  void SeekForPrev(const rocksdb::Slice& internal_key, const char* /*memtable_key*/) override {
    const Target t = target_of(internal_key);
    auto it = std::partition_point(entries_->begin(), entries_->end(),
                                   [&](const Entry& e) { return compare(cmp_, e, t) <= 0; });
    pos_ = it == entries_->begin() ? entries_->size()
                                   : static_cast<std::size_t>(it - entries_->begin()) - 1;
  }
  void SeekToFirst() override { go_to(0); }
  void SeekToLast() override { pos_ = entries_->empty() ? 0 : entries_->size() - 1; }

 private:
  void go_to(std::size_t pos) {
    pos_ = pos;
    for (std::size_t i = 1; i <= kPrefetchAhead; ++i) prefetch(pos + i);
  }
  void prefetch(std::size_t pos) const {
    if (pos < entries_->size()) __builtin_prefetch((*entries_)[pos].entry);
  }

  const KeyComparator& cmp_;
  std::shared_ptr<const Entries> entries_;
  std::size_t pos_;  // entries_->size(): not valid
};

class PrefixSortedRep final : public MemTableRep {
 public:
  PrefixSortedRep(const KeyComparator& cmp, rocksdb::Allocator* allocator)
      : MemTableRep(allocator), cmp_(cmp), entries_(std::make_shared<Entries>()) {}

  ~PrefixSortedRep() override {
    for (void* shell : shells_) ::operator delete(shell);
  }

  void Insert(rocksdb::KeyHandle handle) override {
    const Entry e = entry_of(static_cast<const char*>(handle));
    std::lock_guard lock(mu_);
    entries_->push_back(e);
    bytes_.store(entries_->capacity() * sizeof(Entry), std::memory_order_relaxed);
  }

  bool Contains(const char* key) const override {
    std::lock_guard lock(mu_);
    return std::any_of(entries_->begin(), entries_->end(),
                       [&](const Entry& e) { return cmp_(e.entry, key) == 0; });
  }

  void MarkReadOnly() override {
    std::lock_guard lock(mu_);
    immutable_ = true;
  }

  std::size_t ApproximateMemoryUsage() override {
    return sizeof(*this) + bytes_.load(std::memory_order_relaxed);
  }

  Iterator* GetIterator(rocksdb::Arena* arena) override {
    std::shared_ptr<const Entries> sorted;
    Entries copy;
    {
      std::lock_guard lock(mu_);
      if (immutable_) {
        // No insert comes after MarkReadOnly: sort in place, once, for every reader.
        if (!sorted_) std::sort(entries_->begin(), entries_->end(), Less{&cmp_});
        sorted_ = true;
        sorted = entries_;
      } else {
        copy = *entries_;
      }
    }
    if (!sorted) {
      std::sort(copy.begin(), copy.end(), Less{&cmp_});
      sorted = std::make_shared<const Entries>(std::move(copy));
    }
    if (arena == nullptr) return new SortedIterator(cmp_, std::move(sorted));
    // RocksDB only runs the destructor of an iterator it asked to place in its arena; the
    // shell is freed with the memtable (header comment).
    void* shell = nullptr;
    {
      std::lock_guard lock(mu_);
      shells_.reserve(shells_.size() + 1);
      shell = ::operator new(sizeof(SortedIterator));
      shells_.push_back(shell);
    }
    return new (shell) SortedIterator(cmp_, std::move(sorted));
  }

 private:
  const KeyComparator& cmp_;
  mutable std::mutex mu_;
  std::shared_ptr<Entries> entries_;  // guarded by mu_; shared with iterators once sorted
  bool immutable_ = false;            // guarded by mu_
  bool sorted_ = false;               // guarded by mu_
  std::vector<void*> shells_;         // guarded by mu_
  std::atomic<std::size_t> bytes_{0};
};

class PrefixSortedFactory final : public rocksdb::MemTableRepFactory {
 public:
  static const char* kClassName() { return "SessiondPrefixSortedRepFactory"; }
  const char* Name() const override { return kClassName(); }

  using MemTableRepFactory::CreateMemTableRep;
  MemTableRep* CreateMemTableRep(const KeyComparator& cmp, rocksdb::Allocator* allocator,
                                 const rocksdb::SliceTransform* /*transform*/,
                                 rocksdb::Logger* /*logger*/) override {
    return new PrefixSortedRep(cmp, allocator);
  }
};

}  // namespace

std::shared_ptr<rocksdb::MemTableRepFactory> prefix_sorted_memtable_factory() {
  return std::make_shared<PrefixSortedFactory>();
}

}  // namespace sessiond::storage::detail
