// sessiond-bench: a load generator for a running sessiond node, on the client library.
//
//   sessiond-bench [--addr HOST:PORT] [--connections N] [--clients C] [--pipeline P]
//       [--mix get_touch=80,update=10,create=5,destroy=5] [--value-size BYTES] [--keys N]
//       [--duration S] [--warmup S] [--max-ops N] [--rate OPS] [--csv FILE] [--seed N]
//
// --rate: at most this many calls per second over all clients (each paces its share: a call
// ahead of schedule waits on its client's I/O thread before it is sent), for the measurements
// that need a fixed load (replication lag, scripts/bench/regions); 0, the default, is as fast
// as the node answers.
//
// Connections: C sessiond::Client objects (default 2, one I/O thread each) whose pools hold
// N connections in total (N/C each, the remainder spread over the first clients). Each client
// keeps P calls outstanding per connection of its pool: it starts pool_size * P calls and
// issues a new one from each callback. The client puts every call on its least busy
// connection, which keeps every connection at P or one less at any moment.
//
// Key set: each client owns keys/C sessions, created before measuring. get_touch and update
// pick one of them at random; destroy removes one from the set before sending (so nothing
// picks it afterwards) and create adds its new id when answered, so the set stays about the
// same size. A get_touch or update sent before the destroy of its key may still arrive after
// it: such a NOT_FOUND is an expected race, counted apart; every other non-OK answer is an
// error, reported by status, and makes the exit code 1.
//
// Measurement: the run lasts warmup + duration seconds, or stops early once --max-ops calls
// have been counted. Only calls answered inside the measured window count; their latency (from
// the async call to its callback) goes to a log-bucketed histogram (HdrHistogram-like: 128
// sub-buckets per power of two, < 0.4% error), so memory does not grow with the run. Errors
// are counted over the whole run, warmup included.
//
// Exit codes: 0 ok, 1 errors during the run (or setup), 2 usage, 3 node unreachable.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "sessiond/client.h"

namespace {

using namespace sessiond;  // NOLINT(google-build-using-namespace)
using Clock = std::chrono::steady_clock;

constexpr int kExitOk = 0;
constexpr int kExitErrors = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

// Fields per session: value-size is split over 4 fields, as in the engine benchmark (4 x 256 B
// for 1 KiB); an update sets one of them.
constexpr int kFieldsPerSession = 4;
// Ids of recent destroys kept to tell a race from a real NOT_FOUND. A get or update that raced
// a destroy was sent before it, so it is answered within one call timeout of it; 64 Ki
// destroys cover far more than that at any rate this program reaches.
constexpr std::size_t kRecentDestroys = 1 << 16;

enum class Op : std::uint8_t { kGetTouch, kUpdate, kCreate, kDestroy };
constexpr std::size_t kOps = 4;
constexpr std::array<std::string_view, kOps> kOpNames = {"get_touch", "update", "create",
                                                         "destroy"};

// ---- latency histogram --------------------------------------------------------------------

// Nanosecond latencies in log-linear buckets: exact below 256 ns, then 128 buckets per power of
// two (relative width 1/128; a bucket reports its midpoint, so the error is under 0.4%).
class LatencyHistogram {
 public:
  LatencyHistogram() : buckets_(kBuckets, 0) {}

  void record(std::uint64_t ns) {
    ++buckets_[index(ns)];
    ++count_;
    max_ = std::max(max_, ns);
  }

  void merge(const LatencyHistogram& other) {
    for (std::size_t i = 0; i < kBuckets; ++i) buckets_[i] += other.buckets_[i];
    count_ += other.count_;
    max_ = std::max(max_, other.max_);
  }

  std::uint64_t count() const { return count_; }

  // The latency below which a fraction q of the samples lie (0 when empty).
  std::uint64_t percentile(double q) const {
    if (count_ == 0) return 0;
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_) + 0.999999);
    rank = std::clamp<std::uint64_t>(rank, 1, count_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += buckets_[i];
      if (seen >= rank) return std::min(midpoint(i), max_);
    }
    return max_;
  }

 private:
  static constexpr int kSubBits = 8;  // values below 2^8 are exact
  static constexpr std::uint64_t kLinear = 1u << kSubBits;
  static constexpr std::uint64_t kHalf = kLinear / 2;
  static constexpr std::size_t kBuckets = kLinear + (64 - kSubBits) * kHalf;

  static std::size_t index(std::uint64_t v) {
    if (v < kLinear) return static_cast<std::size_t>(v);
    const int shift = std::bit_width(v) - kSubBits;  // >= 1; v >> shift is in [128, 256)
    return static_cast<std::size_t>(kLinear + static_cast<std::uint64_t>(shift - 1) * kHalf +
                                    ((v >> shift) - kHalf));
  }

  static std::uint64_t midpoint(std::size_t i) {
    if (i < kLinear) return i;
    const std::size_t shift = (i - kLinear) / kHalf + 1;
    const std::uint64_t mantissa = (i - kLinear) % kHalf + kHalf;
    return (mantissa << shift) + (std::uint64_t{1} << shift) / 2;
  }

  std::vector<std::uint64_t> buckets_;
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

// ---- options ------------------------------------------------------------------------------

struct BenchOptions {
  std::string address = "127.0.0.1:7400";
  std::size_t connections = 50;
  std::size_t clients = 2;
  std::size_t pipeline = 1;
  std::string mix = "get_touch=80,update=10,create=5,destroy=5";
  std::size_t value_size = 1024;
  std::size_t keys = 10'000;
  double duration_s = 10;
  double warmup_s = 1;
  std::uint64_t max_ops = 0;  // 0: no limit
  double rate = 0;            // calls per second over all clients; 0: no limit
  std::int64_t timeout_ms = 2000;
  std::string csv;
  std::uint64_t seed = 1;
  std::string preset = "ecommerce";  // finance / healthcare sessions have signed ids
};

// Cumulative weights of the mix, in kOpNames order.
struct Mix {
  std::array<std::uint32_t, kOps> cumulative{};
  std::uint32_t total() const { return cumulative.back(); }
};

// "get_touch=80,update=10,...": names from kOpNames, non-negative integer weights, sum > 0;
// an operation left out has weight 0.
Result<Mix> parse_mix(const std::string& text) {
  std::array<std::uint32_t, kOps> weights{};
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) {
      return Status::InvalidArgument("--mix item '" + item + "' is not NAME=WEIGHT");
    }
    const std::string name = item.substr(0, eq);
    const auto found = std::find(kOpNames.begin(), kOpNames.end(), name);
    if (found == kOpNames.end()) {
      return Status::InvalidArgument("--mix: unknown operation '" + name +
                                     "' (get_touch, update, create, destroy)");
    }
    std::uint32_t weight = 0;
    try {
      std::size_t used = 0;
      const unsigned long parsed = std::stoul(item.substr(eq + 1), &used);
      if (used != item.size() - eq - 1 || parsed > 1'000'000) throw std::out_of_range("weight");
      weight = static_cast<std::uint32_t>(parsed);
    } catch (const std::exception&) {
      return Status::InvalidArgument("--mix: weight of '" + name +
                                     "' is not an integer in [0, 1000000]");
    }
    weights[static_cast<std::size_t>(found - kOpNames.begin())] = weight;
  }
  Mix mix;
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < kOps; ++i) mix.cumulative[i] = sum += weights[i];
  if (sum == 0) return Status::InvalidArgument("--mix: the weights add up to 0");
  return mix;
}

// ---- the run ------------------------------------------------------------------------------

// What the workers share: the measured window and the stop signal.
struct Run {
  Clock::time_point window_start;
  Clock::time_point window_end;
  std::uint64_t max_ops = 0;
  std::atomic<std::uint64_t> measured{0};  // calls counted in the window (all workers)
  std::atomic<bool> stopping{false};       // no new calls once set

  // Guards nothing but the wake-ups below (count limit reached, a worker drained).
  std::mutex wake_mu;
  std::condition_variable wake;
  bool count_limit_reached = false;  // guarded by wake_mu
  Clock::time_point count_limit_time;
};

struct ErrorTally {
  std::uint64_t count = 0;
  std::string first_message;
};

// One Client, its pool of connections and the sessions it owns. After construction every
// member below client_ is touched only on the client's I/O thread (callbacks, and the calls
// they start), until the main thread has seen in_flight_ drop to 0 after stopping.
class Worker {
 public:
  Worker(const BenchOptions& options, std::size_t pool_size, std::size_t keys, const Mix& mix,
         std::uint64_t seed, Run& run)
      : client_(client_options(options, pool_size)),
        pool_size_(pool_size),
        pipeline_(options.pipeline),
        rate_(options.rate / static_cast<double>(std::max<std::size_t>(options.clients, 1))),
        target_keys_(keys),
        mix_(mix),
        rng_(seed),
        run_(run) {
    const std::size_t field_bytes =
        std::max<std::size_t>(1, options.value_size / kFieldsPerSession);
    std::uniform_int_distribution<int> letter('a', 'z');
    for (int f = 0; f < kFieldsPerSession; ++f) {
      // The last field takes the remainder, so the values add up to exactly value-size.
      std::size_t bytes = f + 1 < kFieldsPerSession
                              ? field_bytes
                              : options.value_size - field_bytes * (kFieldsPerSession - 1);
      if (options.value_size < kFieldsPerSession) bytes = f == 0 ? options.value_size : 0;
      std::string value(bytes, 'x');
      for (char& c : value) c = static_cast<char>(letter(rng_));
      create_.fields.emplace_back("field" + std::to_string(f), std::move(value));
    }
    // Each preset's timeouts outlast a run (at least 30 min absolute, 10 min idle).
    create_.preset = options.preset == "finance"      ? Preset::kFinance
                     : options.preset == "healthcare" ? Preset::kHealthcare
                     : options.preset == "media"      ? Preset::kMedia
                     : options.preset == "gaming"     ? Preset::kGaming
                                                      : Preset::kEcommerce;
    std::string update_value(create_.fields[0].second.size(), 'u');
    update_.set.emplace_back("field0", std::move(update_value));
    get_.touch = true;
  }

  Client& client() { return client_; }
  std::size_t pool_size() const { return pool_size_; }

  // Starts creating this worker's share of the key set, pool_size * max(P, 4) calls at a
  // time; the future is ready once every create is answered (the first failure, or OK).
  std::future<Status> precreate() {
    auto done = precreate_done_.get_future();  // before the I/O thread may set it
    client_.async_ping({}, [this](Result<PingResult> ping) {
      if (!ping.ok()) {
        precreate_done_.set_value(ping.status());
        return;
      }
      const std::size_t window = pool_size_ * std::max<std::size_t>(pipeline_, 4);
      for (std::size_t i = 0; i < window && precreate_sent_ < target_keys_; ++i) precreate_next();
      if (target_keys_ == 0) precreate_done_.set_value(Status());
    });
    return done;
  }

  // Starts pool_size * P calls; each answer starts the next until run_.stopping is set.
  void start() {
    in_flight_.fetch_add(1, std::memory_order_relaxed);  // held until the burst is sent
    client_.async_ping({}, [this](Result<PingResult>) {
      for (std::size_t i = 0; i < pool_size_ * pipeline_; ++i) issue();
      release_one();
    });
  }

  std::size_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

  // Results; read by the main thread once in_flight() is 0 after stopping.
  const std::array<LatencyHistogram, kOps>& latencies() const { return latencies_; }
  const std::array<std::uint64_t, kOps>& races() const { return races_; }
  const std::map<std::pair<Op, StatusCode>, ErrorTally>& errors() const { return errors_; }
  std::size_t keys_owned() const { return keys_.size(); }

 private:
  static ClientOptions client_options(const BenchOptions& options, std::size_t pool_size) {
    ClientOptions client;
    client.address = options.address;
    client.pool_size = pool_size;
    client.timeout = std::chrono::milliseconds(options.timeout_ms);
    return client;
  }

  void precreate_next() {
    ++precreate_sent_;
    client_.async_create(create_, [this](Result<SessionMeta> created) {
      if (!created.ok()) {
        if (precreate_status_.ok()) precreate_status_ = created.status();
      } else {
        keys_.push_back(std::move(created->id));
      }
      ++precreate_answered_;
      if (precreate_sent_ < target_keys_ && precreate_status_.ok()) {
        precreate_next();
      } else if (precreate_answered_ == precreate_sent_) {
        precreate_done_.set_value(precreate_status_);
      }
    });
  }

  Op pick_op() {
    const auto r = static_cast<std::uint32_t>(rng_() % mix_.total());
    std::size_t i = 0;
    while (r >= mix_.cumulative[i]) ++i;
    return static_cast<Op>(i);
  }

  std::size_t pick_key() {
    return static_cast<std::size_t>(rng_() % static_cast<std::uint64_t>(keys_.size()));
  }

  void issue() {
    if (rate_ > 0) {  // paced: the n-th call of this worker at paced_start_ + n / rate
      if (paced_ == 0) paced_start_ = Clock::now();
      const auto due = paced_start_ + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(paced_ / rate_));
      ++paced_;
      if (Clock::now() < due) std::this_thread::sleep_until(due);
    }
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    Op op = pick_op();
    if (keys_.empty() && op != Op::kCreate) op = Op::kCreate;  // nothing left to read or remove
    const Clock::time_point sent = Clock::now();
    switch (op) {
      case Op::kGetTouch: {
        const std::string& id = keys_[pick_key()];
        client_.async_get(id, get_, [this, sent, id](Result<Session> result) {
          finish(Op::kGetTouch, sent, result.status(), id);
        });
        break;
      }
      case Op::kUpdate: {
        const std::string& id = keys_[pick_key()];
        client_.async_update(id, update_, [this, sent, id](Result<SessionMeta> result) {
          finish(Op::kUpdate, sent, result.status(), id);
        });
        break;
      }
      case Op::kCreate:
        client_.async_create(create_, [this, sent](Result<SessionMeta> result) {
          if (result.ok()) keys_.push_back(std::move(result->id));
          finish(Op::kCreate, sent, result.status(), {});
        });
        break;
      case Op::kDestroy: {
        // Take the key out of the set first: nothing picks it once its destroy is on its way.
        const std::size_t k = pick_key();
        std::string id = std::move(keys_[k]);
        keys_[k] = std::move(keys_.back());
        keys_.pop_back();
        remember_destroy(id);
        client_.async_destroy(
            id, [this, sent](Status status) { finish(Op::kDestroy, sent, std::move(status), {}); });
        break;
      }
    }
  }

  void remember_destroy(const std::string& id) {
    recent_destroys_.insert(id);
    recent_order_.push_back(id);
    if (recent_order_.size() > kRecentDestroys) {
      recent_destroys_.erase(recent_order_.front());
      recent_order_.pop_front();
    }
  }

  void finish(Op op, Clock::time_point sent, Status status, const std::string& id) {
    const Clock::time_point now = Clock::now();
    const auto i = static_cast<std::size_t>(op);
    const bool in_window = now >= run_.window_start && now < run_.window_end;
    if (status.ok()) {
      if (in_window && count_in_window(now)) {
        latencies_[i].record(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - sent).count()));
      }
    } else if (status.code() == StatusCode::kNotFound &&
               (op == Op::kGetTouch || op == Op::kUpdate) && recent_destroys_.contains(id)) {
      if (in_window) ++races_[i];
    } else {
      ErrorTally& tally = errors_[{op, status.code()}];
      if (tally.count++ == 0) tally.first_message = status.ToString();
    }
    if (!run_.stopping.load(std::memory_order_relaxed)) issue();
    release_one();
  }

  // Counts one answered call against --max-ops; false once the limit is reached.
  bool count_in_window(Clock::time_point now) {
    const std::uint64_t n = run_.measured.fetch_add(1, std::memory_order_relaxed) + 1;
    if (run_.max_ops == 0 || n < run_.max_ops) return true;
    if (n == run_.max_ops) {
      std::lock_guard lock(run_.wake_mu);
      run_.count_limit_reached = true;
      run_.count_limit_time = now;
      run_.wake.notify_all();
      return true;
    }
    return false;
  }

  void release_one() {
    if (in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard lock(run_.wake_mu);
      run_.wake.notify_all();
    }
  }

  Client client_;
  const std::size_t pool_size_;
  const std::size_t pipeline_;
  const double rate_;        // this worker's share of --rate (0: none)
  std::uint64_t paced_ = 0;  // calls paced so far (I/O thread)
  Clock::time_point paced_start_;
  const std::size_t target_keys_;
  const Mix mix_;
  std::mt19937_64 rng_;
  Run& run_;
  CreateOptions create_;
  UpdateOptions update_;
  GetOptions get_;

  std::vector<std::string> keys_;  // sessions this worker owns
  std::unordered_set<std::string> recent_destroys_;
  std::deque<std::string> recent_order_;  // recent_destroys_ in destroy order
  std::array<LatencyHistogram, kOps> latencies_;
  std::array<std::uint64_t, kOps> races_{};
  std::map<std::pair<Op, StatusCode>, ErrorTally> errors_;
  std::atomic<std::size_t> in_flight_{0};  // calls started and not yet answered

  std::promise<Status> precreate_done_;
  std::size_t precreate_sent_ = 0;
  std::size_t precreate_answered_ = 0;
  Status precreate_status_;
};

std::string format_rate(double per_second) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.0f", per_second);
  return text;
}

std::string format_us(std::uint64_t ns) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", static_cast<double>(ns) / 1000.0);
  return text;
}

int run_bench(const BenchOptions& options, const Mix& mix) {
  const std::size_t clients = std::min(options.clients, options.connections);
  Run run;
  run.max_ops = options.max_ops;

  std::vector<std::unique_ptr<Worker>> workers;
  for (std::size_t c = 0; c < clients; ++c) {
    const std::size_t pool = options.connections / clients + (c < options.connections % clients);
    const std::size_t keys = options.keys / clients + (c < options.keys % clients);
    workers.push_back(std::make_unique<Worker>(options, pool, keys, mix,
                                               options.seed * 0x9e3779b97f4a7c15ULL + c, run));
  }

  // Reachability first: one ping, within the call timeout (the client retries with backoff).
  auto ping = workers[0]->client().ping("sessiond-bench");
  if (!ping.ok()) {
    std::cerr << "sessiond-bench: cannot reach a node at " << options.address << ": "
              << ping.status().ToString() << "\n";
    return kExitUnreachable;
  }
  auto stats_before = workers[0]->client().stats();

  std::cerr << "sessiond-bench: " << ping->server << " at " << options.address << "; creating "
            << options.keys << " sessions of " << options.value_size << " bytes\n";
  const Clock::time_point load_start = Clock::now();
  std::vector<std::future<Status>> loads;
  for (auto& worker : workers) loads.push_back(worker->precreate());
  Status load_status;
  for (auto& load : loads) {
    Status s = load.get();
    if (load_status.ok()) load_status = std::move(s);
  }
  if (!load_status.ok()) {
    std::cerr << "sessiond-bench: creating the key set failed: " << load_status.ToString() << "\n";
    return load_status.code() == StatusCode::kUnavailable ? kExitUnreachable : kExitErrors;
  }
  const double load_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - load_start).count();
  std::fprintf(stderr, "sessiond-bench: key set created in %.0f ms; %.1f s warmup + %.1f s\n",
               load_ms, options.warmup_s, options.duration_s);

  const Clock::time_point start = Clock::now();
  run.window_start = start + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(options.warmup_s));
  run.window_end = run.window_start + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(options.duration_s));
  for (auto& worker : workers) worker->start();

  Clock::time_point measured_end = run.window_end;
  {
    std::unique_lock lock(run.wake_mu);
    run.wake.wait_until(lock, run.window_end, [&] { return run.count_limit_reached; });
    if (run.count_limit_reached) measured_end = run.count_limit_time;
  }
  run.stopping.store(true);

  // Drain: every outstanding call is answered or fails within the call timeout.
  const Clock::time_point drain_deadline =
      Clock::now() + std::chrono::milliseconds(options.timeout_ms) + std::chrono::seconds(2);
  {
    std::unique_lock lock(run.wake_mu);
    const bool drained = run.wake.wait_until(lock, drain_deadline, [&] {
      return std::all_of(workers.begin(), workers.end(),
                         [](const auto& worker) { return worker->in_flight() == 0; });
    });
    if (!drained) {
      std::cerr << "sessiond-bench: calls still outstanding " << options.timeout_ms + 2000
                << " ms after the end; giving up\n";
      std::quick_exit(kExitErrors);  // the clients would wait for their callbacks
    }
  }
  auto stats_after = workers[0]->client().stats();

  // ---- merge and report ----
  const double seconds = std::chrono::duration<double>(measured_end - run.window_start).count();
  std::array<LatencyHistogram, kOps> latency;
  LatencyHistogram all;
  std::array<std::uint64_t, kOps> races{};
  std::map<std::pair<Op, StatusCode>, ErrorTally> errors;
  std::size_t keys_owned = 0;
  for (const auto& worker : workers) {
    for (std::size_t i = 0; i < kOps; ++i) {
      latency[i].merge(worker->latencies()[i]);
      all.merge(worker->latencies()[i]);
      races[i] += worker->races()[i];
    }
    for (const auto& [key, tally] : worker->errors()) {
      ErrorTally& merged = errors[key];
      if (merged.count == 0) merged.first_message = tally.first_message;
      merged.count += tally.count;
    }
    keys_owned += worker->keys_owned();
  }

  std::printf(
      "sessiond-bench: %s, %zu connections (%zu clients), pipeline %zu, %zu-byte "
      "sessions, %zu keys, mix %s\n",
      options.address.c_str(), options.connections, clients, options.pipeline, options.value_size,
      options.keys, options.mix.c_str());
  std::printf("measured %.2f s after %.1f s warmup: %s ops/s (%llu ops)\n\n", seconds,
              options.warmup_s, format_rate(static_cast<double>(all.count()) / seconds).c_str(),
              static_cast<unsigned long long>(all.count()));
  std::printf("%-10s %10s %10s %10s %10s %10s\n", "op", "count", "ops/s", "p50 us", "p99 us",
              "p99.9 us");
  std::ofstream csv;
  if (!options.csv.empty()) {
    csv.open(options.csv);
    if (!csv) {
      std::cerr << "sessiond-bench: cannot write " << options.csv << "\n";
      return kExitErrors;
    }
    csv << "op,count,ops_per_s,p50_us,p99_us,p999_us\n";
  }
  auto row = [&](std::string_view name, const LatencyHistogram& h) {
    const std::string rate = format_rate(static_cast<double>(h.count()) / seconds);
    const std::string p50 = format_us(h.percentile(0.50));
    const std::string p99 = format_us(h.percentile(0.99));
    const std::string p999 = format_us(h.percentile(0.999));
    std::printf("%-10.*s %10llu %10s %10s %10s %10s\n", static_cast<int>(name.size()), name.data(),
                static_cast<unsigned long long>(h.count()), rate.c_str(), p50.c_str(), p99.c_str(),
                p999.c_str());
    if (csv.is_open()) {
      csv << name << ',' << h.count() << ',' << rate << ',' << p50 << ',' << p99 << ',' << p999
          << '\n';
    }
  };
  for (std::size_t i = 0; i < kOps; ++i) row(kOpNames[i], latency[i]);
  row("all", all);

  std::printf("\nNOT_FOUND after a concurrent destroy of the key (expected):");
  for (std::size_t i = 0; i < kOps; ++i) {
    if (races[i] > 0) {
      std::printf(" %.*s %llu", static_cast<int>(kOpNames[i].size()), kOpNames[i].data(),
                  static_cast<unsigned long long>(races[i]));
    }
  }
  if (std::all_of(races.begin(), races.end(), [](auto n) { return n == 0; })) std::printf(" none");
  std::printf("\nerrors (whole run, warmup included):%s\n", errors.empty() ? " none" : "");
  for (const auto& [key, tally] : errors) {
    const auto name = kOpNames[static_cast<std::size_t>(key.first)];
    const auto code = status_code_name(key.second);
    std::printf("  %.*s %.*s: %llu (first: %s)\n", static_cast<int>(name.size()), name.data(),
                static_cast<int>(code.size()), code.data(),
                static_cast<unsigned long long>(tally.count), tally.first_message.c_str());
  }
  if (stats_before.ok() && stats_after.ok()) {
    std::printf("node sessions: %llu before the key set, %llu after the run (bench owns %zu)\n",
                static_cast<unsigned long long>(stats_before->sessions),
                static_cast<unsigned long long>(stats_after->sessions), keys_owned);
  }
  return errors.empty() ? kExitOk : kExitErrors;
}

}  // namespace

int main(int argc, char** argv) {
  BenchOptions options;
  CLI::App app{"sessiond-bench: load generator for a sessiond node (docs/benchmarks.md)"};
  app.add_option("--addr", options.address, "HOST:PORT of the node")->capture_default_str();
  app.add_option("--connections", options.connections, "TCP connections in total")
      ->check(CLI::Range(1, 100'000))
      ->capture_default_str();
  app.add_option("--clients", options.clients,
                 "Client objects (one I/O thread each) sharing the connections")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--pipeline", options.pipeline, "calls in flight per connection")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--mix", options.mix, "operation weights (get_touch, update, create, destroy)")
      ->capture_default_str();
  app.add_option("--value-size", options.value_size,
                 "bytes of field values per session (4 fields; an update sets one)")
      ->check(CLI::Range(0, 512 * 1024))
      ->capture_default_str();
  app.add_option("--keys", options.keys, "sessions created before measuring")
      ->check(CLI::Range(1, 100'000'000))
      ->capture_default_str();
  app.add_option("--duration", options.duration_s, "measured seconds")
      ->check(CLI::Range(0.1, 86'400.0))
      ->capture_default_str();
  app.add_option("--warmup", options.warmup_s, "seconds of load before measuring")
      ->check(CLI::Range(0.0, 3'600.0))
      ->capture_default_str();
  app.add_option("--max-ops", options.max_ops,
                 "stop measuring after this many answered calls (0: only --duration)")
      ->capture_default_str();
  app.add_option("--rate", options.rate, "calls per second over all clients (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--timeout-ms", options.timeout_ms, "deadline of each call")
      ->check(CLI::Range(1, 600'000))
      ->capture_default_str();
  app.add_option("--csv", options.csv, "write op,count,ops_per_s,p50_us,p99_us,p999_us here");
  app.add_option("--preset", options.preset,
                 "preset of the sessions created (finance and healthcare: signed ids)")
      ->check(CLI::IsMember({"finance", "healthcare", "ecommerce", "media", "gaming"}))
      ->capture_default_str();
  app.add_option("--seed", options.seed, "random seed (operations, keys, values)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  auto mix = parse_mix(options.mix);
  if (!mix.ok()) {
    std::cerr << "sessiond-bench: " << mix.status().message() << "\n";
    return kExitUsage;
  }
  return run_bench(options, *mix);
}
