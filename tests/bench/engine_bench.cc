// Engine benchmark (Google Benchmark): get, get+touch, create, update and destroy on a table
// holding 1 M sessions of 1 KiB of fields (4 fields of 256 bytes), for 1 and 2 threads, with a
// RocksDB store in `memory` (no WAL) and `async` (WAL, no fsync) durability; plus the memory a
// session costs (RSS delta / sessions) in a table of 1 M sessions.
//
//   build/release/tests/bench/engine_bench [--sessions=N] [--data-dir=DIR]
//       [--warm-memory-gib=N] [benchmark flags]
//
// The data directory (default: ./var/bench) is wiped for each mode, and removed at the end
// unless SESSIOND_BENCH_KEEP is set (to read RocksDB's LOG).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "storage/session_table.h"
#include "storage/store.h"

namespace {

using namespace sessiond;
using namespace sessiond::storage;

std::size_t g_sessions = 1'000'000;
std::size_t g_warm_gib = 0;
std::string g_data_dir = "var/bench";
constexpr int kFields = 4;
constexpr std::size_t kFieldBytes = 256;

NewSession sample_session(std::uint64_t seed) {
  NewSession req;
  for (int f = 0; f < kFields; ++f) {
    std::string value(kFieldBytes, '\0');
    std::uint64_t x = seed * 0x9e3779b97f4a7c15ULL + static_cast<std::uint64_t>(f);
    for (char& c : value) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      c = static_cast<char>('a' + x % 26);
    }
    req.fields.push_back({"field" + std::to_string(f), std::move(value)});
  }
  return req;
}

struct Rng {
  std::uint64_t x;
  std::uint64_t next() {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return x;
  }
};

// One loaded table per durability mode, built on first use and shared by the threads.
struct Env {
  std::unique_ptr<Store> store;
  std::unique_ptr<SessionTable> table;
  std::vector<SessionId> ids;                // the resident sessions
  std::atomic<std::size_t> destroy_next{0};  // destroy consumes ids from the front
};

// Mode kNoStore: the table alone, to tell the engine's cost from RocksDB's. kAsyncLog: async
// durability with the replication log on (what a node with replicas or peer regions runs).
constexpr int kNoStore = -1;
constexpr int kAsyncLog = 10;
std::mutex g_envs_mu;
std::map<int, std::unique_ptr<Env>> g_envs;  // cleared in main, before RocksDB's statics go

std::string mode_name(int mode) {
  if (mode == kAsyncLog) return "async+log";
  return mode == kNoStore ? "table only"
                          : std::string(durability_name(static_cast<Durability>(mode)));
}

Env& env_for(int mode) {
  std::lock_guard lock(g_envs_mu);
  auto& slot = g_envs[mode];
  if (slot) return *slot;
  slot = std::make_unique<Env>();
  if (mode != kNoStore) {
    const std::string path = g_data_dir + "/" + mode_name(mode);
    std::filesystem::remove_all(path);
    StoreOptions so;
    so.path = path;
    so.durability = mode == kAsyncLog ? Durability::kAsync : static_cast<Durability>(mode);
    so.replication_log = mode == kAsyncLog;
    auto store = Store::open(so, SystemClock::instance());
    if (!store.ok()) {
      std::fprintf(stderr, "cannot open store: %s\n", store.status().ToString().c_str());
      std::exit(1);
    }
    slot->store = std::move(store).value();
  }
  slot->table =
      std::make_unique<SessionTable>(TableOptions{}, SystemClock::instance(), slot->store.get());
  slot->ids.reserve(g_sessions);
  NewSession req = sample_session(1);
  for (std::size_t i = 0; i < g_sessions; ++i) {
    auto meta = slot->table->create(req);
    if (!meta.ok()) std::exit(1);
    slot->ids.push_back(meta->id);
  }
  // Settle the load's compaction backlog first, so that each measured operation pays for its
  // own flushes and compactions but not for those of the million sessions loaded before it.
  if (slot->store && !slot->store->compact().ok()) std::exit(1);
  return *slot;
}

int mode_of(const benchmark::State& state) { return static_cast<int>(state.range(0)); }

void label(benchmark::State& state) { state.SetLabel(mode_name(mode_of(state))); }

// A random sequence of resident ids, read in order: a server finds the id in the request it
// just received, so picking it must not add a cache miss of its own.
std::vector<SessionId> random_ids(const Env& env, std::uint64_t seed) {
  Rng rng{seed};
  std::vector<SessionId> out(1u << 16);
  for (SessionId& id : out) id = env.ids[rng.next() % env.ids.size()];
  return out;
}

void BM_Get(benchmark::State& state, bool touch) {
  Env& env = env_for(mode_of(state));
  const std::vector<SessionId> ids =
      random_ids(env, 0x1234567ULL + static_cast<std::uint64_t>(state.thread_index()) * 7919);
  std::size_t next = 0;
  Session out;
  ReadOptions ro;
  ro.touch = touch;
  std::size_t misses = 0;
  for (auto _ : state) {
    const SessionId& id = ids[next++ & (ids.size() - 1)];
    if (!env.table->get(id, ro, &out).ok()) ++misses;
    benchmark::DoNotOptimize(out.fields.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["misses"] = static_cast<double>(misses);
  label(state);
}

// Creates as a pipelining client (or many clients at once) sends them: 16 per RocksDB write.
void BM_CreateBatch(benchmark::State& state) {
  Env& env = env_for(mode_of(state));
  const std::vector<NewSession> batch(16, sample_session(4));
  for (auto _ : state) {
    auto results = env.table->create_batch(batch);
    for (const auto& r : results) {
      if (!r.ok()) state.SkipWithError(r.status().ToString().c_str());
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch.size()));
  label(state);
}

// Reads as a client pipelining 16 requests sends them (SessionTable::get_batch).
void BM_GetBatch(benchmark::State& state) {
  Env& env = env_for(mode_of(state));
  const std::vector<SessionId> ids =
      random_ids(env, 0x7654321ULL + static_cast<std::uint64_t>(state.thread_index()) * 7919);
  constexpr std::size_t kBatch = 16;
  std::vector<Session> out(kBatch);
  std::vector<Status> statuses(kBatch);
  std::size_t next = 0, misses = 0;
  for (auto _ : state) {
    std::span<const SessionId> batch(ids.data() + (next & (ids.size() - 1)), kBatch);
    next += kBatch;
    env.table->get_batch(batch, {}, out, statuses);
    for (const Status& s : statuses) misses += s.ok() ? 0 : 1;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kBatch));
  state.counters["misses"] = static_cast<double>(misses);
  label(state);
}

void BM_Create(benchmark::State& state) {
  Env& env = env_for(mode_of(state));
  NewSession req = sample_session(2);
  for (auto _ : state) {
    auto meta = env.table->create(req);
    if (!meta.ok()) state.SkipWithError(meta.status().ToString().c_str());
  }
  state.SetItemsProcessed(state.iterations());
  label(state);
}

// Single creates as the server makes them (issue 18): the requests of one read of a connection,
// up to 64, are handled inside one Store::WalBatch, so their WAL bytes reach the OS in one
// write() (async mode; in the others the batch changes nothing).
void BM_CreateWalBatch(benchmark::State& state) {
  constexpr int kSlice = 64;
  Env& env = env_for(mode_of(state));
  NewSession req = sample_session(2);
  std::optional<Store::WalBatch> wal;
  int in_slice = 0;
  for (auto _ : state) {
    if (!wal) wal.emplace();
    auto meta = env.table->create(req);
    if (!meta.ok()) state.SkipWithError(meta.status().ToString().c_str());
    if (++in_slice == kSlice) {
      if (Status s = wal->finish(); !s.ok()) state.SkipWithError(s.ToString().c_str());
      wal.reset();
      in_slice = 0;
    }
  }
  wal.reset();
  state.SetItemsProcessed(state.iterations());
  label(state);
}

void BM_Update(benchmark::State& state) {
  Env& env = env_for(mode_of(state));
  const std::vector<SessionId> ids =
      random_ids(env, 0xabcdefULL + static_cast<std::uint64_t>(state.thread_index()) * 104729);
  std::size_t next = 0;
  FieldChanges ch;
  ch.set = {{"field1", std::string(kFieldBytes, 'u')}};
  for (auto _ : state) {
    const SessionId& id = ids[next++ & (ids.size() - 1)];
    auto meta = env.table->update(id, ch);
    benchmark::DoNotOptimize(meta);
  }
  state.SetItemsProcessed(state.iterations());
  label(state);
}

void BM_Destroy(benchmark::State& state) {
  Env& env = env_for(mode_of(state));
  for (auto _ : state) {
    const std::size_t i = env.destroy_next.fetch_add(1, std::memory_order_relaxed);
    if (i >= env.ids.size()) {
      state.SkipWithError("ran out of sessions to destroy");
      break;
    }
    Status s = env.table->destroy(env.ids[i]);
    benchmark::DoNotOptimize(s);
  }
  state.SetItemsProcessed(state.iterations());
  label(state);
}

// Merges of remote writes (SessionTable::apply) into a table alone, one thread: the mutations a
// peer's table (another region) wrote when it created g_sessions / 5 sessions of 1 KiB.
void BM_Apply(benchmark::State& state) {
  static std::vector<std::pair<std::string, SessionId>>* made = [] {
    auto* out = new std::vector<std::pair<std::string, SessionId>>();
    TableOptions peer_options;
    peer_options.region = 2;
    SessionTable peer(peer_options, SystemClock::instance(), nullptr);
    peer.on_change(
        [out](const Mutation& m, std::uint64_t) { out->emplace_back(std::string(m.value), m.id); });
    NewSession req = sample_session(3);
    for (std::size_t i = 0; i < g_sessions / 5; ++i) (void)peer.create(req);
    return out;
  }();
  SessionTable table(TableOptions{}, SystemClock::instance(), nullptr);
  std::size_t next = 0, applied = 0;
  Mutation m;
  m.origin = Origin{2, 0, false};
  for (auto _ : state) {
    if (next == made->size()) {
      state.SkipWithError("ran out of mutations");
      break;
    }
    m.id = (*made)[next].second;
    m.value = (*made)[next].first;
    ++next;
    auto outcome = table.apply(m);
    applied += outcome.ok() && *outcome == ApplyOutcome::kApplied ? 1 : 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["applied"] = static_cast<double>(applied);
  state.SetLabel("table only");
}

std::size_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

// RSS growth of a table (no store: the store's memtables and cache are fixed-size, not per
// session) while it fills with g_sessions sessions, divided by the count.
void BM_MemoryPerSession(benchmark::State& state) {
  const bool with_user = state.range(0) != 0;
  for (auto _ : state) {
    NewSession req = sample_session(3);
    std::size_t payload = 32;  // the id
    for (const auto& [name, value] : req.fields) payload += name.size() + value.size();
    const std::size_t before = rss_bytes();
    std::uint64_t table_bytes = 0;
    {
      SessionTable table(TableOptions{}, SystemClock::instance(), nullptr);
      for (std::size_t i = 0; i < g_sessions; ++i) {
        if (with_user) req.user_id = "user-" + std::to_string(i / 4);  // 4 sessions per user
        if (!table.create(req).ok()) std::exit(1);
      }
      const std::size_t after = rss_bytes();
      table_bytes = table.stats().memory_bytes;
      const double per = static_cast<double>(after - before) / static_cast<double>(g_sessions);
      const double user_bytes = with_user ? 10.0 : 0.0;
      state.counters["rss_per_session"] = per;
      state.counters["payload"] = static_cast<double>(payload) + user_bytes;
      state.counters["overhead"] = per - static_cast<double>(payload) - user_bytes;
      state.counters["record_bytes"] =
          static_cast<double>(table_bytes) / static_cast<double>(g_sessions);
    }
  }
  state.SetLabel(with_user ? "with user index" : "no user id");
}

// Touches and frees this much memory before measuring. On a freshly booted virtual machine the
// first touch of guest memory also faults in the host, which makes a growing heap look several
// times slower than on a server that has been up for a while; this removes that artifact.
void warm_memory(std::size_t gib) {
  const std::size_t bytes = gib << 30;
  auto* p = static_cast<volatile char*>(std::malloc(bytes));
  if (p == nullptr) return;
  for (std::size_t i = 0; i < bytes; i += 4096) p[i] = 1;
  std::free(const_cast<char*>(p));
}

void register_all() {
  // First, while the heap is fresh: later benchmarks leave freed memory that would hide growth.
  benchmark::RegisterBenchmark("memory_per_session", BM_MemoryPerSession)->Arg(0)->Iterations(1);
  benchmark::RegisterBenchmark("memory_per_session", BM_MemoryPerSession)->Arg(1)->Iterations(1);
  for (int mode :
       {kNoStore, static_cast<int>(Durability::kMemory), static_cast<int>(Durability::kAsync)}) {
    const auto m = static_cast<std::int64_t>(mode);
    for (int threads : {1, 2}) {
      benchmark::RegisterBenchmark("get", BM_Get, false)->Arg(m)->Threads(threads)->UseRealTime();
      benchmark::RegisterBenchmark("get+touch", BM_Get, true)
          ->Arg(m)
          ->Threads(threads)
          ->UseRealTime();
      benchmark::RegisterBenchmark("get_batch16", BM_GetBatch)
          ->Arg(m)
          ->Threads(threads)
          ->UseRealTime();
      benchmark::RegisterBenchmark("update", BM_Update)->Arg(m)->Threads(threads)->UseRealTime();
      benchmark::RegisterBenchmark("create", BM_Create)->Arg(m)->Threads(threads)->UseRealTime();
      benchmark::RegisterBenchmark("create_walbatch64", BM_CreateWalBatch)
          ->Arg(m)
          ->Threads(threads)
          ->UseRealTime();
      benchmark::RegisterBenchmark("create_batch16", BM_CreateBatch)
          ->Arg(m)
          ->Threads(threads)
          ->UseRealTime();
    }
    for (int threads : {1, 2}) {
      // Bounded so that the resident set stays above 700 k sessions.
      benchmark::RegisterBenchmark("destroy", BM_Destroy)
          ->Arg(m)
          ->Threads(threads)
          ->Iterations(static_cast<benchmark::IterationCount>(g_sessions / 10 / threads))
          ->UseRealTime();
    }
  }
  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark("create", BM_Create)
        ->Arg(kAsyncLog)
        ->Threads(threads)
        ->UseRealTime();
    benchmark::RegisterBenchmark("create_batch16", BM_CreateBatch)
        ->Arg(kAsyncLog)
        ->Threads(threads)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("apply", BM_Apply)
      ->Iterations(static_cast<benchmark::IterationCount>(g_sessions / 5))
      ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--sessions=", 11) == 0) {
      g_sessions = std::strtoull(argv[i] + 11, nullptr, 10);
    } else if (std::strncmp(argv[i], "--warm-memory-gib=", 18) == 0) {
      g_warm_gib = std::strtoull(argv[i] + 18, nullptr, 10);
    } else if (std::strncmp(argv[i], "--data-dir=", 11) == 0) {
      g_data_dir = argv[i] + 11;
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (g_warm_gib > 0) warm_memory(g_warm_gib);
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_envs.clear();
  if (std::getenv("SESSIOND_BENCH_KEEP") == nullptr) std::filesystem::remove_all(g_data_dir);
  return 0;
}
