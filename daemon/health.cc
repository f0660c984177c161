#include "daemon/health.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

namespace sessiond::daemon {

Health::Health(HealthOptions options, Log log) : options_(options), log_(std::move(log)) {}

Health::~Health() { stop(); }

void Health::start(Sampler sampler) {
  thread_ = std::thread([this, sampler = std::move(sampler)] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      lock.unlock();
      const HealthSample sample = sampler();
      observe(sample);
      lock.lock();
      wake_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_; });
    }
  });
}

void Health::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Health::observe(const HealthSample& sample) {
  std::lock_guard lock(mu_);
  if (!samples_.empty()) {
    const HealthSample& prev = samples_.back();
    HealthPoint p;
    p.t_ms = sample.t_ms;
    const double seconds = std::max(0.001, (sample.t_ms - prev.t_ms) / 1000.0);
    Latency delta;
    for (std::size_t i = 0; i < kLatencyBuckets; ++i) {
      delta.buckets[i] = sample.requests.buckets[i] -
                         std::min(sample.requests.buckets[i], prev.requests.buckets[i]);
      delta.count += delta.buckets[i];
    }
    p.ops_per_s = static_cast<double>(delta.count) / seconds;
    p.p50_ms = delta.quantile(0.50) * 1000;
    p.p99_ms = delta.quantile(0.99) * 1000;
    p.sessions = sample.sessions;
    p.memory_bytes = sample.memory_bytes;
    p.creates_per_s =
        static_cast<double>(sample.creates - std::min(sample.creates, prev.creates)) / seconds;
    p.region_lag_ms = sample.region_lag_ms;
    history_.push_back(std::move(p));
    while (history_.size() > kHistory) history_.pop_front();
  }
  samples_.push_back(sample);
  // Keep samples back to two windows ago (by time: a sample may come late).
  const std::int64_t keep_from = sample.t_ms - 2 * options_.window_s * 1000 - 1000;
  while (samples_.size() > 2 && samples_[1].t_ms <= keep_from) samples_.pop_front();
  // The samples closest to one and two windows ago.
  const HealthSample* window_ago = nullptr;
  const HealthSample* two_windows_ago = nullptr;
  for (const HealthSample& s : samples_) {
    if (s.t_ms <= sample.t_ms - 2 * options_.window_s * 1000) two_windows_ago = &s;
    if (s.t_ms <= sample.t_ms - options_.window_s * 1000) window_ago = &s;
  }
  evaluate(sample, window_ago, two_windows_ago);
}

void Health::evaluate(const HealthSample& now, const HealthSample* window_ago,
                      const HealthSample* two_windows_ago) {
  const std::int64_t t = now.t_ms;
  // Memory against the budget.
  const bool memory_high = now.memory_budget > 0 && static_cast<double>(now.memory_bytes) >
                                                        options_.memory_share * now.memory_budget;
  set("memory_high", memory_high,
      fmt::format("sessions use {} of {} bytes of --memory-budget ({:.0f}%)", now.memory_bytes,
                  now.memory_budget,
                  now.memory_budget ? 100.0 * now.memory_bytes / now.memory_budget : 0.0),
      t);
  // Hit ratio over the window (since the oldest sample when the window is not full yet).
  const HealthSample& base = window_ago ? *window_ago : samples_.front();
  const std::uint64_t hits = now.read_hits - std::min(now.read_hits, base.read_hits);
  const std::uint64_t misses = now.read_misses - std::min(now.read_misses, base.read_misses);
  const std::uint64_t reads = hits + misses;
  hit_ratio_ = reads == 0 ? 1.0 : static_cast<double>(hits) / static_cast<double>(reads);
  set("hit_ratio_low", reads >= options_.min_reads && hit_ratio_ < options_.min_hit_ratio,
      fmt::format("{:.0f}% of {} reads in the last {} s found their session (threshold {:.0f}%)",
                  100 * hit_ratio_, reads, options_.window_s, 100 * options_.min_hit_ratio),
      t);
  // Creation rate: the last window against the one before.
  bool surge = false;
  double rate = 0, before = 0;
  if (window_ago && two_windows_ago) {
    const double w1 = std::max(1.0, (now.t_ms - window_ago->t_ms) / 1000.0);
    const double w0 = std::max(1.0, (window_ago->t_ms - two_windows_ago->t_ms) / 1000.0);
    rate = static_cast<double>(now.creates - std::min(now.creates, window_ago->creates)) / w1;
    before = static_cast<double>(window_ago->creates -
                                 std::min(window_ago->creates, two_windows_ago->creates)) /
             w0;
    surge = rate >= options_.min_creation_rate && rate > options_.creation_growth * before;
  }
  set("creation_surge", surge,
      fmt::format("{:.1f} creates/s over the last {} s, {:.1f}/s the {} s before", rate,
                  options_.window_s, before, options_.window_s),
      t);
  // Replication lag.
  std::string laggard;
  std::int64_t worst = 0;
  for (const auto& [region, lag] : now.region_lag_ms) {
    if (lag > worst) {
      worst = lag;
      laggard = "region " + region;
    }
  }
  const bool region_behind = worst > options_.max_lag_ms;
  const std::uint64_t out_of_sync = now.replicas - std::min(now.replicas, now.replicas_in_sync);
  std::string detail;
  if (region_behind) {
    detail =
        fmt::format("{} is {} ms behind (threshold {} ms)", laggard, worst, options_.max_lag_ms);
  }
  if (out_of_sync > 0) {
    detail += fmt::format("{}{} of {} replicas of the node's ranges are out of the in-sync set",
                          detail.empty() ? "" : "; ", out_of_sync, now.replicas);
  }
  set("replication_lag", region_behind || out_of_sync > 0, detail, t);
  // The disk.
  set("disk_refusing_writes", !now.disk_failure.empty(), now.disk_failure, t);
  // Clock steps: held for a while after each.
  // (Steps before the first sample were logged when they happened.)
  if (samples_.size() >= 2 && now.clock_steps > samples_[samples_.size() - 2].clock_steps) {
    clock_step_seen_ms_ = t;
  }
  set("clock_step",
      clock_step_seen_ms_ != 0 && t - clock_step_seen_ms_ < options_.clock_step_hold_s * 1000,
      fmt::format("the wall clock stepped ({} steps since start); the node's time slews "
                  "(docs/operations.md, \"Clock steps\")",
                  now.clock_steps),
      t);
}

void Health::set(const std::string& rule, bool firing, const std::string& detail,
                 std::int64_t now_ms) {
  auto it =
      std::find_if(alerts_.begin(), alerts_.end(), [&](const Alert& a) { return a.rule == rule; });
  if (firing && it == alerts_.end()) {
    alerts_.push_back({rule, detail, now_ms});
    if (log_) log_(true, "health: " + rule + " started: " + detail);
  } else if (firing) {
    it->detail = detail;
  } else if (it != alerts_.end()) {
    if (log_) {
      log_(false,
           fmt::format("health: {} stopped after {} s", rule, (now_ms - it->since_ms) / 1000));
    }
    alerts_.erase(it);
  }
}

std::vector<Alert> Health::alerts() const {
  std::lock_guard lock(mu_);
  return alerts_;
}

std::vector<HealthPoint> Health::history() const {
  std::lock_guard lock(mu_);
  return {history_.begin(), history_.end()};
}

HealthPoint Health::latest() const {
  std::lock_guard lock(mu_);
  return history_.empty() ? HealthPoint{} : history_.back();
}

double Health::hit_ratio() const {
  std::lock_guard lock(mu_);
  return hit_ratio_;
}

}  // namespace sessiond::daemon
