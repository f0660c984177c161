// Handlers: turn one request frame into one response frame, by calling the engine. No sockets
// here (the server owns those), so the mapping between the wire and the engine can be read and
// tested on its own.
#pragma once

#include <absl/functional/function_ref.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "cluster/membership.h"
#include "daemon/auth.h"
#include "daemon/migration.h"
#include "daemon/replicas.h"
#include "daemon/request_cache.h"
#include "daemon/security.h"
#include "protocol/frame.h"
#include "protocol/status.h"
#include "storage/id_generator.h"
#include "storage/session_table.h"
#include "storage/store.h"

namespace sessiond::wire {
class SessionMeta;
class ErrorResponse;
class TopologyResponse;
class RegenerateRequest;
class RegenerateResponse;
}  // namespace sessiond::wire

namespace sessiond::daemon {

class Regions;

// Node-wide counters, shared by all connections.
struct Counters {
  std::atomic<std::uint64_t> connections{0};                 // open now (both listeners)
  std::atomic<std::uint64_t> resp_connections{0};            // of which on the RESP listener
  std::atomic<std::uint64_t> connections_refused{0};         // over --max-connections
  std::atomic<std::uint64_t> connections_refused_per_ip{0};  // over --max-connections-per-ip
  std::atomic<std::uint64_t> slow_readers{0};     // closed: took none of their replies in time
  std::atomic<std::uint64_t> protocol_errors{0};  // bad frames and bodies
  std::atomic<std::uint64_t> timeouts{0};       // closed by the watchdog: a stalled frame, or idle
  std::atomic<std::uint64_t> forged_ids{0};     // refused before lookup (signed ids)
  std::atomic<std::uint64_t> hijack_travel{0};  // impossible-travel findings
  std::atomic<std::uint64_t> hijack_many_ips{0};         // too-many-IPs findings
  std::atomic<std::uint64_t> context_mismatches{0};      // GETs from another bound context
  std::atomic<std::uint64_t> tls_handshake_failures{0};  // TLS connections that never got going
  AuthFailures auth_failures;  // wrong secrets given to AUTH (both listeners); logged rate-limited
};

// What a native connection carries between its requests.
struct ConnectionState {
  Role role = Role::kNone;     // start it at AuthConfig::initial_role(); AUTH changes it
  unsigned auth_failures = 0;  // failed AUTHs on this connection
  bool close = false;          // close once what is answered is written (after kMaxAuthFailures)
  std::string peer;            // the client's address, for the log; "" when unknown
  // Answers appended to the output that wait for replicas (--replica-ack): the server writes
  // nothing of the output until settle_acks() returns true.
  struct PendingAck {
    protocol::FrameHeader request;
    std::size_t at = 0;  // the answer's place in the output
    std::size_t size = 0;
    Replicas::Wait wait;
    Replicas::WaitState state = Replicas::WaitState::kPending;
  };
  std::vector<PendingAck> acks;
};

class Handlers {
 public:
  // `store` may be null (tests). `address` is what TOPOLOGY reports for this node.
  Handlers(storage::SessionTable& table, storage::Store* store, Counters& counters,
           std::string address, std::uint32_t max_body, AuthConfig auth = {});

  // Handles one well-framed request and appends exactly one response frame to *out. `state` is
  // the connection's: AUTH changes its role, and a request its role may not send answers
  // UNAUTHENTICATED (no role yet) or FORBIDDEN. The kMaxAuthFailures-th failed AUTH sets
  // state->close; requests handled after that are dropped unanswered (the caller closes the
  // connection once it has written *out). Thread-safe.
  void handle(const protocol::FrameHeader& request, std::span<const std::uint8_t> body,
              ConnectionState* state, std::string* out);

  struct Request {
    protocol::FrameHeader header;
    std::span<const std::uint8_t> body;
  };
  // Handles consecutive CREATE requests (a pipelining client's) with one RocksDB write for
  // all of them; appends their responses in order, exactly as handle() would one by one.
  void handle_creates(std::span<const Request> creates, ConnectionState* state, std::string* out);
  const AuthConfig& auth() const { return auth_; }
  // The most bytes a GET answer's body can take beyond what TableOptions::max_session_bytes
  // counts (user id, field names and values): ids, times, versions, per-field framing, the
  // bound context, the access history and hijack findings. A node whose max_session_bytes plus
  // this fits its frame limit can always send every session it has accepted.
  static std::size_t session_answer_overhead(const storage::TableOptions& table);
  // The session-security policy (context mismatch, hijack detection, signed ids; see
  // security.h) and the keys of signed ids; `clock` times the key rotation's grace period.
  // Without it: report only, no signed ids. Thread-safe, also while serving (a SIGHUP reload):
  // each request sees either the old pair or the new one, never a mix.
  void set_security(SecurityPolicy policy, IdSigner signer,
                    const storage::Clock& clock = storage::SystemClock::instance());
  // What TOPOLOGY reports as this node's address; set once the listener is bound, before any
  // request is handled.
  void set_address(std::string address) { address_ = std::move(address); }
  // Cluster mode (docs/cluster.md): requests for keys another node owns answer WRONG_NODE,
  // writes answer UNAVAILABLE while the node is fenced, TOPOLOGY answers the region's topology.
  // `ids` places new sessions (route keys). Set once, before any request is handled.
  // `migrator` fences moving keys and takes MIGRATE.
  // `replicas` keeps the replicas of what this node owns and holds answers until they have it.
  void set_cluster(cluster::Membership* membership, const storage::IdGenerator* ids,
                   Migrator* migrator, Replicas* replicas) {
    membership_ = membership;
    ids_ = ids;
    migrator_ = migrator;
    replicas_ = replicas;
  }
  // Multi-region (docs/regions.md): REPLICATE and DIGEST from peer regions go to `regions`; the
  // one-node region's TOPOLOGY names `region`. Set once, before any request is handled.
  void set_regions(Regions* regions, std::string region) {
    regions_ = regions;
    region_ = std::move(region);
  }
  // Whether handling `opcode` may wait on other nodes (it then runs on the server's pool for
  // such calls, not on a connection thread): in a cluster REGENERATE, LIST_USER, REVOKE_USER
  // and DIGEST; with peer regions DIGEST and REPAIR.
  bool may_block(std::uint16_t opcode) const;
  // FORBIDDEN for REPLICATE or DIGEST from `region` on a node without peer regions.
  Status not_a_peer(const std::string& region) const;
  // Whether every answer in state->acks may be written: true once their replicas confirmed
  // (or did not, in time: those answers are replaced by UNAVAILABLE in *out); false while some
  // still wait. The server calls it again until true, before it writes *out.
  bool settle_acks(ConnectionState* state, std::string* out);
  // Appends an error response to `request` (its id and opcode) with an ErrorResponse body.
  void append_error(const protocol::FrameHeader& request, const Status& status, std::string* out);
  // A hint before a slice of requests is handled: brings the sessions named by the first
  // `max_requests` whole frames in `bytes` (GET, TOUCH, UPDATE, DESTROY, REGENERATE) into the
  // CPU's cache together (SessionTable::prefetch). Reads only; answers nothing.
  void prefetch(std::span<const std::uint8_t> bytes, std::size_t max_frame,
                std::size_t max_requests);

 private:
  // Appends `response` as the OK answer to `request` (TOO_LARGE if it cannot fit a frame).
  void append_ok(const protocol::FrameHeader& request,
                 const google::protobuf::MessageLite& response, std::string* out);
  // Appends the OK answer to `request` whose body `write` appends to its argument (the frame
  // limit checked as append_ok does): for bodies written without building a message.
  void append_ok_written(const protocol::FrameHeader& request,
                         absl::FunctionRef<void(std::string*)> write, std::string* out);
  // What set_security installs, never changed once published: a request reads the current
  // one once (one atomic load) and uses it throughout, so a reload cannot tear a request.
  struct Security {
    SecurityPolicy policy;
    IdSigner signer;
    const storage::Clock* clock = &storage::SystemClock::instance();
  };
  // The session id in a request: 32 bytes, or 48 whose tag verifies. A bad tag, or a bare id
  // when every id must be signed, is NOT_FOUND before any lookup, and counted.
  Result<storage::SessionId> parse_id(const Security& security, const std::string& bytes);
  // The id as this node hands it out: signed when the session is.
  static std::string wire_id(const Security& security, const storage::SessionId& id,
                             bool is_signed);
  static void meta_to_wire(const Security& security, const storage::SessionMeta& meta,
                           wire::SessionMeta* out);
  // The OK answer carrying `meta` (CREATE, UPDATE, TOUCH, REGENERATE: each response is
  // {SessionMeta session = 1}), written straight into the frame.
  void append_meta(const protocol::FrameHeader& request, const Security& security,
                   const storage::SessionMeta& meta, std::string* out);
  // The GET path: the read, then the context and hijack policies. True when the policy ended
  // the session (a write its replicas must have).
  bool handle_get(const Security& security, const protocol::FrameHeader& request,
                  const storage::SessionId& id, const storage::ReadOptions& options,
                  bool access_log_only, std::string* out);
  // HIJACK_SUSPECTED for a session the table ended, after revoking its user's other sessions
  // when that is the policy.
  void hijack_response(const protocol::FrameHeader& request,
                       const std::vector<HijackFinding>& findings, HijackAction action,
                       const std::string& user_id, std::string* out);
  // Cluster routing of a request for the key at `position`: true when this node serves it;
  // otherwise WRONG_NODE (naming the owner) or, for a write while fenced, UNAVAILABLE is
  // appended and false returned.
  // A write admitted holds `guard` until it is done: the handover of a moving key and a node's
  // step-down wait for it.
  struct WriteGuard {
    std::shared_lock<std::shared_mutex> moving;    // Migrator::admit_write
    std::shared_lock<std::shared_mutex> stopping;  // Replicas::admit_write
  };
  bool route(const protocol::FrameHeader& request, const cluster::Routing& routing,
             std::uint64_t position, bool write, std::string* out, WriteGuard* guard);
  // REGENERATE into a user another node owns (DESIGN §6): ends the session here, then has the
  // user's node create its successor (a blocking node-to-node CREATE on this thread).
  Status regenerate_elsewhere(const storage::SessionId& id, const wire::RegenerateRequest& req,
                              const cluster::Node& users_node, std::uint64_t epoch,
                              wire::RegenerateResponse* response);
  // Sends `request` (holder_only) to every other node that holds sessions of users made before
  // route keys (Membership::legacy_holders), calling `each` after each answer was parsed into
  // `response`; UNAVAILABLE naming the first that does not answer.
  Status ask_legacy_holders(const cluster::Routing& routing, protocol::Opcode opcode,
                            const google::protobuf::MessageLite& request,
                            google::protobuf::MessageLite* response,
                            const std::function<void()>& each);
  // A route key this node owns, for a new anonymous session; nullopt when it owns none.
  static std::optional<std::uint64_t> owned_route_key(const cluster::Routing& routing);
  void topology_to_wire(wire::TopologyResponse* out) const;
  // A CREATE or REGENERATE with a request id, whose body without its epoch is its fingerprint:
  // true when it was answered here (the first attempt's answer, or why it cannot be run);
  // otherwise the caller runs it and records its answer with requests_.finish().
  bool answer_retry(const protocol::FrameHeader& request, const std::string& request_id,
                    std::span<const std::uint8_t> body, std::string* out);
  // Appends an error frame with `body`; a short fixed message when it does not fit max_body.
  void append_error_body(const protocol::FrameHeader& request, StatusCode code,
                         const wire::ErrorResponse& body, std::string* out);
  // What a write to a key at its handover tells the client to wait before sending it again.
  static constexpr std::uint32_t kHandoverRetryMs = 20;
  // ... and to a write for a range that has no writer (its owner down, no replica in sync).
  static constexpr std::uint32_t kNoWriterRetryMs = 250;
  // Error messages quote what clients sent: at most this much of it goes back.
  static constexpr std::size_t kMaxErrorMessageBytes = 1024;
  storage::SessionTable& table_;
  storage::Store* store_;
  Counters& counters_;
  std::string address_;
  std::uint32_t max_body_;
  cluster::Membership* membership_ = nullptr;  // null: a one-node region
  const storage::IdGenerator* ids_ = nullptr;
  Migrator* migrator_ = nullptr;
  Replicas* replicas_ = nullptr;  // null: no replicas (one node, or factor 1)
  Regions* regions_ = nullptr;    // null: no peer regions
  std::string region_ = "local";
  RequestCache requests_;  // answers of CREATE and REGENERATE by request id
  AuthConfig auth_;
  // The current snapshot, replaced whole by set_security; never null. A request loads it once
  // (one acquire load, no reference count to contend on) and uses it throughout.
  std::atomic<const Security*> security_;
  // Every snapshot ever published, kept until the handlers end, since a request on another
  // thread may still use the one it loaded: reloads are rare and a snapshot is small.
  std::mutex snapshots_mu_;  // guards snapshots_
  std::vector<std::unique_ptr<const Security>> snapshots_;
};

}  // namespace sessiond::daemon
