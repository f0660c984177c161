// A raw-frame connection for the integration tests that speak the native protocol byte by
// byte (no client library): send frames or any bytes, read whole frames with a deadline, and
// tell whether the server closed the connection.
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "protocol/frame.h"
#include "protocol/sessiond.pb.h"
#include "test_node.h"

namespace sessiond::testing {

struct Response {
  StatusCode status = StatusCode::kOk;
  std::uint32_t request_id = 0;
  std::uint16_t opcode = 0;
  std::string body;
  std::uint8_t flags = 0;
};

// A blocking loopback connection that sends raw bytes and reads whole frames with a deadline.
class Conn {
 public:
  explicit Conn(const std::string& address) {
    fd_ = connect_to(address);
    connected_ = fd_ >= 0;
  }
  ~Conn() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  void send_raw(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  void send(protocol::Opcode op, const google::protobuf::MessageLite& body,
            std::uint32_t request_id) {
    std::string out;
    protocol::FrameHeader h;
    h.opcode = static_cast<std::uint16_t>(op);
    h.request_id = request_id;
    ASSERT_TRUE(protocol::append_frame(h, body, &out).ok());
    send_raw(out);
  }
  // The next frame, or nullopt if the connection closed or the deadline passed.
  std::optional<Response> read(std::chrono::milliseconds patience = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    for (;;) {
      const auto span =
          std::span(reinterpret_cast<const std::uint8_t*>(buffer_.data()), buffer_.size());
      const auto d = protocol::decode_frame(span, 64u << 20);
      if (d.kind == protocol::Decoded::Kind::kFrame) {
        Response r{d.header.status, d.header.request_id, d.header.opcode,
                   std::string(reinterpret_cast<const char*>(d.body.data()), d.body.size()),
                   d.header.flags};
        buffer_.erase(0, d.consumed);
        return r;
      }
      if (d.kind == protocol::Decoded::Kind::kError) return std::nullopt;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
      char chunk[65536];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  // True when the server closed the connection within the deadline: an orderly close, or a
  // reset (what the kernel sends when the server closes with client bytes still unread).
  bool closed_by_server(std::chrono::milliseconds patience = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char chunk[4096];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
      if (n < 0) return false;
      // Bytes still in flight before the close (e.g. the error frame): keep draining.
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

template <typename M>
M parse(const Response& r) {
  M m;
  EXPECT_TRUE(m.ParseFromString(r.body));
  return m;
}

inline std::string error_message(const Response& r) {
  return parse<wire::ErrorResponse>(r).message();
}

}  // namespace sessiond::testing
