#include "daemon/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace sessiond::daemon {

namespace {

constexpr std::array<std::string_view, kOps> kNativeOps = {
    "other", "ping",     "auth",       "create",    "get",         "update",
    "touch", "destroy",  "regenerate", "list_user", "revoke_user", "access_log",
    "stats", "topology", "repair",     "replicate", "migrate",     "digest"};

constexpr std::array<std::string_view, kOps> kRespOps = {
    "other",   "get",  "set",      "setex", "psetex", "del",  "exists", "expire",
    "pexpire", "ttl",  "pttl",     "mget",  "mset",   "hget", "hset",   "hgetall",
    "hdel",    "sadd", "smembers", "srem",  "ping",   "info", "auth",   "hello"};

std::atomic<std::uint64_t> next_instance{1};

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool ok = std::isalpha(c) || c == '_' || c == ':' || (i > 0 && std::isdigit(c));
    if (!ok) return false;
  }
  return true;
}

void append_number(std::string* out, double v) {
  if (std::isnan(v)) {
    out->append("NaN");
  } else if (std::isinf(v)) {
    out->append(v > 0 ? "+Inf" : "-Inf");
  } else if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    out->append(buf);
  } else {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.15g", v);
    out->append(buf);
  }
}

// One thread's counters. Only the owning thread writes; scrapes read (relaxed: a scrape may see
// a bucket counted before the sum that goes with it, never a torn value).
using Counter = std::atomic<std::uint64_t>;
inline void bump(Counter& c, std::uint64_t n) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace

std::string_view listener_name(Listener listener) {
  return listener == Listener::kNative ? "native" : "resp";
}

std::size_t native_op(std::uint16_t opcode) {
  if (opcode >= 1 && opcode <= 14) return opcode;
  if (opcode >= 64 && opcode <= 66) return 15 + (opcode - 64u);
  return 0;
}

std::size_t resp_op(std::string_view command) {
  if (command.size() > 8) return 0;
  char lower[8];
  for (std::size_t i = 0; i < command.size(); ++i) {
    lower[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(command[i])));
  }
  const std::string_view name(lower, command.size());
  for (std::size_t i = 1; i < kRespOps.size(); ++i) {
    if (kRespOps[i] == name) return i;
  }
  return 0;
}

std::string_view op_name(Listener listener, std::size_t op) {
  if (op >= kOps) return {};
  return listener == Listener::kNative ? kNativeOps[op] : kRespOps[op];
}

void Latency::add(const Latency& other) {
  for (std::size_t i = 0; i < kLatencyBuckets; ++i) buckets[i] += other.buckets[i];
  count += other.count;
  sum_ns += other.sum_ns;
}

double Latency::quantile(double q) const {
  std::uint64_t total = 0;
  for (std::uint64_t b : buckets) total += b;
  if (total == 0) return 0;
  const double rank = q * static_cast<double>(total);
  double below = 0;
  for (std::size_t i = 0; i < kLatencyBuckets; ++i) {
    const double in = static_cast<double>(buckets[i]);
    if (in > 0 && below + in >= rank) {
      const double lo = i == 0 ? 0.0 : kLatencyBoundsUs[i - 1] * 1e-6;
      // The last bucket has no upper bound: its lower bound is the best estimate.
      if (i == kLatencyBuckets - 1) return lo;
      const double hi = kLatencyBoundsUs[i] * 1e-6;
      return lo + (hi - lo) * std::clamp((rank - below) / in, 0.0, 1.0);
    }
    below += in;
  }
  return kLatencyBoundsUs.back() * 1e-6;
}

Latency RequestSnapshot::all() const {
  Latency out;
  for (const auto& per_listener : latency) {
    for (const Latency& l : per_listener) out.add(l);
  }
  return out;
}

struct RequestMetrics::Slot {
  struct Op {
    std::array<Counter, kLatencyBuckets> buckets{};
    Counter sum_ns{0};
  };
  std::array<std::array<Op, kOps>, kListeners> ops;
  std::array<Counter, 256> statuses{};
};

RequestMetrics::RequestMetrics() : id_(next_instance.fetch_add(1)) {}
RequestMetrics::~RequestMetrics() = default;

RequestMetrics::Slot& RequestMetrics::slot() {
  // The thread's slot of the instance it last recorded into (a worker records into one).
  thread_local std::uint64_t cached_id = 0;
  thread_local Slot* cached = nullptr;
  if (cached_id == id_) return *cached;
  std::lock_guard lock(mu_);
  slots_.push_back(std::make_unique<Slot>());
  cached = slots_.back().get();
  cached_id = id_;
  return *cached;
}

void RequestMetrics::record(Listener listener, std::size_t op, std::chrono::nanoseconds elapsed,
                            std::uint64_t n) {
  if (op >= kOps) op = 0;
  const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(0, elapsed.count()));
  const std::uint64_t us = ns / 1000;
  std::size_t bucket = 0;
  while (bucket < kLatencyBoundsUs.size() && us >= kLatencyBoundsUs[bucket]) ++bucket;
  Slot::Op& o = slot().ops[static_cast<std::size_t>(listener)][op];
  bump(o.buckets[bucket], n);
  bump(o.sum_ns, ns * n);
}

void RequestMetrics::record_many(Listener listener, std::span<const std::uint32_t, kOps> counts,
                                 std::chrono::nanoseconds elapsed) {
  const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(0, elapsed.count()));
  const std::uint64_t us = ns / 1000;
  std::size_t bucket = 0;
  while (bucket < kLatencyBoundsUs.size() && us >= kLatencyBoundsUs[bucket]) ++bucket;
  auto& ops = slot().ops[static_cast<std::size_t>(listener)];
  for (std::size_t op = 0; op < kOps; ++op) {
    if (counts[op] == 0) continue;
    bump(ops[op].buckets[bucket], counts[op]);
    bump(ops[op].sum_ns, ns * counts[op]);
  }
}

void RequestMetrics::record_statuses(std::span<const std::uint32_t> counts) {
  auto& statuses = slot().statuses;
  for (std::size_t i = 0; i < counts.size() && i < statuses.size(); ++i) {
    if (counts[i] > 0) bump(statuses[i], counts[i]);
  }
}

void RequestMetrics::record_status(StatusCode status) {
  bump(slot().statuses[static_cast<std::uint8_t>(status)], 1);
}

RequestSnapshot RequestMetrics::snapshot() const {
  RequestSnapshot out;
  std::lock_guard lock(mu_);
  for (const auto& s : slots_) {
    for (std::size_t l = 0; l < kListeners; ++l) {
      for (std::size_t op = 0; op < kOps; ++op) {
        const Slot::Op& o = s->ops[l][op];
        Latency& into = out.latency[l][op];
        for (std::size_t b = 0; b < kLatencyBuckets; ++b) {
          const std::uint64_t v = o.buckets[b].load(std::memory_order_relaxed);
          into.buckets[b] += v;
          into.count += v;
        }
        into.sum_ns += o.sum_ns.load(std::memory_order_relaxed);
      }
    }
    for (std::size_t i = 0; i < out.statuses.size(); ++i) {
      out.statuses[i] += s->statuses[i].load(std::memory_order_relaxed);
    }
  }
  return out;
}

void PromWriter::family(std::string_view name, std::string_view type, std::string_view help) {
  if (!valid_name(name)) throw std::invalid_argument("bad metric name " + std::string(name));
  out_.append("# HELP ").append(name).append(" ");
  for (char c : help) {
    if (c == '\\') {
      out_.append("\\\\");
    } else if (c == '\n') {
      out_.append("\\n");
    } else {
      out_.push_back(c);
    }
  }
  out_.append("\n# TYPE ").append(name).append(" ").append(type).append("\n");
}

void PromWriter::labels(const Labels& labels, std::string_view le) {
  if (labels.empty() && le.empty()) return;
  out_.push_back('{');
  bool first = true;
  auto one = [&](std::string_view key, std::string_view value) {
    if (!valid_name(key)) throw std::invalid_argument("bad label name " + std::string(key));
    if (!first) out_.push_back(',');
    first = false;
    out_.append(key).append("=\"");
    for (char c : value) {
      if (c == '\\' || c == '"') {
        out_.push_back('\\');
        out_.push_back(c);
      } else if (c == '\n') {
        out_.append("\\n");
      } else {
        out_.push_back(c);
      }
    }
    out_.push_back('"');
  };
  for (const auto& [k, v] : labels) one(k, v);
  if (!le.empty()) one("le", le);
  out_.push_back('}');
}

void PromWriter::sample(std::string_view name, const Labels& l, double value) {
  if (!valid_name(name)) throw std::invalid_argument("bad metric name " + std::string(name));
  out_.append(name);
  labels(l);
  out_.push_back(' ');
  append_number(&out_, value);
  out_.push_back('\n');
}

void PromWriter::histogram(std::string_view name, const Labels& l, std::span<const double> bounds,
                           std::span<const std::uint64_t> counts, double sum) {
  const std::string bucket = std::string(name) + "_bucket";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    std::string le;
    if (i < bounds.size()) {
      append_number(&le, bounds[i]);
    } else {
      le = "+Inf";
    }
    out_.append(bucket);
    labels(l, le);
    out_.push_back(' ');
    append_number(&out_, static_cast<double>(cumulative));
    out_.push_back('\n');
  }
  sample(std::string(name) + "_sum", l, sum);
  sample(std::string(name) + "_count", l, static_cast<double>(cumulative));
}

}  // namespace sessiond::daemon
