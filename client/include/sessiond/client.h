// sessiond::Client: the application's handle on a sessiond node or cluster (DESIGN §8).
//
//   sessiond::Client::Options options;
//   options.address = "10.0.0.1:7400,10.0.0.2:7400";  // seeds; one node is enough
//   sessiond::Client client(options);
//   sessiond::CreateOptions create;
//   create.user_id = "alice";
//   create.fields = {{"cart", "3 items"}};
//   auto created = client.create(create);
//   if (!created.ok()) return created.status();
//   sessiond::GetOptions touch;
//   touch.touch = true;
//   auto session = client.get(created->id, touch);
//
// (Fill option structs field by field: with gcc, designated initializers that leave members
// out warn under -Wextra.)
//
// Every call returns a Status or a Result<T> (protocol/status.h): expected outcomes such as
// NOT_FOUND, EXPIRED or VERSION_CONFLICT are statuses, never exceptions. A call that gets no
// answer within its deadline (Options::timeout, or the thread's CallTimeout) returns
// UNAVAILABLE with a message that says why (no
// connection, connection lost, no answer in time). Malformed arguments (an id that is not 43 or 64
// base64url characters, a negative timeout) are INVALID_ARGUMENT without a round trip.
//
// Connections: a pool of Options::pool_size TCP (or TLS, Options::tls) connections per node,
// opened lazily by the first calls. Each connection pipelines: many calls are in flight at once and
// their frames are written together. When a connection drops, calls that were not yet sent and
// idempotent calls (ping, get without touch or access record, list_user, access_log, stats) are
// retried on a new connection with exponential backoff, within their deadline; other calls that
// were already sent fail with UNAVAILABLE ("may or may not have been applied").
//
// Routing (docs/protocol.md, "Routing"): the client fetches the region's topology with TOPOLOGY
// from the first seed that answers, in the background on its first keyed call. In a cluster,
// each call on a session goes to the node that owns it (the same ring as the nodes,
// cluster/ring.h), create, list_user and revoke_user go to any node, and ping and stats to the
// first seed. A node that does not own the session answers WRONG_NODE naming the owner, and the
// client retries there once; a call whose connection failed is retried once on the owner by a
// refreshed topology when resending it is safe (create and regenerate carry a request id for
// that). The deadline covers every retry. A node without a cluster (topology epoch 0) gets every
// call, as a single node always has.
//
// Thread safety: every method may be called from any thread at once. Asynchronous callbacks
// run on the client's I/O thread: they must not block, and must not call the synchronous
// methods (those return INTERNAL when called from a callback instead of deadlocking).
// Destroying the client fails the calls still outstanding with UNAVAILABLE and runs their
// callbacks before the destructor returns.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/status.h"
#include "sessiond/session_id.h"
#include "sessiond/types.h"

namespace sessiond {

// TLS to the node (ClientOptions::tls; docs/tls.md). Off by default. A handshake that fails
// (an untrusted or misnamed certificate, a node without TLS, a refused client certificate)
// fails the calls with UNAVAILABLE "TLS handshake failed: <why>"; a file that cannot be used
// fails them with INVALID_ARGUMENT naming it.
struct ClientTlsOptions {
  bool enabled = false;
  // PEM CA bundle that the node's certificate must chain to; empty: the system's trust store.
  std::string ca_file;
  // PEM certificate and unencrypted private key shown to the node (mutual TLS); both or
  // neither. A certificate whose subject OU is app, admin or peer grants that role.
  std::string cert_file;
  std::string key_file;
  // The DNS name or IP address the node's certificate must carry, also sent as SNI (when a
  // name); empty: the host of the address the client dials (each node's, in a cluster).
  std::string server_name;
};

// How a Client reaches its node or cluster (Client::Options).
struct ClientOptions {
  // HOST:PORT of the node, or several seeds separated by commas ("a:7400,b:7400"): nodes of the
  // region to fetch the topology from, tried in order (ping and stats go to the first).
  std::string address = "127.0.0.1:7400";
  // The seeds as a list, HOST:PORT each; when not empty it is used instead of `address`.
  std::vector<std::string> seeds;
  // Deadline of each call, from the moment it is made until its answer, retries included.
  std::chrono::milliseconds timeout{2000};
  std::size_t pool_size = 2;  // connections to each node (at least 1)
  // Reconnect backoff: the first retry waits backoff_initial, each further one `multiplier`
  // times longer, at most backoff_max. A call is attempted at most 1 + max_retries times.
  std::chrono::milliseconds backoff_initial{10};
  std::chrono::milliseconds backoff_max{1000};
  double backoff_multiplier = 2.0;
  int max_retries = 4;
  std::uint32_t max_frame_body = 1u << 20;  // largest response body accepted (1 MiB)
  // Shared secret of the role to authenticate as (docs/security.md); every connection sends
  // AUTH with it first. Empty: no AUTH (a node without secrets treats everyone as admin). A
  // wrong secret fails the connection's calls.
  std::string secret;
  ClientTlsOptions tls;  // TLS to the node; off by default
  // Other regions of the deployment, in order of preference after this one (docs/regions.md):
  // each the seeds of a region, "HOST:PORT[,HOST:PORT...]". A get() this region cannot answer
  // (UNAVAILABLE: no connection, no answer in time; or BEHIND) is asked of the next region, with
  // the same options and its own deadline. Every other call stays in this region.
  std::vector<std::string> fallback_regions;
  // Read-your-writes after a failover: the client remembers the version of the last this many
  // sessions it created, updated, touched, regenerated or read (0: off), and a get() asks for at
  // least that version (GetOptions::min_version). A region that has not reached it answers
  // BEHIND, and the next region is asked; when none has it, the get() returns BEHIND.
  std::size_t read_your_writes = 0;
};

class Client {
 public:
  using Options = ClientOptions;

  template <typename T>
  using Callback = std::function<void(Result<T>)>;
  using StatusCallback = std::function<void(Status)>;

  // Starts the I/O thread; connects lazily (never blocks, never fails).
  explicit Client(Options options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const Options& options() const;

  // A deadline for the calls this thread makes while the guard lives, instead of
  // Options::timeout (guards nest; the innermost wins):
  //   { sessiond::Client::CallTimeout quick(std::chrono::milliseconds(50)); client.get(id); }
  // The deadline covers the whole call, retries included.
  class CallTimeout {
   public:
    explicit CallTimeout(std::chrono::milliseconds timeout);
    ~CallTimeout();
    CallTimeout(const CallTimeout&) = delete;
    CallTimeout& operator=(const CallTimeout&) = delete;

   private:
    std::optional<std::chrono::milliseconds> previous_;
  };

  // ---- synchronous calls: block until the answer or the deadline ----------------------------

  // Round trip to the (first seed) node; echoes `payload`.
  Result<PingResult> ping(std::string payload = {});
  // A new session with a fresh id. Once sent, retried only in a cluster, where its request id
  // makes a resend safe.
  Result<SessionMeta> create(const CreateOptions& options);
  // The whole session. NOT_FOUND / EXPIRED when it is gone; CONTEXT_MISMATCH when bound to
  // another context than options.expect_context. With options.record_access the node runs
  // hijack detection: findings come in Session::detections, or as HIJACK_SUSPECTED when the
  // node's policy ended the session (docs/security.md).
  Result<Session> get(std::string_view id, const GetOptions& options = {});
  // Sets and removes fields, optionally changes the timeouts; counts as an access.
  Result<SessionMeta> update(std::string_view id, const UpdateOptions& options);
  // Slides the idle deadline (never past the absolute one).
  Result<SessionMeta> touch(std::string_view id);
  // Removes the session. NOT_FOUND when there was none.
  Status destroy(std::string_view id);
  // A new id for the same data in one atomic step; the old id is destroyed.
  Result<SessionMeta> regenerate(std::string_view id, const RegenerateOptions& options = {});
  // The user's alive sessions, oldest first.
  Result<std::vector<SessionMeta>> list_user(std::string_view user_id);
  // Destroys every session of the user except `keep_id` (empty: none kept); answers how many.
  Result<std::uint64_t> revoke_user(std::string_view user_id, std::string_view keep_id = {});
  // The session's access history, oldest first.
  Result<std::vector<AccessEntry>> access_log(std::string_view id);
  // Counters of the (first seed) node.
  Result<Stats> stats();
  // Anti-entropy of the (first seed) node with its peer regions now, or with `region` only
  // (admin role; docs/regions.md): a report per region once its round is done. Rounds over
  // many sessions take a while: give it a CallTimeout. INVALID_ARGUMENT from a node without
  // peer regions, NOT_FOUND for a region that is not one. With `check_only` the node only
  // compares digests and reports the buckets that differ.
  Result<std::vector<RegionRepair>> repair(std::string_view region = {}, bool check_only = false);
  // The topology the client routes by (a copy), fetched first if it has none yet; UNAVAILABLE
  // naming each seed's failure when no seed answered TOPOLOGY.
  Result<Topology> topology();
  // Fetches the topology now (or joins the fetch in flight) and returns it.
  Result<Topology> refresh_topology();

  // Gets every id in one pipelined burst over the pool; results in the order of `ids`.
  std::vector<Result<Session>> get_many(std::span<const std::string> ids,
                                        const GetOptions& options = {});

  // ---- asynchronous calls: return at once; `done` runs exactly once on the I/O thread ------

  void async_ping(std::string payload, Callback<PingResult> done);
  void async_create(const CreateOptions& options, Callback<SessionMeta> done);
  void async_get(std::string_view id, const GetOptions& options, Callback<Session> done);
  void async_update(std::string_view id, const UpdateOptions& options, Callback<SessionMeta> done);
  void async_touch(std::string_view id, Callback<SessionMeta> done);
  void async_destroy(std::string_view id, StatusCallback done);
  void async_regenerate(std::string_view id, const RegenerateOptions& options,
                        Callback<SessionMeta> done);
  void async_list_user(std::string_view user_id, Callback<std::vector<SessionMeta>> done);
  void async_revoke_user(std::string_view user_id, std::string_view keep_id,
                         Callback<std::uint64_t> done);
  void async_access_log(std::string_view id, Callback<std::vector<AccessEntry>> done);
  void async_stats(Callback<Stats> done);
  void async_repair(std::string_view region, bool check_only,
                    Callback<std::vector<RegionRepair>> done);
  void async_topology(Callback<Topology> done);
  void async_refresh_topology(Callback<Topology> done);

  class Impl;

 private:
  // get() in this region only.
  void get_here(std::string_view id, const GetOptions& options, Callback<Session> done);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sessiond
