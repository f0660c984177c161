// Each connection is one coroutine on one worker's io_context (so a connection's work never
// needs a lock of its own). It reads into a buffer and handles the complete frames in it, in
// order, in slices: at most kSliceRequests requests, or fewer once their replies reach
// --max-output-bytes. After each slice it writes the replies (many per syscall for a client
// that pipelines; its consecutive CREATEs share one RocksDB write) and reads nothing more until
// the kernel has taken them all: a client that does not read stops being served instead of the
// node building its replies, and the write is where the worker turns to its other connections.
// The buffer starts at kInitialBuffer and doubles only when a read fills it, so it grows with
// the bytes that arrived, never with a length a header claims.
//
// A watchdog coroutine beside each connection closes it when a frame is not complete
// --frame-timeout-ms after its first byte, when the kernel takes none of its replies for
// --send-timeout-ms, or when it is idle for --idle-timeout-ms.
//
// With --tls-cert the native listener speaks TLS: a connection first completes its handshake
// within the frame timeout (the watchdog treats the handshake as a partly received frame), takes
// the role of its verified client certificate (tls.h), then runs the same loop over the TLS
// stream. A client that says nothing, or speaks plaintext, is closed and counted in
// Counters::tls_handshake_failures.
//
// RESP connections work the same way with the RESP parser and resp::Commands, in slices of
// commands, up to resp::Limits::max_command_bytes for one command (kMaxUnauthenticatedFrame
// before AUTH).
#include "daemon/server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ssl.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "cluster/membership.h"
#include "cluster/ring.h"
#include "daemon/resp.h"
#include "daemon/tls.h"
#include "protocol/host_port.h"

namespace sessiond::daemon {
namespace {

using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::experimental::as_tuple(asio::use_awaitable);
// A connection's read buffer starts at kInitialBuffer and doubles while reads fill it, up to
// kReadChunk for a stream of small frames, or up to the frame (command) limit for one frame.
constexpr std::size_t kInitialBuffer = 4 * 1024;
constexpr std::size_t kReadChunk = 64 * 1024;
// Fairness: a connection handles at most this many requests of a pipeline before it writes
// their replies and lets the worker's other connections run.
constexpr std::size_t kSliceRequests = 64;
// Before AUTH, when authentication is on, a frame (a RESP command) may be at most this long:
// AUTH, PING and HELLO need far less, and a stranger gets no large buffer.
constexpr std::uint32_t kMaxUnauthenticatedFrame = 4 * 1024;

struct Connection {
  Connection(tcp::socket s, std::size_t w)
      : socket(std::move(s)),
        timer(socket.get_executor()),
        wake(socket.get_executor()),
        worker(w) {}
  tcp::socket socket;
  // The TLS layer over `socket` on a TLS listener. Closing `socket` also ends it.
  std::optional<asio::ssl::stream<tcp::socket&>> tls;
  asio::steady_timer timer;
  asio::steady_timer wake;  // cancelled when the worker's SET group has run
  std::size_t worker;       // index of the io_context (and worker state) serving it
  asio::ip::address peer;   // for --max-connections-per-ip
  bool group_done = false;
  // RESP in a cluster: connections to other nodes' RESP listeners that this connection's
  // commands were forwarded to, by address (opened on first use, on this io_context).
  struct Forward {
    explicit Forward(const asio::any_io_executor& e) : socket(e) {}
    tcp::socket socket;
    std::string buffer;
  };
  std::map<std::string, std::unique_ptr<Forward>> forwards;
  // The watchdog's view (touched only from the connection's io_context):
  Clock::time_point last_activity = Clock::now();  // last bytes received
  bool partial_frame = false;                      // part of a frame (command) is buffered...
  Clock::time_point frame_started;                 // ...since the read that brought its first byte
  bool writing = false;                            // replies are being written...
  Clock::time_point write_progress;                // ...and the kernel last took some of them then
  bool closed = false;
  // RESP pub/sub: messages for this connection, appended on its io_context (publishers post
  // them) and written by serve_commands between reads. A message cancels a pending read
  // (`reading`) so that it goes out at once; `read_cancelled` tells that cancel from an error.
  std::string pushed;
  bool reading = false;
  bool read_cancelled = false;
  bool subscriber = false;  // subscribed: exempt from --idle-timeout-ms, as in Redis
};

// Messages waiting for a subscriber that does not read: past this, it is disconnected (Redis's
// client-output-buffer-limit for pub/sub is 32 MiB too).
constexpr std::size_t kMaxPushedBytes = 32u << 20;

// Appends a pub/sub message for `conn`; on its io_context.
void push_message(Connection& conn, std::string_view message) {
  if (conn.closed || !conn.socket.is_open()) return;
  if (conn.pushed.size() + message.size() > kMaxPushedBytes) {
    spdlog::warn("closing the RESP subscriber {}: {} bytes of messages wait unread",
                 conn.peer.to_string(), conn.pushed.size());
    conn.pushed.clear();
    asio::error_code ec;
    conn.socket.close(ec);
    return;
  }
  conn.pushed.append(message);
  if (conn.reading && !conn.read_cancelled) {
    conn.read_cancelled = true;
    asio::error_code ec;
    conn.socket.cancel(ec);
  }
}

}  // namespace

struct Server::Impl {
  Impl(const ServerOptions& o, Handlers& h, Counters& c, resp::Commands* r)
      : options(o), handlers(h), counters(c), resp_commands(r), contexts(o.threads) {
    for (auto& ctx : contexts) ctx = std::make_unique<asio::io_context>(1);
    workers.resize(contexts.size());
    if (resp_commands != nullptr) {
      for (Worker& w : workers) w.group = std::make_unique<resp::SetGroup>(*resp_commands);
    }
  }

  const ServerOptions& options;
  Handlers& handlers;
  Counters& counters;
  resp::Commands* resp_commands;
  // Requests whose handling may call another node and wait for it (a REGENERATE into another
  // node's user, LIST_USER and REVOKE_USER that ask the nodes holding sessions made before route
  // keys) run here, not on the worker: a worker blocked on a peer would hold up every
  // connection it serves, among them the peer's own REPLICATE, and two nodes waiting for each
  // other would stall until the call's deadline. So does DIGEST (anti-entropy), which walks
  // every session the node holds.
  asio::thread_pool peer_calls{8};
  RequestMetrics* metrics = nullptr;          // set_metrics()
  cluster::Membership* membership = nullptr;  // set_cluster(): RESP commands are routed
  Replicas* replicas = nullptr;               // set_cluster(): RESP writes wait for replicas
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<tcp::acceptor> resp_acceptor;
  std::unique_ptr<asio::ssl::context> tls_context;  // the native listener's; null: plaintext
  std::atomic<std::uint64_t> next_client_id{1};
  std::atomic<bool> stopping{false};
  std::atomic<std::size_t> next_context{0};
  // Keep every io_context running while it waits for work; released by stop().
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  // Per worker thread (touched only from its io_context): the SETs of several RESP connections
  // waiting to go to the engine as one batch, and the connections waiting for their replies.
  struct Worker {
    std::unique_ptr<resp::SetGroup> group;
    std::vector<Connection*> waiting;
    bool run_posted = false;
  };
  std::vector<Worker> workers;
  // Connections holding answers until replicas confirm them (--replica-ack), each with the
  // timer it sleeps on: wake_replica_waits() cancels them on their io_contexts.
  struct ReplicaWait {
    explicit ReplicaWait(const asio::any_io_executor& executor) : timer(executor) {}
    asio::steady_timer timer;
    std::atomic<bool> listed{false};
  };
  std::mutex replica_waits_mu;  // guards replica_waits
  std::vector<std::shared_ptr<ReplicaWait>> replica_waits;
  // Returns once `settled()` (asked again whenever a replica confirms more, and every 20 ms
  // for deadlines and topology changes). `wait` is the connection's, made on first use.
  asio::awaitable<void> wait_for_replicas(std::shared_ptr<ReplicaWait>& wait,
                                          const asio::any_io_executor& executor,
                                          const std::function<bool()>& settled);
  std::mutex connections_mu;  // guards connections and per_ip
  std::set<std::shared_ptr<Connection>> connections;
  std::map<asio::ip::address, std::size_t> per_ip;  // open connections per client address

  Status bind_one(std::uint16_t port, std::unique_ptr<tcp::acceptor>* out);
  asio::awaitable<void> accept_loop(tcp::acceptor& listener, bool is_resp);
  asio::awaitable<void> serve(std::shared_ptr<Connection> conn);
  // The native protocol loop over `stream`: the connection's socket or its TLS stream.
  template <typename Stream>
  asio::awaitable<void> serve_frames(Connection& conn, Stream& stream, Role role);
  // Runs the TLS handshake of conn.tls: the role the connection starts with, or nullopt when
  // the handshake failed (counted and logged).
  asio::awaitable<std::optional<Role>> tls_handshake(Connection& conn);
  asio::awaitable<void> serve_resp(std::shared_ptr<Connection> conn);
  // The RESP loop over conn.socket.
  asio::awaitable<void> serve_commands(const std::shared_ptr<Connection>& conn);
  // RESP in a cluster: where a command runs. Both empty: here; `forward_to`: the RESP address
  // of the node that owns its keys; `error`: the reply (keys on several nodes, a command that
  // spans the region, a forwarded command whose key moved meanwhile).
  struct RespRoute {
    std::string forward_to;
    std::string error;
  };
  RespRoute route_resp(std::span<const std::string_view> args,
                       const resp::ClientState& client) const;
  // Sends the command to `address` over this connection's link there and appends its reply.
  asio::awaitable<void> forward_resp(Connection& conn, const std::string& address,
                                     const std::vector<std::string>& args, Role role,
                                     std::string* out);
  // Writes `out` to `stream` and clears it; false when the connection failed (or the watchdog
  // closed it for not reading). The time spent writing does not count against a partly
  // received frame.
  template <typename Stream>
  asio::awaitable<bool> write_out(Connection& conn, Stream& stream, std::string& out);
  // After a read has been handled: whether part of a frame is left in the buffer, and whether
  // the read completed any frame (then the part left began in this read).
  static void note_partial_frame(Connection& conn, bool partial, bool completed_any);
  // Refuses a new connection with one error reply (OVERLOADED frame or Redis's error).
  template <typename Socket>
  void refuse(Socket& socket, bool is_resp, const std::string& why);
  asio::awaitable<void> watchdog(std::shared_ptr<Connection> conn);
  // Closes a connection whose serving coroutine has ended and forgets it.
  void finish(const std::shared_ptr<Connection>& conn, bool is_resp);
  // Counts the native answers in `frames` (whole frames) by operation and status, each as
  // taking from `read_at` (the read that completed its request) until now.
  void count_answers(std::string_view frames, Clock::time_point read_at) const {
    if (metrics == nullptr || frames.empty()) return;
    std::array<std::uint32_t, kOps> ops{};
    std::array<std::uint32_t, 16> statuses{};  // StatusCode's values (all below 16)
    while (frames.size() >= protocol::kHeaderSize) {
      const auto* h = reinterpret_cast<const std::uint8_t*>(frames.data());
      const auto byte = [h](int i) { return static_cast<std::uint32_t>(h[i]); };
      ++ops[native_op(static_cast<std::uint16_t>(byte(4) | (byte(5) << 8)))];
      ++statuses[std::min<std::size_t>(h[6], statuses.size() - 1)];
      const std::uint32_t body = byte(12) | (byte(13) << 8) | (byte(14) << 16) | (byte(15) << 24);
      if (frames.size() - protocol::kHeaderSize < body) break;
      frames.remove_prefix(protocol::kHeaderSize + body);
    }
    metrics->record_many(Listener::kNative, ops, Clock::now() - read_at);
    metrics->record_statuses(statuses);
  }
  // The same for RESP commands: `counts` per operation (metrics.h's resp_op).
  void count_commands(std::array<std::uint32_t, kOps>& counts, Clock::time_point read_at) const {
    if (metrics == nullptr) return;
    metrics->record_many(Listener::kResp, counts, Clock::now() - read_at);
    counts.fill(0);
  }
};

Server::Server(const ServerOptions& options, Handlers& handlers, Counters& counters,
               resp::Commands* resp)
    : impl_(std::make_unique<Impl>(options, handlers, counters, resp)) {}

Server::~Server() = default;

Status Server::Impl::bind_one(std::uint16_t port, std::unique_ptr<tcp::acceptor>* out) {
  auto& ctx = *contexts[0];
  const std::string where = options.listen_host + ":" + std::to_string(port);
  asio::error_code ec;
  const auto ip = asio::ip::make_address(options.listen_host, ec);
  if (ec) return Status::InvalidArgument("cannot listen on " + where + ": not an IP address");
  const tcp::endpoint endpoint(ip, port);
  auto bound = std::make_unique<tcp::acceptor>(ctx);
  bound->open(endpoint.protocol(), ec);
  if (!ec) bound->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) bound->bind(endpoint, ec);
  if (!ec) bound->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::Unavailable("cannot listen on " + where + ": " + ec.message());
  *out = std::move(bound);
  return {};
}

void Server::use_tls_context(SslCtxPtr context) {
  // asio's context takes ownership of the OpenSSL one.
  impl_->tls_context = std::make_unique<asio::ssl::context>(context.release());
}

void Server::reload_tls(SslCtxPtr context) {
  // accept_loop reads tls_context on contexts[0], so the swap happens there, between two
  // accepts. The old context may go: each open connection's SSL holds a reference on the
  // SSL_CTX it was made from (SSL_new takes one), which lives until the last of them ends.
  auto fresh = std::make_shared<asio::ssl::context>(context.release());
  asio::post(*impl_->contexts[0], [impl = impl_.get(), fresh] {
    if (impl->tls_context)
      impl->tls_context = std::make_unique<asio::ssl::context>(std::move(*fresh));
  });
}

Status Server::bind() {
  if (impl_->options.tls.enabled() && !impl_->tls_context) {
    auto ctx = make_server_context(impl_->options.tls);
    if (!ctx.ok()) return ctx.status();
    use_tls_context(std::move(ctx).value());
  }
  if (Status s = impl_->bind_one(impl_->options.listen_port, &impl_->acceptor); !s.ok()) return s;
  if (impl_->options.resp_port >= 0) {
    if (impl_->resp_commands == nullptr) return Status::Internal("RESP listener without commands");
    return impl_->bind_one(static_cast<std::uint16_t>(impl_->options.resp_port),
                           &impl_->resp_acceptor);
  }
  return {};
}

namespace {
std::string endpoint_text(const tcp::endpoint& endpoint) {
  const auto host = endpoint.address().to_string();
  return (endpoint.address().is_v6() ? "[" + host + "]" : host) + ":" +
         std::to_string(endpoint.port());
}
}  // namespace

std::string Server::address() const { return endpoint_text(impl_->acceptor->local_endpoint()); }

std::string Server::resp_address() const {
  return impl_->resp_acceptor ? endpoint_text(impl_->resp_acceptor->local_endpoint()) : "";
}

void Server::run() {
  for (auto& ctx : impl_->contexts) impl_->guards.emplace_back(ctx->get_executor());
  asio::co_spawn(*impl_->contexts[0], impl_->accept_loop(*impl_->acceptor, false), asio::detached);
  if (impl_->resp_acceptor) {
    asio::co_spawn(*impl_->contexts[0], impl_->accept_loop(*impl_->resp_acceptor, true),
                   asio::detached);
  }
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < impl_->contexts.size(); ++i) {
    threads.emplace_back([ctx = impl_->contexts[i].get()] { ctx->run(); });
  }
  impl_->contexts[0]->run();  // returns once stop() has run and every connection has ended
  for (auto& t : threads) t.join();
}

void Server::stop() {
  if (impl_->stopping.exchange(true)) return;
  asio::post(*impl_->contexts[0], [impl = impl_.get()] {
    asio::error_code ec;
    if (impl->acceptor) impl->acceptor->close(ec);
    if (impl->resp_acceptor) impl->resp_acceptor->close(ec);
  });
  {
    // Wake every connection on its own thread: no more reads; what it has received it still
    // answers.
    std::lock_guard lock(impl_->connections_mu);
    for (const auto& conn : impl_->connections) {
      asio::post(conn->socket.get_executor(), [conn] {
        asio::error_code ec;
        conn->socket.shutdown(tcp::socket::shutdown_receive, ec);
        conn->timer.cancel();
      });
    }
  }
  for (auto& guard : impl_->guards) guard.reset();
}

asio::awaitable<void> Server::Impl::accept_loop(tcp::acceptor& listener, bool is_resp) {
  asio::steady_timer backoff(listener.get_executor());
  while (!stopping.load()) {
    const std::size_t worker = next_context.fetch_add(1) % contexts.size();
    auto& ctx = *contexts[worker];
    auto [ec, socket] = co_await listener.async_accept(ctx, kTuple);
    if (ec) {
      if (stopping.load() || ec == asio::error::operation_aborted) break;
      // Out of file descriptors or memory: say so, and wait 100 ms
      // rather than spin; everyone already connected keeps being served.
      spdlog::warn("accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(kTuple);
      continue;
    }
    if (counters.connections.load(std::memory_order_relaxed) >= options.max_connections) {
      counters.connections_refused.fetch_add(1, std::memory_order_relaxed);
      refuse(socket, is_resp,
             "too many connections (limit " + std::to_string(options.max_connections) + ")");
      continue;
    }
    asio::error_code peer_error;
    const asio::ip::address peer = socket.remote_endpoint(peer_error).address();
    if (peer_error) continue;  // gone already
    if (options.max_connections_per_ip > 0) {
      std::lock_guard lock(connections_mu);
      std::size_t& open = per_ip[peer];
      if (open >= options.max_connections_per_ip) {
        counters.connections_refused_per_ip.fetch_add(1, std::memory_order_relaxed);
        refuse(socket, is_resp,
               "too many connections from " + peer.to_string() + " (limit " +
                   std::to_string(options.max_connections_per_ip) + " per address)");
        continue;
      }
      ++open;
    }
    socket.set_option(tcp::no_delay(true));
    auto conn = std::make_shared<Connection>(std::move(socket), worker);
    conn->peer = peer;
    if (!is_resp && tls_context) conn->tls.emplace(conn->socket, *tls_context);
    counters.connections.fetch_add(1, std::memory_order_relaxed);
    if (is_resp) counters.resp_connections.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard lock(connections_mu);
      connections.insert(conn);
      // stop() sets `stopping` before it walks the registry, so a connection registered after
      // that walk sees it here and is told at once.
      if (stopping.load()) {
        asio::error_code ignored;
        conn->socket.shutdown(tcp::socket::shutdown_receive, ignored);
      }
    }
    auto executor = conn->socket.get_executor();
    if (is_resp) {
      asio::co_spawn(executor, serve_resp(conn), asio::detached);
    } else {
      asio::co_spawn(executor, serve(conn), asio::detached);
    }
    asio::co_spawn(executor, watchdog(conn), asio::detached);
  }
}

template <typename Socket>
void Server::Impl::refuse(Socket& socket, bool is_resp, const std::string& why) {
  // The client learns why, then the connection closes. A TLS client could not read a plaintext
  // frame, so it is just closed.
  std::string out;
  if (is_resp) {
    resp::append_error(&out, "ERR max number of clients reached");
  } else if (!tls_context) {
    protocol::FrameHeader h;
    handlers.append_error(h, Status::Overloaded(why), &out);
  }
  asio::error_code ignored;
  socket.non_blocking(true, ignored);
  socket.write_some(asio::buffer(out), ignored);
  socket.close(ignored);
}

// Closes a connection when a partly received frame has not completed within --frame-timeout-ms
// of its first byte, when the kernel has taken none of its replies for --send-timeout-ms (a
// client that does not read), or when it has been idle for --idle-timeout-ms.
asio::awaitable<void> Server::Impl::watchdog(std::shared_ptr<Connection> conn) {
  const auto frame_timeout = std::chrono::milliseconds(options.frame_timeout_ms);
  const auto send_timeout = std::chrono::milliseconds(options.send_timeout_ms);
  const auto idle_timeout = std::chrono::milliseconds(options.idle_timeout_ms);
  while (!conn->closed) {
    const auto now = Clock::now();
    const auto deadline = conn->writing         ? conn->write_progress + send_timeout
                          : conn->partial_frame ? conn->frame_started + frame_timeout
                          : options.idle_timeout_ms > 0 && !conn->subscriber
                              ? conn->last_activity + idle_timeout
                              : Clock::time_point::max();
    if (now >= deadline) {
      if (conn->writing) {
        counters.slow_readers.fetch_add(1, std::memory_order_relaxed);
      } else {
        counters.timeouts.fetch_add(1, std::memory_order_relaxed);
      }
      spdlog::debug("closing a connection: {}",
                    conn->writing         ? "it does not read its replies"
                    : conn->partial_frame ? "a frame did not complete within the frame timeout"
                                          : "idle");
      asio::error_code ec;
      conn->socket.close(ec);  // the pending read or write fails and serve() ends
      break;
    }
    // A frame or a write that starts while this sleeps has a deadline at least the shorter
    // timeout away, so sleeping no longer than that never misses one. Woken early by stop()
    // and when serve() ends; the state is looked at again then.
    conn->timer.expires_at(std::min(deadline, now + std::min(frame_timeout, send_timeout)));
    co_await conn->timer.async_wait(kTuple);
  }
}

asio::awaitable<void> Server::Impl::serve(std::shared_ptr<Connection> conn) {
  if (conn->tls) {
    if (const std::optional<Role> role = co_await tls_handshake(*conn)) {
      co_await serve_frames(*conn, *conn->tls, *role);
    }
  } else {
    co_await serve_frames(*conn, conn->socket, handlers.auth().initial_role());
  }
  finish(conn, false);
}

asio::awaitable<std::optional<Role>> Server::Impl::tls_handshake(Connection& conn) {
  // The watchdog gives a partly received frame --frame-timeout-ms; the handshake gets the same
  // from its start, whatever the client trickles in.
  conn.partial_frame = true;
  conn.frame_started = conn.last_activity = Clock::now();
  asio::error_code peer_error;
  const auto peer = conn.socket.remote_endpoint(peer_error);
  auto [ec] = co_await conn.tls->async_handshake(asio::ssl::stream_base::server, kTuple);
  conn.partial_frame = false;
  conn.last_activity = Clock::now();
  if (ec) {
    if (!stopping.load()) {
      counters.tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
      spdlog::debug("TLS handshake with {} failed: {}",
                    peer_error ? std::string("a client") : endpoint_text(peer),
                    conn.closed || !conn.socket.is_open() ? "no handshake within the frame timeout"
                                                          : ec.message());
    }
    co_return std::nullopt;
  }
  if (options.tls.client_auth == TlsOptions::ClientAuth::kNone) {
    co_return handlers.auth().initial_role();
  }
  // Client certificates were asked for: the connection has what its certificate grants, and
  // else nothing until AUTH (docs/tls.md), whether or not secrets are configured. OpenSSL has
  // verified any certificate it accepted; the check below only guards that.
  SSL* ssl = conn.tls->native_handle();
  X509* certificate = SSL_get0_peer_certificate(ssl);
  if (certificate == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) co_return Role::kNone;
  co_return role_from_certificate(certificate);
}

template <typename Stream>
asio::awaitable<void> Server::Impl::serve_frames(Connection& conn, Stream& stream, Role role) {
  // The buffer starts small and doubles only when a read filled it: it grows with the bytes
  // that arrived, never with a length a header claims.
  std::vector<std::uint8_t> in(kInitialBuffer);
  std::size_t used = 0;
  std::string out;
  ConnectionState state;  // what the handlers keep between this connection's requests
  state.role = role;
  state.peer = conn.peer.to_string();
  std::shared_ptr<ReplicaWait> replica_wait;  // made the first time an answer waits
  // Consecutive CREATEs go to the engine together (one RocksDB write). Their bodies point into
  // `in`, so they are handled before `in` moves and before any other frame.
  std::vector<Handlers::Request> creates;
  auto flush_creates = [&] {
    if (creates.empty()) return;
    handlers.handle_creates(creates, &state, &out);
    creates.clear();
  };
  // Before AUTH (when authentication is on) only small frames: AUTH and PING need no more.
  const auto unauthenticated = [&] {
    return state.role == Role::kNone && handlers.auth().enabled();
  };
  const auto frame_limit = [&] {
    return unauthenticated() ? std::min(kMaxUnauthenticatedFrame, options.max_frame_bytes)
                             : options.max_frame_bytes;
  };
  bool close_after_write = false;
  bool filled = false;  // the last read filled the buffer: more is probably waiting
  while (!close_after_write) {
    if (used == in.size() || (filled && in.size() < kReadChunk)) {
      in.resize(std::min(in.size() * 2,
                         std::max<std::size_t>(kReadChunk, protocol::kHeaderSize + frame_limit())));
    }
    auto [ec, n] =
        co_await stream.async_read_some(asio::buffer(in.data() + used, in.size() - used), kTuple);
    if (ec || n == 0) break;
    filled = n == in.size() - used;
    used += n;
    conn.last_activity = Clock::now();
    const Clock::time_point read_at = conn.last_activity;

    // The complete frames of the buffer, in slices: at most kSliceRequests requests, or
    // until the replies reach --max-output-bytes. After each slice the replies are written
    // (the connection is not read meanwhile: a client that does not read its answers stops
    // being served, not the node growing), and the write lets the worker's other connections
    // run before the next slice.
    std::size_t offset = 0;
    bool need_more = false;
    bool consumed_any = false;
    // The WAL bytes of the writes handled synchronously in a slice reach the operating system
    // together (one write() instead of one per request), before any of their answers goes out
    // and before anything suspends this coroutine (storage::Store::WalBatch). A failure to
    // hand them over means those writes are not durable: the connection closes without their
    // answers (the store already refuses further writes, as after any failed write).
    std::optional<storage::Store::WalBatch> wal;
    const auto finish_wal = [&]() -> bool {
      if (!wal) return true;
      const Status flushed = wal->finish();
      wal.reset();
      if (flushed.ok()) return true;
      spdlog::error("closing the connection from {} without its answers: {}", conn.peer.to_string(),
                    flushed.message());
      return false;
    };
    while (!need_more && !close_after_write) {
      std::size_t handled = 0;
      const std::size_t answers_from = out.size();  // this slice's answers, for the metrics
      // The sessions the slice's requests name, fetched into the cache together rather than
      // one miss after another as each is handled.
      if (!unauthenticated()) {
        handlers.prefetch(std::span(in.data() + offset, used - offset), frame_limit(),
                          kSliceRequests);
      }
      while (handled < kSliceRequests && out.size() < options.max_output_bytes) {
        if (!wal) wal.emplace();
        const bool before_auth = unauthenticated();
        const auto d =
            protocol::decode_frame(std::span(in.data() + offset, used - offset), frame_limit());
        if (d.kind == protocol::Decoded::Kind::kNeedMore) {
          need_more = true;
          break;
        }
        ++handled;
        consumed_any = true;
        if (d.kind == protocol::Decoded::Kind::kError) {
          flush_creates();
          counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
          handlers.append_error(d.header,
                                before_auth && d.error.code() == StatusCode::kTooLarge
                                    ? Status::TooLarge(d.error.message() + " before AUTH")
                                    : d.error,
                                &out);
          if (d.framing_lost) {
            close_after_write = true;
            offset = used;
            break;
          }
          offset += d.consumed;
          continue;
        }
        offset += d.consumed;
        if (!d.header.is_response() &&
            d.header.opcode == static_cast<std::uint16_t>(protocol::Opcode::kCreate)) {
          creates.push_back({d.header, d.body});
          continue;
        }
        flush_creates();
        if (d.header.is_response()) {
          counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
          handlers.append_error(
              d.header, Status::InvalidArgument("clients send requests, not responses"), &out);
        } else if (handlers.may_block(d.header.opcode)) {
          if (!finish_wal()) co_return;
          co_await asio::co_spawn(
              peer_calls,
              [&]() -> asio::awaitable<void> {
                handlers.handle(d.header, d.body, &state, &out);
                co_return;
              },
              asio::use_awaitable);
        } else {
          handlers.handle(d.header, d.body, &state, &out);
        }
        if (state.close) {  // e.g. too many failed AUTHs: what follows is not handled
          close_after_write = true;
          break;
        }
      }
      flush_creates();
      if (!finish_wal()) co_return;
      // Answers that wait for replicas (--replica-ack) go out once they confirmed; the
      // connection is not read meanwhile, the node's other connections are served.
      if (!state.acks.empty()) {
        co_await wait_for_replicas(replica_wait, stream.get_executor(),
                                   [&] { return handlers.settle_acks(&state, &out); });
      }
      count_answers(std::string_view(out).substr(answers_from), read_at);
      if (!co_await write_out(conn, stream, out)) co_return;
    }
    if (offset > 0) {
      std::memmove(in.data(), in.data() + offset, used - offset);
      used -= offset;
    }
    note_partial_frame(conn, used > 0, consumed_any);
    // Give back a buffer that a large frame grew, once it is done with.
    if (used == 0 && in.size() > kReadChunk) {
      in.resize(kReadChunk);
      in.shrink_to_fit();
    }
    if (stopping.load() && used == 0) break;  // finished what it had received
  }
}

void Server::Impl::finish(const std::shared_ptr<Connection>& conn, bool is_resp) {
  conn->closed = true;
  conn->timer.cancel();
  asio::error_code ignored;
  conn->socket.shutdown(tcp::socket::shutdown_both, ignored);
  conn->socket.close(ignored);
  counters.connections.fetch_sub(1, std::memory_order_relaxed);
  if (is_resp) counters.resp_connections.fetch_sub(1, std::memory_order_relaxed);
  std::lock_guard lock(connections_mu);
  connections.erase(conn);
  if (options.max_connections_per_ip > 0) {
    if (auto it = per_ip.find(conn->peer); it != per_ip.end() && --it->second == 0) {
      per_ip.erase(it);
    }
  }
}

namespace {
// What a node calls itself on the RESP connections it forwards commands over: such commands
// run where they arrive (or answer TRYAGAIN), never forwarded a second time.
constexpr std::string_view kForwarderName = "sessiond-forward";
}  // namespace

Server::Impl::RespRoute Server::Impl::route_resp(std::span<const std::string_view> args,
                                                 const resp::ClientState& client) const {
  // Unauthenticated connections are answered here (NOAUTH); so are commands without keys.
  if (args.empty() || (client.role != Role::kApp && client.role != Role::kAdmin)) return {};
  const resp::KeySpan span = resp::key_span(args[0]);
  if (span == resp::KeySpan::kNone || span == resp::KeySpan::kNodeLocal) return {};
  if (span == resp::KeySpan::kRegion && client.name != kForwarderName) {
    std::string name(args[0]);
    for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return {"",
            "ERR " + name +
                " would flush every node of the region, which a cluster does not do from one node "
                "(docs/cluster.md, \"RESP in a cluster\")"};
  }
  if (span == resp::KeySpan::kRegion || args.size() < 2) return {};  // arity: answered here
  const std::size_t last = span == resp::KeySpan::kFirst ? 1
                           : span == resp::KeySpan::kFirstTwo
                               ? std::min<std::size_t>(2, args.size() - 1)
                               : args.size() - 1;
  const auto routing = membership->routing();
  const cluster::Node* owner = nullptr;
  for (std::size_t i = 1; i <= last; ++i) {
    const storage::SessionId id = resp::key_id(args[i]);
    const cluster::Node* n = routing->owner(cluster::ring_position(
        std::string_view(reinterpret_cast<const char*>(id.data()), id.size())));
    if (n == nullptr) return {"", "ERR the region has no node with a weight"};
    if (owner != nullptr && owner->id != n->id) {
      return {"", "CROSSSLOT Keys in request don't hash to the same node"};
    }
    owner = n;
  }
  if (routing->self && owner->id == routing->topology.nodes[*routing->self].id) return {};
  if (client.name == kForwarderName) {
    return {"", "TRYAGAIN the key's node changed while the command was forwarded; retry"};
  }
  if (owner->resp_address.empty()) {
    return {"", "ERR node " + owner->id + " owns this key and has no RESP listener"};
  }
  return {owner->resp_address, ""};
}

asio::awaitable<void> Server::Impl::forward_resp(Connection& conn, const std::string& address,
                                                 const std::vector<std::string>& args, Role role,
                                                 std::string* out) {
  auto& link = conn.forwards[address];
  std::string request;
  std::size_t setup_replies = 0;
  auto fail = [&](const std::string& why) {
    resp::append_error(out, "ERR forwarding to the key's node at " + address + ": " + why);
    conn.forwards.erase(address);
  };
  if (!link) {
    link = std::make_unique<Connection::Forward>(conn.socket.get_executor());
    auto hp = parse_host_port(address);
    if (!hp.ok()) {
      fail(hp.status().message());
      co_return;
    }
    tcp::resolver resolver(conn.socket.get_executor());
    auto [rec, endpoints] =
        co_await resolver.async_resolve(hp->host, std::to_string(hp->port), kTuple);
    if (rec) {
      fail(rec.message());
      co_return;
    }
    auto [cec, endpoint] = co_await asio::async_connect(link->socket, endpoints, kTuple);
    if (cec) {
      fail(cec.message());
      co_return;
    }
    // As the client is (a node's secrets are the region's), under a name that says "forwarded".
    const AuthConfig& auth = handlers.auth();
    const std::string& secret =
        role == Role::kAdmin && !auth.admin_secret.empty() ? auth.admin_secret : auth.app_secret;
    if (auth.enabled()) {
      const std::string_view auth_args[] = {"AUTH", secret};
      resp::append_command(&request, auth_args);
      ++setup_replies;
    }
    const std::string_view name_args[] = {"CLIENT", "SETNAME", kForwarderName};
    resp::append_command(&request, name_args);
    ++setup_replies;
  }
  std::vector<std::string_view> views(args.begin(), args.end());
  resp::append_command(&request, views);
  auto [wec, written] = co_await asio::async_write(link->socket, asio::buffer(request), kTuple);
  if (wec) {
    fail(wec.message());
    co_return;
  }
  char chunk[16384];
  for (;;) {
    const std::size_t n = resp::reply_length(link->buffer);
    if (n == std::string_view::npos) {
      fail("an answer that is not RESP");
      co_return;
    }
    if (n > 0) {
      if (setup_replies > 0) {
        if (link->buffer[0] == '-') {
          fail(link->buffer.substr(1, n - 3));
          co_return;
        }
        link->buffer.erase(0, n);
        --setup_replies;
        continue;
      }
      out->append(link->buffer, 0, n);
      link->buffer.erase(0, n);
      co_return;
    }
    auto [rec, got] = co_await link->socket.async_read_some(asio::buffer(chunk), kTuple);
    if (rec || got == 0) {
      fail(rec ? rec.message() : std::string("connection closed"));
      co_return;
    }
    link->buffer.append(chunk, got);
  }
}

void Server::set_cluster(cluster::Membership* membership, Replicas* replicas) {
  impl_->membership = membership;
  impl_->replicas = replicas;
}

asio::awaitable<void> Server::Impl::wait_for_replicas(std::shared_ptr<ReplicaWait>& wait,
                                                      const asio::any_io_executor& executor,
                                                      const std::function<bool()>& settled) {
  if (!wait) wait = std::make_shared<ReplicaWait>(executor);
  for (;;) {
    // Listed before it looks: a confirmation after the look cancels the sleep below (the
    // cancel is posted to this io_context, so it runs once this coroutine sleeps).
    if (!wait->listed.exchange(true)) {
      std::lock_guard lock(replica_waits_mu);
      replica_waits.push_back(wait);
    }
    if (settled()) co_return;
    wait->timer.expires_after(std::chrono::milliseconds(20));
    co_await wait->timer.async_wait(kTuple);
  }
}

void Server::set_metrics(RequestMetrics* metrics) { impl_->metrics = metrics; }

bool Server::workers_respond(std::chrono::milliseconds timeout) {
  struct Probe {
    std::mutex mu;
    std::condition_variable done;
    std::size_t left = 0;
  };
  auto probe = std::make_shared<Probe>();
  probe->left = impl_->contexts.size();
  for (auto& ctx : impl_->contexts) {
    asio::post(*ctx, [probe] {
      std::lock_guard lock(probe->mu);
      if (--probe->left == 0) probe->done.notify_all();
    });
  }
  std::unique_lock lock(probe->mu);
  return probe->done.wait_for(lock, timeout, [&] { return probe->left == 0; });
}

void Server::wake_replica_waits() {
  std::vector<std::shared_ptr<Impl::ReplicaWait>> waits;
  {
    std::lock_guard lock(impl_->replica_waits_mu);
    waits.swap(impl_->replica_waits);
  }
  for (auto& w : waits) {
    w->listed = false;
    asio::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
  }
}

template <typename Stream>
asio::awaitable<bool> Server::Impl::write_out(Connection& conn, Stream& stream, std::string& out) {
  if (out.empty()) co_return true;
  const auto started = Clock::now();
  conn.writing = true;
  conn.write_progress = started;
  std::size_t written = 0;
  bool ok = true;
  while (written < out.size()) {
    auto [ec, n] = co_await stream.async_write_some(
        asio::buffer(out.data() + written, out.size() - written), kTuple);
    if (ec) {
      ok = false;
      break;
    }
    written += n;
    conn.write_progress = Clock::now();
  }
  conn.writing = false;
  if (conn.partial_frame) conn.frame_started += Clock::now() - started;
  out.clear();
  if (out.capacity() > 4 * kReadChunk) out.shrink_to_fit();
  co_return ok;
}

void Server::Impl::note_partial_frame(Connection& conn, bool partial, bool completed_any) {
  if (partial && (completed_any || !conn.partial_frame)) conn.frame_started = Clock::now();
  conn.partial_frame = partial;
}

asio::awaitable<void> Server::Impl::serve_resp(std::shared_ptr<Connection> conn) {
  co_await serve_commands(conn);
  finish(conn, true);
}

asio::awaitable<void> Server::Impl::serve_commands(const std::shared_ptr<Connection>& shared) {
  Connection& conn = *shared;
  const resp::Limits limits;
  std::vector<char> in(kInitialBuffer);
  std::size_t used = 0;
  std::string out;
  std::vector<std::string_view> args;
  std::vector<std::vector<std::string_view>> commands;  // reused from slice to slice
  std::array<std::uint32_t, kOps> command_counts{};     // commands of the slice, for the metrics
  resp::ClientState client;
  client.id = next_client_id.fetch_add(1, std::memory_order_relaxed);
  client.role = handlers.auth().initial_role();
  client.peer = conn.peer.to_string();
  client.deliver = [weak = std::weak_ptr<Connection>(shared),
                    executor = conn.socket.get_executor()](std::string_view message) {
    asio::post(executor, [weak, m = std::string(message)] {
      if (const auto c = weak.lock()) push_message(*c, m);
    });
  };
  bool close_after_write = false;
  bool filled = false;  // the last read filled the buffer: more is probably waiting
  // In a region with replicas, replies go out only once the replicas have what the commands
  // wrote (--replica-ack: after a command that may end keys, or after any write; docs/
  // cluster.md). The writes are this thread's (the connection's worker's), up to its last log
  // sequence; the wait covers every replica this node feeds. A RESP reply cannot be replaced
  // by an error in the middle of a pipeline, so when the replicas do not confirm in time the
  // connection closes without the replies: the client sees its commands fail, not succeed.
  std::shared_ptr<ReplicaWait> replica_wait;
  std::uint64_t settled_seq = storage::Store::last_log_seq_on_this_thread();
  bool may_have_ended = false;  // a command that may end keys ran since the last settle
  auto replies_may_go = [&]() -> asio::awaitable<bool> {
    if (replicas == nullptr) co_return true;
    const std::uint64_t seq = storage::Store::last_log_seq_on_this_thread();
    const ReplicaAck ack = replicas->options().ack;
    const bool wait = seq != settled_seq &&
                      (ack == ReplicaAck::kAll || (ack == ReplicaAck::kTerminal && may_have_ended));
    settled_seq = seq;
    may_have_ended = false;
    if (!wait) co_return true;
    Replicas::Wait pending;
    (void)replicas->add_wait_all(seq, &pending);
    if (pending.shippers.empty()) co_return true;
    Replicas::WaitState state = Replicas::WaitState::kPending;
    co_await wait_for_replicas(replica_wait, conn.socket.get_executor(), [&] {
      state = replicas->check(pending);
      return state != Replicas::WaitState::kPending;
    });
    if (state == Replicas::WaitState::kDone) co_return true;
    spdlog::warn("RESP connection from {} closed without its replies: {}", conn.peer.to_string(),
                 Replicas::failed_status(pending).message());
    out.clear();
    co_return false;
  };
  while (!close_after_write) {
    if (used == in.size() || (filled && in.size() < kReadChunk)) {
      // Grows with what arrives; the command limit below refuses one command that gets too long.
      in.resize(std::min(in.size() * 2, std::max(kReadChunk, limits.max_command_bytes)));
    }
    if (!conn.pushed.empty()) {  // pub/sub messages go out before the next read
      std::string pushed = std::move(conn.pushed);
      conn.pushed.clear();
      if (!co_await write_out(conn, conn.socket, pushed)) co_return;
      continue;
    }
    conn.reading = true;
    auto [ec, n] = co_await conn.socket.async_read_some(
        asio::buffer(in.data() + used, in.size() - used), kTuple);
    conn.reading = false;
    if (std::exchange(conn.read_cancelled, false) && ec == asio::error::operation_aborted) {
      continue;  // a message arrived: written at the top of the loop
    }
    if (ec || n == 0) break;
    filled = n == in.size() - used;
    used += n;
    conn.last_activity = Clock::now();
    const Clock::time_point read_at = conn.last_activity;

    // The complete commands of the buffer, in slices of at most kSliceRequests commands; the
    // replies are written whenever they reach --max-output-bytes and after each slice (the
    // connection is not read meanwhile, and the write lets the worker's other connections run).
    // The commands' arguments view into `in`, which stays put until they have run; a quoted
    // inline argument lives in the parser's per-thread storage instead, so such a command runs
    // at once, after those collected before it.
    std::size_t offset = 0;
    bool need_more = false;
    bool consumed_any = false;
    while (!need_more && !close_after_write) {
      std::size_t collected = 0;
      // Runs the collected commands, writing whenever the replies reach the cap.
      auto run_collected = [&]() -> asio::awaitable<bool> {
        std::size_t done = 0;
        while (done < collected && !client.close) {
          done += resp_commands->execute_all(std::span(commands.data() + done, collected - done),
                                             client, &out, options.max_output_bytes);
          if (out.size() >= options.max_output_bytes &&
              (!co_await replies_may_go() || !co_await write_out(conn, conn.socket, out))) {
            co_return false;
          }
        }
        collected = 0;
        if (client.close) close_after_write = true;
        co_return true;
      };
      std::size_t parsed = 0;
      while (parsed < kSliceRequests && offset < used && !close_after_write) {
        const resp::Parsed p =
            resp::parse_command(std::string_view(in.data() + offset, used - offset), limits, &args);
        if (p.kind == resp::Parsed::Kind::kNeedMore) break;
        consumed_any = true;
        if (p.kind == resp::Parsed::Kind::kError) {
          if (!co_await run_collected()) co_return;
          if (!client.close) {
            counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
            resp::append_error(&out, p.error);
          }
          close_after_write = true;
          break;
        }
        offset += p.consumed;
        if (p.kind == resp::Parsed::Kind::kEmpty) continue;
        ++parsed;
        ++command_counts[resp_op(args[0])];
        const bool in_buffer = std::all_of(args.begin(), args.end(), [&](std::string_view a) {
          return a.data() >= in.data() && a.data() + a.size() <= in.data() + used;
        });
        if (membership != nullptr) {
          const RespRoute route = route_resp(args, client);
          if (!route.error.empty() || !route.forward_to.empty()) {
            // In order: what was collected before runs first. The arguments are copied, since
            // other connections run (and parse) while this one waits for the other node.
            if (!co_await run_collected()) co_return;
            const bool stateful =
                client.in_multi || resp::key_span(args[0]) == resp::KeySpan::kWatch;
            if (!route.error.empty()) {
              resp::append_error(&out, route.error);
              if (client.in_multi) client.multi_refused = true;
            } else if (stateful) {
              // A transaction and its watched keys live on one node: this connection's.
              resp::append_error(&out,
                                 "ERR MULTI/EXEC and WATCH run on one node, and another node (" +
                                     route.forward_to +
                                     ") owns this key: send the transaction there "
                                     "(docs/cluster.md, \"RESP in a cluster\")");
              if (client.in_multi) client.multi_refused = true;
            } else {
              const std::vector<std::string> copy(args.begin(), args.end());
              co_await forward_resp(conn, route.forward_to, copy, client.role, &out);
            }
            continue;
          }
        }
        if (collected == commands.size()) commands.emplace_back();
        commands[collected++].assign(args.begin(), args.end());
        may_have_ended = may_have_ended || resp::may_end_keys(args[0]);
        if (!in_buffer && !co_await run_collected()) co_return;
      }
      need_more = parsed < kSliceRequests && !close_after_write;
      if (collected > 0 && !close_after_write &&
          (client.role == Role::kApp || client.role == Role::kAdmin) &&
          workers[conn.worker].group->add(std::span(commands.data(), collected), client, &out)) {
        // Only SETs: they join the other connections' SETs of this turn of the event loop, and
        // the group runs once the handlers already queued (other reads) have added theirs.
        collected = 0;
        Worker& worker = workers[conn.worker];
        worker.waiting.push_back(&conn);
        if (!worker.run_posted) {
          worker.run_posted = true;
          asio::post(conn.socket.get_executor(), [&worker] {
            worker.run_posted = false;
            worker.group->run();
            for (Connection* waiting : worker.waiting) {
              waiting->group_done = true;
              waiting->wake.cancel();
            }
            worker.waiting.clear();
          });
        }
        conn.group_done = false;
        conn.wake.expires_at(Clock::time_point::max());
        while (!conn.group_done) co_await conn.wake.async_wait(kTuple);
      }
      if (!co_await run_collected()) co_return;
      conn.subscriber = client.subscribed();
      if (!co_await replies_may_go()) co_return;
      count_commands(command_counts, read_at);
      if (!co_await write_out(conn, conn.socket, out)) co_return;
    }
    if (offset > 0) {
      std::memmove(in.data(), in.data() + offset, used - offset);
      used -= offset;
    }
    // One command may take up to the command limit; before AUTH (when authentication is on)
    // only a small one.
    const bool unauthenticated = client.role == Role::kNone && handlers.auth().enabled();
    const std::size_t command_limit =
        unauthenticated ? kMaxUnauthenticatedFrame : limits.max_command_bytes;
    if (!close_after_write && used >= command_limit) {
      counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
      resp::append_error(&out, "ERR Protocol error: command longer than " +
                                   std::to_string(command_limit) + " bytes" +
                                   (unauthenticated ? " before AUTH" : ""));
      if (co_await replies_may_go()) co_await write_out(conn, conn.socket, out);
      break;
    }
    note_partial_frame(conn, used > 0, consumed_any);
    if (used < kReadChunk && in.size() > kReadChunk) {
      in.resize(kReadChunk);
      in.shrink_to_fit();
    }
    if (stopping.load() && used == 0) break;
  }
}

}  // namespace sessiond::daemon
