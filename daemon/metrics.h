// Request metrics (DESIGN §11): latency histograms per operation and listener, and answers by
// status, kept per worker thread and merged when scraped.
//
// Each thread that records gets its own slot (registered once, under a lock, on its first
// record); after that a record is a few relaxed loads and stores on memory only that thread
// writes: no lock, no shared cache line, no atomic read-modify-write. A scrape reads every
// slot. Slots outlive their threads, so nothing counted is lost when a thread ends.
//
// The Prometheus text format (version 0.0.4) is written by PromWriter, which also checks the
// names it is given, so /metrics always parses.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/status.h"

namespace sessiond::daemon {

enum class Listener : std::uint8_t { kNative = 0, kResp = 1 };
inline constexpr std::size_t kListeners = 2;
std::string_view listener_name(Listener listener);

// Operations, per listener: the native protocol's opcodes, and the RESP commands by family.
// Index 0 is "other" (an unknown opcode, or a RESP command outside the named ones).
inline constexpr std::size_t kOps = 24;
// The slot of a native opcode.
std::size_t native_op(std::uint16_t opcode);
// The slot of a RESP command, by its name as the client sent it (any case).
std::size_t resp_op(std::string_view command);
// The slot's name ("get", "create", ...); "" for a slot the listener does not use.
std::string_view op_name(Listener listener, std::size_t op);

// Upper bounds of the latency buckets, in microseconds (the last bucket: above them all).
inline constexpr std::array<std::uint32_t, 18> kLatencyBoundsUs = {
    10,     25,     50,     100,     250,     500,     1'000,     2'500,     5'000,
    10'000, 25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000, 2'500'000, 10'000'000};
inline constexpr std::size_t kLatencyBuckets = kLatencyBoundsUs.size() + 1;

// A merged latency histogram.
struct Latency {
  std::array<std::uint64_t, kLatencyBuckets> buckets{};  // not cumulative
  std::uint64_t count = 0;
  std::uint64_t sum_ns = 0;
  void add(const Latency& other);
  // The q-quantile (0 < q < 1) in seconds, interpolated inside its bucket; 0 when empty.
  double quantile(double q) const;
};

// What a scrape sees.
struct RequestSnapshot {
  std::array<std::array<Latency, kOps>, kListeners> latency;
  std::array<std::uint64_t, 256> statuses{};  // native answers by StatusCode
  // Every operation of every listener, merged.
  Latency all() const;
};

class RequestMetrics {
 public:
  RequestMetrics();
  ~RequestMetrics();
  RequestMetrics(const RequestMetrics&) = delete;
  RequestMetrics& operator=(const RequestMetrics&) = delete;

  // Counts `n` requests of operation `op` on `listener` that took `elapsed` each. Thread-safe;
  // lock-free after a thread's first call.
  void record(Listener listener, std::size_t op, std::chrono::nanoseconds elapsed,
              std::uint64_t n = 1);
  // Counts what one read's worth of requests did: counts[op] requests of each operation, each
  // taking `elapsed` (one bucket lookup and one store per operation present, not per request).
  void record_many(Listener listener, std::span<const std::uint32_t, kOps> counts,
                   std::chrono::nanoseconds elapsed);
  // Counts one native answer with `status`; record_statuses: counts[code] answers of each code.
  void record_status(StatusCode status);
  void record_statuses(std::span<const std::uint32_t> counts);
  RequestSnapshot snapshot() const;

 private:
  struct Slot;
  Slot& slot();
  const std::uint64_t id_;  // tells this instance's slots from another's in a thread's cache
  mutable std::mutex mu_;   // guards slots_ (registration and scrapes)
  std::vector<std::unique_ptr<Slot>> slots_;
};

// Writes the Prometheus text format. Names must match [a-zA-Z_:][a-zA-Z0-9_:]* (a bad one
// throws std::invalid_argument: a programming error); label values are escaped.
class PromWriter {
 public:
  using Labels = std::vector<std::pair<std::string_view, std::string>>;
  // # HELP and # TYPE (counter, gauge or histogram) of a family; once per family, before its
  // samples.
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, const Labels& labels, double value);
  void sample(std::string_view name, double value) { sample(name, {}, value); }
  // A histogram's _bucket (cumulative, with le), _sum and _count samples. `bounds` are the
  // buckets' upper bounds in the unit of `sum`; counts has one more entry (+Inf).
  void histogram(std::string_view name, const Labels& labels, std::span<const double> bounds,
                 std::span<const std::uint64_t> counts, double sum);
  const std::string& text() const { return out_; }

 private:
  void labels(const Labels& labels, std::string_view le = {});
  std::string out_;
};

}  // namespace sessiond::daemon
