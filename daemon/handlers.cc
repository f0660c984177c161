#include "daemon/handlers.h"

#include <array>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <optional>
#include <tuple>

#include "cluster/ring.h"
#include "daemon/regions.h"
#include "daemon/session_wire.h"
#include "protocol/crypto.h"
#include "protocol/sessiond.pb.h"
#include "protocol/version.h"
#include "replication/peer_link.h"
#include "storage/store.h"
#include "storage/test_hooks.h"

namespace sessiond::daemon {
namespace {

// Which role may send what (DESIGN §9): PING and AUTH are open; session operations and
// TOPOLOGY need app or admin; STATS needs admin; node-to-node operations need peer.
bool permitted(Role role, protocol::Opcode opcode, bool auth_enabled) {
  switch (opcode) {
    case protocol::Opcode::kPing:
    case protocol::Opcode::kAuth:
      return true;
    case protocol::Opcode::kStats:
    case protocol::Opcode::kRepair:
      return role == Role::kAdmin;
    case protocol::Opcode::kReplicate:
    case protocol::Opcode::kMigrate:
    case protocol::Opcode::kDigest:
      // Without secrets every connection is trusted, nodes too.
      return role == Role::kPeer || (!auth_enabled && role == Role::kAdmin);
    case protocol::Opcode::kTopology:
      return role != Role::kNone;
    case protocol::Opcode::kCreate:
      // Peers too: a REGENERATE into a user of another node creates the successor there.
    case protocol::Opcode::kListUser:
    case protocol::Opcode::kRevokeUser:
      // Peers too: a user's node asks the nodes holding sessions made before route keys
      // (holder_only, which only peers may ask for), and a hijack found there revokes the user.
      return role == Role::kApp || role == Role::kAdmin || role == Role::kPeer;
    default:
      return role == Role::kApp || role == Role::kAdmin;
  }
}

using protocol::Opcode;
namespace wire = sessiond::wire;

// When it goes out of scope with a wait set, queues the answer appended since `at` on the
// connection: the server holds it until the replicas confirm (daemon/replicas.h).
struct AckGuard {
  ConnectionState* state;
  const protocol::FrameHeader& request;
  std::string* out;
  std::size_t at;
  std::optional<Replicas::Wait> wait;
  ~AckGuard() {
    if (wait && !wait->shippers.empty() && out->size() > at) {
      state->acks.push_back(
          {request, at, out->size() - at, std::move(*wait), Replicas::WaitState::kPending});
    }
  }
};

std::string id_bytes(const storage::SessionId& id) {
  return {reinterpret_cast<const char*>(id.data()), id.size()};
}

std::uint64_t position_of(const storage::SessionId& id) {
  return cluster::ring_position(
      std::string_view(reinterpret_cast<const char*>(id.data()), id.size()));
}

std::uint64_t random_u64() {
  std::uint64_t v = 0;
  if (!random_bytes(&v, sizeof v)) std::abort();  // as for ids: never a guessable one
  return v;
}

// When it goes out of scope, sets the newer-epoch flag on the frame appended at `at` if the
// request was routed by an older epoch than the node's (a routing client then refreshes its
// topology). The epoch is read then, since it is known only once the body is parsed.
struct NewerEpochFlag {
  std::string* out;
  std::size_t at;
  const std::uint64_t* request_epoch;
  const cluster::Routing* routing;
  ~NewerEpochFlag() {
    if (routing == nullptr || *request_epoch == 0 || *request_epoch >= routing->topology.epoch ||
        out->size() <= at + 3) {
      return;
    }
    (*out)[at + 3] =
        static_cast<char>(static_cast<std::uint8_t>((*out)[at + 3]) | protocol::kFlagNewerEpoch);
  }
};

Result<storage::Timeouts> timeouts_from(const wire::Timeouts& t) {
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (t.idle_ms() > kMax || t.absolute_ms() > kMax) {
    return Status::InvalidArgument("timeouts out of range");
  }
  return storage::Timeouts{static_cast<std::int64_t>(t.idle_ms()),
                           static_cast<std::int64_t>(t.absolute_ms())};
}

std::vector<std::pair<std::string, std::string>> fields_from(
    const google::protobuf::RepeatedPtrField<wire::Field>& fields) {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(static_cast<std::size_t>(fields.size()));
  for (const auto& f : fields) out.emplace_back(f.name(), f.value());
  return out;
}

storage::ClientContext context_from(const wire::ClientContext& c) {
  return {c.ip(), c.user_agent_hash()};
}

storage::AccessEntry access_from(const wire::AccessEntry& e) {
  return {0, e.ip(), e.user_agent_hash(), e.has_location(), e.latitude(), e.longitude()};
}

void to_wire(const HijackFinding& f, wire::HijackDetection* out) {
  out->set_kind(f.kind == HijackFinding::Kind::kImpossibleTravel
                    ? wire::HijackDetection::IMPOSSIBLE_TRAVEL
                    : wire::HijackDetection::MANY_IPS);
  out->set_message(f.message);
  out->set_distance_km(f.distance_km);
  out->set_speed_kmh(f.speed_kmh);
  out->set_interval_ms(f.interval_ms);
  out->set_distinct_ips(f.distinct_ips);
}

// The engine's view of a CREATE request, with the preset it is kept under and whether its id
// is signed; INVALID_ARGUMENT for a bad policy.
Result<storage::NewSession> new_session_from(const wire::CreateRequest& req,
                                             const SecurityPolicy& policy, bool can_sign) {
  storage::NewSession ns;
  ns.user_id = req.user_id();
  ns.fields = fields_from(req.fields());
  if (req.policy_case() == wire::CreateRequest::kTimeouts) {
    auto t = timeouts_from(req.timeouts());
    if (!t.ok()) return t.status();
    ns.timeouts = *t;
  } else if (req.policy_case() == wire::CreateRequest::kPreset &&
             req.preset() != wire::PRESET_UNSPECIFIED) {
    const int p = static_cast<int>(req.preset());
    if (p < wire::FINANCE || p > wire::GAMING) {
      return Status::InvalidArgument("unknown preset " + std::to_string(p));
    }
    ns.preset = static_cast<storage::Preset>(p - 1);
    ns.timeouts = storage::preset_timeouts(*ns.preset);
  }
  if (req.policy_case() != wire::CreateRequest::kTimeouts && !ns.preset) {
    ns.preset = policy.default_preset;  // the table's default timeouts are this preset's
  }
  ns.signed_id = can_sign && policy.for_session(ns.preset).sign_ids;
  if (req.has_context()) ns.context = context_from(req.context());
  return ns;
}

}  // namespace

std::size_t Handlers::session_answer_overhead(const storage::TableOptions& table) {
  // Upper bounds of the protobuf encoding (sessiond.proto): a tag is 1 byte here, a length at
  // most 5, a varint at most 10, a double 8.
  constexpr std::size_t kTag = 1, kLength = 5, kVarint = 10, kDouble = 8;
  constexpr std::size_t kSubmessage = kTag + kLength;
  constexpr std::size_t kVersion = kSubmessage + 2 * (kTag + kVarint);
  constexpr std::size_t kPerField = kSubmessage + 2 * (kTag + kLength) + kVersion;
  constexpr std::size_t kIp = kTag + kLength + storage::kMaxIpBytes;
  constexpr std::size_t kPerAccess =
      kSubmessage + 2 * (kTag + kVarint) + kIp + (kTag + 1) + 2 * (kTag + kDouble);
  // A finding's message is a short sentence (security.cc); 512 bytes is far above it.
  constexpr std::size_t kDetection =
      kSubmessage + 3 * (kTag + kVarint) + (kTag + kLength + 512) + 2 * (kTag + kDouble);
  constexpr std::size_t kFixed = kSubmessage                        // GetResponse.session
                                 + kTag + kLength + kSignedIdBytes  // id
                                 + kTag + kLength                   // user id's framing
                                 + 3 * (kTag + kVarint)             // created, accessed, deadline
                                 + kSubmessage + 2 * (kTag + kVarint)  // timeouts
                                 + kSubmessage + kIp + kTag + kVarint  // context
                                 + kVersion + 2 * kDetection;          // both kinds of finding
  return kFixed + kPerField * table.max_fields + kPerAccess * table.access_log_length;
}

bool Handlers::settle_acks(ConnectionState* state, std::string* out) {
  if (state->acks.empty()) return true;
  for (auto& a : state->acks) {
    if (a.state == Replicas::WaitState::kPending) a.state = replicas_->check(a.wait);
    if (a.state == Replicas::WaitState::kPending) return false;
  }
  // Every wait is settled: answers whose replicas did not confirm become UNAVAILABLE, from the
  // last so that earlier offsets stay valid.
  for (auto it = state->acks.rbegin(); it != state->acks.rend(); ++it) {
    if (it->state != Replicas::WaitState::kFailed) continue;
    std::string error;
    append_error(it->request, Replicas::failed_status(it->wait), &error);
    out->replace(it->at, it->size, error);
  }
  state->acks.clear();
  return true;
}

Handlers::Handlers(storage::SessionTable& table, storage::Store* store, Counters& counters,
                   std::string address, std::uint32_t max_body, AuthConfig auth)
    : table_(table),
      store_(store),
      counters_(counters),
      address_(std::move(address)),
      max_body_(max_body),
      auth_(std::move(auth)) {
  snapshots_.push_back(std::make_unique<const Security>());
  security_.store(snapshots_.back().get(), std::memory_order_release);
}

void Handlers::set_security(SecurityPolicy policy, IdSigner signer, const storage::Clock& clock) {
  std::lock_guard lock(snapshots_mu_);
  snapshots_.push_back(
      std::make_unique<const Security>(Security{std::move(policy), std::move(signer), &clock}));
  security_.store(snapshots_.back().get(), std::memory_order_release);
}

Result<storage::SessionId> Handlers::parse_id(const Security& security, const std::string& bytes) {
  storage::SessionId id;
  if (bytes.size() != sizeof id && bytes.size() != kSignedIdBytes) {
    return Status::InvalidArgument("a session id is 32 bytes (48 when signed), got " +
                                   std::to_string(bytes.size()));
  }
  std::memcpy(id.data(), bytes.data(), id.size());
  if (bytes.size() == sizeof id) {
    if (!security.policy.require_signed_ids) return id;
    counters_.forged_ids.fetch_add(1, std::memory_order_relaxed);
    return Status::NotFound("this node accepts signed session ids only");
  }
  const auto tag =
      std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()) + id.size(), kIdTagBytes);
  if (security.signer.verify(id, tag, security.clock->now_ms())) return id;
  counters_.forged_ids.fetch_add(1, std::memory_order_relaxed);
  return Status::NotFound(
      "session id signature does not verify (forged, or signed with a "
      "retired key)");
}

std::string Handlers::wire_id(const Security& security, const storage::SessionId& id,
                              bool is_signed) {
  // With every id signed (--signed-ids all), so are those of sessions made before.
  return (is_signed || security.policy.require_signed_ids) && security.signer.enabled()
             ? security.signer.sign(id)
             : id_bytes(id);
}

void Handlers::meta_to_wire(const Security& security, const storage::SessionMeta& meta,
                            wire::SessionMeta* out) {
  to_wire(meta, wire_id(security, meta.id, meta.signed_id), out);
}

bool Handlers::handle_get(const Security& security, const protocol::FrameHeader& request,
                          const storage::SessionId& id, const storage::ReadOptions& options,
                          bool access_log_only, std::string* out) {
  thread_local storage::Session session;
  // Hijack detection runs under the session's lock on the history with this access in it, so
  // that a session its policy ends is gone before a concurrent read can get it.
  std::vector<HijackFinding> findings;
  HijackAction action = HijackAction::kReport;
  const auto judge = [&](const storage::Session& s) {
    findings = detect_hijack(s.access_log, security.policy.hijack);
    action = security.policy.for_session(s.preset).on_hijack;
    return !findings.empty() && action != HijackAction::kReport;
  };
  storage::ReadOptions read = options;
  if (options.record_access) read.judge.emplace(judge);
  Status s = table_.get(id, read, &session);
  for (const auto& f : findings) {
    (f.kind == HijackFinding::Kind::kImpossibleTravel ? counters_.hijack_travel
                                                      : counters_.hijack_many_ips)
        .fetch_add(1, std::memory_order_relaxed);
  }
  if (s.code() == StatusCode::kContextMismatch) {
    counters_.context_mismatches.fetch_add(1, std::memory_order_relaxed);
    // A context that does not match may be a stolen id in use: end the session, per policy.
    if (security.policy.for_session(session.preset).destroy_on_context_mismatch &&
        table_.destroy(id).ok()) {
      s = Status(StatusCode::kContextMismatch, s.message() + "; the session was destroyed");
      append_error(request, s, out);
      return true;
    }
  }
  if (s.code() == StatusCode::kHijackSuspected) {
    hijack_response(request, findings, action, session.user_id, out);
    return true;
  }
  if (!s.ok()) {
    append_error(request, s, out);
    return false;
  }
  if (access_log_only) {
    wire::AccessLogResponse resp;
    for (const auto& e : session.access_log) to_wire(e, resp.add_entries());
    append_ok(request, resp, out);
    return false;
  }
  if (findings.empty()) {  // the common answer, written straight into the frame
    append_ok_written(
        request,
        [&](std::string* body) {
          append_get_response(session, wire_id(security, session.id, session.signed_id), body);
        },
        out);
    return false;
  }
  wire::GetResponse resp;
  to_wire(session, wire_id(security, session.id, session.signed_id), resp.mutable_session());
  for (const auto& f : findings) to_wire(f, resp.add_detections());
  append_ok(request, resp, out);
  return false;
}

void Handlers::hijack_response(const protocol::FrameHeader& request,
                               const std::vector<HijackFinding>& findings, HijackAction action,
                               const std::string& user_id, std::string* out) {
  // The session itself is gone already (the table ended it under its lock); revoke-user ends
  // the user's other sessions too.
  std::string ended = "the session was destroyed";
  if (action == HijackAction::kRevokeUser && !user_id.empty()) {
    auto n = table_.revoke_user(user_id);
    if (n.ok() && membership_ != nullptr) {
      // In a region the user's other sessions are on the user's node (this one, unless the
      // session was made before route keys) and on the nodes holding such old sessions.
      const auto routing = membership_->routing();
      const cluster::Node* users_node = routing->owner(ids_->route_key_of_user(user_id));
      wire::RevokeUserRequest ask;
      ask.set_user_id(user_id);
      wire::RevokeUserResponse part;
      Status s;
      if (users_node != nullptr && users_node->id != membership_->options().node_id) {
        ask.set_epoch(routing->topology.epoch);
        s = replication::PeerLink(users_node->address, auth_.peer_secret)
                .call(Opcode::kRevokeUser, ask, &part);
        if (s.ok()) *n += part.revoked();
      } else {
        ask.set_holder_only(true);
        s = ask_legacy_holders(*routing, Opcode::kRevokeUser, ask, &part,
                               [&] { *n += part.revoked(); });
      }
      if (!s.ok()) n = s;
    }
    ended = n.ok() ? "every session of the user was revoked (" + std::to_string(*n + 1) + ")"
                   : "the session was destroyed; revoking the user's other sessions failed: " +
                         n.status().message();
  }
  std::string message = "hijack suspected: ";
  for (std::size_t i = 0; i < findings.size(); ++i) {
    message += (i ? "; " : "") + findings[i].message;
  }
  wire::ErrorResponse body;
  body.set_message(protocol::printable_text(message + "; " + ended, kMaxErrorMessageBytes));
  for (const auto& f : findings) to_wire(f, body.add_detections());
  append_error_body(request, StatusCode::kHijackSuspected, body, out);
}

void Handlers::append_error(const protocol::FrameHeader& request, const Status& status,
                            std::string* out) {
  wire::ErrorResponse body;
  body.set_message(protocol::printable_text(status.message(), kMaxErrorMessageBytes));
  append_error_body(request, status.ok() ? StatusCode::kInternal : status.code(), body, out);
}

void Handlers::append_error_body(const protocol::FrameHeader& request, StatusCode code,
                                 const wire::ErrorResponse& body, std::string* out) {
  protocol::FrameHeader h;
  h.flags = protocol::kFlagResponse;
  h.opcode = request.opcode;
  h.request_id = request.request_id;
  h.status = code;
  if (protocol::append_frame(h, body, out, max_body_).ok()) return;
  // Every request gets its one answer, even when the error's details do not fit a frame.
  wire::ErrorResponse brief;
  brief.set_message("(the error's details do not fit the frame limit)");
  (void)protocol::append_frame(h, brief, out, max_body_);
}

void Handlers::prefetch(std::span<const std::uint8_t> bytes, std::size_t max_frame,
                        std::size_t max_requests) {
  constexpr std::size_t kMaxIds = 64;
  std::array<storage::SessionId, kMaxIds> ids;
  std::size_t n = 0;
  std::size_t at = 0;
  for (std::size_t frames = 0; frames < max_requests && n < kMaxIds && at < bytes.size();
       ++frames) {
    const auto d = protocol::decode_frame(bytes.subspan(at), max_frame);
    if (d.kind != protocol::Decoded::Kind::kFrame) break;
    at += d.consumed;
    switch (static_cast<Opcode>(d.header.opcode)) {
      case Opcode::kGet:
      case Opcode::kTouch:
      case Opcode::kUpdate:
      case Opcode::kDestroy:
      case Opcode::kRegenerate:
        break;
      default:
        continue;
    }
    // The id is field 1, which protobuf writes first: tag 0x0A, then a one-byte length, 32
    // (raw) or 48 (signed: the id, then its tag). Anything else is skipped: only a hint.
    const auto body = d.body;
    constexpr std::size_t kIdBytes = std::tuple_size_v<storage::SessionId>;
    if (body.size() < 2 + kIdBytes || body[0] != 0x0A || (body[1] != 32 && body[1] != 48)) {
      continue;
    }
    std::memcpy(ids[n++].data(), body.data() + 2, kIdBytes);
  }
  if (n > 1) table_.prefetch(std::span(ids.data(), n));
}

void Handlers::append_ok_written(const protocol::FrameHeader& request,
                                 absl::FunctionRef<void(std::string*)> write, std::string* out) {
  protocol::FrameHeader h;
  h.flags = protocol::kFlagResponse;
  h.opcode = request.opcode;
  h.request_id = request.request_id;
  const std::size_t start = out->size();
  out->resize(start + protocol::kHeaderSize);
  write(out);
  const std::size_t size = out->size() - start - protocol::kHeaderSize;
  if (size > max_body_) {
    out->resize(start);
    append_error(request,
                 Status::TooLarge("response body of " + std::to_string(size) +
                                  " bytes exceeds the frame limit of " + std::to_string(max_body_)),
                 out);
    return;
  }
  h.body_length = static_cast<std::uint32_t>(size);
  protocol::encode_header(h, reinterpret_cast<std::uint8_t*>(out->data() + start));
}

void Handlers::append_meta(const protocol::FrameHeader& request, const Security& security,
                           const storage::SessionMeta& meta, std::string* out) {
  append_ok_written(
      request,
      [&](std::string* body) {
        append_meta_response(meta, wire_id(security, meta.id, meta.signed_id), body);
      },
      out);
}

void Handlers::append_ok(const protocol::FrameHeader& request,
                         const google::protobuf::MessageLite& response, std::string* out) {
  protocol::FrameHeader h;
  h.flags = protocol::kFlagResponse;
  h.opcode = request.opcode;
  h.request_id = request.request_id;
  Status s = protocol::append_frame(h, response, out, max_body_);
  if (!s.ok()) append_error(request, s, out);
}

void Handlers::handle_creates(std::span<const Request> creates, ConnectionState* state,
                              std::string* out) {
  if (creates.size() == 1 || !permitted(state->role, Opcode::kCreate, auth_.enabled()) ||
      state->close) {
    for (const Request& c : creates) handle(c.header, c.body, state, out);
    return;
  }
  // Each body parsed once; a create with a request id sends the batch one by one (its answer
  // is remembered for a retry), seen before any is parsed (the routing client sends one with
  // every CREATE).
  constexpr std::uint32_t kRequestIdField = 14;  // CreateRequest.request_id
  for (const Request& c : creates) {
    if (protocol::has_field(c.body, kRequestIdField)) {
      for (const Request& each : creates) handle(each.header, each.body, state, out);
      return;
    }
  }
  std::vector<wire::CreateRequest> requests(creates.size());
  std::vector<Status> refused(creates.size());  // answered without reaching the engine
  for (std::size_t i = 0; i < creates.size(); ++i) {
    refused[i] = protocol::parse_body(creates[i].body, Opcode::kCreate, &requests[i]);
    if (refused[i].ok() && !requests[i].request_id().empty()) {
      for (const Request& c : creates) handle(c.header, c.body, state, out);
      return;
    }
  }
  const Security* security = security_.load(std::memory_order_acquire);
  const std::shared_ptr<const cluster::Routing> routing =
      membership_ ? membership_->routing() : nullptr;
  std::vector<storage::NewSession> sessions;
  std::vector<std::string> routed_away(creates.size());  // WRONG_NODE or fenced, framed
  std::vector<std::uint64_t> epochs(creates.size());
  std::deque<WriteGuard> move_guards;  // see route()
  std::vector<std::size_t> slot(creates.size());
  sessions.reserve(creates.size());
  for (std::size_t i = 0; i < creates.size(); ++i) {
    const wire::CreateRequest& req = requests[i];
    if (!refused[i].ok()) {
      counters_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    epochs[i] = req.epoch();
    auto ns = new_session_from(req, security->policy, security->signer.enabled());
    if (!ns.ok()) {
      refused[i] = ns.status();
      continue;
    }
    if (routing) {
      ns->route_key = ns->user_id.empty() ? owned_route_key(*routing).value_or(random_u64())
                                          : ids_->route_key_of_user(ns->user_id);
      // Held until the batch is written: a user's key may be moving, and its handover must
      // wait for this create.
      if (!route(creates[i].header, *routing, *ns->route_key, true, &routed_away[i],
                 &move_guards.emplace_back())) {
        continue;
      }
    }
    slot[i] = sessions.size();
    sessions.push_back(std::move(ns).value());
  }
  const auto results = table_.create_batch(sessions);
  for (std::size_t i = 0; i < creates.size(); ++i) {
    const std::size_t at = out->size();
    const NewerEpochFlag flag{out, at, &epochs[i], routing.get()};
    if (!routed_away[i].empty()) {
      out->append(routed_away[i]);
      continue;
    }
    if (!refused[i].ok()) {
      append_error(creates[i].header, refused[i], out);
      continue;
    }
    const auto& result = results[slot[i]];
    if (!result.ok()) {
      append_error(creates[i].header, result.status(), out);
      continue;
    }
    AckGuard ack{state, creates[i].header, out, at, std::nullopt};
    if (replicas_ != nullptr && replicas_->options().ack == ReplicaAck::kAll) {
      Status s =
          replicas_->add_wait(position_of(result->id),
                              storage::Store::last_log_seq_on_this_thread(), &ack.wait.emplace());
      if (!s.ok()) {
        ack.wait.reset();
        append_error(creates[i].header, s, out);
        continue;
      }
    }
    append_meta(creates[i].header, *security, *result, out);
  }
}

void Handlers::handle(const protocol::FrameHeader& request, std::span<const std::uint8_t> body,
                      ConnectionState* state, std::string* out) {
  // Closing after too many failed AUTHs: what a client pipelined behind them gets no answer
  // (in particular, no more guesses are checked).
  if (state->close) return;
  Role* const role = &state->role;
  const auto opcode = static_cast<Opcode>(request.opcode);
  if (protocol::is_known_opcode(request.opcode) && !permitted(*role, opcode, auth_.enabled())) {
    return append_error(
        request,
        *role == Role::kNone
            ? Status(StatusCode::kUnauthenticated, "authenticate with AUTH first")
            : Status(StatusCode::kForbidden, "role " + std::string(role_name(*role)) + " may not " +
                                                 std::string(protocol::opcode_name(opcode))),
        out);
  }
  const Security* security = security_.load(std::memory_order_acquire);
  const std::shared_ptr<const cluster::Routing> routing =
      membership_ ? membership_->routing() : nullptr;
  std::uint64_t request_epoch = 0;  // what a keyed request was routed by, once parsed
  const NewerEpochFlag flag{out, out->size(), &request_epoch, routing.get()};
  // A write that its replicas must have before it is acknowledged (--replica-ack): the wait is
  // queued with the answer, which the server holds until the replicas confirm (or replaces with
  // UNAVAILABLE when they do not).
  AckGuard ack{state, request, out, out->size(), std::nullopt};
  auto replicated = [&](std::uint64_t position, bool terminal) -> bool {
    if (replicas_ == nullptr) return true;
    const ReplicaAck mode = replicas_->options().ack;
    if (mode == ReplicaAck::kNone || (mode == ReplicaAck::kTerminal && !terminal)) return true;
    if (!ack.wait) ack.wait.emplace();
    Status s =
        replicas_->add_wait(position, storage::Store::last_log_seq_on_this_thread(), &*ack.wait);
    if (s.ok()) return true;
    ack.wait.reset();
    append_error(request, s, out);
    return false;
  };
  // The answer of a write that may carry a request id, {SessionMeta session = 1} written
  // straight into the frame: remembered for a retry of that id, then sent once the write is
  // replicated as the mode asks (`terminal` and `position` as for replicated()).
  auto answer_meta = [&](const storage::SessionMeta& meta, const std::string& request_id,
                         std::uint64_t position, bool terminal) {
    const std::string id = wire_id(*security, meta.id, meta.signed_id);
    if (request_id.empty()) {
      if (!replicated(position, terminal)) return;
      append_ok_written(
          request, [&](std::string* to) { append_meta_response(meta, id, to); }, out);
      return;
    }
    std::string answer;
    append_meta_response(meta, id, &answer);
    requests_.finish(request_id, answer);
    if (!replicated(position, terminal)) return;
    append_ok_written(
        request, [&](std::string* to) { to->append(answer); }, out);
  };
  // Routes the request for the key at `position` (no-op outside a cluster): false when it was
  // answered with WRONG_NODE or, for a write while fenced, UNAVAILABLE.
  WriteGuard move_guard;  // held by a write to a moving key, and while the node may step down
  auto routed = [&](std::uint64_t position, bool write) {
    return routing == nullptr || route(request, *routing, position, write, out, &move_guard);
  };
  // Parses the request body into M, or answers INVALID_ARGUMENT and returns false.
  auto parse = [&](auto* message) {
    Status s = protocol::parse_body(body, opcode, message);
    if (!s.ok()) {
      counters_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
      append_error(request, s, out);
      return false;
    }
    return true;
  };
  auto reply = [&](const google::protobuf::MessageLite& response) {
    append_ok(request, response, out);
  };

  switch (opcode) {
    case Opcode::kPing: {
      wire::PingRequest req;
      if (!parse(&req)) return;
      wire::PingResponse resp;
      resp.set_payload(req.payload());
      resp.set_protocol_version(protocol::kProtocolVersion);
      resp.set_server(std::string("sessiond/").append(kVersion));
      return reply(resp);
    }
    case Opcode::kAuth: {
      wire::AuthRequest req;
      if (!parse(&req)) return;
      // With no secret configured every connection is trusted (admin), and AUTH says so.
      if (auth_.enabled()) {
        const Role given = auth_.authenticate(req.secret());
        if (given == Role::kNone) {
          counters_.auth_failures.record(state->peer);
          state->close = ++state->auth_failures >= kMaxAuthFailures;
          return append_error(
              request,
              Status(StatusCode::kUnauthenticated,
                     state->close ? "wrong secret; closing the connection after " +
                                        std::to_string(kMaxAuthFailures) + " failed AUTHs"
                                  : std::string("wrong secret")),
              out);
        }
        *role = given;
      }
      wire::AuthResponse resp;
      resp.set_role(std::string(role_name(*role)));
      return reply(resp);
    }
    case Opcode::kCreate: {
      wire::CreateRequest req;
      if (!parse(&req)) return;
      request_epoch = req.epoch();
      auto ns = new_session_from(req, security->policy, security->signer.enabled());
      if (!ns.ok()) return append_error(request, ns.status(), out);
      if (routing) {
        // A user's sessions go where the user's route key places them; an anonymous one gets a
        // route key this node owns, so that it is created here.
        ns->route_key = ns->user_id.empty() ? owned_route_key(*routing).value_or(random_u64())
                                            : ids_->route_key_of_user(ns->user_id);
        if (!routed(*ns->route_key, true)) return;
      }
      if (!req.request_id().empty() && answer_retry(request, req.request_id(), body, out)) return;
      auto meta = table_.create(*ns);
      if (!meta.ok()) {
        if (!req.request_id().empty()) requests_.finish(req.request_id(), {});
        return append_error(request, meta.status(), out);
      }
      return answer_meta(*meta, req.request_id(), position_of(meta->id), false);
    }
    case Opcode::kGet:
    case Opcode::kAccessLog: {
      storage::ReadOptions ro;
      std::optional<storage::ClientContext> expect;
      std::optional<storage::AccessEntry> access;
      std::string id_text;
      bool from_replica = false;
      std::optional<storage::Version> min_version;
      if (opcode == Opcode::kGet) {
        wire::GetRequest req;
        if (!parse(&req)) return;
        request_epoch = req.epoch();
        from_replica = req.from_replica();
        id_text = std::move(*req.mutable_id());
        ro.touch = req.touch();
        if (req.has_expect_context())
          ro.expect_context = &expect.emplace(context_from(req.expect_context()));
        if (req.has_record_access())
          ro.record_access = &access.emplace(access_from(req.record_access()));
        if (req.has_min_version()) {
          ro.min_version = &min_version.emplace(storage::Version{
              req.min_version().hlc(), req.min_version().region(), req.min_version().node()});
        }
      } else {
        wire::AccessLogRequest req;
        if (!parse(&req)) return;
        request_epoch = req.epoch();
        id_text = std::move(*req.mutable_id());
      }
      auto id = parse_id(*security, id_text);
      if (!id.ok()) return append_error(request, id.status(), out);
      // A client whose owner is down (or whose range has no writer) may read from a replica:
      // served as it is here, flagged possibly stale, nothing written.
      if (from_replica && routing && !routing->owns(position_of(*id)) &&
          routing->replicates(position_of(*id))) {
        ro.touch = false;
        ro.record_access = nullptr;
        ro.expect_context = nullptr;
        const std::size_t at = out->size();
        handle_get(*security, request, *id, ro, false, out);
        if (out->size() > at + 3) (*out)[at + 3] |= protocol::kFlagPossiblyStale;
        return;
      }
      if (!routed(position_of(*id), false)) return;
      if (membership_ && !membership_->writable() &&
          !storage::sabotaged(storage::Sabotage::kNoFencing)) {
        // Fenced: the read is served, without sliding or recording (those are writes).
        ro.touch = false;
        ro.record_access = nullptr;
      }
      // The policy may have ended the session (hijack, context): a terminal write.
      if (handle_get(*security, request, *id, ro, opcode == Opcode::kAccessLog, out)) {
        const std::size_t at = ack.at;
        std::string answer = out->substr(at);
        out->resize(at);
        if (replicated(position_of(*id), true)) out->append(answer);
      }
      return;
    }
    case Opcode::kUpdate: {
      wire::UpdateRequest req;
      if (!parse(&req)) return;
      request_epoch = req.epoch();
      auto id = parse_id(*security, req.id());
      if (!id.ok()) return append_error(request, id.status(), out);
      if (!routed(position_of(*id), true)) return;
      storage::FieldChanges ch;
      ch.set = fields_from(req.set());
      ch.remove.assign(req.remove().begin(), req.remove().end());
      if (req.has_timeouts()) {
        auto t = timeouts_from(req.timeouts());
        if (!t.ok()) return append_error(request, t.status(), out);
        ch.timeouts = *t;
      }
      std::optional<storage::Version> expected;
      if (req.has_expected_version()) {
        expected = storage::Version{req.expected_version().hlc(), req.expected_version().region(),
                                    req.expected_version().node()};
      }
      auto meta = table_.update(*id, ch, expected);
      if (!meta.ok()) return append_error(request, meta.status(), out);
      if (!replicated(position_of(*id), false)) return;
      return append_meta(request, *security, *meta, out);
    }
    case Opcode::kTouch: {
      wire::TouchRequest req;
      if (!parse(&req)) return;
      request_epoch = req.epoch();
      auto id = parse_id(*security, req.id());
      if (!id.ok()) return append_error(request, id.status(), out);
      if (!routed(position_of(*id), true)) return;
      auto meta = table_.touch(*id);
      if (!meta.ok()) return append_error(request, meta.status(), out);
      return append_meta(request, *security, *meta, out);
    }
    case Opcode::kDestroy: {
      wire::DestroyRequest req;
      if (!parse(&req)) return;
      request_epoch = req.epoch();
      auto id = parse_id(*security, req.id());
      if (!id.ok()) return append_error(request, id.status(), out);
      if (!routed(position_of(*id), true)) return;
      if (Status s = table_.destroy(*id); !s.ok()) return append_error(request, s, out);
      if (!replicated(position_of(*id), true)) return;
      return reply(wire::DestroyResponse());
    }
    case Opcode::kRegenerate: {
      wire::RegenerateRequest req;
      if (!parse(&req)) return;
      request_epoch = req.epoch();
      auto id = parse_id(*security, req.id());
      if (!id.ok()) return append_error(request, id.status(), out);
      if (!routed(position_of(*id), true)) return;
      const cluster::Node* users_node = nullptr;  // the new user's node, when another one
      if (routing && req.has_user_id() && !req.user_id().empty()) {
        const cluster::Node* to = routing->owner(ids_->route_key_of_user(req.user_id()));
        if (to == nullptr) {
          return append_error(request, Status::Unavailable("no node of the region has a weight"),
                              out);
        }
        if (to->id != routing->topology.nodes[*routing->self].id) users_node = to;
      }
      storage::RegenerateOptions opts;
      if (req.replace_fields()) opts.replace_fields = fields_from(req.fields());
      if (req.has_user_id()) opts.user_id = req.user_id();
      opts.mark_authenticated = req.mark_authenticated();
      if (!req.request_id().empty() && answer_retry(request, req.request_id(), body, out)) return;
      if (users_node != nullptr) {
        wire::RegenerateResponse resp;
        Status s = regenerate_elsewhere(*id, req, *users_node, routing->topology.epoch, &resp);
        if (!req.request_id().empty()) {
          requests_.finish(req.request_id(), s.ok() ? resp.SerializeAsString() : std::string());
        }
        if (!s.ok()) return append_error(request, s, out);
        if (!replicated(position_of(*id), true)) return;
        return reply(resp);
      }
      auto meta = table_.regenerate(*id, opts);
      if (!meta.ok()) {
        if (!req.request_id().empty()) requests_.finish(req.request_id(), {});
        return append_error(request, meta.status(), out);
      }
      return answer_meta(*meta, req.request_id(), position_of(*id), true);
    }
    case Opcode::kListUser: {
      wire::ListUserRequest req;
      if (!parse(&req)) return;
      request_epoch = req.epoch();
      if (req.holder_only() && *role != Role::kPeer && auth_.enabled()) {
        return append_error(request, Status(StatusCode::kForbidden, "holder_only is node to node"),
                            out);
      }
      if (routing && !req.holder_only() && !routed(ids_->route_key_of_user(req.user_id()), false)) {
        return;
      }
      wire::ListUserResponse resp;
      for (const auto& m : table_.list_user(req.user_id())) {
        // In a region, only what this node owns: a source lists what it moved away until it
        // forgets it, shortly after the migration's swap.
        if (routing && !routing->owns(position_of(m.id))) continue;
        meta_to_wire(*security, m, resp.add_sessions());
      }
      if (routing && !req.holder_only()) {
        wire::ListUserRequest ask = req;
        ask.set_holder_only(true);
        wire::ListUserResponse part;
        Status s = ask_legacy_holders(*routing, Opcode::kListUser, ask, &part, [&] {
          for (auto& m : *part.mutable_sessions()) *resp.add_sessions() = std::move(m);
        });
        if (!s.ok()) return append_error(request, s, out);
        std::sort(resp.mutable_sessions()->begin(), resp.mutable_sessions()->end(),
                  [](const wire::SessionMeta& a, const wire::SessionMeta& b) {
                    return std::make_tuple(a.created_at_ms(), a.id()) <
                           std::make_tuple(b.created_at_ms(), b.id());
                  });
      }
      return reply(resp);
    }
    case Opcode::kRevokeUser: {
      wire::RevokeUserRequest req;
      if (!parse(&req)) return;
      request_epoch = req.epoch();
      if (req.holder_only() && *role != Role::kPeer && auth_.enabled()) {
        return append_error(request, Status(StatusCode::kForbidden, "holder_only is node to node"),
                            out);
      }
      if (routing && !req.holder_only() && !routed(ids_->route_key_of_user(req.user_id()), true)) {
        return;
      }
      std::optional<storage::SessionId> keep;
      if (!req.keep_id().empty()) {
        auto k = parse_id(*security, req.keep_id());
        if (!k.ok()) return append_error(request, k.status(), out);
        keep = *k;
      }
      // The nodes holding sessions of the user made before route keys go first: once this node
      // raised the user's generation, its replicas end such sessions they hold as it reaches
      // them, and the holders would no longer count theirs.
      wire::RevokeUserResponse resp;
      Status holders;
      if (routing && !req.holder_only()) {
        wire::RevokeUserRequest ask = req;
        ask.set_holder_only(true);
        wire::RevokeUserResponse part;
        holders = ask_legacy_holders(*routing, Opcode::kRevokeUser, ask, &part,
                                     [&] { resp.set_revoked(resp.revoked() + part.revoked()); });
      }
      // In a region the count is of the sessions this node owns: it also ends the copies it
      // holds as a replica, which their owners count.
      std::optional<std::size_t> owned;
      if (routing) {
        owned = 0;
        for (const auto& m : table_.list_user(req.user_id())) {
          *owned += routing->owns(position_of(m.id)) && (!keep || m.id != *keep);
        }
      }
      auto n = table_.revoke_user(req.user_id(), keep ? &*keep : nullptr);
      if (!n.ok()) return append_error(request, n.status(), out);
      if (owned) *n = *owned;  // ended now, whichever write ended them
      if (!holders.ok()) return append_error(request, holders, out);
      if (req.holder_only() && replicas_ != nullptr &&
          replicas_->options().ack != ReplicaAck::kNone) {
        // The ended sessions are other users' nodes' old ones: every replica of this node.
        Status s = replicas_->add_wait_all(storage::Store::last_log_seq_on_this_thread(),
                                           &ack.wait.emplace());
        if (!s.ok()) {
          ack.wait.reset();
          return append_error(request, s, out);
        }
      } else if (!replicated(ids_ ? ids_->route_key_of_user(req.user_id()) : 0, true)) {
        return;
      }
      resp.set_revoked(resp.revoked() + *n);
      return reply(resp);
    }
    case Opcode::kStats: {
      wire::StatsRequest req;
      if (!parse(&req)) return;
      const storage::TableStats st = table_.stats();
      wire::StatsResponse resp;
      resp.set_sessions(st.sessions);
      resp.set_users(st.users);
      resp.set_memory_bytes(st.memory_bytes);
      resp.set_creates(st.creates);
      resp.set_updates(st.updates);
      resp.set_destroys(st.destroys);
      resp.set_regenerates(st.regenerates);
      resp.set_expiries(st.expiries);
      resp.set_read_hits(st.read_hits);
      resp.set_read_misses(st.read_misses);
      resp.set_touches_persisted(st.touches_persisted);
      resp.set_touches_coalesced(st.touches_coalesced);
      resp.set_connections(counters_.connections.load(std::memory_order_relaxed));
      resp.set_protocol_errors(counters_.protocol_errors.load(std::memory_order_relaxed));
      resp.set_disk_bytes(store_ ? store_->disk_bytes() : 0);
      resp.set_connections_refused(counters_.connections_refused.load(std::memory_order_relaxed));
      resp.set_connection_timeouts(counters_.timeouts.load(std::memory_order_relaxed));
      resp.set_forged_ids(counters_.forged_ids.load(std::memory_order_relaxed));
      resp.set_hijack_impossible_travel(counters_.hijack_travel.load(std::memory_order_relaxed));
      resp.set_hijack_many_ips(counters_.hijack_many_ips.load(std::memory_order_relaxed));
      resp.set_context_mismatches(counters_.context_mismatches.load(std::memory_order_relaxed));
      resp.set_tls_handshake_failures(
          counters_.tls_handshake_failures.load(std::memory_order_relaxed));
      resp.set_slow_readers(counters_.slow_readers.load(std::memory_order_relaxed));
      resp.set_connections_refused_per_ip(
          counters_.connections_refused_per_ip.load(std::memory_order_relaxed));
      resp.set_auth_failures(counters_.auth_failures.total());
      resp.set_clock_steps(storage::SystemClock::instance().steps());
      resp.set_touches_refused(st.touches_refused);
      resp.set_tombstones(st.tombstones);
      resp.set_merges_applied(st.merges_applied);
      resp.set_merges_set_aside(st.merges_set_aside);
      if (replicas_ != nullptr) {
        const auto lag = replicas_->lag();
        resp.set_replica_lag_entries(lag.max_entries);
        resp.set_replicas_in_sync(lag.in_sync);
        resp.set_replicas(lag.replicas);
        resp.set_anti_entropy_rounds(lag.repairs.rounds);
        resp.set_anti_entropy_repaired(lag.repairs.pulled + lag.repairs.pushed);
      }
      if (regions_ != nullptr) {
        for (const auto& p : regions_->stats()) {
          auto* r = resp.add_regions();
          r->set_region(p.region);
          r->set_lag_entries(p.shipped.lag_entries);
          r->set_lag_ms(static_cast<std::uint64_t>(std::max<std::int64_t>(p.shipped.lag_ms, 0)));
          r->set_entries_shipped(p.shipped.entries_shipped);
          r->set_bytes_shipped(p.shipped.bytes_shipped);
          r->set_conflicts_merged(p.shipped.conflicts + p.received_conflicts);
          r->set_set_aside(p.shipped.set_aside + p.received_set_aside);
          r->set_entries_received(p.received);
          r->set_retention_gaps(p.shipped.retention_gaps);
          r->set_repairs(p.repairs);
          r->set_repaired(p.repaired);
          r->set_last_repair_ms(p.last_repair_ms);
          r->set_error(!p.shipped.last_error.empty() ? p.shipped.last_error : p.repair_error);
          r->set_lag_p50_ms(p.shipped.lag_p50_ms);
          r->set_lag_p99_ms(p.shipped.lag_p99_ms);
          r->set_lag_max_ms(p.shipped.lag_max_ms);
        }
      }
      return reply(resp);
    }
    case Opcode::kTopology: {
      wire::TopologyRequest req;
      if (!parse(&req)) return;
      wire::TopologyResponse resp;
      topology_to_wire(&resp);
      return reply(resp);
    }
    case Opcode::kRepair: {
      wire::RepairRequest req;
      if (!parse(&req)) return;
      if (regions_ == nullptr) {
        return append_error(
            request,
            Status::InvalidArgument("region " + region_ + " has no peer regions to repair with"),
            out);
      }
      wire::RepairResponse resp;
      const auto rounds = regions_->repair_now(req.region(), req.check());
      if (rounds.empty()) {
        return append_error(
            request, Status::NotFound("region " + req.region() + " is not a peer region"), out);
      }
      for (const auto& [name, result] : rounds) {
        auto* r = resp.add_regions();
        r->set_region(name);
        if (!result.ok()) {
          r->set_error(result.status().ToString());
          continue;
        }
        r->set_buckets_differing(result->buckets_differing);
        r->set_pulled(result->pulled);
        r->set_pushed(result->pushed);
        r->set_bytes(result->bytes);
        r->set_duration_ms(static_cast<std::uint64_t>(result->duration.count()));
      }
      return reply(resp);
    }
    case Opcode::kMigrate: {
      wire::MigrateRequest req;
      if (!parse(&req)) return;
      if (migrator_ == nullptr) {
        return append_error(request, Status::Unavailable("this node is not in a cluster"), out);
      }
      wire::MigrateResponse resp;
      if (Status s = migrator_->receive(req, &resp); !s.ok()) return append_error(request, s, out);
      return reply(resp);
    }
    case Opcode::kReplicate: {
      wire::ReplicateRequest req;
      if (!parse(&req)) return;
      if (!req.from_region().empty()) {  // from a peer region
        if (regions_ == nullptr) return append_error(request, not_a_peer(req.from_region()), out);
        wire::ReplicateResponse resp;
        if (Status s = regions_->receive(req, &resp); !s.ok()) {
          return append_error(request, s, out);
        }
        return reply(resp);
      }
      if (replicas_ == nullptr) {
        return append_error(request, Status::Unavailable("this node keeps no replicas"), out);
      }
      wire::ReplicateResponse resp;
      if (Status s = replicas_->receive(req, &resp); !s.ok()) return append_error(request, s, out);
      return reply(resp);
    }
    case Opcode::kDigest: {
      wire::DigestRequest req;
      if (!parse(&req)) return;
      if (!req.from_region().empty()) {  // from a peer region
        if (regions_ == nullptr) return append_error(request, not_a_peer(req.from_region()), out);
        wire::DigestResponse resp;
        if (Status s = regions_->receive_digest(req, &resp); !s.ok()) {
          return append_error(request, s, out);
        }
        return reply(resp);
      }
      if (replicas_ == nullptr) {
        return append_error(request, Status::Unavailable("this node keeps no replicas"), out);
      }
      wire::DigestResponse resp;
      if (Status s = replicas_->receive_digest(req, &resp); !s.ok()) {
        return append_error(request, s, out);
      }
      return reply(resp);
    }
  }
  append_error(request, Status::InvalidArgument("unknown opcode"), out);
}

Status Handlers::ask_legacy_holders(const cluster::Routing& routing, Opcode opcode,
                                    const google::protobuf::MessageLite& request,
                                    google::protobuf::MessageLite* response,
                                    const std::function<void()>& each) {
  const std::string& self = membership_->options().node_id;
  for (const std::string& holder : membership_->legacy_holders()) {
    if (holder == self) continue;
    const cluster::Node* node = routing.topology.find(holder);
    if (node == nullptr && routing.topology.migration) {
      for (const cluster::Node& n : routing.topology.migration->target) {
        if (n.id == holder) node = &n;
      }
    }
    if (node == nullptr) continue;  // not in the region: it holds nothing any more
    replication::PeerLink link(node->address, auth_.peer_secret);
    if (Status s = link.call(opcode, request, response); !s.ok()) {
      return Status(StatusCode::kUnavailable,
                    "node " + holder +
                        ", which holds sessions of users made before route keys, did not answer (" +
                        s.message() + "); this node's part is done: retry");
    }
    each();
  }
  return {};
}

Status Handlers::regenerate_elsewhere(const storage::SessionId& id,
                                      const wire::RegenerateRequest& req,
                                      const cluster::Node& users_node, std::uint64_t epoch,
                                      wire::RegenerateResponse* response) {
  storage::Session old;
  if (Status s = table_.get(id, storage::ReadOptions{}, &old); !s.ok()) return s;
  // The new session as the user's node is to create it: the data (or the replacement), the
  // policy and the bound context; a new lifetime, as for any change of user.
  wire::CreateRequest create;
  create.set_user_id(req.user_id());
  std::vector<std::pair<std::string, std::string>> fields;
  if (req.replace_fields()) {
    fields = fields_from(req.fields());
  } else {
    for (const auto& f : old.fields) fields.emplace_back(f.name, f.value);
  }
  if (req.mark_authenticated()) {
    std::erase_if(fields, [](const auto& f) { return f.first == storage::kAuthenticatedAtField; });
    fields.emplace_back(std::string(storage::kAuthenticatedAtField),
                        std::to_string(storage::SystemClock::instance().now_ms()));
  }
  for (auto& [name, value] : fields) {
    auto* f = create.add_fields();
    f->set_name(std::move(name));
    f->set_value(std::move(value));
  }
  if (old.preset) {
    create.set_preset(static_cast<wire::Preset>(static_cast<int>(*old.preset) + 1));
  } else {
    create.mutable_timeouts()->set_idle_ms(static_cast<std::uint64_t>(old.timeouts.idle_ms));
    create.mutable_timeouts()->set_absolute_ms(
        static_cast<std::uint64_t>(old.timeouts.absolute_ms));
  }
  if (old.context) {
    create.mutable_context()->set_ip(old.context->ip);
    create.mutable_context()->set_user_agent_hash(old.context->user_agent_hash);
  }
  // The user's node answers a retry of this create (after a lost answer) with its first answer.
  std::string request_id = req.request_id();
  if (request_id.empty()) {
    request_id.resize(16);
    if (!random_bytes(request_id.data(), 16)) std::abort();
  }
  create.set_request_id(request_id);
  create.set_epoch(epoch);
  // DESIGN §6: the old session ends first, so a failure in between leaves no session alive
  // rather than two.
  if (Status s = table_.destroy(id); !s.ok()) return s;
  replication::PeerLink link(users_node.address, auth_.peer_secret);
  wire::CreateResponse created;
  if (Status s = link.call(Opcode::kCreate, create, &created); !s.ok()) {
    return Status(s.code() == StatusCode::kUnavailable ? StatusCode::kUnavailable : s.code(),
                  "the session was ended, but making its successor on node " + users_node.id +
                      " (the user's) failed: " + s.message() + "; start a new session");
  }
  *response->mutable_session() = created.session();
  return {};
}

bool Handlers::answer_retry(const protocol::FrameHeader& request, const std::string& request_id,
                            std::span<const std::uint8_t> body, std::string* out) {
  if (request_id.size() > RequestCache::kMaxIdBytes) {
    append_error(request,
                 Status::InvalidArgument("request_id is at most " +
                                         std::to_string(RequestCache::kMaxIdBytes) + " bytes"),
                 out);
    return true;
  }
  // The epoch is left out: a retry routed by a newer topology is the same request.
  constexpr std::uint32_t kEpochField = 15;  // CreateRequest.epoch, RegenerateRequest.epoch
  const std::uint64_t fingerprint = protocol::hash_without_field(body, kEpochField);
  std::string answer;
  switch (requests_.begin(request_id, fingerprint, storage::SystemClock::instance().now_ms(),
                          &answer)) {
    case RequestCache::Lookup::kNew:
      return false;
    case RequestCache::Lookup::kAnswered:  // the body this node sent the first time
      append_ok_written(
          request, [&](std::string* to) { to->append(answer); }, out);
      return true;
    case RequestCache::Lookup::kRunning:
      append_error(request,
                   Status::Unavailable("the first attempt of this request id is still running; "
                                       "retry"),
                   out);
      return true;
    case RequestCache::Lookup::kReused:
      append_error(request,
                   Status::InvalidArgument("this request id came with another request before"),
                   out);
      return true;
  }
  return true;
}

bool Handlers::route(const protocol::FrameHeader& request, const cluster::Routing& routing,
                     std::uint64_t position, bool write, std::string* out, WriteGuard* guard) {
  const cluster::Node* owner = routing.owner(position);
  if (owner == nullptr) {
    if (routing.ring.empty()) {
      append_error(request, Status::Unavailable("the region's topology has no node with weight"),
                   out);
      return false;
    }
    // Its owner is down and none of its replicas was in sync: no writer until the owner
    // returns or an operator promotes one (docs/cluster.md, "Replicas and failover").
    const auto& primary = routing.topology.nodes[routing.ring.owner(position)];
    wire::ErrorResponse body;
    body.set_message("this key's owner " + primary.id +
                     " is down and no replica was in sync with it: no node takes writes for it "
                     "until " +
                     primary.id + " returns or `sessctl cluster promote " + primary.id +
                     " --unclean` (which loses what only " + primary.id + " had)");
    body.set_retry_after_ms(kNoWriterRetryMs);  // a routing client asks again in its deadline
    append_error_body(request, StatusCode::kUnavailable, body, out);
    return false;
  }
  if (!routing.self || owner->id != routing.topology.nodes[*routing.self].id) {
    wire::ErrorResponse body;
    body.set_message("node " + owner->id + " (" + owner->address + ") owns this key at epoch " +
                     std::to_string(routing.topology.epoch));
    body.mutable_wrong_node()->set_owner_address(owner->address);
    body.mutable_wrong_node()->set_owner_id(owner->id);
    body.mutable_wrong_node()->set_epoch(routing.topology.epoch);
    append_error_body(request, StatusCode::kWrongNode, body, out);
    return false;
  }
  if (write && !membership_->writable() && !storage::sabotaged(storage::Sabotage::kNoFencing)) {
    append_error(request, membership_->fenced_status(), out);
    return false;
  }
  if (write && replicas_ != nullptr) {
    if (Status s = replicas_->admit_write(&guard->stopping); !s.ok()) {
      // Not run: the node is handing its ranges to their replicas before it stops; a routing
      // client sends it again, to the new owner once the topology names it.
      wire::ErrorResponse body;
      body.set_message(s.message());
      body.set_retry_after_ms(kHandoverRetryMs);
      append_error_body(request, StatusCode::kUnavailable, body, out);
      return false;
    }
  }
  if (write && migrator_ != nullptr) {
    if (Status s = migrator_->admit_write(routing, position, &guard->moving); !s.ok()) {
      // Not run: a routing client sends it again shortly, to the new owner once it is one.
      wire::ErrorResponse body;
      body.set_message(s.message());
      body.set_retry_after_ms(kHandoverRetryMs);
      append_error_body(request, StatusCode::kUnavailable, body, out);
      return false;
    }
  }
  return true;
}

Status Handlers::not_a_peer(const std::string& region) const {
  return {StatusCode::kForbidden,
          "region " + region_ + " has no peer regions (region " + region + " is not one of them)"};
}

bool Handlers::may_block(std::uint16_t opcode) const {
  switch (static_cast<Opcode>(opcode)) {
    case Opcode::kRegenerate:
    case Opcode::kListUser:
    case Opcode::kRevokeUser:
      return membership_ != nullptr;
    case Opcode::kDigest:
      return membership_ != nullptr || regions_ != nullptr;
    case Opcode::kRepair:
      return regions_ != nullptr;
    default:
      return false;
  }
}

std::optional<std::uint64_t> Handlers::owned_route_key(const cluster::Routing& routing) {
  if (!routing.self || routing.ring.empty() || routing.topology.nodes[*routing.self].weight == 0) {
    return std::nullopt;
  }
  // Each draw lands on this node with its share of the ring; 64 draws per node miss only with
  // a vanishing probability for any share a node is given.
  const std::size_t draws = 64 * routing.topology.nodes.size();
  const std::string& self = routing.topology.nodes[*routing.self].id;
  for (std::size_t i = 0; i < draws; ++i) {
    const std::uint64_t key = random_u64();
    if (!routing.owns(key)) continue;
    // While a migration runs, one that stays here too: a moving key is fenced at its handover.
    const cluster::Node* to = routing.target_owner(key);
    if (to != nullptr && to->id == self) return key;
  }
  if (routing.topology.migration) {  // this node keeps nothing (drained or removed)
    for (std::size_t i = 0; i < draws; ++i) {
      const std::uint64_t key = random_u64();
      if (routing.owns(key)) return key;
    }
  }
  return std::nullopt;
}

void Handlers::topology_to_wire(wire::TopologyResponse* out) const {
  if (membership_ == nullptr) {  // a one-node region: epoch 0, this node alone
    auto* node = out->add_nodes();
    node->set_id("local");
    node->set_address(address_);
    node->set_region(region_);
    node->set_weight(1);
    out->set_region(region_);
    return;
  }
  const auto routing = membership_->routing();
  const cluster::Topology& t = routing->topology;
  out->set_epoch(t.epoch);
  out->set_region(t.region);
  out->set_migrating(t.migration.has_value());
  out->set_replication_factor(t.replication_factor);
  for (const cluster::Node& n : t.nodes) {
    auto* node = out->add_nodes();
    node->set_id(n.id);
    node->set_address(n.address);
    node->set_region(t.region);
    node->set_weight(n.weight);
    node->set_number(n.number);
    node->set_resp_address(n.resp_address);
    node->set_down(n.down);
    for (const std::string& r : n.in_sync) node->add_in_sync(r);
  }
}

}  // namespace sessiond::daemon
