// sessiond-bench: a load generator for the session workload, against a sessiond node (native
// protocol, through the client library) or against Redis (through hiredis, with the commands a
// good Redis session library would send), so that the two can be compared on the same workload
// (scripts/bench/compare, docs/benchmarks.md).
//
//   sessiond-bench [--target sessiond://HOST:PORT[,HOST:PORT...] | redis://HOST:PORT]
//       [--connections N] [--clients C] [--pipeline P] [--mix get_touch=80,update=10,...]
//       [--users-max U] [--value-size BYTES] [--keys N] [--duration S] [--warmup S]
//       [--max-ops N] [--rate OPS] [--csv FILE] [--seed N] [--load-only] [--redis-multi]
//
// --addr HOST:PORT is the older spelling of --target sessiond://HOST:PORT.
//
// Operations (--mix weights): get_touch (read with sliding idle expiry), update (set one
// field), create, destroy, regenerate (new id, same data: the login step) and revoke_user
// (end every session of the user of a random session). With --users-max U > 0 every created
// session belongs to a user, each user holding 1..U sessions (uniformly drawn when the user is
// first used); 0 creates sessions without users.
//
// Redis mapping (one pipeline per operation, on one connection; sessions are hashes
// "sess:ID" of the same fields, users' indexes are sets "user:NAME", the id is 32 random hex
// characters made by the client, the idle timeout is the ecommerce preset's 30 minutes):
//   create      HSET sess:ID f0 v0 .. f3 v3; PEXPIREAT sess:ID now+idle; SADD user:U ID
//   get_touch   HGETALL sess:ID; PEXPIRE sess:ID idle        (empty hash: not found)
//   update      HSET sess:ID field0 V; PEXPIRE sess:ID idle
//   destroy     DEL sess:ID; SREM user:U ID
//   regenerate  RENAME sess:ID sess:NEW; SREM user:U ID; SADD user:U NEW
//   revoke_user SMEMBERS user:U, then (second round trip) DEL sess:each; DEL user:U
// --redis-multi wraps create, destroy and regenerate in MULTI/EXEC (atomic, as sessiond's are;
// a library that wants no half-done state sends them so); without it they are plain pipelines,
// the cheaper choice for Redis.
//
// --rate: at most this many calls per second over all clients (each paces its share: a call
// ahead of schedule waits on its client's I/O thread before it is sent), for the measurements
// that need a fixed load (replication lag, scripts/bench/regions); 0, the default, is as fast
// as the node answers.
//
// Connections: C workers (default 2, one I/O thread each) whose connections add up to N (N/C
// each, the remainder spread over the first workers). Each worker keeps P operations
// outstanding per connection: it starts connections * P and issues a new one from each answer.
// Against sessiond a worker is one sessiond::Client, which puts every call on its least busy
// connection; against Redis a worker is one epoll loop over hiredis async contexts, and an
// operation's answer starts the next one on the same connection.
//
// Key set: each worker owns keys/C sessions, created before measuring. get_touch, update and
// regenerate pick one of them at random; destroy and regenerate take their session out of the
// set before sending (so nothing picks it afterwards), create and regenerate add the new id
// when answered, revoke_user takes out every session of the user, so the set stays about the
// same size. A get_touch or update sent before the end of its key may still arrive after it:
// such a NOT_FOUND is an expected race, counted apart; every other failure is an error,
// reported by status, and makes the exit code 1.
//
// --load-only: create the key set, print "load: N sessions in S s (R/s)" and exit, leaving the
// sessions in the server (scripts/bench/compare measures memory and restart time so).
//
// Measurement: the run lasts warmup + duration seconds, or stops early once --max-ops calls
// have been counted. Only operations answered inside the measured window count; their latency
// (from the send of the operation's first command to its last answer) goes to a log-bucketed
// histogram (HdrHistogram-like: 128 sub-buckets per power of two, < 0.4% error), so memory
// does not grow with the run. Errors are counted over the whole run, warmup included.
//
// Exit codes: 0 ok, 1 errors during the run (or setup), 2 usage, 3 server unreachable.
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

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
#include <functional>
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

enum class Op : std::uint8_t { kGetTouch, kUpdate, kCreate, kDestroy, kRegenerate, kRevokeUser };
constexpr std::size_t kOps = 6;
constexpr std::array<std::string_view, kOps> kOpNames = {"get_touch", "update",     "create",
                                                         "destroy",   "regenerate", "revoke_user"};
// Idle timeout of the sessions created in Redis: the ecommerce preset's, sessiond's default
// preset here (storage/session.cc).
constexpr std::int64_t kRedisIdleMs = 30 * 60'000;

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
  std::string address = "127.0.0.1:7400";  // HOST:PORT[,HOST:PORT...] (sessiond) or HOST:PORT
  bool redis = false;                      // --target redis://...
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
  std::uint32_t users_max = 0;       // each user holds 1..users_max sessions; 0: no users
  bool load_only = false;
  bool redis_multi = false;
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
      return Status::InvalidArgument(
          "--mix: unknown operation '" + name +
          "' (get_touch, update, create, destroy, regenerate, revoke_user)");
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

// One operation on its way: what the backend sends, and what the worker needs back.
struct Call {
  Op op = Op::kGetTouch;
  bool precreate = false;  // part of the key set, not measured
  std::string id;          // the session (get_touch, update, destroy, regenerate)
  std::uint32_t user = 0;  // its user (create, destroy, regenerate, revoke_user); 0: none
  std::size_t slot = 0;    // the connection (Redis): the next call goes on the same one
  Clock::time_point sent;
};

// A session of the key set.
struct Key {
  std::string id;
  std::uint32_t user = 0;  // 0: none
};

// The workload of one worker: its key set, users, operation choice and accounting. A backend
// (sessiond client or Redis loop) sends each Call and hands the answer to complete(), always on
// the worker's one I/O thread. After construction every member is touched only on that thread,
// until the main thread has seen in_flight() drop to 0 after stopping.
class Worker {
 public:
  Worker(const BenchOptions& options, std::size_t connections, std::size_t keys, const Mix& mix,
         std::uint64_t seed, Run& run)
      : connections_(connections),
        pipeline_(options.pipeline),
        rate_(options.rate / static_cast<double>(std::max<std::size_t>(options.clients, 1))),
        target_keys_(keys),
        users_max_(options.users_max),
        user_prefix_(user_prefix()),
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
      fields_.emplace_back("field" + std::to_string(f), std::move(value));
    }
    update_value_.assign(fields_[0].second.size(), 'u');
  }
  virtual ~Worker() = default;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs `task` on the worker's I/O thread.
  virtual void post(std::function<void()> task) = 0;

  // Starts creating this worker's share of the key set, connections * max(P, 4) calls at a
  // time; the future is ready once every create is answered (the first failure, or OK).
  std::future<Status> precreate() {
    auto done = precreate_done_.get_future();  // before the I/O thread may set it
    post([this] {
      const std::size_t window = connections_ * std::max<std::size_t>(pipeline_, 4);
      for (std::size_t i = 0; i < window && precreate_sent_ < target_keys_; ++i) {
        precreate_next(i % connections_);
      }
      if (target_keys_ == 0) precreate_done_.set_value(Status());
    });
    return done;
  }

  // Starts connections * P calls; each answer starts the next until run_.stopping is set.
  void start() {
    in_flight_.fetch_add(1, std::memory_order_relaxed);  // held until the burst is sent
    post([this] {
      for (std::size_t c = 0; c < connections_; ++c) {
        for (std::size_t p = 0; p < pipeline_; ++p) issue(c);
      }
      release_one();
    });
  }

  std::size_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

  // Results; read by the main thread once in_flight() is 0 after stopping.
  const std::array<LatencyHistogram, kOps>& latencies() const { return latencies_; }
  const std::array<std::uint64_t, kOps>& races() const { return races_; }
  const std::map<std::pair<Op, StatusCode>, ErrorTally>& errors() const { return errors_; }
  std::size_t keys_owned() const { return keys_.size(); }

 protected:
  // Sends the call; its answer must reach complete() exactly once, on the I/O thread.
  virtual void send(Call call) = 0;

  // The answer of a call: `status`, and for create and regenerate the new session's id.
  void complete(Call call, const Status& status, std::string new_id) {
    if (call.precreate) {
      if (!status.ok()) {
        if (precreate_status_.ok()) precreate_status_ = status;
      } else {
        keys_.push_back({std::move(new_id), call.user});
      }
      ++precreate_answered_;
      if (precreate_sent_ < target_keys_ && precreate_status_.ok()) {
        precreate_next(call.slot);
      } else if (precreate_answered_ == precreate_sent_) {
        precreate_done_.set_value(precreate_status_);
      }
      return;
    }
    if (status.ok() && (call.op == Op::kCreate || call.op == Op::kRegenerate)) {
      if (revoked_users_.contains(call.user)) {
        // The user's revocation went out while this call was on its way, and may have ended
        // the new session too: it is not picked again.
        remember_end(new_id);
      } else {
        keys_.push_back({std::move(new_id), call.user});
      }
    }
    finish(call, status);
  }

  // A random tag per worker and run: runs against the same server never share a user.
  static std::string user_prefix() {
    std::random_device device;
    return "bench-" + std::to_string(device()) + std::to_string(device()) + "-";
  }

  std::string user_name(std::uint32_t user) const {
    return user == 0 ? std::string() : user_prefix_ + std::to_string(user);
  }
  const std::vector<FieldValue>& fields() const { return fields_; }
  const std::string& update_value() const { return update_value_; }

 private:
  void precreate_next(std::size_t slot) {
    ++precreate_sent_;
    Call call;
    call.op = Op::kCreate;
    call.precreate = true;
    call.user = next_user();
    call.slot = slot;
    call.sent = Clock::now();
    send(std::move(call));
  }

  // The user of the next session created: the current one until it holds its drawn count.
  std::uint32_t next_user() {
    if (users_max_ == 0) return 0;
    if (user_left_ == 0) {
      ++last_user_;
      user_left_ = 1 + static_cast<std::uint32_t>(rng_() % users_max_);
    }
    --user_left_;
    return last_user_;
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

  // Takes key k out of the set (nothing picks it once its end is on its way).
  Key take_key(std::size_t k) {
    Key key = std::move(keys_[k]);
    keys_[k] = std::move(keys_.back());
    keys_.pop_back();
    remember_end(key.id);
    return key;
  }

  void issue(std::size_t slot) {
    if (rate_ > 0) {  // paced: the n-th call of this worker at paced_start_ + n / rate
      if (paced_ == 0) paced_start_ = Clock::now();
      const auto due = paced_start_ + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(paced_ / rate_));
      ++paced_;
      if (Clock::now() < due) std::this_thread::sleep_until(due);
    }
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    Call call;
    call.op = pick_op();
    call.slot = slot;
    if (keys_.empty() && call.op != Op::kCreate) call.op = Op::kCreate;  // nothing to pick
    switch (call.op) {
      case Op::kGetTouch:
      case Op::kUpdate: {
        const Key& key = keys_[pick_key()];
        call.id = key.id;
        call.user = key.user;
        break;
      }
      case Op::kCreate:
        call.user = next_user();
        break;
      case Op::kDestroy:
      case Op::kRegenerate: {
        Key key = take_key(pick_key());
        call.id = std::move(key.id);
        call.user = key.user;
        break;
      }
      case Op::kRevokeUser: {
        const std::uint32_t user = keys_[pick_key()].user;
        if (user == 0) {  // sessions without users: revoke the one session instead
          Key key = take_key(pick_key());
          call.id = std::move(key.id);
          call.op = Op::kDestroy;
          break;
        }
        call.user = user;
        for (std::size_t k = keys_.size(); k-- > 0;) {
          if (keys_[k].user == user) take_key(k);
        }
        revoked_users_.insert(user);
        if (user == last_user_) user_left_ = 0;  // the next create starts a new user
        break;
      }
    }
    call.sent = Clock::now();
    send(std::move(call));
  }

  void remember_end(const std::string& id) {
    recent_ends_.insert(id);
    recent_order_.push_back(id);
    if (recent_order_.size() > kRecentDestroys) {
      recent_ends_.erase(recent_order_.front());
      recent_order_.pop_front();
    }
  }

  void finish(const Call& call, const Status& status) {
    const Clock::time_point now = Clock::now();
    const auto i = static_cast<std::size_t>(call.op);
    const bool in_window = now >= run_.window_start && now < run_.window_end;
    if (status.ok()) {
      if (in_window && count_in_window(now)) {
        latencies_[i].record(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - call.sent).count()));
      }
    } else if (status.code() == StatusCode::kNotFound && expected_race(call)) {
      if (in_window) ++races_[i];
    } else {
      ErrorTally& tally = errors_[{call.op, status.code()}];
      if (tally.count++ == 0) tally.first_message = status.ToString();
    }
    if (!run_.stopping.load(std::memory_order_relaxed) &&
        status.code() != StatusCode::kUnavailable) {
      issue(call.slot);
    }
    release_one();
  }

  // Whether a NOT_FOUND answer to `call` is explained by another call of this worker that
  // ended the session on the way: a read or update raced its session's end, or the session's
  // user was revoked meanwhile (which also ends sessions whose create or regenerate was still
  // on its way).
  bool expected_race(const Call& call) const {
    if (call.user != 0 && revoked_users_.contains(call.user)) return true;
    return (call.op == Op::kGetTouch || call.op == Op::kUpdate) && recent_ends_.contains(call.id);
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

  const std::size_t connections_;
  const std::size_t pipeline_;
  const double rate_;        // this worker's share of --rate (0: none)
  std::uint64_t paced_ = 0;  // calls paced so far (I/O thread)
  Clock::time_point paced_start_;
  const std::size_t target_keys_;
  const std::uint32_t users_max_;
  const std::string user_prefix_;  // user names: prefix + number (unique per run and worker)
  std::uint32_t last_user_ = 0;
  std::uint32_t user_left_ = 0;  // sessions the current user still takes
  const Mix mix_;
  std::mt19937_64 rng_;
  Run& run_;
  std::vector<FieldValue> fields_;  // of every created session
  std::string update_value_;        // what an update writes to field0

  std::vector<Key> keys_;  // sessions this worker owns
  std::unordered_set<std::string> recent_ends_;
  std::unordered_set<std::uint32_t> revoked_users_;  // users revoke_user was sent for
  std::deque<std::string> recent_order_;             // recent_ends_ in order
  std::array<LatencyHistogram, kOps> latencies_;
  std::array<std::uint64_t, kOps> races_{};
  std::map<std::pair<Op, StatusCode>, ErrorTally> errors_;
  std::atomic<std::size_t> in_flight_{0};  // calls started and not yet answered

  std::promise<Status> precreate_done_;
  std::size_t precreate_sent_ = 0;
  std::size_t precreate_answered_ = 0;
  Status precreate_status_;
};

// ---- against sessiond: the client library ---------------------------------------------------

class NativeWorker final : public Worker {
 public:
  NativeWorker(const BenchOptions& options, std::size_t connections, std::size_t keys,
               const Mix& mix, std::uint64_t seed, Run& run)
      : Worker(options, connections, keys, mix, seed, run),
        client_(client_options(options, connections)) {
    create_.fields = fields();
    // Each preset's timeouts outlast a run (at least 30 min absolute, 10 min idle).
    create_.preset = options.preset == "finance"      ? Preset::kFinance
                     : options.preset == "healthcare" ? Preset::kHealthcare
                     : options.preset == "media"      ? Preset::kMedia
                     : options.preset == "gaming"     ? Preset::kGaming
                                                      : Preset::kEcommerce;
    update_.set.emplace_back("field0", update_value());
    get_.touch = true;
  }

  Client& client() { return client_; }

  void post(std::function<void()> task) override {
    client_.async_ping({}, [task = std::move(task)](Result<PingResult>) { task(); });
  }

 private:
  static ClientOptions client_options(const BenchOptions& options, std::size_t pool_size) {
    ClientOptions client;
    client.address = options.address;
    client.pool_size = pool_size;
    client.timeout = std::chrono::milliseconds(options.timeout_ms);
    return client;
  }

  void send(Call call) override {
    switch (call.op) {
      case Op::kGetTouch: {
        const std::string id = call.id;
        client_.async_get(id, get_, [this, call = std::move(call)](Result<Session> result) {
          complete(call, result.status(), {});
        });
        break;
      }
      case Op::kUpdate: {
        const std::string id = call.id;
        client_.async_update(id, update_,
                             [this, call = std::move(call)](Result<SessionMeta> result) {
                               complete(call, result.status(), {});
                             });
        break;
      }
      case Op::kCreate:
        create_.user_id = user_name(call.user);
        client_.async_create(create_, [this, call = std::move(call)](Result<SessionMeta> result) {
          std::string id = result.ok() ? std::move(result->id) : std::string();
          complete(call, result.status(), std::move(id));
        });
        break;
      case Op::kDestroy: {
        const std::string id = call.id;
        client_.async_destroy(
            id, [this, call = std::move(call)](Status status) { complete(call, status, {}); });
        break;
      }
      case Op::kRegenerate: {
        const std::string id = call.id;
        client_.async_regenerate(
            id, {}, [this, call = std::move(call)](Result<SessionMeta> result) {
              std::string new_id = result.ok() ? std::move(result->id) : std::string();
              complete(call, result.status(), std::move(new_id));
            });
        break;
      }
      case Op::kRevokeUser: {
        const std::string user = user_name(call.user);
        client_.async_revoke_user(user, {},
                                  [this, call = std::move(call)](Result<std::uint64_t> result) {
                                    complete(call, result.status(), {});
                                  });
        break;
      }
    }
  }

  Client client_;
  CreateOptions create_;
  UpdateOptions update_;
  GetOptions get_;
};

// ---- against Redis: hiredis async contexts on one epoll loop --------------------------------

// The event loop of one RedisWorker: its thread runs epoll over the worker's connections and
// an eventfd that wakes it for posted tasks. hiredis tells the loop what to wait for through
// its adapter hooks (ev.addRead and friends), and the loop calls redisAsyncHandleRead/Write.
class RedisWorker final : public Worker {
 public:
  RedisWorker(const BenchOptions& options, std::size_t connections, std::size_t keys,
              const Mix& mix, std::uint64_t seed, Run& run)
      : Worker(options, connections, keys, mix, seed, run), multi_(options.redis_multi) {
    const auto colon = options.address.rfind(':');
    host_ = options.address.substr(0, colon);
    port_ = std::stoi(options.address.substr(colon + 1));
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the eventfd
    epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &ev);
    conns_.resize(connections);
    for (std::size_t i = 0; i < connections; ++i) conns_[i] = std::make_unique<Conn>(this, i);
    thread_ = std::thread([this] { loop(); });
  }

  ~RedisWorker() override {
    post([this] {
      for (auto& conn : conns_) {
        if (conn->ac != nullptr) redisAsyncFree(conn->ac);  // its callbacks get no reply
      }
      done_ = true;
    });
    thread_.join();
    close(wake_);
    close(epoll_);
  }

  void post(std::function<void()> task) override {
    {
      std::lock_guard lock(tasks_mu_);
      tasks_.push_back(std::move(task));
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto written = write(wake_, &one, sizeof(one));
  }

 private:
  // What the loop expects of each reply of an operation, in the order they come.
  enum class Expect : std::uint8_t {
    kAny,      // anything but an error
    kHash,     // HGETALL: an empty array is a missing session
    kRename,   // RENAME: "no such key" is a missing session
    kMembers,  // SMEMBERS of revoke_user: the ids to delete next
    kExec,     // EXEC: each element checked (a RENAME's error is a missing session)
  };

  struct Conn;

  // An operation on the wire: its replies left, what each is, and the outcome so far.
  struct Pending {
    Call call;
    std::string new_id;
    std::array<Expect, 8> expect{};
    int replies = 0;  // expected so far
    int seen = 0;     // answered so far
    Status status;
    Conn* conn = nullptr;
  };

  struct Conn {
    Conn(RedisWorker* worker_in, std::size_t slot_in) : worker(worker_in), slot(slot_in) {}
    RedisWorker* worker;
    std::size_t slot;
    redisAsyncContext* ac = nullptr;
    std::uint32_t events = 0;  // what epoll waits for
    bool registered = false;
  };

  void loop() {
    for (auto& conn : conns_) connect(*conn);
    std::array<epoll_event, 64> events{};
    while (!done_) {
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 1000);
      for (int i = 0; i < n; ++i) {
        if (events[i].data.ptr == nullptr) {
          std::uint64_t count = 0;
          [[maybe_unused]] const auto got = read(wake_, &count, sizeof(count));
          std::deque<std::function<void()>> tasks;
          {
            std::lock_guard lock(tasks_mu_);
            tasks.swap(tasks_);
          }
          for (auto& task : tasks) task();
          continue;
        }
        auto* conn = static_cast<Conn*>(events[i].data.ptr);
        // Read first: a reply may finish an operation and queue the next one's commands.
        if (conn->ac != nullptr && (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) {
          redisAsyncHandleRead(conn->ac);
        }
        if (conn->ac != nullptr && (events[i].events & EPOLLOUT) != 0) {
          redisAsyncHandleWrite(conn->ac);
        }
      }
    }
  }

  void connect(Conn& conn) {
    conn.ac = redisAsyncConnect(host_.c_str(), port_);
    if (conn.ac == nullptr || conn.ac->err != 0) {  // every command sent on it fails
      if (conn.ac != nullptr) redisAsyncFree(conn.ac);
      conn.ac = nullptr;
      return;
    }
    conn.ac->data = &conn;
    conn.ac->ev.data = &conn;
    conn.ac->ev.addRead = [](void* data) { watch(data, EPOLLIN, true); };
    conn.ac->ev.delRead = [](void* data) { watch(data, EPOLLIN, false); };
    conn.ac->ev.addWrite = [](void* data) { watch(data, EPOLLOUT, true); };
    conn.ac->ev.delWrite = [](void* data) { watch(data, EPOLLOUT, false); };
    // hiredis is freeing the context (a failed connect, a lost connection, redisAsyncFree):
    // the loop must not touch it again, not even for the rest of the current event.
    conn.ac->ev.cleanup = [](void* data) {
      auto* c = static_cast<Conn*>(data);
      if (c->registered) epoll_ctl(c->worker->epoll_, EPOLL_CTL_DEL, c->ac->c.fd, nullptr);
      c->registered = false;
      c->events = 0;
      c->ac = nullptr;
    };
    // The connection is made in the background; commands sent meanwhile wait in its buffer.
    // A connect failure, like a lost connection, reaches every queued command as a missing
    // reply (and then cleanup above).
  }

  static void watch(void* data, std::uint32_t what, bool on) {
    auto* conn = static_cast<Conn*>(data);
    const std::uint32_t events = on ? conn->events | what : conn->events & ~what;
    if (events == conn->events && conn->registered) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = conn;
    const int op = conn->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    epoll_ctl(conn->worker->epoll_, op, conn->ac->c.fd, &ev);
    conn->registered = true;
    conn->events = events;
  }

  // A new session's id, as a library makes it: 128 random bits (from a generator seeded by the
  // system, so that runs against the same server never reuse an id), in hex.
  std::string random_id() {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string id(32, '0');
    std::uint64_t bits = 0;
    for (std::size_t i = 0; i < id.size(); ++i) {
      if (i % 16 == 0) bits = id_rng_();
      id[i] = kHex[bits & 15];
      bits >>= 4;
    }
    return id;
  }

  // Queues one command of `pending` on its connection.
  void command(Pending& pending, Expect expect, std::initializer_list<std::string_view> args) {
    std::array<const char*, 16> argv{};
    std::array<std::size_t, 16> lens{};
    std::size_t n = 0;
    for (std::string_view arg : args) {
      argv[n] = arg.data();
      lens[n] = arg.size();
      ++n;
    }
    command_argv(pending, expect, static_cast<int>(n), argv.data(), lens.data());
  }

  void command_argv(Pending& pending, Expect expect, int argc, const char** argv,
                    const std::size_t* lens) {
    pending.expect[static_cast<std::size_t>(pending.replies++)] = expect;
    if (pending.conn->ac == nullptr ||
        redisAsyncCommandArgv(pending.conn->ac, &RedisWorker::on_reply, &pending, argc, argv,
                              lens) != REDIS_OK) {
      // Not sent: count it as answered with a lost connection.
      if (pending.status.ok()) pending.status = Status::Unavailable("redis connection lost");
      ++pending.seen;
    }
  }

  static void on_reply(redisAsyncContext* /*ac*/, void* reply_ptr, void* data) {
    auto* pending = static_cast<Pending*>(data);
    auto* reply = static_cast<redisReply*>(reply_ptr);
    const Expect expect = pending->expect[static_cast<std::size_t>(pending->seen++)];
    RedisWorker* self = pending->conn->worker;
    self->check(*pending, expect, reply);
    if (pending->seen == pending->replies) self->done(pending);
  }

  // Folds one reply into the operation's status; SMEMBERS also sends the revocation's deletes.
  void check(Pending& pending, Expect expect, const redisReply* reply) {
    if (reply == nullptr) {
      if (pending.status.ok()) pending.status = Status::Unavailable("redis connection lost");
      return;
    }
    auto missing = [&](const redisReply* r) {
      return r->type == REDIS_REPLY_ERROR &&
             std::string_view(r->str, r->len).find("no such key") != std::string_view::npos;
    };
    if (reply->type == REDIS_REPLY_ERROR) {
      if (!pending.status.ok()) return;
      pending.status = expect == Expect::kRename && missing(reply)
                           ? Status::NotFound("no such key")
                           : Status::Internal(std::string(reply->str, reply->len));
      return;
    }
    switch (expect) {
      case Expect::kAny:
        break;
      case Expect::kHash:
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 0 && pending.status.ok()) {
          pending.status = Status::NotFound();
        }
        break;
      case Expect::kRename:
        break;
      case Expect::kExec:
        if (reply->type != REDIS_REPLY_ARRAY) {  // nil: the transaction was aborted
          if (pending.status.ok()) pending.status = Status::Internal("EXEC aborted");
          break;
        }
        for (std::size_t i = 0; i < reply->elements && pending.status.ok(); ++i) {
          const redisReply* element = reply->element[i];
          if (element->type != REDIS_REPLY_ERROR) continue;
          pending.status = missing(element)
                               ? Status::NotFound("no such key")
                               : Status::Internal(std::string(element->str, element->len));
        }
        break;
      case Expect::kMembers: {
        if (reply->type != REDIS_REPLY_ARRAY) break;
        // DEL sess:each (in one command), then DEL user:U.
        std::vector<std::string> keys;
        keys.reserve(reply->elements);
        for (std::size_t i = 0; i < reply->elements; ++i) {
          keys.push_back("sess:" + std::string(reply->element[i]->str, reply->element[i]->len));
        }
        if (!keys.empty()) {
          std::vector<const char*> argv{"DEL"};
          std::vector<std::size_t> lens{3};
          for (const auto& key : keys) {
            argv.push_back(key.data());
            lens.push_back(key.size());
          }
          command_argv(pending, Expect::kAny, static_cast<int>(argv.size()), argv.data(),
                       lens.data());
        }
        const std::string set = "user:" + user_name(pending.call.user);
        command(pending, Expect::kAny, {"DEL", set});
        break;
      }
    }
  }

  void done(Pending* pending) {
    std::unique_ptr<Pending> owned(pending);
    complete(std::move(owned->call), owned->status, std::move(owned->new_id));
  }

  void send(Call call) override {
    Conn& conn = *conns_[call.slot];
    auto owned = std::make_unique<Pending>();
    Pending& p = *owned;
    p.conn = &conn;
    const std::string key = "sess:" + call.id;
    const std::string user = call.user == 0 ? std::string() : "user:" + user_name(call.user);
    const std::string idle = std::to_string(kRedisIdleMs);
    const bool multi =
        multi_ && (call.op == Op::kCreate || call.op == Op::kDestroy || call.op == Op::kRegenerate);
    if (multi) command(p, Expect::kAny, {"MULTI"});
    switch (call.op) {
      case Op::kGetTouch:
        command(p, Expect::kHash, {"HGETALL", key});
        command(p, Expect::kAny, {"PEXPIRE", key, idle});
        break;
      case Op::kUpdate:
        command(p, Expect::kAny, {"HSET", key, "field0", update_value()});
        command(p, Expect::kAny, {"PEXPIRE", key, idle});
        break;
      case Op::kCreate: {
        p.new_id = random_id();
        const std::string new_key = "sess:" + p.new_id;
        const auto& f = fields();
        command(p, Expect::kAny,
                {"HSET", new_key, f[0].first, f[0].second, f[1].first, f[1].second, f[2].first,
                 f[2].second, f[3].first, f[3].second});
        const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
        command(p, Expect::kAny, {"PEXPIREAT", new_key, std::to_string(now_ms + kRedisIdleMs)});
        if (!user.empty()) command(p, Expect::kAny, {"SADD", user, p.new_id});
        break;
      }
      case Op::kDestroy:
        command(p, Expect::kAny, {"DEL", key});
        if (!user.empty()) command(p, Expect::kAny, {"SREM", user, call.id});
        break;
      case Op::kRegenerate: {
        p.new_id = random_id();
        command(p, Expect::kRename, {"RENAME", key, "sess:" + p.new_id});
        if (!user.empty()) {
          command(p, Expect::kAny, {"SREM", user, call.id});
          command(p, Expect::kAny, {"SADD", user, p.new_id});
        }
        break;
      }
      case Op::kRevokeUser:
        command(p, Expect::kMembers, {"SMEMBERS", user});
        break;
    }
    if (multi) {
      // Inside MULTI every command answers QUEUED; EXEC carries the results.
      for (int i = 1; i < p.replies; ++i) p.expect[static_cast<std::size_t>(i)] = Expect::kAny;
      command(p, Expect::kExec, {"EXEC"});
    }
    p.call = std::move(call);
    if (p.seen == p.replies) {  // nothing was sent (a lost connection)
      done(owned.release());
      return;
    }
    owned.release();  // on_reply owns it now
  }

  const bool multi_;
  std::mt19937_64 id_rng_{std::random_device{}() * 0x9e3779b97f4a7c15ULL ^ std::random_device{}()};
  std::string host_;
  int port_ = 0;
  int epoll_ = -1;
  int wake_ = -1;
  std::vector<std::unique_ptr<Conn>> conns_;
  bool done_ = false;  // loop thread only
  std::mutex tasks_mu_;
  std::deque<std::function<void()>> tasks_;  // guarded by tasks_mu_
  std::thread thread_;
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

// What the run needs of the server besides the workload: reachability, a name, and its
// session count before and after (sessiond: STATS; Redis: DBSIZE, which also counts the
// users' index sets).
struct Probe {
  std::string server;
  std::uint64_t sessions = 0;
};

Result<Probe> probe_redis(const BenchOptions& options) {
  const auto colon = options.address.rfind(':');
  if (colon == std::string::npos) return Status::InvalidArgument("redis target is not HOST:PORT");
  const std::string host = options.address.substr(0, colon);
  const int port = std::atoi(options.address.c_str() + colon + 1);
  timeval timeout{options.timeout_ms / 1000, static_cast<int>(options.timeout_ms % 1000) * 1000};
  std::unique_ptr<redisContext, decltype(&redisFree)> c(
      redisConnectWithTimeout(host.c_str(), port, timeout), &redisFree);
  if (c == nullptr || c->err != 0) {
    return Status::Unavailable(c == nullptr ? "out of memory" : c->errstr);
  }
  auto ask = [&](const char* command) -> Result<std::string> {
    auto* reply = static_cast<redisReply*>(redisCommand(c.get(), command));
    if (reply == nullptr) return Status::Unavailable(c->errstr);
    std::string text = reply->type == REDIS_REPLY_INTEGER ? std::to_string(reply->integer)
                       : reply->str != nullptr            ? std::string(reply->str, reply->len)
                                                          : std::string();
    const bool error = reply->type == REDIS_REPLY_ERROR;
    freeReplyObject(reply);
    if (error) return Status::Unavailable(command + std::string(": ") + text);
    return text;
  };
  auto info = ask("INFO server");
  if (!info.ok()) return info.status();
  Probe probe;
  const auto at = info->find("redis_version:");
  probe.server =
      "redis " + (at == std::string::npos ? std::string("(unknown version)")
                                          : info->substr(at + 14, info->find('\r', at) - at - 14));
  auto size = ask("DBSIZE");
  if (!size.ok()) return size.status();
  probe.sessions = std::stoull(*size);
  return probe;
}

Result<Probe> probe_server(const BenchOptions& options, Worker& first) {
  if (options.redis) return probe_redis(options);
  Client& client = static_cast<NativeWorker&>(first).client();
  auto ping = client.ping("sessiond-bench");
  if (!ping.ok()) return ping.status();
  Probe probe;
  probe.server = ping->server;
  if (auto stats = client.stats(); stats.ok()) probe.sessions = stats->sessions;
  return probe;
}

int run_bench(const BenchOptions& options, const Mix& mix) {
  const std::size_t clients = std::min(options.clients, options.connections);
  Run run;
  run.max_ops = options.max_ops;

  std::vector<std::unique_ptr<Worker>> workers;
  for (std::size_t c = 0; c < clients; ++c) {
    const std::size_t pool = options.connections / clients + (c < options.connections % clients);
    const std::size_t keys = options.keys / clients + (c < options.keys % clients);
    const std::uint64_t seed = options.seed * 0x9e3779b97f4a7c15ULL + c;
    if (options.redis) {
      workers.push_back(std::make_unique<RedisWorker>(options, pool, keys, mix, seed, run));
    } else {
      workers.push_back(std::make_unique<NativeWorker>(options, pool, keys, mix, seed, run));
    }
  }

  // Reachability first: one ping, within the call timeout (the client retries with backoff).
  auto before = probe_server(options, *workers[0]);
  if (!before.ok()) {
    std::cerr << "sessiond-bench: cannot reach " << (options.redis ? "redis" : "a node") << " at "
              << options.address << ": " << before.status().ToString() << "\n";
    return kExitUnreachable;
  }

  std::cerr << "sessiond-bench: " << before->server << " at " << options.address << "; creating "
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
  if (options.load_only) {
    std::printf("load: %zu sessions in %.3f s (%.0f/s)\n", options.keys, load_ms / 1000.0,
                static_cast<double>(options.keys) / std::max(load_ms / 1000.0, 1e-9));
    return kExitOk;
  }
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
  auto after = probe_server(options, *workers[0]);

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
      "sessiond-bench: %s at %s, %zu connections (%zu clients), pipeline %zu, %zu-byte "
      "sessions, %zu keys, users of 1-%u sessions, mix %s\n",
      before->server.c_str(), options.address.c_str(), options.connections, clients,
      options.pipeline, options.value_size, options.keys, options.users_max, options.mix.c_str());
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
  if (after.ok()) {
    std::printf("%s: %llu before the key set, %llu after the run (bench owns %zu sessions)\n",
                options.redis ? "redis keys" : "node sessions",
                static_cast<unsigned long long>(before->sessions),
                static_cast<unsigned long long>(after->sessions), keys_owned);
  }
  return errors.empty() ? kExitOk : kExitErrors;
}

}  // namespace

int main(int argc, char** argv) {
  BenchOptions options;
  CLI::App app{"sessiond-bench: load generator for a sessiond node (docs/benchmarks.md)"};
  std::string target;
  app.add_option("--target", target,
                 "sessiond://HOST:PORT[,HOST:PORT...] (native protocol) or redis://HOST:PORT");
  app.add_option("--addr", options.address, "HOST:PORT of the node (= --target sessiond://...)")
      ->capture_default_str();
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
  app.add_option("--users-max", options.users_max,
                 "sessions get user ids, each user holding 1..N sessions (0: no users)")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  app.add_flag("--load-only", options.load_only,
               "create the key set, print its rate and exit (the sessions stay)");
  app.add_flag("--redis-multi", options.redis_multi,
               "Redis: wrap create, destroy and regenerate in MULTI/EXEC");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  if (!target.empty()) {
    constexpr std::string_view kNative = "sessiond://";
    constexpr std::string_view kRedis = "redis://";
    const std::string_view url = target;
    if (url.starts_with(kNative)) {
      options.address = target.substr(kNative.size());
    } else if (url.starts_with(kRedis)) {
      options.redis = true;
      options.address = target.substr(kRedis.size());
      const auto colon = options.address.rfind(':');
      if (colon == std::string::npos || colon == 0 ||
          options.address.find_first_not_of("0123456789", colon + 1) != std::string::npos ||
          colon + 1 == options.address.size()) {
        std::cerr << "sessiond-bench: --target " << target << ": expected redis://HOST:PORT\n";
        return kExitUsage;
      }
    } else {
      std::cerr << "sessiond-bench: --target " << target
                << ": expected sessiond://HOST:PORT or redis://HOST:PORT\n";
      return kExitUsage;
    }
  }
  auto mix = parse_mix(options.mix);
  if (!mix.ok()) {
    std::cerr << "sessiond-bench: " << mix.status().message() << "\n";
    return kExitUsage;
  }
  return run_bench(options, *mix);
}
