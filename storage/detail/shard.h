// Internal to storage: the table's shards and the locking rules between them.
//
// A session is one Record allocation (record.h) owned by its shard's hash set, keyed by the id
// inside the record (8 bytes per slot instead of 40). Both the shard and the set's hash come from
// bytes 24..31 of the id (the shard from bits 40 and up, which the set's probing does not use
// below 2^33 slots): CSPRNG output (bytes 0..7 are the route key, shared by a user's sessions,
// DESIGN §2), and only ids made by this node, its peers or its own disk are ever inserted, so they
// need no further mixing. That one word finds a session, which is what lets the user index hold
// 8 bytes per session (UserSessions) instead of the 32-byte id.
//
// Locks: Shard::mu guards a shard; UserShard::mu guards a slice of the user index. Session shard
// locks come first, several only in the documented ordered cases (REGENERATE and move(): two;
// create_batch, rewrite_batch, and the per-user limit's evictions: one per shard involved),
// always in index order; a user-shard lock is taken under them, one at a time, never the other
// way round. Persistence happens under the session shard lock so that the order of writes to
// one session on disk (and in the replication log) is the order in memory.
#pragma once

#include <absl/container/flat_hash_map.h>
#include <absl/container/flat_hash_set.h>
#include <absl/container/inlined_vector.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "storage/detail/expiry_heap.h"
#include "storage/detail/record.h"
#include "storage/session_table.h"

namespace sessiond::storage::detail {

inline std::uint64_t id_word(const SessionId& id, std::size_t offset) {
  std::uint64_t v;
  std::memcpy(&v, id.data() + offset, sizeof v);
  return v;
}

// The word that hashes an id, picks its shard and stands for it in the user index.
inline std::uint64_t hash_word(const SessionId& id) { return id_word(id, 24); }

// How the user index finds a session in its shard: the id's hash word and the session's user.
// Sessions of other users with the same word are told apart by the user id at the start of the
// record's blob. Two sessions of one user whose 64 random bits agree (about 1 in 10^18 for a
// user with a few sessions) would share one entry, and the first to end would take it out of
// the index for both.
struct UserSessionKey {
  std::uint64_t word = 0;
  std::string_view user;
};

struct IdHash {
  using is_transparent = void;
  std::size_t operator()(const SessionId& id) const { return hash_word(id); }
  std::size_t operator()(const RecordPtr& r) const { return hash_word(r->id); }
  std::size_t operator()(const UserSessionKey& k) const { return k.word; }
};

// Word-wise equality: ids are compared on every lookup, and a memcmp call costs more here.
inline bool same_id(const SessionId& a, const SessionId& b) {
  return ((id_word(a, 0) ^ id_word(b, 0)) | (id_word(a, 8) ^ id_word(b, 8)) |
          (id_word(a, 16) ^ id_word(b, 16)) | (id_word(a, 24) ^ id_word(b, 24))) == 0;
}

struct IdEq {
  using is_transparent = void;
  static const SessionId& key(const SessionId& id) { return id; }
  static const SessionId& key(const RecordPtr& r) { return r->id; }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return same_id(key(a), key(b));
  }
  bool operator()(const RecordPtr& r, const UserSessionKey& k) const {
    return hash_word(r->id) == k.word && blob_user_id(r->blob()) == k.user;
  }
  bool operator()(const UserSessionKey& k, const RecordPtr& r) const { return (*this)(r, k); }
};

// The sessions of one user in the index: each as its id's hash word (UserSessionKey), in a short
// unsorted vector (two inline) while the user has few, in a hash set past kSmall so that a user
// with very many sessions does not make each create or destroy scan them all.
class UserSessions {
 public:
  static constexpr std::size_t kSmall = 16;

  // False when the word was there already.
  bool insert(std::uint64_t word) {
    if (big_) return big_->insert(word).second;
    if (std::find(small_.begin(), small_.end(), word) != small_.end()) return false;
    if (small_.size() < kSmall) {
      small_.push_back(word);
      return true;
    }
    big_ = std::make_unique<absl::flat_hash_set<std::uint64_t>>(small_.begin(), small_.end());
    small_.clear();
    small_.shrink_to_fit();
    return big_->insert(word).second;
  }
  void erase(std::uint64_t word) {
    if (big_) {
      big_->erase(word);
      return;
    }
    auto it = std::find(small_.begin(), small_.end(), word);
    if (it == small_.end()) return;
    *it = small_.back();
    small_.pop_back();
  }
  bool empty() const { return big_ ? big_->empty() : small_.empty(); }
  std::size_t size() const { return big_ ? big_->size() : small_.size(); }
  void append_to(std::vector<std::uint64_t>* out) const {
    if (big_) {
      out->insert(out->end(), big_->begin(), big_->end());
    } else {
      out->insert(out->end(), small_.begin(), small_.end());
    }
  }

 private:
  absl::InlinedVector<std::uint64_t, 2> small_;
  std::unique_ptr<absl::flat_hash_set<std::uint64_t>> big_;
};

inline std::string_view id_bytes(const SessionId& id) {
  return {reinterpret_cast<const char*>(id.data()), id.size()};
}

struct Counters {
  std::uint64_t creates = 0, updates = 0, destroys = 0, regenerates = 0, expiries = 0,
                read_hits = 0, read_misses = 0, touches_persisted = 0, touches_coalesced = 0,
                merges_applied = 0, merges_unchanged = 0, touches_refused = 0;
  std::array<std::uint64_t, kLifetimeBuckets + 1> lifetimes{};  // TableStats::lifetimes
  std::uint64_t lifetime_sum_ms = 0;
};

struct alignas(64) Shard {
  mutable std::mutex mu;  // guards everything below
  absl::flat_hash_set<RecordPtr, IdHash, IdEq> records;
  ExpiryHeap heap;  // on persisted_deadline_ms(); Record::heap_index is the slot
  // Ended sessions (destroy is final, DESIGN §7), until their keep_until; swept by the expirer.
  absl::flat_hash_map<SessionId, Tombstone, IdHash, IdEq> tombstones;
  std::int64_t next_sweep_ms = 0;  // when the expirer next sweeps the tombstones
  // TableOptions::pending_touch_ship_ms: records that went from nothing unpersisted to a
  // coalesced touch or access since the last write of them (repeats possible), and when the
  // expirer next writes those still pending.
  std::vector<SessionId> touched;
  std::int64_t next_touch_ship_ms = 0;
  // Remote touches of sessions whose state has not arrived yet (apply() takes messages in any
  // order), joined into the state when it comes; swept after a while like tombstones.
  struct PendingTouch {
    std::int64_t last_access_ms = 0;
    std::vector<AccessEntry> access_log;
    std::int64_t received_ms = 0;
  };
  absl::flat_hash_map<SessionId, PendingTouch, IdHash, IdEq> pending_touches;
  std::size_t bytes = 0;
  std::array<std::uint64_t, 8> by_preset{};  // records by Record::preset_code (3 bits)
  Counters counters;
};

struct alignas(64) UserShard {
  mutable std::mutex mu;  // guards users and generations
  absl::flat_hash_map<std::string, UserSessions> users;
  // Revocation generations of users that were ever revoked (absent: generation 0).
  absl::flat_hash_map<std::string, Generation> generations;
};

// The record of `user` whose id's hash word is `word` in `shard` (whose lock the caller holds),
// or null.
inline Record* find_of_user(const Shard& shard, std::uint64_t word, std::string_view user) {
  auto it = shard.records.find(UserSessionKey{word, user});
  return it == shard.records.end() ? nullptr : it->get();
}

// Locks two shards (one, if they are the same) in index (address) order.
inline std::pair<std::unique_lock<std::mutex>, std::unique_lock<std::mutex>> lock_two(Shard& a,
                                                                                      Shard& b) {
  if (&a == &b) return {std::unique_lock(a.mu), std::unique_lock<std::mutex>()};
  Shard& lo = &a < &b ? a : b;
  Shard& hi = &a < &b ? b : a;
  std::unique_lock first(lo.mu);
  std::unique_lock second(hi.mu);
  return {std::move(first), std::move(second)};
}

}  // namespace sessiond::storage::detail
