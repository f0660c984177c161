// The Redis commands of the RESP listener (DESIGN §10), executed on the session engine.
//
// Mapping (docs/resp.md): a Redis key of database 0 lives in its own namespace as the session
// whose id is SHA-256("sessiond-resp" NUL key), a key of database N (1..15) as
// SHA-256("sessiond-resp-dbN" NUL key). The session's fields hold the key itself ("K") and its
// value: a string in field "V", a hash's fields as "H" + name, a set's members as "S" + member,
// a sorted set's members as "Z" + member with the score as text.
// A TTL is the session's absolute deadline (idle timeout 0), so it never slides on reads.
// Replies and error texts are Redis 7.0's.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/auth.h"
#include "daemon/pubsub.h"
#include "storage/clock.h"
#include "storage/session.h"
#include "storage/session_table.h"

namespace sessiond::daemon::resp {

// Longest accepted key (Redis allows 512 MB; session keys are tens of bytes).
inline constexpr std::size_t kMaxKeyBytes = 1024;

// Logical databases (SELECT 0..15): namespaces of keys.
inline constexpr int kDatabases = 16;

// The id of a key's session in database `db` (0 unless given).
storage::SessionId key_id(std::string_view key, int db = 0);

// A connection's WATCHed keys (defined in resp_commands.cc): unregistered when it ends.
struct Watching;
struct WatchingDeleter {
  void operator()(Watching* w) const;
};

// What a connection carries between its commands.
struct ClientState {
  std::uint64_t id = 0;  // CLIENT ID
  std::string name;      // CLIENT SETNAME
  std::string lib_name, lib_version;
  // QUIT, or the kMaxAuthFailures-th failed AUTH: close once the reply is written.
  bool close = false;
  // What the connection may do (daemon/auth.h): start it at AuthConfig::initial_role().
  Role role = Role::kAdmin;
  unsigned auth_failures = 0;  // failed AUTHs (and HELLO ... AUTH) with secrets configured
  std::string peer;            // the client's address, for the log; "" when unknown
  int db = 0;                  // SELECT
  // MULTI ... EXEC: the queued commands (copies), and whether one was refused while queuing
  // (EXEC then answers EXECABORT).
  bool in_multi = false;
  bool multi_refused = false;
  std::vector<std::vector<std::string>> queued;
  std::size_t queued_bytes = 0;
  std::unique_ptr<Watching, WatchingDeleter> watching;  // WATCH; null: nothing watched
  // Pub/sub: where this connection's messages go (set by the server before any command), and
  // its subscriptions once it has any (RESP2's subscribed mode while count() > 0).
  PubSub::Deliver deliver;
  std::unique_ptr<PubSub::Subscriber> subscriber;
  bool subscribed() const { return subscriber != nullptr && subscriber->count() > 0; }
};

// Node facts INFO reports.
struct NodeInfo {
  const std::atomic<std::uint64_t>* connected_clients = nullptr;  // RESP connections open now
  std::uint16_t port = 0;
  std::int64_t started_ms = 0;
  const AuthConfig* auth = nullptr;  // the node's secrets; nullptr: authentication off
  // A reply that alone would be larger (MGET of many keys, KEYS, HGETALL...) is refused with
  // an error instead of being built whole; 0: no limit.
  std::size_t max_reply_bytes = 0;
  AuthFailures* auth_failures = nullptr;  // where failed AUTHs are counted; nullptr: nowhere
  // For CONFIG GET (what clients probe): --idle-timeout-ms and --max-connections.
  std::int64_t idle_timeout_ms = 0;
  std::uint64_t max_connections = 0;
  // In a cluster only database 0 exists (as in Redis Cluster): SELECT n > 0 is refused.
  bool cluster = false;
};

class Commands {
 public:
  Commands(storage::SessionTable& table, const storage::Clock& clock, NodeInfo info);
  ~Commands();
  Commands(const Commands&) = delete;
  Commands& operator=(const Commands&) = delete;

  // Executes one command (args[0] is its name; args is not empty) and appends exactly one
  // reply to *out. Thread-safe; never throws on input.
  void execute(std::span<const std::string_view> args, ClientState& client, std::string* out);
  // execute() for consecutive commands, in order, with their replies in order; SET, SETEX and
  // PSETEX among them share RocksDB writes (SessionTable::rewrite_batch), as do GETs their
  // reads. Stops at a QUIT, or before a command once *out holds `output_budget` bytes or more
  // (the batch in progress still appends its replies), and answers how many commands it has
  // executed: the caller sends the replies and calls again with the rest. The arguments must
  // stay valid for the call.
  std::size_t execute_all(std::span<const std::vector<std::string_view>> commands,
                          ClientState& client, std::string* out,
                          std::size_t output_budget = SIZE_MAX);
  // The listener's port, for INFO; set once it is bound, before any command runs.
  void set_port(std::uint16_t port) { info_.port = port; }
  // Cluster mode (NodeInfo::cluster); set before any command runs.
  void set_cluster(bool cluster) { info_.cluster = cluster; }
  // The node's channels (PUBLISH, SUBSCRIBE and keyspace notifications).
  PubSub& pubsub();

  struct Shared;  // node-wide state: transactions' lock, WATCH registry, notification flags

 private:
  friend class SetGroup;
  storage::SessionTable& table_;
  const storage::Clock& clock_;
  NodeInfo info_;
  std::unique_ptr<Shared> shared_;
};

// Group commit across connections: the reads of several connections that hold only SETs
// (SET, SETEX, PSETEX), gathered by one worker thread and executed as one
// SessionTable::rewrite_batch, as Redis writes its AOF once per turn of its event loop. Not
// thread-safe: one group per worker thread.
class SetGroup {
 public:
  explicit SetGroup(Commands& commands);
  ~SetGroup();
  SetGroup(const SetGroup&) = delete;
  SetGroup& operator=(const SetGroup&) = delete;

  // Takes the commands of one read when every one is a SET, SETEX or PSETEX that passes its
  // checks and the connection is neither in MULTI nor subscribed: run() will append their
  // replies to *out, in order. Otherwise takes nothing and answers false (the caller executes
  // them with execute_all). The arguments must stay valid until run().
  bool add(std::span<const std::vector<std::string_view>> commands, const ClientState& client,
           std::string* out);
  // Executes what was taken (one RocksDB write per 32 keys), appends the replies, empties.
  void run();
  bool empty() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Redis's glob-style pattern match (SCAN MATCH): * ? [abc] [^a-z] and \ escapes.
bool glob_match(std::string_view pattern, std::string_view text);

}  // namespace sessiond::daemon::resp
