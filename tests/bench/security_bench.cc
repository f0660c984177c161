// Security benchmark (Google Benchmark): what the node pays per request for signed ids (sign,
// verify a good tag, refuse a forged one) against OpenSSL 3's one-shot HMAC(), for hijack
// detection on a full access history, and for what every CREATE costs besides the engine: a
// fresh id, the user's route key, and remembering the answer under the request id (issue 18).
//
//   build/release/tests/bench/security_bench [benchmark flags]
#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "daemon/request_cache.h"
#include "daemon/security.h"
#include "protocol/crypto.h"
#include "storage/id_generator.h"

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

// A session id's 24 random bytes: from the thread's 4 KiB block (protocol/crypto.h), and from a
// RAND_bytes call each, as before issue 18.
void BM_NewSessionId(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(sessiond::storage::new_session_id());
}
BENCHMARK(BM_NewSessionId);

void BM_RandBytesPerId(benchmark::State& state) {
  unsigned char id[24];
  for (auto _ : state) {
    RAND_bytes(id, sizeof id);
    benchmark::DoNotOptimize(id);
  }
}
BENCHMARK(BM_RandBytesPerId);

// A user's route key (HMAC-SHA256 under the route-key secret, from its keyed state).
void BM_RouteKeyOfUser(benchmark::State& state) {
  const auto ids = sessiond::storage::IdGenerator::with_random_secret();
  std::string user = "user-000000";
  std::uint64_t n = 0;
  for (auto _ : state) {
    user[5 + n % 6] = static_cast<char>('0' + n % 10);
    ++n;
    benchmark::DoNotOptimize(ids.route_key_of_user(user));
  }
}
BENCHMARK(BM_RouteKeyOfUser);

// A CREATE's request id remembered and its answer recorded, with the cache full (each begin
// evicts the oldest of its 100,000 answers).
void BM_RequestCacheBeginFinish(benchmark::State& state) {
  sessiond::daemon::RequestCache cache;
  std::string id(16, '\0');
  std::string answer;
  std::uint64_t n = 0;
  const auto next = [&] {
    ++n;
    for (std::size_t i = 0; i < 8; ++i) id[i] = static_cast<char>(n >> (8 * i));
  };
  for (int i = 0; i < 100'000; ++i) {
    next();
    cache.begin(id, 42, 1000, &answer);
    cache.finish(id, std::string(70, 'a'));
  }
  for (auto _ : state) {
    next();
    cache.begin(id, 42, 1000, &answer);
    cache.finish(id, std::string(70, 'a'));
  }
}
BENCHMARK(BM_RequestCacheBeginFinish);

}  // namespace

BENCHMARK_MAIN();
