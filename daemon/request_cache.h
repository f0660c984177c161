// The answers of CREATE and REGENERATE by their request id (DESIGN §6): a client that lost the
// answer retries with the same id and gets the first answer instead of a second session (or a
// NOT_FOUND for the id the first REGENERATE already ended). Bounded in entries and in time.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <array>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace sessiond::daemon {

class RequestCache {
 public:
  // Longer request ids are refused (kReused) and never cached.
  static constexpr std::size_t kMaxIdBytes = 64;

  // Answers are kept `keep_ms` (a client retries within its call deadline, seconds), and at
  // most `capacity` of them (the oldest go first).
  explicit RequestCache(std::size_t capacity = 100'000, std::int64_t keep_ms = 300'000)
      : capacity_(capacity), keep_ms_(keep_ms) {}

  enum class Lookup {
    kNew,       // not seen: execute it, then finish() it
    kAnswered,  // *answer holds the first answer
    kRunning,   // the first attempt is still being executed
    kReused,    // the id came with another request (or is too long): refuse it
  };
  // `fingerprint` identifies the request's content (so an id reused for another request is not
  // answered with someone else's answer).
  Lookup begin(std::string_view request_id, std::uint64_t fingerprint, std::int64_t now_ms,
               std::string* answer);
  // Records the answer of a request begin() called new (an empty answer: it failed, and a
  // retry executes it again).
  void finish(std::string_view request_id, std::string answer);
  // How many ids are remembered (answered or running).
  std::size_t size() const;

 private:
  // A request id held inline: looking one up or remembering it allocates nothing (a CREATE from
  // the routing client carries one, so this is on the path of every CREATE).
  struct Key {
    std::uint8_t size = 0;
    std::array<char, kMaxIdBytes> bytes{};
    Key() = default;
    explicit Key(std::string_view id);
    std::string_view view() const { return {bytes.data(), size}; }
    friend bool operator==(const Key& a, const Key& b) { return a.view() == b.view(); }
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.view());
    }
  };
  struct Entry {
    std::uint64_t fingerprint = 0;
    bool done = false;
    std::string answer;
    std::int64_t at_ms = 0;
  };
  void evict(std::int64_t now_ms);

  const std::size_t capacity_;
  const std::int64_t keep_ms_;
  mutable std::mutex mu_;  // guards everything below
  absl::flat_hash_map<Key, Entry> entries_;
  std::deque<std::pair<Key, std::int64_t>> order_;  // request ids, oldest first
};

}  // namespace sessiond::daemon
