// Health: the node's figures sampled once a second, the rates and the last ten minutes derived
// from them (for /metrics, the console and `sessctl top`), and the health rules of the seed's
// session monitor evaluated on each sample (docs/operations.md, "Health rules").
//
// A rule that starts firing is logged once (warning) and stays in alerts() until it stops,
// which is logged once too (info). The rules:
//   memory_high           table memory over memory_share of --memory-budget
//   hit_ratio_low         reads that found their session under min_hit_ratio over the window
//                         (at least min_reads reads)
//   creation_surge        creates in the last window over creation_growth times the window
//                         before (at least min_creation_rate per second)
//   replication_lag       a peer region more than max_lag_ms behind, or a replica of the node's
//                         ranges out of the in-sync set
//   disk_refusing_writes  the store refuses writes since one failed (a full disk)
//   clock_step            the wall clock stepped (held for clock_step_hold_s)
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "daemon/metrics.h"

namespace sessiond::daemon {

// The rules' names, as alerts, /metrics (sessiond_alert{rule}) and the log give them.
inline constexpr std::array<std::string_view, 6> kHealthRules = {
    "memory_high",     "hit_ratio_low",        "creation_surge",
    "replication_lag", "disk_refusing_writes", "clock_step"};

struct HealthOptions {
  double memory_share = 0.9;
  double min_hit_ratio = 0.5;
  std::uint64_t min_reads = 100;
  double creation_growth = 2.0;
  double min_creation_rate = 10;
  std::int64_t window_s = 60;
  std::int64_t max_lag_ms = 10'000;
  std::int64_t clock_step_hold_s = 300;
};

// The cumulative figures a sample reads (counters since start, gauges as they are now).
struct HealthSample {
  std::int64_t t_ms = 0;  // wall time of the sample
  Latency requests;       // every request of every listener (cumulative)
  std::uint64_t sessions = 0;
  std::uint64_t memory_bytes = 0;
  std::uint64_t memory_budget = 0;  // 0: none
  std::uint64_t creates = 0;
  std::uint64_t read_hits = 0, read_misses = 0;
  std::uint64_t clock_steps = 0;
  std::string disk_failure;                                         // Store::write_failure()
  std::vector<std::pair<std::string, std::int64_t>> region_lag_ms;  // per peer region
  std::uint64_t replicas = 0, replicas_in_sync = 0;  // of this node's ranges (Replicas::lag)
};

struct Alert {
  std::string rule;
  std::string detail;
  std::int64_t since_ms = 0;
};

// One second of the node's history.
struct HealthPoint {
  std::int64_t t_ms = 0;
  double ops_per_s = 0;
  double p50_ms = 0, p99_ms = 0;  // of the requests in that second (0: none)
  std::uint64_t sessions = 0;
  std::uint64_t memory_bytes = 0;
  double creates_per_s = 0;
  std::vector<std::pair<std::string, std::int64_t>> region_lag_ms;
};

class Health {
 public:
  using Sampler = std::function<HealthSample()>;
  using Log = std::function<void(bool warning, const std::string& message)>;
  static constexpr std::size_t kHistory = 600;  // points kept: ten minutes

  Health(HealthOptions options, Log log);
  ~Health();
  Health(const Health&) = delete;
  Health& operator=(const Health&) = delete;

  // Samples once a second on a thread of its own until stop() (or the destructor).
  void start(Sampler sampler);
  void stop();

  // Takes one sample: updates the history and the alerts (the thread calls this; tests may
  // call it directly with made-up samples, without start()).
  void observe(const HealthSample& sample);

  std::vector<Alert> alerts() const;
  std::vector<HealthPoint> history() const;  // oldest first
  // The latest point (all zero before the second sample).
  HealthPoint latest() const;
  // Read hit ratio over the window (1 when there were no reads).
  double hit_ratio() const;
  const HealthOptions& options() const { return options_; }

 private:
  void evaluate(const HealthSample& now, const HealthSample* window_ago,
                const HealthSample* two_windows_ago);
  void set(const std::string& rule, bool firing, const std::string& detail, std::int64_t now_ms);

  const HealthOptions options_;
  const Log log_;
  mutable std::mutex mu_;             // guards everything below
  std::deque<HealthSample> samples_;  // the last 2 windows + 1 of samples
  std::deque<HealthPoint> history_;
  std::vector<Alert> alerts_;
  double hit_ratio_ = 1;
  std::int64_t clock_step_seen_ms_ = 0;
  bool stopping_ = false;
  std::condition_variable wake_;
  std::thread thread_;
};

}  // namespace sessiond::daemon
