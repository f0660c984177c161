// FakeNode: a loopback listener that speaks the sessiond frame protocol and answers each
// request as the test's handler says (an answer, an error with any header flags, or a dropped
// connection), recording every request. Enough of a node to check where the client sends
// calls, and with what bytes, without a daemon or a cluster.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "protocol/frame.h"
#include "protocol/status.h"

namespace sessiond::testing {

class FakeNode {
 public:
  struct Request {
    protocol::Opcode opcode;
    std::string body;
  };
  struct Answer {
    StatusCode status = StatusCode::kOk;
    std::string body;              // the serialized response (or ErrorResponse) message
    std::uint8_t flags = 0;        // besides kFlagResponse
    bool drop_connection = false;  // close the connection instead of answering
    bool no_answer = false;        // answer nothing, and go on with the next request
  };
  using Handler = std::function<Answer(const Request&)>;

  // Binds and listens at once (so address() is known); answers once start() has run.
  FakeNode() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_, 64), 0);
    socklen_t length = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &length);
    address_ = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  }

  ~FakeNode() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    if (acceptor_.joinable()) acceptor_.join();
    ::close(listen_fd_);
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mutex_);
      for (int fd : connections_) ::shutdown(fd, SHUT_RDWR);
      threads = std::move(threads_);
    }
    for (auto& thread : threads) thread.join();
  }

  FakeNode(const FakeNode&) = delete;
  FakeNode& operator=(const FakeNode&) = delete;

  // Starts answering with `handler` (called under the node's lock, one request at a time). It
  // may run until the node's destructor has begun: what it refers to must outlive the node
  // (declared before it) or be copied into it.
  void start(Handler handler) {
    handler_ = std::move(handler);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  const std::string& address() const { return address_; }

  // Every request received so far, in order.
  std::vector<Request> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  std::vector<Request> requests(protocol::Opcode opcode) const {
    std::vector<Request> out;
    for (auto& request : requests()) {
      if (request.opcode == opcode) out.push_back(request);
    }
    return out;
  }

 private:
  void accept_loop() {
    while (true) {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;  // shut down
      std::lock_guard lock(mutex_);
      connections_.push_back(fd);
      threads_.emplace_back([this, fd] { serve(fd); });
    }
  }

  static bool read_exactly(int fd, std::uint8_t* out, std::size_t size) {
    while (size > 0) {
      const ssize_t n = ::recv(fd, out, size, 0);
      if (n <= 0) return false;
      out += n;
      size -= static_cast<std::size_t>(n);
    }
    return true;
  }

  void serve(int fd) {
    std::vector<std::uint8_t> frame(protocol::kHeaderSize);
    while (read_exactly(fd, frame.data(), protocol::kHeaderSize)) {
      const std::uint32_t length = static_cast<std::uint32_t>(frame[12]) | frame[13] << 8 |
                                   frame[14] << 16 | static_cast<std::uint32_t>(frame[15]) << 24;
      frame.resize(protocol::kHeaderSize + length);
      if (!read_exactly(fd, frame.data() + protocol::kHeaderSize, length)) break;
      const auto decoded = protocol::decode_frame(frame);
      if (decoded.kind != protocol::Decoded::Kind::kFrame) break;
      Request request{static_cast<protocol::Opcode>(decoded.header.opcode),
                      std::string(decoded.body.begin(), decoded.body.end())};
      Answer answer;
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(request);
        answer = handler_(request);
      }
      frame.resize(protocol::kHeaderSize);
      if (answer.drop_connection) break;
      if (answer.no_answer) continue;
      protocol::FrameHeader header;
      header.flags = protocol::kFlagResponse | answer.flags;
      header.opcode = decoded.header.opcode;
      header.status = answer.status;
      header.request_id = decoded.header.request_id;
      header.body_length = static_cast<std::uint32_t>(answer.body.size());
      std::string out(protocol::kHeaderSize, '\0');
      protocol::encode_header(header, reinterpret_cast<std::uint8_t*>(out.data()));
      out += answer.body;
      if (::send(fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) {
        break;
      }
    }
    ::shutdown(fd, SHUT_RDWR);
    std::lock_guard lock(mutex_);
    std::erase(connections_, fd);
    ::close(fd);
  }

  int listen_fd_ = -1;
  std::string address_;
  Handler handler_;
  std::thread acceptor_;
  mutable std::mutex mutex_;  // guards requests_, connections_, threads_ and handler calls
  std::vector<Request> requests_;
  std::vector<int> connections_;
  std::vector<std::thread> threads_;
};

}  // namespace sessiond::testing
