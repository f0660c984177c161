// Request metrics kept per thread and merged on scrape, the Prometheus writer, and the health
// rules fed with made-up samples (daemon/metrics.h, daemon/health.h).
#include "daemon/metrics.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "daemon/health.h"

namespace sessiond::daemon {
namespace {

using namespace std::chrono_literals;

TEST(RequestMetrics, ThreadsCountIntoTheirOwnSlotsAndTheScrapeSumsThem) {
  RequestMetrics m;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&m] {
      for (int i = 0; i < 10'000; ++i) {
        m.record(Listener::kNative, native_op(4), 30us);  // GET, in the 25-50 us bucket
        m.record_status(StatusCode::kOk);
      }
      m.record(Listener::kResp, resp_op("SeT"), 2ms, 5);
    });
  }
  for (auto& t : threads) t.join();
  const RequestSnapshot s = m.snapshot();
  const Latency& get = s.latency[0][native_op(4)];
  EXPECT_EQ(get.count, 40'000u);
  EXPECT_EQ(get.buckets[2], 40'000u);  // (25, 50] us
  EXPECT_EQ(get.sum_ns, 40'000u * 30'000u);
  EXPECT_EQ(s.latency[1][resp_op("set")].count, 20u);
  EXPECT_EQ(s.statuses[0], 40'000u);
  EXPECT_EQ(s.all().count, 40'020u);
  // A read's worth at once: one bucket for all, counted per operation and status.
  std::array<std::uint32_t, kOps> ops{};
  ops[native_op(3)] = 7;  // CREATE
  m.record_many(Listener::kNative, ops, 3ms);
  const std::array<std::uint32_t, 3> statuses = {0, 2, 5};
  m.record_statuses(statuses);
  const RequestSnapshot again = m.snapshot();
  EXPECT_EQ(again.latency[0][native_op(3)].buckets[8], 7u);  // (2.5, 5] ms
  EXPECT_EQ(again.latency[0][native_op(3)].sum_ns, 7u * 3'000'000u);
  EXPECT_EQ(again.statuses[1], 2u);
  EXPECT_EQ(again.statuses[2], 5u);
  EXPECT_EQ(op_name(Listener::kNative, native_op(4)), "get");
  EXPECT_EQ(op_name(Listener::kResp, resp_op("FLUSHALL")), "other");
  EXPECT_EQ(op_name(Listener::kNative, native_op(999)), "other");
}

TEST(RequestMetrics, QuantilesInterpolateInsideTheirBucket) {
  Latency l;
  l.buckets[3] = 100;  // (50, 100] us
  l.count = 100;
  EXPECT_NEAR(l.quantile(0.5), 75e-6, 1e-9);
  EXPECT_NEAR(l.quantile(0.99), 99.5e-6, 1e-9);
  EXPECT_EQ(Latency{}.quantile(0.99), 0);
  Latency slow;
  slow.buckets[kLatencyBuckets - 1] = 1;  // beyond the last bound: reported at it
  EXPECT_EQ(slow.quantile(0.5), 10.0);
}

TEST(PromWriter, EscapesLabelsAndWritesCumulativeHistograms) {
  PromWriter w;
  w.family("x_total", "counter", "line one\nback\\slash");
  w.sample("x_total", {{"path", "a\"b\\c\nd"}}, 3);
  const std::vector<double> bounds = {0.5, 1};
  const std::vector<std::uint64_t> counts = {1, 2, 3};
  w.family("h_seconds", "histogram", "h");
  w.histogram("h_seconds", {{"op", "get"}}, bounds, counts, 4.25);
  EXPECT_EQ(w.text(),
            "# HELP x_total line one\\nback\\\\slash\n# TYPE x_total counter\n"
            "x_total{path=\"a\\\"b\\\\c\\nd\"} 3\n"
            "# HELP h_seconds h\n# TYPE h_seconds histogram\n"
            "h_seconds_bucket{op=\"get\",le=\"0.5\"} 1\n"
            "h_seconds_bucket{op=\"get\",le=\"1\"} 3\n"
            "h_seconds_bucket{op=\"get\",le=\"+Inf\"} 6\n"
            "h_seconds_sum{op=\"get\"} 4.25\n"
            "h_seconds_count{op=\"get\"} 6\n");
  EXPECT_THROW(w.sample("bad name", 1), std::invalid_argument);
  EXPECT_THROW(w.sample("ok", {{"0bad", "v"}}, 1), std::invalid_argument);
}

// Samples one second apart from t0, with `creates` and reads as given.
HealthSample at(int second, std::uint64_t creates = 0, std::uint64_t hits = 0,
                std::uint64_t misses = 0) {
  HealthSample s;
  s.t_ms = 1'000'000 + second * 1000;
  s.creates = creates;
  s.read_hits = hits;
  s.read_misses = misses;
  return s;
}

struct Logged {
  std::vector<std::pair<bool, std::string>> lines;
  Health::Log sink() {
    return [this](bool warning, const std::string& m) { lines.emplace_back(warning, m); };
  }
};

TEST(Health, ARuleIsLoggedOnceWhenItStartsAndOnceWhenItStops) {
  Logged log;
  HealthOptions o;
  Health h(o, log.sink());
  HealthSample s = at(0);
  s.memory_budget = 1000;
  s.memory_bytes = 500;
  h.observe(s);
  EXPECT_TRUE(h.alerts().empty());
  for (int i = 1; i <= 3; ++i) {  // over 90% of the budget for three samples
    s = at(i);
    s.memory_budget = 1000;
    s.memory_bytes = 950;
    h.observe(s);
  }
  ASSERT_EQ(h.alerts().size(), 1u);
  EXPECT_EQ(h.alerts()[0].rule, "memory_high");
  EXPECT_EQ(h.alerts()[0].since_ms, at(1).t_ms);
  s = at(4);
  s.memory_budget = 1000;
  s.memory_bytes = 100;
  h.observe(s);
  EXPECT_TRUE(h.alerts().empty());
  ASSERT_EQ(log.lines.size(), 2u);
  EXPECT_TRUE(log.lines[0].first);
  EXPECT_EQ(log.lines[0].second.rfind("health: memory_high started: sessions use 950 of 1000", 0),
            0u)
      << log.lines[0].second;
  EXPECT_FALSE(log.lines[1].first);
  EXPECT_EQ(log.lines[1].second, "health: memory_high stopped after 3 s");
}

TEST(Health, HitRatioCreationSurgeLagDiskAndClockRules) {
  Logged log;
  HealthOptions o;
  o.window_s = 10;
  Health h(o, log.sink());
  auto firing = [&](std::string_view rule) {
    for (const Alert& a : h.alerts()) {
      if (a.rule == rule) return true;
    }
    return false;
  };
  // 20 s of 5 creates/s, then 10 s of 20 creates/s: the last window is 4x the one before.
  std::uint64_t creates = 0;
  for (int i = 0; i <= 20; ++i) h.observe(at(i, creates += (i ? 5 : 0)));
  EXPECT_FALSE(firing("creation_surge"));
  for (int i = 21; i <= 30; ++i) h.observe(at(i, creates += 20));
  EXPECT_TRUE(firing("creation_surge"));
  EXPECT_NEAR(h.latest().creates_per_s, 20, 1e-9);
  // Reads: 30 of 200 found in the window: under 50%.
  h.observe(at(31, creates, 30, 170));
  EXPECT_TRUE(firing("hit_ratio_low"));
  EXPECT_NEAR(h.hit_ratio(), 0.15, 1e-9);
  // Lag, a failing disk, a clock step.
  HealthSample s = at(32, creates, 30, 170);
  s.region_lag_ms = {{"eu", 20'000}};
  s.disk_failure = "writes are refused since a write failed";
  s.clock_steps = 1;
  h.observe(s);
  EXPECT_TRUE(firing("replication_lag"));
  EXPECT_TRUE(firing("disk_refusing_writes"));
  EXPECT_TRUE(firing("clock_step"));
  s = at(33, creates, 30, 170);
  s.replicas = 2;
  s.replicas_in_sync = 1;  // a replica out of the in-sync set is lag too
  s.clock_steps = 1;       // held for clock_step_hold_s after the step
  h.observe(s);
  EXPECT_TRUE(firing("replication_lag"));
  EXPECT_FALSE(firing("disk_refusing_writes"));
  EXPECT_TRUE(firing("clock_step"));
  // The history has one point per second after the first.
  EXPECT_EQ(h.history().size(), 33u);
}

}  // namespace
}  // namespace sessiond::daemon
