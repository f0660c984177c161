#include "tcp_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "test_node.h"

namespace sessiond::testing {

std::unique_ptr<TcpProxy> TcpProxy::start(std::string upstream) {
  std::unique_ptr<TcpProxy> p(new TcpProxy());
  p->upstream_ = std::move(upstream);
  p->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (p->listen_fd_ < 0) return nullptr;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(p->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(p->listen_fd_, 64) != 0 ||
      ::getsockname(p->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      ::pipe2(p->wake_fd_, O_CLOEXEC | O_NONBLOCK) != 0) {
    return nullptr;
  }
  p->address_ = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  p->thread_ = std::thread([raw = p.get()] { raw->loop(); });
  return p;
}

TcpProxy::~TcpProxy() {
  stop_ = true;
  if (wake_fd_[1] >= 0) (void)::write(wake_fd_[1], "x", 1);
  if (thread_.joinable()) thread_.join();
  for (int fd : {listen_fd_, wake_fd_[0], wake_fd_[1]}) {
    if (fd >= 0) ::close(fd);
  }
}

void TcpProxy::cut() {
  cut_ = true;
  const std::uint64_t asked = ++cuts_asked_;
  (void)::write(wake_fd_[1], "x", 1);
  while (cuts_done_.load() < asked) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void TcpProxy::loop() {
  struct Pair {
    int a, b;  // the accepted connection and the one to upstream
  };
  std::vector<Pair> pairs;
  auto close_pair = [](Pair& p) {
    ::close(p.a);
    ::close(p.b);
  };
  char buffer[64 << 10];
  while (!stop_) {
    if (cut_) {
      for (auto& p : pairs) close_pair(p);
      pairs.clear();
      cuts_done_ = cuts_asked_.load();
    }
    std::vector<pollfd> fds;
    fds.push_back({listen_fd_, POLLIN, 0});
    fds.push_back({wake_fd_[0], POLLIN, 0});
    for (const auto& p : pairs) {
      fds.push_back({p.a, POLLIN, 0});
      fds.push_back({p.b, POLLIN, 0});
    }
    // A short timeout: cut() is seen within it.
    if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
    const std::size_t polled = pairs.size();  // a pair accepted below is polled next round
    if (fds[1].revents & POLLIN) {
      char drain[64];
      (void)::read(wake_fd_[0], drain, sizeof drain);
      continue;  // a cut: seen at the top
    }
    if (fds[0].revents & POLLIN) {
      const int a = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (a >= 0) {
        const int b = cut_ ? -1 : connect_to(upstream_);
        if (b < 0) {
          ::close(a);
        } else {
          pairs.push_back({a, b});
          ++accepted_;
        }
      }
    }
    std::vector<bool> dead(pairs.size(), false);
    for (std::size_t i = 0; i < polled; ++i) {
      const pollfd& fa = fds[2 + 2 * i];
      const pollfd& fb = fds[3 + 2 * i];
      for (const auto& [from, to] : {std::pair{&fa, pairs[i].b}, std::pair{&fb, pairs[i].a}}) {
        if (!(from->revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const ssize_t n = ::read(from->fd, buffer, sizeof buffer);
        if (n <= 0) {
          dead[i] = true;
          continue;
        }
        // Loopback and small test traffic: a blocking write of what was read.
        ssize_t off = 0;
        while (off < n) {
          const ssize_t w = ::write(to, buffer + off, static_cast<std::size_t>(n - off));
          if (w <= 0) {
            dead[i] = true;
            break;
          }
          off += w;
        }
      }
    }
    std::vector<Pair> alive;
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      if (dead[i]) {
        close_pair(pairs[i]);
      } else {
        alive.push_back(pairs[i]);
      }
    }
    pairs = std::move(alive);
  }
  for (auto& p : pairs) close_pair(p);
}

}  // namespace sessiond::testing
