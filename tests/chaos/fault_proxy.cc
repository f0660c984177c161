// chaos-proxy: the fault proxy of a chaos region's WAN link (docs/chaos.md). The region's router
// redirects every TCP connection that leaves for another region to it (nftables "redirect"); it
// dials the connection's original destination (SO_ORIGINAL_DST) and relays both directions,
// delaying, slowing or resetting what it relays as its settings say. The kernel here has no
// netem, and a userspace relay is what the WAN looks like to the nodes anyway: TCP never loses
// bytes, it delays them, so a "dropped" segment arrives a retransmission timeout late.
//
//   chaos-proxy --listen 0.0.0.0:7999 --config FILE [--seed N]
//
// FILE holds KEY=VALUE words, reread on SIGHUP (empty: a clean link):
//   latency_ms=N     added to every chunk, each direction
//   jitter_ms=N      plus a uniform 0..N (order is kept: a chunk never overtakes the one before)
//   drop=P           probability that a chunk is "lost": it arrives kRetransmitMs later
//   bandwidth_bps=N  bytes per second, each direction of each connection (0: no cap)
//   reset=P          probability, per chunk, that the connection is reset (RST both ways)
// Counters go to stderr on SIGHUP and at exit.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kRetransmitMs = 200;           // Linux's minimum RTO
constexpr std::size_t kChunk = 16 * 1024;    // bytes read at once
constexpr std::size_t kMaxQueued = 4 << 20;  // bytes held per direction before reading stops

struct Settings {
  int latency_ms = 0, jitter_ms = 0;
  double drop = 0, reset = 0;
  std::uint64_t bandwidth_bps = 0;
};

std::mutex settings_mutex;  // guards settings
Settings settings;
std::string config_path;
std::uint64_t seed = 1;  // each connection's faults come from seed + its number
std::atomic<std::uint64_t> connections{0}, chunks{0}, drops{0}, resets{0}, dial_failures{0};

Settings current() {
  std::lock_guard lock(settings_mutex);
  return settings;
}

bool load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return false;
  Settings next;
  std::string word;
  while (in >> word) {
    auto eq = word.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "chaos-proxy: ignoring '%s' (want KEY=VALUE)\n", word.c_str());
      continue;
    }
    std::string key = word.substr(0, eq), value = word.substr(eq + 1);
    if (key == "latency_ms")
      next.latency_ms = std::atoi(value.c_str());
    else if (key == "jitter_ms")
      next.jitter_ms = std::atoi(value.c_str());
    else if (key == "drop")
      next.drop = std::atof(value.c_str());
    else if (key == "reset")
      next.reset = std::atof(value.c_str());
    else if (key == "bandwidth_bps")
      next.bandwidth_bps = std::strtoull(value.c_str(), nullptr, 10);
    else
      std::fprintf(stderr, "chaos-proxy: unknown setting '%s'\n", key.c_str());
  }
  std::lock_guard lock(settings_mutex);
  settings = next;
  return true;
}

void report(const char* when) {
  auto s = current();
  std::fprintf(
      stderr,
      "chaos-proxy %s: latency_ms=%d jitter_ms=%d drop=%g bandwidth_bps=%llu reset=%g | "
      "connections=%llu chunks=%llu drops=%llu resets=%llu dial_failures=%llu\n",
      when, s.latency_ms, s.jitter_ms, s.drop, static_cast<unsigned long long>(s.bandwidth_bps),
      s.reset, static_cast<unsigned long long>(connections.load()),
      static_cast<unsigned long long>(chunks.load()), static_cast<unsigned long long>(drops.load()),
      static_cast<unsigned long long>(resets.load()),
      static_cast<unsigned long long>(dial_failures.load()));
}

void abort_socket(int fd) {  // close with RST
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::shutdown(fd, SHUT_RDWR);
}

// One relayed connection: two directions, each a reader thread that stamps chunks with their
// delivery time and a writer thread that delivers them then.
class Relay : public std::enable_shared_from_this<Relay> {
 public:
  Relay(int client, int server, std::uint64_t number)
      : fds_{client, server},
        random_{std::mt19937_64(seed * 1'000'003 + number),
                std::mt19937_64(seed * 1'000'003 + number + 1)} {}
  ~Relay() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void start() {
    for (int dir = 0; dir < 2; ++dir) {
      auto self = shared_from_this();
      std::thread([self, dir] { self->read_loop(dir); }).detach();
      std::thread([self, dir] { self->write_loop(dir); }).detach();
    }
  }

 private:
  struct Chunk {
    Clock::time_point at;
    std::string bytes;  // empty: the end of the stream
  };
  struct Direction {
    std::mutex mutex;  // guards the fields below
    std::condition_variable changed;
    std::deque<Chunk> queue;
    std::size_t queued = 0;
    Clock::time_point last_at{};
  };

  void fail() {
    bool expected = false;
    if (!failed_.compare_exchange_strong(expected, true)) return;
    abort_socket(fds_[0]);
    abort_socket(fds_[1]);
    for (auto& d : dirs_) {
      std::lock_guard lock(d.mutex);
      d.changed.notify_all();
    }
  }

  void read_loop(int dir) {  // dir 0: client -> server; 1: server -> client
    auto& random = random_[dir];
    auto& d = dirs_[dir];
    std::string buffer(kChunk, '\0');
    for (;;) {
      ssize_t n = ::read(fds_[dir], buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 || failed_) return fail();
      auto s = current();
      std::uniform_real_distribution<double> coin(0, 1);
      if (n > 0 && s.reset > 0 && coin(random) < s.reset) {
        ++resets;
        return fail();
      }
      auto at = Clock::now() + std::chrono::milliseconds(s.latency_ms);
      if (s.jitter_ms > 0) {
        at += std::chrono::milliseconds(std::uniform_int_distribution<int>(0, s.jitter_ms)(random));
      }
      if (n > 0 && s.drop > 0 && coin(random) < s.drop) {
        ++drops;
        at += std::chrono::milliseconds(kRetransmitMs);
      }
      std::unique_lock lock(d.mutex);
      if (s.bandwidth_bps > 0 && n > 0) {
        auto transfer = std::chrono::microseconds(static_cast<std::int64_t>(
            static_cast<double>(n) * 1e6 / static_cast<double>(s.bandwidth_bps)));
        at = std::max(at, d.last_at + std::chrono::duration_cast<Clock::duration>(transfer));
      }
      at = std::max(at, d.last_at);
      d.last_at = at;
      d.queue.push_back(Chunk{at, buffer.substr(0, static_cast<std::size_t>(n))});
      d.queued += static_cast<std::size_t>(n);
      ++chunks;
      d.changed.notify_all();
      if (n == 0) return;
      d.changed.wait(lock, [&] { return d.queued < kMaxQueued || failed_; });
      if (failed_) return;
    }
  }

  void write_loop(int dir) {
    auto& d = dirs_[dir];
    int to = fds_[1 - dir];
    for (;;) {
      Chunk chunk;
      {
        std::unique_lock lock(d.mutex);
        for (;;) {
          if (failed_) return;
          if (!d.queue.empty()) {
            if (Clock::now() >= d.queue.front().at) break;
            d.changed.wait_until(lock, d.queue.front().at);
          } else {
            d.changed.wait(lock);
          }
        }
        chunk = std::move(d.queue.front());
        d.queue.pop_front();
        d.queued -= chunk.bytes.size();
        d.changed.notify_all();
      }
      if (chunk.bytes.empty()) {
        ::shutdown(to, SHUT_WR);
        return;
      }
      std::size_t done = 0;
      while (done < chunk.bytes.size()) {
        ssize_t n = ::send(to, chunk.bytes.data() + done, chunk.bytes.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fail();
        done += static_cast<std::size_t>(n);
      }
    }
  }

  int fds_[2];
  std::mt19937_64 random_[2];  // per direction: each used by its reader only
  Direction dirs_[2];
  std::atomic<bool> failed_{false};
};

void serve(int client) {
  sockaddr_in original{};
  socklen_t length = sizeof original;
  if (::getsockopt(client, SOL_IP, SO_ORIGINAL_DST, &original, &length) != 0) {
    std::fprintf(stderr, "chaos-proxy: a connection without an original destination: %s\n",
                 std::strerror(errno));
    ::close(client);
    return;
  }
  int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (server < 0 ||
      ::connect(server, reinterpret_cast<sockaddr*>(&original), sizeof original) != 0) {
    ++dial_failures;
    if (server >= 0) ::close(server);
    abort_socket(client);
    ::close(client);
    return;
  }
  int one = 1;
  ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const std::uint64_t number = ++connections;
  std::make_shared<Relay>(client, server, number)->start();
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "0.0.0.0:7999";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--listen")
      listen = argv[i + 1];
    else if (flag == "--config")
      config_path = argv[i + 1];
    else if (flag == "--seed")
      seed = std::strtoull(argv[i + 1], nullptr, 10);
    else {
      std::fprintf(stderr, "usage: chaos-proxy --listen HOST:PORT --config FILE [--seed N]\n");
      return 2;
    }
  }
  if (argc % 2 == 0 || config_path.empty()) {
    std::fprintf(stderr, "usage: chaos-proxy --listen HOST:PORT --config FILE [--seed N]\n");
    return 2;
  }
  if (!load(config_path)) {
    std::fprintf(stderr, "chaos-proxy: cannot read %s\n", config_path.c_str());
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread([signals] {
    for (;;) {
      int signal = 0;
      sigwait(&signals, &signal);
      if (signal == SIGHUP) {
        if (!load(config_path))
          std::fprintf(stderr, "chaos-proxy: cannot read %s\n", config_path.c_str());
        report("reloaded");
      } else {
        report("exiting");
        std::_Exit(0);
      }
    }
  }).detach();

  auto colon = listen.rfind(':');
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(std::atoi(listen.c_str() + colon + 1)));
  if (colon == std::string::npos ||
      ::inet_pton(AF_INET, listen.substr(0, colon).c_str(), &address.sin_addr) != 1) {
    std::fprintf(stderr, "chaos-proxy: --listen wants IPv4:PORT, got %s\n", listen.c_str());
    return 2;
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(fd, 128) != 0) {
    std::fprintf(stderr, "chaos-proxy: cannot listen on %s: %s\n", listen.c_str(),
                 std::strerror(errno));
    return 1;
  }
  report("started");
  for (;;) {
    int client = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) continue;
      std::fprintf(stderr, "chaos-proxy: accept: %s\n", std::strerror(errno));
      return 1;
    }
    std::thread(serve, client).detach();
  }
}
