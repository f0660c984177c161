#include "protocol/crypto.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace sessiond {
namespace {

constexpr std::size_t kRandomBlock = 4096;

// Raised in a forked child, so that no thread there hands out bytes its parent also holds.
std::atomic<std::uint64_t> fork_generation{0};

struct RandomBlock {
  std::array<unsigned char, kRandomBlock> bytes{};
  std::size_t used = kRandomBlock;  // empty until the first draw
  std::uint64_t generation = 0;
};

}  // namespace

bool random_bytes(void* out, std::size_t n) {
  static const bool fork_safe =
      pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1); }) == 0;
  if (n > kRandomBlock / 4 || !fork_safe) {
    return n <= static_cast<std::size_t>(std::numeric_limits<int>::max()) &&
           RAND_bytes(static_cast<unsigned char*>(out), static_cast<int>(n)) == 1;
  }
  thread_local std::unique_ptr<RandomBlock> block;
  if (!block) block = std::make_unique<RandomBlock>();
  const std::uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (block->generation != generation || block->used + n > kRandomBlock) {
    block->used = kRandomBlock;
    if (RAND_bytes(block->bytes.data(), static_cast<int>(kRandomBlock)) != 1) return false;
    block->used = 0;
    block->generation = generation;
  }
  unsigned char* from = block->bytes.data() + block->used;
  std::memcpy(out, from, n);
  std::memset(from, 0, n);
  block->used += n;
  return true;
}

struct HmacSha256::Impl {
  struct MacFree {
    void operator()(EVP_MAC* m) const { EVP_MAC_free(m); }
  };
  struct CtxFree {
    void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }
  };
  std::unique_ptr<EVP_MAC_CTX, CtxFree> prepared;
  const std::uint64_t serial;  // tells this key's copies in a thread's cache from another's

  static std::uint64_t next_serial() {
    static std::atomic<std::uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  explicit Impl(std::string_view key) : serial(next_serial()) {
    const std::unique_ptr<EVP_MAC, MacFree> hmac(EVP_MAC_fetch(nullptr, "HMAC", nullptr));
    if (hmac) prepared.reset(EVP_MAC_CTX_new(hmac.get()));
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                                 OSSL_PARAM_END};
    if (!prepared ||
        EVP_MAC_init(prepared.get(), reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                     params) != 1) {
      std::abort();
    }
  }

  // This thread's copy of the keyed context (a few keys at most: a signer's current and
  // previous, the route key, those of a reload; the oldest copy goes when a ninth is used).
  EVP_MAC_CTX* work() const {
    thread_local std::vector<std::pair<std::uint64_t, std::unique_ptr<EVP_MAC_CTX, CtxFree>>>
        copies;
    for (auto& [key, ctx] : copies) {
      if (key == serial) return ctx.get();
    }
    if (copies.size() == 8) copies.erase(copies.begin());
    copies.emplace_back(serial, EVP_MAC_CTX_dup(prepared.get()));
    return copies.back().second.get();
  }
};

HmacSha256::HmacSha256(std::string_view key) : impl_(std::make_unique<Impl>(key)) {}
HmacSha256::~HmacSha256() = default;
HmacSha256::HmacSha256(HmacSha256&&) noexcept = default;
HmacSha256& HmacSha256::operator=(HmacSha256&&) noexcept = default;

std::array<std::uint8_t, 32> HmacSha256::operator()(std::string_view data) const {
  EVP_MAC_CTX* ctx = impl_->work();
  std::array<std::uint8_t, 32> digest{};
  std::size_t length = 0;
  const bool ok =
      ctx && EVP_MAC_init(ctx, nullptr, 0, nullptr) == 1 &&
      EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1 &&
      EVP_MAC_final(ctx, digest.data(), &length, digest.size()) == 1 && length == digest.size();
  if (!ok) std::abort();
  return digest;
}

}  // namespace sessiond
