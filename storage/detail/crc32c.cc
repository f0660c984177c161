#include "storage/detail/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace sessiond::storage::detail {
namespace {

constexpr std::uint32_t kPoly = 0x82f63b78;  // Castagnoli, reflected

constexpr std::array<std::uint32_t, 256> make_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<std::uint32_t, 256> kTable = make_table();

#if defined(__x86_64__)
// Eight bytes per instruction. The instruction's latency (3 cycles) bounds one stream at about
// 2.7 bytes a cycle, several times the table's rate, and a WAL record is a few KiB at most.
__attribute__((target("sse4.2"))) std::uint32_t extend_sse42(std::uint32_t crc, const char* data,
                                                             std::size_t n) {
  std::uint64_t l = ~crc;
  while (n >= 8) {
    std::uint64_t word;
    std::memcpy(&word, data, sizeof word);
    l = _mm_crc32_u64(l, word);
    data += 8;
    n -= 8;
  }
  auto l32 = static_cast<std::uint32_t>(l);
  while (n > 0) {
    l32 = _mm_crc32_u8(l32, static_cast<unsigned char>(*data++));
    --n;
  }
  return ~l32;
}

bool has_sse42() {
  // A function-local static: RocksDB may checksum from another library's static initializer,
  // before this file's own would have run.
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return yes;
}
#endif

}  // namespace

std::uint32_t crc32c_extend_table(std::uint32_t crc, const char* data, std::size_t n) {
  std::uint32_t l = ~crc;
  for (std::size_t i = 0; i < n; ++i) {
    l = kTable[(l ^ static_cast<unsigned char>(data[i])) & 0xff] ^ (l >> 8);
  }
  return ~l;
}

std::uint32_t crc32c_extend(std::uint32_t crc, const char* data, std::size_t n) {
#if defined(__x86_64__)
  if (has_sse42()) return extend_sse42(crc, data, n);
#endif
  return crc32c_extend_table(crc, data, n);
}

const char* crc32c_implementation() {
#if defined(__x86_64__)
  return has_sse42() ? "sse4.2" : "table";
#else
  return "rocksdb";
#endif
}

}  // namespace sessiond::storage::detail

#if defined(__x86_64__)
// RocksDB's declaration (util/crc32c.h, not installed), defined here so that the library's calls
// bind to it (crc32c.h).
namespace rocksdb::crc32c {
std::uint32_t Extend(std::uint32_t init_crc, const char* data, std::size_t n);
std::uint32_t Extend(std::uint32_t init_crc, const char* data, std::size_t n) {
  return sessiond::storage::detail::crc32c_extend(init_crc, data, n);
}
}  // namespace rocksdb::crc32c
#endif
