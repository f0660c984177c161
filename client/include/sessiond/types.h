// The values the client library exchanges with a sessiond node: sessions, their metadata, and
// the options of each operation. Plain structs, no protocol details.
//
// Times are milliseconds since the Unix epoch, durations are milliseconds, and a timeout of 0
// means "none" (docs/protocol.md). Session ids are the 43-character text form, 64 when signed
// (session_id.h). Field names and values are bytes held in std::string.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sessiond {

// Version of a write: hybrid logical clock timestamp, and the region and node that made it.
struct Version {
  std::uint64_t hlc = 0;
  std::uint32_t region = 0;
  std::uint32_t node = 0;
  friend bool operator==(const Version&, const Version&) = default;
};

struct Timeouts {
  std::int64_t idle_ms = 0;      // sliding: expires this long after the last access; 0 = none
  std::int64_t absolute_ms = 0;  // expires this long after creation; 0 = none
  friend bool operator==(const Timeouts&, const Timeouts&) = default;
};

// Timeout policies of DESIGN §2 (absolute / idle). kNodeDefault lets the node choose.
enum class Preset {
  kNodeDefault,
  kFinance,     // 30 min / 10 min
  kHealthcare,  // 60 min / 15 min
  kEcommerce,   // 24 h / 30 min
  kMedia,       // 7 d / 1 h
  kGaming,      // 30 d / 2 h
};
// "finance", ...; "default" for kNodeDefault.
std::string_view preset_name(Preset preset);
// Lower-case name as preset_name() spells it; nullopt if unknown.
std::optional<Preset> preset_from_name(std::string_view name);

// The client context a session can be bound to: an IP address (or prefix) and a user-agent hash.
struct ClientContext {
  std::string ip;
  std::uint64_t user_agent_hash = 0;
  friend bool operator==(const ClientContext&, const ClientContext&) = default;
};

// One entry of a session's access history. time_ms is set by the server.
struct AccessEntry {
  std::int64_t time_ms = 0;
  std::string ip;
  std::uint64_t user_agent_hash = 0;
  bool has_location = false;
  double latitude = 0;
  double longitude = 0;
  friend bool operator==(const AccessEntry&, const AccessEntry&) = default;
};

struct Field {
  std::string name;
  std::string value;
  Version version;  // version of the write that last set it (ignored in requests)
  friend bool operator==(const Field&, const Field&) = default;
};

// A field to write: name and value.
using FieldValue = std::pair<std::string, std::string>;

// What the operations that change a session answer: enough to go on without reading it back.
struct SessionMeta {
  std::string id;  // text form
  Version version;
  std::int64_t created_at_ms = 0;
  std::int64_t last_access_ms = 0;
  std::int64_t deadline_ms = 0;  // INT64_MAX when the session has no timeout
};

// What the node's hijack detection saw on a get() that recorded an access (docs/security.md).
// With the node's policy "report" the session comes back with it; otherwise the get answers
// HIJACK_SUSPECTED and the session is gone.
struct HijackDetection {
  enum class Kind { kImpossibleTravel, kManyIps, kOther };
  Kind kind = Kind::kOther;
  std::string message;  // "impossible travel: 9530 km in 5.0 min (114360 km/h > 1000)"
  double distance_km = 0;
  double speed_kmh = 0;
  std::int64_t interval_ms = 0;
  std::uint32_t distinct_ips = 0;
};

struct Session {
  std::string id;  // text form
  std::string user_id;
  std::vector<Field> fields;  // sorted by name
  std::int64_t created_at_ms = 0;
  std::int64_t last_access_ms = 0;
  Timeouts timeouts;
  std::int64_t deadline_ms = 0;          // INT64_MAX when the session has no timeout
  std::optional<ClientContext> context;  // the bound context, if any
  std::vector<AccessEntry> access_log;   // oldest first
  Version version;
  std::vector<HijackDetection> detections;  // from get() with record_access; usually empty
  // Read from a replica while the session's owner was down (or its range had no writer): it
  // may miss the owner's latest writes (docs/cluster.md, "Replicas and failover").
  bool possibly_stale = false;

  // The field with this name, or nullptr.
  const Field* field(std::string_view name) const;
};

struct CreateOptions {
  std::string user_id;  // may be empty
  std::vector<FieldValue> fields;
  // Policy: explicit timeouts win over the preset; neither means the node's default.
  Preset preset = Preset::kNodeDefault;
  std::optional<Timeouts> timeouts;
  std::optional<ClientContext> context;  // bind the session to this client context
};

struct GetOptions {
  bool touch = false;                           // slide the idle deadline
  std::optional<ClientContext> expect_context;  // CONTEXT_MISMATCH if bound to another one
  std::optional<AccessEntry> record_access;     // append to the access history
  // BEHIND unless the node's copy is at least this version, or NOT_FOUND when it holds the
  // session's end (read-your-writes across regions; ClientOptions::read_your_writes sets it).
  std::optional<Version> min_version;
};

struct UpdateOptions {
  std::vector<FieldValue> set;
  std::vector<std::string> remove;
  std::optional<Timeouts> timeouts;         // new policy
  std::optional<Version> expected_version;  // VERSION_CONFLICT unless current
};

struct RegenerateOptions {
  // When set, replaces the data (an empty vector drops every field); otherwise it is kept.
  std::optional<std::vector<FieldValue>> replace_fields;
  std::optional<std::string> user_id;  // bind a user, e.g. at login
  // The login step: also set field "sessiond.authenticated_at" to the time (ms, decimal).
  bool mark_authenticated = false;
};

// A node of the region, as TOPOLOGY describes it (Client::topology()).
struct TopologyNode {
  std::string id;
  std::string address;  // HOST:PORT of its native listener: what clients dial
  std::string region;
  std::uint32_t weight = 0;  // its share of the ring; 0 owns nothing (drained)
  std::uint32_t number = 0;  // the node part of versions
  std::string resp_address;  // HOST:PORT of its RESP listener; "" without one
};

// The region's topology as a client routes by it. Epoch 0: a node without a cluster, which
// lists itself alone; the client then sends everything to that node.
struct Topology {
  std::uint64_t epoch = 0;
  std::string region;
  bool migrating = false;           // a membership change is in progress
  std::vector<TopologyNode> nodes;  // sorted by id
  std::string source;               // the address of the node that answered TOPOLOGY
};

struct PingResult {
  std::string payload;  // echoed
  std::uint32_t protocol_version = 0;
  std::string server;  // "sessiond/<version>"
};

// Node counters (STATS).
// Replication between a node and one of its peer regions (docs/regions.md, "Operations").
struct PeerRegionStats {
  std::string region;
  std::uint64_t lag_entries = 0;  // logged on the node and not yet acknowledged there
  std::int64_t lag_ms = 0;        // since that region was last caught up with the node's log
  std::uint64_t entries_shipped = 0;
  std::uint64_t bytes_shipped = 0;     // after compression
  std::uint64_t conflicts_merged = 0;  // entries merged with a concurrent write, either way
  std::uint64_t set_aside = 0;         // entries set aside for their clock, either way
  std::uint64_t entries_received = 0;  // applied on the node from that region
  std::uint64_t retention_gaps = 0;    // times the log no longer held what it needed
  std::uint64_t repairs = 0;           // anti-entropy rounds completed
  std::uint64_t repaired = 0;          // states those rounds moved, either way
  std::int64_t last_repair_ms = 0;     // when the last round completed (0: none yet)
  std::string error;                   // the last shipping or repair failure, until one succeeds
  // Lag over the last 8192 batches, from the logging of a batch's oldest entry to that region's
  // acknowledgement (ms).
  double lag_p50_ms = 0, lag_p99_ms = 0, lag_max_ms = 0;
};

// One anti-entropy round with a peer region (Client::repair).
struct RegionRepair {
  std::string region;
  std::uint64_t buckets_differing = 0;
  std::uint64_t pulled = 0;  // states merged on the node from the peer region
  std::uint64_t pushed = 0;  // states sent there
  std::uint64_t bytes = 0;
  std::int64_t duration_ms = 0;
  std::string error;  // empty: the round completed
};

struct Stats {
  std::uint64_t sessions = 0;
  std::uint64_t users = 0;
  std::uint64_t memory_bytes = 0;
  std::uint64_t creates = 0;
  std::uint64_t updates = 0;
  std::uint64_t destroys = 0;
  std::uint64_t regenerates = 0;
  std::uint64_t expiries = 0;
  std::uint64_t read_hits = 0;
  std::uint64_t read_misses = 0;
  std::uint64_t touches_persisted = 0;
  std::uint64_t touches_coalesced = 0;
  std::uint64_t connections = 0;
  std::uint64_t protocol_errors = 0;
  std::uint64_t disk_bytes = 0;
  std::uint64_t forged_ids = 0;  // ids refused before lookup (signed ids)
  std::uint64_t hijack_impossible_travel = 0;
  std::uint64_t hijack_many_ips = 0;
  std::uint64_t context_mismatches = 0;
  std::uint64_t tls_handshake_failures = 0;
  std::uint64_t connections_refused = 0;         // over the node's connection limit
  std::uint64_t connections_refused_per_ip = 0;  // over its per-address limit
  std::uint64_t connection_timeouts = 0;    // closed: a frame did not complete in time, or idle
  std::uint64_t slow_readers = 0;           // closed: took none of their replies in time
  std::uint64_t auth_failures = 0;          // AUTHs with a wrong secret
  std::uint64_t clock_steps = 0;            // steps of the node's wall clock it saw
  std::uint64_t touches_refused = 0;        // reads served without sliding (store refused writes)
  std::uint64_t tombstones = 0;             // ended sessions remembered (they never come back)
  std::uint64_t merges_applied = 0;         // writes of other nodes merged
  std::uint64_t merges_set_aside = 0;       // writes of other nodes whose clock was too far ahead
  std::uint64_t replica_lag_entries = 0;    // log entries the furthest-behind replica lacks
  std::uint64_t replicas_in_sync = 0;       // replicas of the node's ranges in the in-sync set
  std::uint64_t replicas = 0;               // replicas of the node's ranges, in sync or not
  std::uint64_t anti_entropy_rounds = 0;    // digests compared with its replicas
  std::uint64_t anti_entropy_repaired = 0;  // states those rounds moved (either way)
  std::vector<PeerRegionStats> regions;     // one per peer region
};

}  // namespace sessiond
