// A client of etcd's v3 API through its JSON gateway (etcd 3.4, `/v3/...`; keys and values are
// base64 in the JSON, 64-bit numbers strings): key-value reads and writes, transactions
// (compare-and-swap), leases with keep-alive, and watches. DESIGN §6: etcd's consensus decides
// membership, liveness and ownership; this is the only way sessiond talks to it.
//
// Each call opens its own HTTP connection to the first endpoint that answers (in the order
// given, starting from the last one that worked), so one client is safe to share between
// threads. Errors are UNAVAILABLE naming the endpoints and what failed; an answer etcd gives
// with an error keeps etcd's message.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/status.h"

namespace sessiond::cluster {

struct KeyValue {
  std::string key;
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;
  std::int64_t lease = 0;
};

// One comparison of a transaction; all must hold for its success branch to run.
struct Compare {
  enum class Target { kModRevision, kCreateRevision, kVersion, kValue };
  std::string key;
  Target target = Target::kModRevision;
  std::int64_t number = 0;  // for the revision and version targets (0: the key does not exist)
  std::string value;        // for kValue
};

struct TxnOp {
  enum class Kind { kPut, kDelete, kDeletePrefix };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;
  std::int64_t lease = 0;
};

struct Txn {
  std::vector<Compare> compare;
  std::vector<TxnOp> success;
  std::vector<TxnOp> failure;
};

struct WatchEvent {
  bool deleted = false;
  KeyValue kv;  // for a delete, only key and mod_revision
};

class EtcdClient {
 public:
  // `endpoints`: "http://host:port" or "host:port" each (the comma-separated --etcd value).
  explicit EtcdClient(std::vector<std::string> endpoints,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
  // "http://127.0.0.1:2379,http://127.0.0.1:22379" -> endpoints; INVALID_ARGUMENT when empty or
  // not host:port.
  static Result<std::vector<std::string>> parse_endpoints(std::string_view list);

  const std::vector<std::string>& endpoints() const { return endpoints_; }

  Result<std::optional<KeyValue>> get(std::string_view key) const;
  // Every key starting with `prefix`, in key order, and the store's revision at the read.
  struct Range {
    std::vector<KeyValue> kvs;
    std::int64_t revision = 0;
  };
  Result<Range> get_prefix(std::string_view prefix) const;
  // The revision the put made.
  Result<std::int64_t> put(std::string_view key, std::string_view value,
                           std::int64_t lease = 0) const;
  // How many keys went.
  Result<std::int64_t> erase(std::string_view key) const;
  // Whether the comparisons held (and so the success branch ran).
  Result<bool> txn(const Txn& txn) const;

  // A lease of `ttl` (rounded up to whole seconds, etcd's unit); its id.
  Result<std::int64_t> grant_lease(std::chrono::milliseconds ttl) const;
  // Renews the lease: its TTL in seconds afterwards, or NOT_FOUND when it has expired.
  Result<std::int64_t> keep_alive(std::int64_t lease) const;
  Status revoke_lease(std::int64_t lease) const;

  // Watches every key under `prefix` from `start_revision` on, calling `on_events` with each
  // batch and the revision it brings the watcher to, until `stop` is set (checked at least
  // every `poll`) or the connection fails (the status says why; the caller re-watches from the
  // last revision it saw, plus one).
  Status watch(std::string_view prefix, std::int64_t start_revision,
               const std::function<void(const std::vector<WatchEvent>&, std::int64_t)>& on_events,
               const std::atomic<bool>& stop,
               std::chrono::milliseconds poll = std::chrono::milliseconds(500)) const;

 private:
  // POSTs `body` to `path` on the first endpoint that answers: etcd's JSON answer.
  Result<std::string> post(std::string_view path, const std::string& body) const;

  std::vector<std::string> endpoints_;  // host:port
  std::chrono::milliseconds timeout_;
  mutable std::atomic<std::size_t> preferred_{0};
};

// The key just past every key that starts with `prefix` (etcd's range_end for a prefix).
std::string prefix_end(std::string_view prefix);

}  // namespace sessiond::cluster
