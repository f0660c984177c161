#include "replication/peer_link.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "protocol/host_port.h"
#include "protocol/sessiond.pb.h"

namespace sessiond::replication {
namespace {

using Steady = std::chrono::steady_clock;

int remaining_ms(Steady::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

}  // namespace

PeerLink::PeerLink(std::string address, std::string peer_secret, std::chrono::milliseconds timeout)
    : address_(std::move(address)), secret_(std::move(peer_secret)), timeout_(timeout) {}

PeerLink::~PeerLink() { close(); }

void PeerLink::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buffer_.clear();
}

Status PeerLink::connect() {
  auto hp = parse_host_port(address_);
  if (!hp.ok()) return hp.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc =
          ::getaddrinfo(hp->host.c_str(), std::to_string(hp->port).c_str(), &hints, &found);
      rc != 0) {
    return Status::Unavailable("peer " + address_ + ": " + ::gai_strerror(rc));
  }
  const auto deadline = Steady::now() + timeout_;
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, remaining_ms(deadline)) == 1) {
        int error = 0;
        socklen_t len = sizeof error;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
        rc = error == 0 ? 0 : -1;
        errno = error == 0 ? 0 : error;
      } else {
        errno = ETIMEDOUT;
      }
    }
    if (rc == 0) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      fd_ = fd;
      break;
    }
    why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(found);
  if (fd_ < 0) return Status::Unavailable("cannot connect to peer " + address_ + ": " + why);
  if (!secret_.empty()) {
    wire::AuthRequest auth;
    auth.set_secret(secret_);
    wire::AuthResponse role;
    std::uint32_t id = 0;
    Status s = write_frame(protocol::Opcode::kAuth, auth, &id);
    if (s.ok()) s = receive(id, &role);
    if (!s.ok()) {
      close();
      return s;
    }
  }
  return {};
}

Status PeerLink::call(protocol::Opcode opcode, const google::protobuf::MessageLite& request,
                      google::protobuf::MessageLite* response) {
  auto id = send(opcode, request);
  if (!id.ok()) return id.status();
  return receive(*id, response);
}

Result<std::uint32_t> PeerLink::send(protocol::Opcode opcode,
                                     const google::protobuf::MessageLite& request) {
  if (fd_ < 0) {
    if (Status s = connect(); !s.ok()) return s;
  }
  std::uint32_t id = 0;
  if (Status s = write_frame(opcode, request, &id); !s.ok()) return s;
  return id;
}

Status PeerLink::write_frame(protocol::Opcode opcode, const google::protobuf::MessageLite& request,
                             std::uint32_t* request_id) {
  const auto deadline = Steady::now() + timeout_;
  protocol::FrameHeader h;
  h.opcode = static_cast<std::uint16_t>(opcode);
  h.request_id = next_request_++;
  *request_id = h.request_id;
  std::string out;
  if (Status s = protocol::append_frame(h, request, &out, 64u << 20); !s.ok()) return s;
  std::string_view pending = out;
  while (!pending.empty()) {
    pollfd p{fd_, POLLOUT, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) != 1) {
      close();
      return Status::Unavailable("peer " + address_ + ": send timed out");
    }
    const ssize_t n = ::send(fd_, pending.data(), pending.size(), MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      close();
      return Status::Unavailable("peer " + address_ + ": " + why);
    }
    pending.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

Status PeerLink::receive(std::uint32_t request_id, google::protobuf::MessageLite* response) {
  if (fd_ < 0) return Status::Unavailable("peer " + address_ + ": connection closed");
  const auto deadline = Steady::now() + timeout_;
  for (;;) {
    const auto bytes =
        std::span(reinterpret_cast<const std::uint8_t*>(buffer_.data()), buffer_.size());
    protocol::Decoded d = protocol::decode_frame(bytes, 64u << 20);
    if (d.kind == protocol::Decoded::Kind::kFrame) {
      const std::string body(reinterpret_cast<const char*>(d.body.data()), d.body.size());
      const protocol::FrameHeader answer = d.header;
      buffer_.erase(0, d.consumed);
      if (answer.request_id != request_id || !answer.is_response()) {
        close();
        return Status::Unavailable("peer " + address_ + ": an answer out of order");
      }
      if (answer.status != StatusCode::kOk) {
        wire::ErrorResponse error;
        error.ParseFromString(body);
        return Status(answer.status, "peer " + address_ + ": " + error.message());
      }
      if (!response->ParseFromString(body)) {
        return Status::Internal("peer " + address_ + ": an answer that does not parse");
      }
      return {};
    }
    if (d.kind == protocol::Decoded::Kind::kError) {
      close();
      return Status::Unavailable("peer " + address_ + ": " + d.error.message());
    }
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) != 1) {
      close();
      return Status::Unavailable("peer " + address_ + ": no answer in time");
    }
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) {
      close();
      return Status::Unavailable("peer " + address_ + ": connection closed");
    }
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

}  // namespace sessiond::replication
