// Internal to storage: the memtable representation of the `sessions` and `users` families.
//
// sessiond never point-reads those families (the table in memory answers reads; recovery and
// the tests scan), so their memtables only take appends and, once full, one sorted pass for the
// flush. RocksDB's vector memtable fits that, but sorts an array of pointers to the entries: on
// random 32-byte keys every comparison is a cache miss or two in the memtable's arena (a third
// to a half of the flush thread's time under writes). This one keeps each entry's first 16 key
// bytes beside its pointer and sorts by them, going to the entries only on a tie (two versions
// of one key, or keys that share 16 bytes), and prefetches the entries ahead of a scan.
//
// Requirements: the family's comparator is RocksDB's bytewise comparator (the default): the
// prefix order is the bytewise order of the first 16 bytes. Inserts come from one writer at a
// time (allow_concurrent_memtable_write = false). RocksDB places a flush's iterator in its arena;
// the arena's interface is not public, so such an iterator's object (a few dozen bytes) is kept
// by the memtable and freed with it (what the iterator holds is freed when it is destroyed).
#pragma once

#include <rocksdb/memtablerep.h>

#include <memory>

namespace sessiond::storage::detail {

std::shared_ptr<rocksdb::MemTableRepFactory> prefix_sorted_memtable_factory();

}  // namespace sessiond::storage::detail
