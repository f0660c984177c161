// What the node, the engine and the client share of OpenSSL's cryptography: random bytes for
// ids, and HMAC-SHA256 under a fixed key. Both are on hot paths (every CREATE draws an id and
// computes its user's route key; every signed id is checked), where OpenSSL 3's one-call
// entry points cost more than the work itself (docs/benchmarks.md, issue 18).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

namespace sessiond {

// Fills `out` with `n` bytes from OpenSSL's CSPRNG; false (out then unusable) when OpenSSL
// fails. Thread-safe. Small draws come from a block each thread takes from RAND_bytes 4 KiB at
// a time (one RAND_bytes call costs about as much as 4 KiB of output here), and bytes handed out
// are wiped from the block. A forked child never reuses its parent's block.
[[nodiscard]] bool random_bytes(void* out, std::size_t n);

// HMAC-SHA256 under one key, keyed once (the pad blocks are hashed then). Each thread
// duplicates the keyed state once and re-initialises its copy for every tag: OpenSSL 3's
// one-shot HMAC() fetches the algorithm under a lock on every call (5-7x slower), and
// duplicating per tag costs an allocation (2.7x). Thread-safe; movable, not copyable.
class HmacSha256 {
 public:
  // Aborts when libcrypto has no HMAC-SHA256 (nothing could be signed safely).
  explicit HmacSha256(std::string_view key);
  ~HmacSha256();
  HmacSha256(HmacSha256&&) noexcept;
  HmacSha256& operator=(HmacSha256&&) noexcept;

  std::array<std::uint8_t, 32> operator()(std::string_view data) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sessiond
