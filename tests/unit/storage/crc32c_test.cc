// CRC32C for RocksDB's WAL (storage/detail/crc32c.h): the values of RFC 3720's examples, the
// same results as RocksDB's own implementation (found behind ours with dlsym(RTLD_NEXT)) for
// every length and alignment and when extended piecewise, the table fallback equal to the main
// path, and, on x86-64, the library's symbol bound to the definition in this program.
#include "storage/detail/crc32c.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

namespace sessiond::storage::detail {
namespace {

constexpr const char* kRocksDbExtend = "_ZN7rocksdb6crc32c6ExtendEjPKcm";
using ExtendFn = std::uint32_t (*)(std::uint32_t, const char*, std::size_t);

std::uint32_t crc(std::string_view s) { return crc32c_extend(0, s.data(), s.size()); }

std::string random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// RocksDB's own Extend: the next definition after this program's in symbol lookup order.
ExtendFn rocksdb_extend() { return reinterpret_cast<ExtendFn>(dlsym(RTLD_NEXT, kRocksDbExtend)); }

TEST(Crc32c, MatchesTheStandardsExamples) {
  EXPECT_EQ(crc("123456789"), 0xe3069283u);
  EXPECT_EQ(crc(std::string(32, '\0')), 0x8a9136aau);  // RFC 3720, B.4
  EXPECT_EQ(crc(std::string(32, '\xff')), 0x62a8ab43u);
  std::string up, down;
  for (int i = 0; i < 32; ++i) {
    up.push_back(static_cast<char>(i));
    down.push_back(static_cast<char>(31 - i));
  }
  EXPECT_EQ(crc(up), 0x46dd794eu);
  EXPECT_EQ(crc(down), 0x113fdb5cu);
  EXPECT_EQ(crc(""), 0u);
}

TEST(Crc32c, AgreesWithRocksDbsOwnAtEveryLengthAndAlignment) {
  const ExtendFn theirs = rocksdb_extend();
  ASSERT_NE(theirs, nullptr) << "librocksdb exports no " << kRocksDbExtend;
  Dl_info where{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(theirs), &where), 0);
  ASSERT_NE(std::string_view(where.dli_fname).find("librocksdb"), std::string_view::npos)
      << "compared with " << where.dli_fname << ", not RocksDB's own";
  const std::string data = random_bytes(9000, 7);
  for (std::size_t offset = 0; offset < 8; ++offset) {
    for (std::size_t n = 0; n < 300; ++n) {
      ASSERT_EQ(crc32c_extend(0, data.data() + offset, n), theirs(0, data.data() + offset, n))
          << "offset " << offset << ", " << n << " bytes";
    }
  }
  for (std::size_t n : {1024u, 1031u, 4096u, 8192u, 8999u}) {
    EXPECT_EQ(crc32c_extend(0x12345678, data.data() + 1, n), theirs(0x12345678, data.data() + 1, n))
        << n << " bytes";
  }
}

TEST(Crc32c, TheTableFallbackAgreesWithTheMainPath) {
  const std::string data = random_bytes(3000, 5);
  for (std::size_t offset = 0; offset < 8; ++offset) {
    for (std::size_t n = 0; n < 2900; n += 1 + n / 8) {
      ASSERT_EQ(crc32c_extend_table(7, data.data() + offset, n),
                crc32c_extend(7, data.data() + offset, n))
          << "offset " << offset << ", " << n << " bytes";
    }
  }
}

TEST(Crc32c, ExtendingPiecewiseGivesTheWholesCrc) {
  const std::string data = random_bytes(5000, 11);
  const std::uint32_t whole = crc(data);
  std::mt19937 rng(3);
  for (int round = 0; round < 200; ++round) {
    std::uint32_t c = 0;
    std::size_t at = 0;
    while (at < data.size()) {
      const std::size_t n = std::min<std::size_t>(data.size() - at, rng() % 97);
      c = crc32c_extend(c, data.data() + at, n);
      at += n;
    }
    ASSERT_EQ(c, whole) << "round " << round;
  }
}

#if defined(__x86_64__)
TEST(Crc32c, RocksDbsSymbolIsBoundToThisProgramsDefinition) {
  // The library calls Extend through its PLT; the dynamic linker resolves those calls as it
  // resolves this lookup, to the first definition in lookup order, the executable's.
  void* bound = dlsym(RTLD_DEFAULT, kRocksDbExtend);
  ASSERT_NE(bound, nullptr);
  void* library = dlsym(RTLD_NEXT, kRocksDbExtend);
  ASSERT_NE(library, nullptr);
  EXPECT_NE(bound, library) << "RocksDB's calls would go to its own table-driven CRC32C";
  Dl_info info{};
  ASSERT_NE(dladdr(bound, &info), 0);
  Dl_info self{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&crc32c_extend), &self), 0);
  EXPECT_STREQ(info.dli_fname, self.dli_fname) << "bound to a definition outside this program";
  EXPECT_STRNE(crc32c_implementation(), "rocksdb");
}
#endif

}  // namespace
}  // namespace sessiond::storage::detail
