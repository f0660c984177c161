// Security benchmark (Google Benchmark): what the node pays per request for signed ids (sign,
// verify a good tag, refuse a forged one) against OpenSSL 3's one-shot HMAC(), and for hijack
// detection on a full access history.
//
//   build/release/tests/bench/security_bench [benchmark flags]
#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "daemon/security.h"

namespace {

using sessiond::daemon::IdKeys;
using sessiond::daemon::IdSigner;
using sessiond::daemon::kIdKeyBytes;
using sessiond::daemon::kIdTagBytes;

IdSigner signer() {
  IdKeys keys;
  keys.current.assign(kIdKeyBytes, 'k');
  keys.previous.assign(kIdKeyBytes, 'p');
  keys.previous_until_ms = INT64_MAX;
  return IdSigner(keys);
}

void BM_Sign(benchmark::State& state) {
  const IdSigner s = signer();
  sessiond::storage::SessionId id = sessiond::storage::new_session_id();
  for (auto _ : state) {
    ++id[0];
    benchmark::DoNotOptimize(s.sign(id));
  }
}
BENCHMARK(BM_Sign);

void BM_VerifyGood(benchmark::State& state) {
  const IdSigner s = signer();
  const sessiond::storage::SessionId id = sessiond::storage::new_session_id();
  const std::string signed_id = s.sign(id);
  const std::span tag(reinterpret_cast<const std::uint8_t*>(signed_id.data()) + 32, kIdTagBytes);
  for (auto _ : state) benchmark::DoNotOptimize(s.verify(id, tag, 0));
}
BENCHMARK(BM_VerifyGood);

// A forged tag is checked against the current and then the previous key: the worst case.
void BM_VerifyForged(benchmark::State& state) {
  const IdSigner s = signer();
  const sessiond::storage::SessionId id = sessiond::storage::new_session_id();
  const std::vector<std::uint8_t> tag(kIdTagBytes, 0x5a);
  for (auto _ : state) benchmark::DoNotOptimize(s.verify(id, tag, 0));
}
BENCHMARK(BM_VerifyForged);

// What the tag would cost with OpenSSL 3's one-shot HMAC() (it fetches SHA-256 per call).
void BM_OneShotHmac(benchmark::State& state) {
  const std::string key(kIdKeyBytes, 'k');
  sessiond::storage::SessionId id = sessiond::storage::new_session_id();
  unsigned char mac[32];
  unsigned int len = 0;
  for (auto _ : state) {
    ++id[0];
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), id.data(), id.size(), mac, &len);
    benchmark::DoNotOptimize(mac);
  }
}
BENCHMARK(BM_OneShotHmac);

// Hijack detection over a history of state.range(0) entries, all located, distinct IPs.
void BM_DetectHijack(benchmark::State& state) {
  std::vector<sessiond::storage::AccessEntry> log;
  for (std::int64_t i = 0; i < state.range(0); ++i) {
    log.push_back({1'700'000'000'000 + i * 60'000, "198.51.100." + std::to_string(i), 0, true,
                   48.85 + 0.001 * static_cast<double>(i), 2.35});
  }
  const sessiond::daemon::HijackRules rules;
  for (auto _ : state) benchmark::DoNotOptimize(sessiond::daemon::detect_hijack(log, rules));
}
BENCHMARK(BM_DetectHijack)->Arg(10)->Arg(100);

}  // namespace

BENCHMARK_MAIN();
