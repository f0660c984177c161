// Each connection is one coroutine on one worker's io_context (so a connection's work never
// needs a lock of its own). It reads into a buffer, decodes every complete frame in it, handles
// them in order, and sends all their responses with one write: a client that pipelines gets
// many responses per syscall, and its consecutive CREATEs share one RocksDB write. The buffer grows
// only to what a header that passed the frame checks announces (at most the frame limit), never to
// what a client merely claims.
//
// A watchdog coroutine beside each connection closes it when a partly received frame stalls
// for --frame-timeout-ms, or when it is idle for --idle-timeout-ms.
//
// With --tls-cert the native listener speaks TLS: a connection first completes its handshake
// within the frame timeout (the watchdog treats the handshake as a partly received frame), takes
// the role of its verified client certificate (tls.h), then runs the same loop over the TLS
// stream. A client that says nothing, or speaks plaintext, is closed and counted in
// Counters::tls_handshake_failures.
//
// RESP connections work the same way with the RESP parser and resp::Commands: every complete
// command of a read is executed in order, and the replies go out with one write. The buffer
// grows only with bytes that arrived, up to resp::Limits::max_command_bytes for one command.
#include "daemon/server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ssl.hpp>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "daemon/resp.h"
#include "daemon/tls.h"

namespace sessiond::daemon {
namespace {

using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunk = 64 * 1024;

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
  bool group_done = false;
  Clock::time_point last_activity = Clock::now();
  bool partial_frame = false;
  bool closed = false;
};

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
  std::mutex connections_mu;  // guards connections
  std::set<std::shared_ptr<Connection>> connections;

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
  // Writes `out` to `stream` and clears it; false when the connection failed.
  template <typename Stream>
  asio::awaitable<bool> write_out(Stream& stream, std::string& out);
  asio::awaitable<void> watchdog(std::shared_ptr<Connection> conn);
  // Closes a connection whose serving coroutine has ended and forgets it.
  void finish(const std::shared_ptr<Connection>& conn, bool is_resp);
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
      // One OVERLOADED frame (request id 0), or Redis's error, then close: the client learns
      // why. A TLS client could not read a plaintext frame, so it is just closed.
      std::string out;
      if (is_resp) {
        resp::append_error(&out, "ERR max number of clients reached");
      } else if (!tls_context) {
        protocol::FrameHeader h;
        handlers.append_error(h,
                              Status::Overloaded("too many connections (limit " +
                                                 std::to_string(options.max_connections) + ")"),
                              &out);
      }
      asio::error_code ignored;
      socket.non_blocking(true, ignored);
      socket.write_some(asio::buffer(out), ignored);
      socket.close(ignored);
      continue;
    }
    socket.set_option(tcp::no_delay(true));
    auto conn = std::make_shared<Connection>(std::move(socket), worker);
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

asio::awaitable<void> Server::Impl::watchdog(std::shared_ptr<Connection> conn) {
  const auto frame_timeout = std::chrono::milliseconds(options.frame_timeout_ms);
  const auto idle_timeout = std::chrono::milliseconds(options.idle_timeout_ms);
  while (!conn->closed) {
    const auto deadline = conn->partial_frame           ? conn->last_activity + frame_timeout
                          : options.idle_timeout_ms > 0 ? conn->last_activity + idle_timeout
                                                        : Clock::now() + frame_timeout;
    conn->timer.expires_at(std::min(deadline, Clock::now() + frame_timeout));
    co_await conn->timer.async_wait(kTuple);
    if (conn->closed) break;
    const bool stalled = conn->partial_frame && Clock::now() - conn->last_activity >= frame_timeout;
    const bool idle = !conn->partial_frame && options.idle_timeout_ms > 0 &&
                      Clock::now() - conn->last_activity >= idle_timeout;
    if (stalled || idle) {
      counters.timeouts.fetch_add(1, std::memory_order_relaxed);
      spdlog::debug("closing {} connection", stalled ? "stalled" : "idle");
      asio::error_code ec;
      conn->socket.close(ec);  // the pending read fails and serve() ends
      break;
    }
    if (stopping.load()) break;
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
  conn.last_activity = Clock::now();
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
  std::vector<std::uint8_t> in(kReadChunk);
  std::size_t used = 0;
  std::string out;
  ConnectionState state;  // what the handlers keep between this connection's requests
  state.role = role;
  asio::error_code no_peer;
  state.peer = conn.socket.remote_endpoint(no_peer).address().to_string();
  // Consecutive CREATEs of one read go to the engine together (one RocksDB write). Their
  // bodies point into `in`, so they are handled before `in` moves and before any other frame.
  std::vector<Handlers::Request> creates;
  auto flush_creates = [&] {
    if (creates.empty()) return;
    handlers.handle_creates(creates, &state, &out);
    creates.clear();
  };
  bool close_after_write = false;
  while (!close_after_write) {
    if (in.size() - used < 4096 && in.size() < kReadChunk) in.resize(kReadChunk);
    auto [ec, n] =
        co_await stream.async_read_some(asio::buffer(in.data() + used, in.size() - used), kTuple);
    if (ec || n == 0) break;
    used += n;
    conn.last_activity = Clock::now();

    std::size_t offset = 0;
    for (;;) {
      const auto d = protocol::decode_frame(std::span(in.data() + offset, used - offset),
                                            options.max_frame_bytes);
      if (d.kind == protocol::Decoded::Kind::kNeedMore) {
        flush_creates();
        // The header passed its checks, so d.need is at most header + frame limit.
        if (d.need > in.size() - offset) {
          std::memmove(in.data(), in.data() + offset, used - offset);
          used -= offset;
          offset = 0;
          if (d.need > in.size()) in.resize(d.need);
        }
        break;
      }
      if (d.kind == protocol::Decoded::Kind::kError) {
        flush_creates();
        counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        handlers.append_error(d.header, d.error, &out);
        if (d.framing_lost) {
          close_after_write = true;
          offset = used;
          break;
        }
        offset += d.consumed;
        continue;
      }
      if (!d.header.is_response() &&
          d.header.opcode == static_cast<std::uint16_t>(protocol::Opcode::kCreate)) {
        creates.push_back({d.header, d.body});
        offset += d.consumed;
        continue;
      }
      flush_creates();
      if (d.header.is_response()) {
        counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        handlers.append_error(
            d.header, Status::InvalidArgument("clients send requests, not responses"), &out);
      } else {
        handlers.handle(d.header, d.body, &state, &out);
      }
      offset += d.consumed;
    }
    flush_creates();
    if (offset > 0) {
      std::memmove(in.data(), in.data() + offset, used - offset);
      used -= offset;
    }
    conn.partial_frame = used > 0;
    // Give back a buffer that a large frame grew, once it is done with.
    if (used == 0 && in.size() > kReadChunk) {
      in.resize(kReadChunk);
      in.shrink_to_fit();
    }
    if (!co_await write_out(stream, out) || state.close) break;
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
}

template <typename Stream>
asio::awaitable<bool> Server::Impl::write_out(Stream& stream, std::string& out) {
  if (out.empty()) co_return true;
  auto [ec, written] = co_await asio::async_write(stream, asio::buffer(out), kTuple);
  (void)written;
  out.clear();
  if (out.capacity() > 4 * kReadChunk) out.shrink_to_fit();
  co_return !ec;
}

asio::awaitable<void> Server::Impl::serve_resp(std::shared_ptr<Connection> conn) {
  const resp::Limits limits;
  std::vector<char> in(kReadChunk);
  std::size_t used = 0;
  std::string out;
  std::vector<std::string_view> args;
  std::vector<std::vector<std::string_view>> commands;  // reused from read to read
  resp::ClientState client;
  client.id = next_client_id.fetch_add(1, std::memory_order_relaxed);
  client.role = handlers.auth().initial_role();
  asio::error_code no_peer;
  client.peer = conn->socket.remote_endpoint(no_peer).address().to_string();
  bool close_after_write = false;
  while (!close_after_write) {
    if (used == in.size()) {
      // One command fills the buffer: grow it with what arrives, up to the command limit.
      if (in.size() >= limits.max_command_bytes) {
        counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        resp::append_error(&out, "ERR Protocol error: command longer than " +
                                     std::to_string(limits.max_command_bytes) + " bytes");
        co_await write_out(conn->socket, out);
        break;
      }
      in.resize(std::min(in.size() * 2, limits.max_command_bytes));
    }
    auto [ec, n] = co_await conn->socket.async_read_some(
        asio::buffer(in.data() + used, in.size() - used), kTuple);
    if (ec || n == 0) break;
    used += n;
    conn->last_activity = Clock::now();

    // The commands of this read are collected and executed together (their SETs share
    // RocksDB writes). Their arguments view into `in`, which stays put until they have run;
    // a quoted inline argument lives in the parser's per-thread storage instead, so such a
    // command runs at once, after those collected before it.
    std::size_t offset = 0;
    std::size_t collected = 0;
    auto run_collected = [&] {
      resp_commands->execute_all(std::span(commands.data(), collected), client, &out);
      collected = 0;
      if (client.close) close_after_write = true;
    };
    while (offset < used && !close_after_write) {
      const resp::Parsed p =
          resp::parse_command(std::string_view(in.data() + offset, used - offset), limits, &args);
      if (p.kind == resp::Parsed::Kind::kNeedMore) break;
      if (p.kind == resp::Parsed::Kind::kError) {
        run_collected();
        if (!client.close) {
          counters.protocol_errors.fetch_add(1, std::memory_order_relaxed);
          resp::append_error(&out, p.error);
        }
        close_after_write = true;
        break;
      }
      offset += p.consumed;
      if (p.kind == resp::Parsed::Kind::kEmpty) continue;
      const bool in_buffer = std::all_of(args.begin(), args.end(), [&](std::string_view a) {
        return a.data() >= in.data() && a.data() + a.size() <= in.data() + used;
      });
      if (collected == commands.size()) commands.emplace_back();
      commands[collected++].assign(args.begin(), args.end());
      if (!in_buffer) run_collected();
    }
    if (collected > 0 && !close_after_write &&
        (client.role == Role::kApp || client.role == Role::kAdmin) &&
        workers[conn->worker].group->add(std::span(commands.data(), collected), &out)) {
      // Only SETs: they join the other connections' SETs of this turn of the event loop, and
      // the group runs once the handlers already queued (other reads) have added theirs.
      collected = 0;
      Worker& worker = workers[conn->worker];
      worker.waiting.push_back(conn.get());
      if (!worker.run_posted) {
        worker.run_posted = true;
        asio::post(conn->socket.get_executor(), [&worker] {
          worker.run_posted = false;
          worker.group->run();
          for (Connection* waiting : worker.waiting) {
            waiting->group_done = true;
            waiting->wake.cancel();
          }
          worker.waiting.clear();
        });
      }
      conn->group_done = false;
      conn->wake.expires_at(Clock::time_point::max());
      while (!conn->group_done) co_await conn->wake.async_wait(kTuple);
    }
    run_collected();
    if (offset > 0) {
      std::memmove(in.data(), in.data() + offset, used - offset);
      used -= offset;
    }
    conn->partial_frame = used > 0;
    if (used < kReadChunk && in.size() > kReadChunk) {
      in.resize(kReadChunk);
      in.shrink_to_fit();
    }
    if (!co_await write_out(conn->socket, out)) break;
    if (stopping.load() && used == 0) break;
  }
  finish(conn, true);
}

}  // namespace sessiond::daemon
