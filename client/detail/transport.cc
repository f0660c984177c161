// The transport: a pool of connections to one node, driven by the client's I/O thread (an
// asio::io_context shared by the transports to every node, io_thread.h).
//
// The router starts calls on the I/O thread; the transport puts each on the least busy connection.
// A connection frames the calls into one output buffer while a write is in progress, so a burst of
// calls leaves in few syscalls (pipelining); responses are matched by request id. Every call
// also sits in one min-heap ordered by deadline (calls may have their own timeouts, see
// Client::CallTimeout): a single timer, armed for the earliest deadline, fails the calls whose
// deadline has passed.
//
// Each TCP connection attempt is a Link; handlers hold the Link they were started for and do
// nothing when the connection has moved on to another one, so a late completion from a closed
// socket never touches the new one. When a link fails, its calls are retried or failed as
// RetryPolicy says, and the connection reconnects after an exponential backoff.
//
// With Options::tls a Link also holds a TLS stream over its socket: the handshake runs after the
// TCP connect, within the same connect deadline, and reads and writes go through the stream.
// The OpenSSL context is built once per transport (tls_context.h).
#include "detail/transport.h"

#include <algorithm>
#include <asio.hpp>
#include <asio/ssl.hpp>
#include <cstring>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "detail/retry_policy.h"
#include "detail/tls_context.h"
#include "protocol/host_port.h"
#include "protocol/sessiond.pb.h"

namespace sessiond::client_detail {
namespace {

// Request id of the AUTH a connection sends first when Options::secret is set.
constexpr std::uint32_t kAuthRequestId = 0xFFFFFFFF;

// The calls a connection sent and has no answer to yet, by request id. A connection hands out
// ids in sequence and the node answers a connection's requests in order, so the ids outstanding
// at once form a short run: a table indexed by an id's low bits holds them without an
// allocation per call (a node of a hash map each), and doubles when a new id finds its slot
// taken.
class InFlight {
 public:
  std::size_t size() const { return size_; }
  void insert(std::uint32_t id, std::shared_ptr<Call> call) {
    while (slots_[id & (slots_.size() - 1)].call) grow();
    slots_[id & (slots_.size() - 1)] = {id, std::move(call)};
    ++size_;
  }
  // The call sent with `id`, removed; null when there is none.
  std::shared_ptr<Call> take(std::uint32_t id) {
    Slot& slot = slots_[id & (slots_.size() - 1)];
    if (!slot.call || slot.id != id) return nullptr;
    --size_;
    return std::move(slot.call);
  }
  // Removes `call` if it is outstanding under `id`.
  void erase(std::uint32_t id, const Call& call) {
    Slot& slot = slots_[id & (slots_.size() - 1)];
    if (slot.call.get() != &call || slot.id != id) return;
    slot.call.reset();
    --size_;
  }
  // Every outstanding call, removed, in no particular order.
  std::vector<std::shared_ptr<Call>> take_all() {
    std::vector<std::shared_ptr<Call>> out;
    out.reserve(size_);
    for (Slot& slot : slots_) {
      if (slot.call) out.push_back(std::move(slot.call));
    }
    size_ = 0;
    return out;
  }

 private:
  struct Slot {
    std::uint32_t id = 0;
    std::shared_ptr<Call> call;
  };
  // At least twice the size, and as large as the ids held need to keep a slot each.
  void grow() {
    std::size_t n = slots_.size() * 2;
    while (!fits(n)) n *= 2;
    std::vector<Slot> next(n);
    for (Slot& slot : slots_) {
      if (slot.call) next[slot.id & (n - 1)] = std::move(slot);
    }
    slots_ = std::move(next);
  }
  bool fits(std::size_t n) const {
    std::vector<bool> used(n);
    for (const Slot& slot : slots_) {
      if (!slot.call) continue;
      if (used[slot.id & (n - 1)]) return false;
      used[slot.id & (n - 1)] = true;
    }
    return true;
  }
  std::vector<Slot> slots_ = std::vector<Slot>(16);  // a power of two
  std::size_t size_ = 0;
};

using Clock = std::chrono::steady_clock;
using asio::ip::tcp;

constexpr std::size_t kReadChunk = 64 * 1024;

std::string op_name(protocol::Opcode opcode) { return std::string(protocol::opcode_name(opcode)); }

// The reply of a call the transport gave up on after its connection failed.
Reply connection_failure(const Call& call, Status status) {
  Reply reply;
  reply.status = std::move(status);
  reply.connection_failed = true;
  reply.sent = call.sent;
  return reply;
}

// The node's address, or nullopt when it is not HOST:PORT with a port one can connect to
// (port 0 only means something to a listener).
std::optional<HostPort> node_endpoint(const std::string& address) {
  auto parsed = parse_host_port(address);
  if (!parsed.ok() || parsed->port == 0) return std::nullopt;
  return std::move(parsed).value();
}

}  // namespace

class Transport::State {
 public:
  State(asio::io_context& io, const Client::Options& opts, std::string address);

  void start(std::shared_ptr<Call> call);
  void complete(Call& call, Reply reply);
  void complete(Call& call, Status status) {
    Reply reply;
    reply.status = std::move(status);
    complete(call, std::move(reply));
  }
  void shutdown();

  asio::io_context& io;  // the client's, outlives every transport
  const Client::Options options;
  const std::string address;  // of the node, HOST:PORT
  const RetryPolicy policy;
  const std::optional<HostPort> endpoint;
  // With Options::tls: the context every connection's TLS stream uses, or why there is none
  // (a file that cannot be used; every call fails with it).
  std::unique_ptr<asio::ssl::context> tls_context;
  Status tls_error;
  std::vector<std::unique_ptr<Connection>> connections;

 private:
  void arm_deadline_timer();
  void on_deadline_timer();
  Status timeout_status(const Call& call) const;

  // Every call not yet finished, as a min-heap on deadline (std::push_heap with
  // LaterDeadline); finished calls are dropped lazily when they reach the top.
  struct LaterDeadline {
    bool operator()(const std::shared_ptr<Call>& a, const std::shared_ptr<Call>& b) const {
      return a->deadline > b->deadline;
    }
  };
  std::vector<std::shared_ptr<Call>> by_deadline_;
  void pop_deadline() {
    std::pop_heap(by_deadline_.begin(), by_deadline_.end(), LaterDeadline());
    by_deadline_.pop_back();
  }
  void drop_finished() {
    while (!by_deadline_.empty() && by_deadline_.front()->finished) pop_deadline();
  }
  asio::steady_timer deadline_timer_;
  bool deadline_timer_armed_ = false;
  bool closed_ = false;
};

class Connection {
 public:
  explicit Connection(Transport::State& transport)
      : t_(transport), retry_timer_(transport.io), connect_timer_(transport.io) {}

  // Sends the call now, or once connected.
  void enqueue(std::shared_ptr<Call> call);
  // The call's deadline passed: stop tracking it (a late answer is then ignored).
  void forget(const Call& call);
  // Calls queued or in flight here.
  std::size_t load() const { return waiting_.size() + in_flight_.size(); }
  bool connected() const { return phase_ == Phase::kConnected; }
  const std::string& last_error() const { return last_error_; }
  // Closes the socket and drops every call (the transport has failed them already).
  void close();

 private:
  // One TCP connection attempt and its buffers; handlers keep it alive.
  struct Link {
    explicit Link(asio::io_context& io) : socket(io), resolver(io) {}
    tcp::socket socket;
    std::optional<asio::ssl::stream<tcp::socket&>> tls;  // over `socket`, with Options::tls
    tcp::resolver resolver;
    std::string writing;  // bytes of the write in progress
    bool write_active = false;
    std::vector<std::uint8_t> in;  // received, not yet decoded: in[0, in_len)
    std::size_t in_len = 0;

    template <typename Buffer, typename Handler>
    void async_read_some(const Buffer& buffer, Handler&& handler) {
      if (tls) {
        tls->async_read_some(buffer, std::forward<Handler>(handler));
      } else {
        socket.async_read_some(buffer, std::forward<Handler>(handler));
      }
    }
    template <typename Buffer, typename Handler>
    void async_write(const Buffer& buffer, Handler&& handler) {
      if (tls) {
        asio::async_write(*tls, buffer, std::forward<Handler>(handler));
      } else {
        asio::async_write(socket, buffer, std::forward<Handler>(handler));
      }
    }
  };
  enum class Phase { kIdle, kConnecting, kConnected, kBackoff };

  void connect();
  void handshake(const std::shared_ptr<Link>& link);
  void on_connected(const std::shared_ptr<Link>& link);
  void send(std::shared_ptr<Call> call);
  void flush();
  void read();
  void on_read(const std::shared_ptr<Link>& link, std::size_t bytes);
  // False when the frame broke the connection (fail() was called).
  bool handle_frame(const std::shared_ptr<Link>& link, const protocol::Decoded& frame);
  void fail(const std::shared_ptr<Link>& link, const std::string& reason);
  const std::string& address() const { return t_.address; }

  Transport::State& t_;
  Phase phase_ = Phase::kIdle;
  std::shared_ptr<Link> link_;                 // the current attempt, or null
  std::deque<std::shared_ptr<Call>> waiting_;  // not sent on the current link yet
  InFlight in_flight_;
  std::string pending_out_;  // framed calls waiting for the write in progress
  std::uint32_t next_request_id_ = 1;
  std::string auth_error_;  // why this connection's AUTH was refused, if it was
  int consecutive_failures_ = 0;
  std::string last_error_;
  asio::steady_timer retry_timer_;
  asio::steady_timer connect_timer_;
};

// ---- Connection ---------------------------------------------------------------------------

void Connection::enqueue(std::shared_ptr<Call> call) {
  call->connection = this;
  if (phase_ == Phase::kConnected) {
    send(std::move(call));
    flush();
    return;
  }
  waiting_.push_back(std::move(call));
  if (phase_ == Phase::kIdle) connect();
}

void Connection::forget(const Call& call) {
  if (!call.sent) return;  // a waiting call is skipped once finished
  in_flight_.erase(call.request_id, call);
}

void Connection::connect() {
  phase_ = Phase::kConnecting;
  auto link = std::make_shared<Link>(t_.io);
  if (t_.tls_context) link->tls.emplace(link->socket, *t_.tls_context);
  link_ = link;
  connect_timer_.expires_after(t_.options.timeout);
  connect_timer_.async_wait([this, link](const std::error_code& ec) {
    if (ec || link != link_ || phase_ != Phase::kConnecting) return;
    fail(link, "connecting took longer than " + std::to_string(t_.options.timeout.count()) + " ms");
  });
  link->resolver.async_resolve(
      t_.endpoint->host, std::to_string(t_.endpoint->port),
      [this, link](const std::error_code& ec, const tcp::resolver::results_type& results) {
        if (link != link_) return;
        if (ec) {
          fail(link, "cannot resolve " + t_.endpoint->host + ": " + ec.message());
          return;
        }
        asio::async_connect(link->socket, results,
                            [this, link](const std::error_code& error, const tcp::endpoint&) {
                              if (link != link_) return;
                              if (error) {
                                fail(link, error.message());
                                return;
                              }
                              if (link->tls) {
                                handshake(link);
                              } else {
                                on_connected(link);
                              }
                            });
      });
}

void Connection::handshake(const std::shared_ptr<Link>& link) {
  const std::string& name =
      t_.options.tls.server_name.empty() ? t_.endpoint->host : t_.options.tls.server_name;
  if (Status s = prepare_client_connection(link->tls->native_handle(), name); !s.ok()) {
    fail(link, s.message());
    return;
  }
  link->tls->async_handshake(
      asio::ssl::stream_base::client, [this, link](const std::error_code& ec) {
        if (link != link_) return;
        if (ec) {
          fail(link, "TLS handshake failed: " + tls_failure_reason(link->tls->native_handle(), ec));
          return;
        }
        on_connected(link);
      });
}

void Connection::on_connected(const std::shared_ptr<Link>& link) {
  connect_timer_.cancel();
  phase_ = Phase::kConnected;
  consecutive_failures_ = 0;
  last_error_.clear();
  std::error_code ignored;
  link->socket.set_option(tcp::no_delay(true), ignored);
  link->in.resize(kReadChunk);
  read();
  if (!t_.options.secret.empty()) {
    // AUTH goes first; the node handles a connection's frames in order, so every call after it
    // runs with the role it grants.
    wire::AuthRequest auth;
    auth.set_secret(t_.options.secret);
    const std::string body = auth.SerializeAsString();
    protocol::FrameHeader header;
    header.opcode = static_cast<std::uint16_t>(protocol::Opcode::kAuth);
    header.request_id = kAuthRequestId;
    header.body_length = static_cast<std::uint32_t>(body.size());
    const std::size_t start = pending_out_.size();
    pending_out_.resize(start + protocol::kHeaderSize);
    protocol::encode_header(header, reinterpret_cast<std::uint8_t*>(pending_out_.data() + start));
    pending_out_.append(body);
  }
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& call : waiting) {
    if (!call->finished) send(std::move(call));
  }
  flush();
}

void Connection::send(std::shared_ptr<Call> call) {
  std::uint32_t id = next_request_id_++;
  // 0 is what the server uses for stream errors; kAuthRequestId is the connection's AUTH.
  while (id == 0 || id == kAuthRequestId) id = next_request_id_++;
  protocol::FrameHeader header;
  header.opcode = static_cast<std::uint16_t>(call->opcode);
  header.request_id = id;
  header.body_length = static_cast<std::uint32_t>(call->body_size());
  const std::size_t start = pending_out_.size();
  pending_out_.resize(start + protocol::kHeaderSize);
  protocol::encode_header(header, reinterpret_cast<std::uint8_t*>(pending_out_.data() + start));
  call->append_body(&pending_out_);
  call->request_id = id;
  call->sent = true;
  ++call->attempts;
  in_flight_.insert(id, std::move(call));
}

void Connection::flush() {
  auto link = link_;
  if (!link || phase_ != Phase::kConnected || link->write_active || pending_out_.empty()) return;
  link->writing.swap(pending_out_);
  pending_out_.clear();
  link->write_active = true;
  link->async_write(asio::buffer(link->writing),
                    [this, link](const std::error_code& ec, std::size_t) {
                      if (link != link_) return;
                      link->write_active = false;
                      link->writing.clear();
                      if (ec) {
                        fail(link, "write failed: " + ec.message());
                        return;
                      }
                      flush();
                    });
}

void Connection::read() {
  auto link = link_;
  if (link->in.size() - link->in_len < kReadChunk / 4) link->in.resize(link->in_len + kReadChunk);
  link->async_read_some(
      asio::buffer(link->in.data() + link->in_len, link->in.size() - link->in_len),
      [this, link](const std::error_code& ec, std::size_t bytes) {
        if (link != link_) return;
        if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
          fail(link, "the node closed the connection");
          return;
        }
        if (ec && link->tls && ec.category() == asio::error::get_ssl_category()) {
          // TLS 1.3 completes the client's handshake before the node has checked the client
          // certificate; a refusal (an alert) arrives here.
          fail(link, "TLS error: " + tls_failure_reason(link->tls->native_handle(), ec));
          return;
        }
        if (ec) {
          fail(link, "read failed: " + ec.message());
          return;
        }
        on_read(link, bytes);
      });
}

void Connection::on_read(const std::shared_ptr<Link>& link, std::size_t bytes) {
  link->in_len += bytes;
  std::size_t offset = 0;
  std::size_t need = 0;
  while (true) {
    const auto frame = protocol::decode_frame(
        std::span<const std::uint8_t>(link->in.data() + offset, link->in_len - offset),
        t_.options.max_frame_body);
    if (frame.kind == protocol::Decoded::Kind::kNeedMore) {
      need = frame.need;
      break;
    }
    if (frame.kind == protocol::Decoded::Kind::kError) {
      if (frame.framing_lost) {
        fail(link, "unreadable response stream: " + frame.error.ToString());
        return;
      }
      offset += frame.consumed;  // a well-formed frame we cannot use (unknown opcode)
      continue;
    }
    offset += frame.consumed;
    if (!handle_frame(link, frame)) return;
  }
  if (offset > 0) {
    std::memmove(link->in.data(), link->in.data() + offset, link->in_len - offset);
    link->in_len -= offset;
  }
  if (need > link->in.size()) link->in.resize(need);
  read();
}

bool Connection::handle_frame(const std::shared_ptr<Link>& link, const protocol::Decoded& frame) {
  const auto& header = frame.header;
  if (!header.is_response()) {
    fail(link, "the node sent a request frame instead of a response");
    return false;
  }
  if (header.request_id == kAuthRequestId) {
    // A refused AUTH leaves the connection unauthenticated: the node answers each call after
    // it UNAUTHENTICATED, and those answers carry the reason.
    auth_error_.clear();
    if (header.status != StatusCode::kOk) {
      wire::ErrorResponse error;
      error.ParseFromArray(frame.body.data(), static_cast<int>(frame.body.size()));
      auth_error_ = "AUTH with Options::secret failed: " + error.message();
    }
    return true;
  }
  std::shared_ptr<Call> call = in_flight_.take(header.request_id);
  if (!call) {
    if (header.request_id == 0 && header.status != StatusCode::kOk) {
      // The node could not read our stream and is closing it (docs/protocol.md).
      wire::ErrorResponse error;
      error.ParseFromArray(frame.body.data(), static_cast<int>(frame.body.size()));
      fail(link, "the node rejected the stream: " + std::string(status_code_name(header.status)) +
                     ": " + error.message());
      return false;
    }
    return true;  // the answer to a call whose deadline passed
  }
  if (call->finished) return true;
  if (header.opcode != static_cast<std::uint16_t>(call->opcode)) {
    t_.complete(*call, Status::Internal("the node answered " + op_name(call->opcode) +
                                        " with opcode " + std::to_string(header.opcode)));
    return true;
  }
  Reply reply;
  reply.sent = true;
  reply.newer_epoch = (header.flags & protocol::kFlagNewerEpoch) != 0;
  reply.possibly_stale = (header.flags & protocol::kFlagPossiblyStale) != 0;
  if (header.status == StatusCode::kOk) {
    reply.body = frame.body;
    t_.complete(*call, std::move(reply));
    return true;
  }
  wire::ErrorResponse error;
  std::string message;
  if (error.ParseFromArray(frame.body.data(), static_cast<int>(frame.body.size()))) {
    message = error.message();
    if (header.status == StatusCode::kWrongNode && error.has_wrong_node()) {
      message += " (owner " + error.wrong_node().owner_address() + ", epoch " +
                 std::to_string(error.wrong_node().epoch()) + ")";
      reply.owner_address = error.wrong_node().owner_address();
      reply.owner_epoch = error.wrong_node().epoch();
    }
    if (header.status == StatusCode::kUnavailable) reply.retry_after_ms = error.retry_after_ms();
  } else {
    message = "(unparsable error body)";
  }
  if (header.status == StatusCode::kUnauthenticated && !auth_error_.empty()) {
    message = auth_error_;
  }
  reply.status = Status(header.status, std::move(message));
  t_.complete(*call, std::move(reply));
  return true;
}

void Connection::fail(const std::shared_ptr<Link>& link, const std::string& reason) {
  if (link != link_) return;
  const bool was_connecting = phase_ == Phase::kConnecting;
  std::error_code ignored;
  link->resolver.cancel();
  link->socket.close(ignored);
  link_.reset();
  connect_timer_.cancel();
  pending_out_.clear();
  ++consecutive_failures_;
  last_error_ = reason;

  const auto now = Clock::now();
  std::vector<std::shared_ptr<Call>> sent = in_flight_.take_all();
  std::erase_if(sent, [](const std::shared_ptr<Call>& call) { return call->finished; });
  std::sort(sent.begin(), sent.end(),
            [](const auto& a, const auto& b) { return a->request_id < b->request_id; });

  std::deque<std::shared_ptr<Call>> retry;
  for (auto& call : sent) {
    if (t_.policy.may_retry(call->idempotent, true, call->attempts, call->deadline, now)) {
      retry.push_back(std::move(call));
    } else {
      std::string message = "connection to " + address() + " lost before " + op_name(call->opcode) +
                            " was answered (" + reason + ")";
      if (!call->idempotent) message += "; it may or may not have been applied";
      t_.complete(*call, connection_failure(*call, Status::Unavailable(std::move(message))));
    }
  }
  for (auto& call : waiting_) {
    if (call->finished) continue;
    if (was_connecting) ++call->attempts;
    if (!(was_connecting && call->fail_fast) &&
        t_.policy.may_retry(call->idempotent, call->sent, call->attempts, call->deadline, now)) {
      retry.push_back(std::move(call));
    } else {
      t_.complete(
          *call,
          connection_failure(
              *call, Status::Unavailable("cannot connect to " + address() + ": " + reason + " (" +
                                         std::to_string(call->attempts) + " attempts)")));
    }
  }
  waiting_ = std::move(retry);

  if (waiting_.empty()) {
    phase_ = Phase::kIdle;  // the next call connects at once
    return;
  }
  phase_ = Phase::kBackoff;
  retry_timer_.expires_after(t_.policy.delay(consecutive_failures_));
  retry_timer_.async_wait([this](const std::error_code& ec) {
    if (ec || phase_ != Phase::kBackoff) return;
    connect();
  });
}

void Connection::close() {
  if (link_) {
    std::error_code ignored;
    link_->resolver.cancel();
    link_->socket.close(ignored);
    link_.reset();
  }
  retry_timer_.cancel();
  connect_timer_.cancel();
  waiting_.clear();
  in_flight_.take_all();
  pending_out_.clear();
  phase_ = Phase::kIdle;
}

// ---- Transport::State ----------------------------------------------------------------------

Transport::State::State(asio::io_context& context, const Client::Options& opts,
                        std::string node_address)
    : io(context),
      options(opts),
      address(std::move(node_address)),
      policy{opts.backoff_initial, opts.backoff_max, opts.backoff_multiplier, opts.max_retries},
      endpoint(node_endpoint(address)),
      deadline_timer_(io) {
  if (opts.tls.enabled) {
    auto ctx = make_client_context(opts.tls);
    if (ctx.ok()) {
      // asio's context takes ownership of the OpenSSL one.
      tls_context = std::make_unique<asio::ssl::context>(ctx->release());
    } else {
      tls_error = ctx.status();
    }
  }
  const std::size_t pool = std::max<std::size_t>(1, opts.pool_size);
  for (std::size_t i = 0; i < pool; ++i) {
    connections.push_back(std::make_unique<Connection>(*this));
  }
}

void Transport::State::start(std::shared_ptr<Call> call) {
  if (closed_) {
    complete(*call, Status::Unavailable("the client is shutting down"));
    return;
  }
  if (!endpoint) {
    complete(*call,
             Status::InvalidArgument("address '" + address + "' is not HOST:PORT (port 1-65535)"));
    return;
  }
  if (!tls_error.ok()) {
    complete(*call, tls_error);
    return;
  }
  by_deadline_.push_back(call);
  std::push_heap(by_deadline_.begin(), by_deadline_.end(), LaterDeadline());
  if (deadline_timer_armed_ && call->deadline < deadline_timer_.expiry()) {
    deadline_timer_.cancel();  // its handler re-arms for this earlier deadline
  } else {
    arm_deadline_timer();
  }
  // The least busy connection; connected ones first, so that a burst does not wait for a
  // connect when another connection is ready.
  Connection* best = nullptr;
  for (auto& connection : connections) {
    if (best == nullptr || (connection->connected() && !best->connected()) ||
        (connection->connected() == best->connected() && connection->load() < best->load())) {
      best = connection.get();
    }
  }
  best->enqueue(std::move(call));
}

void Transport::State::complete(Call& call, Reply reply) {
  if (call.finished) return;
  call.finished = true;
  auto done = std::move(call.done);
  call.done = nullptr;
  drop_finished();
  if (done) done(reply);
}

Status Transport::State::timeout_status(const Call& call) const {
  std::string message = "no answer from " + address + " within " +
                        std::to_string(call.timeout.count()) + " ms to " + op_name(call.opcode);
  if (call.connection != nullptr && !call.connection->connected() &&
      !call.connection->last_error().empty()) {
    message += " (not connected: " + call.connection->last_error() + ")";
  }
  return Status::Unavailable(std::move(message));
}

void Transport::State::arm_deadline_timer() {
  if (deadline_timer_armed_) return;
  drop_finished();
  if (by_deadline_.empty()) return;
  deadline_timer_armed_ = true;
  deadline_timer_.expires_at(by_deadline_.front()->deadline);
  deadline_timer_.async_wait([this](const std::error_code& ec) {
    deadline_timer_armed_ = false;
    if (closed_) return;
    if (ec == asio::error::operation_aborted) {
      arm_deadline_timer();  // cancelled for an earlier deadline
      return;
    }
    if (ec) return;
    on_deadline_timer();
  });
}

void Transport::State::on_deadline_timer() {
  const auto now = Clock::now();
  while (!by_deadline_.empty() &&
         (by_deadline_.front()->finished || by_deadline_.front()->deadline <= now)) {
    auto call = by_deadline_.front();
    pop_deadline();
    if (call->finished) continue;
    if (call->connection != nullptr) call->connection->forget(*call);
    complete(*call, timeout_status(*call));
  }
  arm_deadline_timer();
}

void Transport::State::shutdown() {
  closed_ = true;
  auto calls = std::move(by_deadline_);
  by_deadline_.clear();
  for (auto& call : calls) {
    complete(*call, Status::Unavailable("the client was destroyed before " + op_name(call->opcode) +
                                        " was answered"));
  }
  for (auto& connection : connections) connection->close();
  deadline_timer_.cancel();
}

// ---- Transport -----------------------------------------------------------------------------

Transport::Transport(asio::io_context& io, const Client::Options& options, std::string address)
    : state_(std::make_unique<State>(io, options, std::move(address))) {}

Transport::~Transport() = default;

void Transport::start(std::shared_ptr<Call> call) { state_->start(std::move(call)); }

void Transport::shutdown() { state_->shutdown(); }

const std::string& Transport::address() const { return state_->address; }

}  // namespace sessiond::client_detail
