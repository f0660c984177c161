// Internal to storage: CRC32C for RocksDB's WAL with the CPU's crc32 instruction.
//
// Debian builds RocksDB for the baseline x86-64 (no SSE4.2), so its CRC32C, which checksums
// every WAL record when it is written and again when recovery reads it, is a table lookup per
// byte: under RESP SETs of 1 KiB it was 8% of the node's CPU samples (docs/benchmarks.md, issue
// 18). On x86-64, crc32c.cc defines RocksDB's exported `rocksdb::crc32c::Extend` with the crc32
// instruction (checked at run time with cpuid; a table otherwise). The library calls that
// function through its PLT, so the dynamic linker binds those calls to the definition in the
// executable, which comes first in symbol lookup. The function computes the same CRC
// (Castagnoli, inverted before and after, as RocksDB's util/crc32c.cc does), so files written
// either way read back either way. crc32c_test.cc checks the values against RocksDB's own code
// and that the library's calls reach this one.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sessiond::storage::detail {

// What computes RocksDB's CRC32C in this process: "sse4.2", "table" (x86-64 without SSE4.2) or
// "rocksdb" (other architectures: the library's own, which may use their instructions). Store
// writes it to RocksDB's LOG at open; referencing it also links crc32c.cc into every program.
const char* crc32c_implementation();

// The CRC32C of [data, data + n) continued from `crc` (a finished CRC; 0 to start), as
// rocksdb::crc32c::Extend. Defined on every architecture (tests compare it with RocksDB's).
std::uint32_t crc32c_extend(std::uint32_t crc, const char* data, std::size_t n);
// The same by a table, a byte at a time: what crc32c_extend uses on an x86-64 without SSE4.2.
std::uint32_t crc32c_extend_table(std::uint32_t crc, const char* data, std::size_t n);

}  // namespace sessiond::storage::detail
