// A TCP forwarder on loopback for the tests that cut links between real processes: it listens on
// a free port and relays every connection to `upstream` until cut() closes them all (and
// closes every connection accepted while cut at once), and heal() lets them through again.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

namespace sessiond::testing {

class TcpProxy {
 public:
  // Empty when no port could be bound.
  static std::unique_ptr<TcpProxy> start(std::string upstream);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  const std::string& address() const { return address_; }
  // Returns once every relayed connection is closed: nothing passes after it.
  void cut();
  void heal() { cut_ = false; }
  // Connections relayed since start.
  std::size_t accepted() const { return accepted_.load(); }

 private:
  TcpProxy() = default;
  void loop();

  std::string upstream_;
  std::string address_;
  int listen_fd_ = -1;
  int wake_fd_[2] = {-1, -1};
  std::atomic<bool> cut_{false};
  std::atomic<std::uint64_t> cuts_asked_{0}, cuts_done_{0};
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> accepted_{0};
  std::thread thread_;
};

}  // namespace sessiond::testing
