// A blocking RESP client for the integration tests that speak the Redis protocol over plain
// sockets, and the RESP address a node logs.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/test_node.h"

namespace sessiond::testing {

// The RESP address from the node's log ("RESP listening on HOST:PORT"), waiting for it.
inline std::string resp_address(const TestNode& node) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string log = node.log();
    const auto at = log.find("RESP listening on ");
    if (at != std::string::npos) {
      const auto start = at + std::string("RESP listening on ").size();
      const auto end = log.find_first_of(" \r\n", start);
      if (end != std::string::npos) return log.substr(start, end - start);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "no RESP listening line in:\n" << node.log();
  return "";
}

// A blocking RESP client: sends commands as arrays of bulk strings, reads replies as text
// ("+OK", "-ERR ...", ":1", "$v" for a bulk, "$nil", "*N" then the elements).
class RespConn {
 public:
  explicit RespConn(const std::string& address) {
    fd_ = connect_to(address);
    connected_ = fd_ >= 0;
    timeval tv{10, 0};  // no read waits forever
    if (connected_) setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~RespConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  void send_raw(const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<std::size_t>(n);
    }
  }
  static std::string encode(const std::vector<std::string>& args) {
    std::string out = "*" + std::to_string(args.size()) + "\r\n";
    for (const std::string& a : args) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    return out;
  }
  std::string call(const std::vector<std::string>& args) {
    send_raw(encode(args));
    return reply().value_or("(closed)");
  }
  // One reply, or nullopt when the server closed the connection (or 10 s passed).
  std::optional<std::string> reply() {
    auto line = read_line();
    if (!line) return std::nullopt;
    if ((*line)[0] == '$') {
      const long n = std::stol(line->substr(1));
      if (n < 0) return "$nil";
      auto body = read_exact(static_cast<std::size_t>(n) + 2);
      if (!body) return std::nullopt;
      return "$" + body->substr(0, static_cast<std::size_t>(n));
    }
    if ((*line)[0] == '*') {
      std::string out = *line;
      for (long i = 0, n = std::stol(line->substr(1)); i < n; ++i) {
        auto element = reply();
        if (!element) return std::nullopt;
        out += " " + *element;
      }
      return out;
    }
    return line;
  }
  // True when the server has closed the connection (EOF within 10 s).
  bool closed_by_server() {
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

 private:
  std::optional<std::string> read_line() {
    for (;;) {
      const auto end = buffer_.find("\r\n");
      if (end != std::string::npos) {
        std::string line = buffer_.substr(0, end);
        buffer_.erase(0, end + 2);
        return line;
      }
      if (!fill()) return std::nullopt;
    }
  }
  std::optional<std::string> read_exact(std::size_t n) {
    while (buffer_.size() < n) {
      if (!fill()) return std::nullopt;
    }
    std::string out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return out;
  }
  bool fill() {
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }
  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

}  // namespace sessiond::testing
