#include "test_etcd.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "test_node.h"

namespace sessiond::testing {
namespace {

using namespace std::chrono_literals;

// Whether GET /health answers {"health":"true"} (a raw HTTP/1.0 request: no client library).
bool healthy(int port) {
  const int fd = connect_to("127.0.0.1:" + std::to_string(port));
  if (fd < 0) return false;
  const std::string request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  bool ok = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(request.size());
  std::string answer;
  char buffer[1024];
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  while (ok) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    answer.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return answer.find("\"health\":\"true\"") != std::string::npos;
}

// Binds 127.0.0.1:port (0: the kernel's pick) and returns the port bound, or 0.
int bind_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  return ok ? ntohs(addr.sin_port) : 0;
}

// The first port of the kernel's ephemeral range (net.ipv4.ip_local_port_range).
int ephemeral_low() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0;
  return in >> low ? low : 32768;
}

}  // namespace

// Chosen at random below the ephemeral range: a port the kernel hands out there (to a socket
// bound to port 0 or to an outgoing connection, in any process) could be taken between this
// check and the caller's bind, which made tests that pick their nodes' ports in advance fail
// now and then with "Address already in use" (seen in RegionsTest under ctest -j2). Below the
// range only another test's own pick can collide, one chance in about 20,000 per pick.
int free_loopback_port() {
  constexpr int kFloor = 10000;
  const int low = ephemeral_low();
  if (low - kFloor >= 1000) {
    thread_local std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pick(kFloor, low - 1);
    for (int attempt = 0; attempt < 100; ++attempt) {
      if (const int port = bind_loopback(pick(rng)); port != 0) return port;
    }
  }
  return bind_loopback(0);
}

std::unique_ptr<TestEtcd> TestEtcd::start(const std::filesystem::path& dir, std::string* error) {
  std::unique_ptr<TestEtcd> etcd(new TestEtcd());
  etcd->dir_ = dir;
  std::filesystem::create_directories(dir);
  etcd->client_port_ = free_loopback_port();
  etcd->peer_port_ = free_loopback_port();
  etcd->endpoint_ = "127.0.0.1:" + std::to_string(etcd->client_port_);
  if (!etcd->launch(error)) return nullptr;
  return etcd;
}

bool TestEtcd::launch(std::string* error) {
  const std::string client = "http://" + endpoint_;
  const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  const std::vector<std::string> args = {"etcd",
                                         "--name=default",
                                         "--data-dir=" + (dir_ / "data").string(),
                                         "--listen-client-urls=" + client,
                                         "--advertise-client-urls=" + client,
                                         "--listen-peer-urls=" + peer,
                                         "--initial-advertise-peer-urls=" + peer,
                                         "--initial-cluster=default=" + peer,
                                         "--logger=zap",
                                         "--log-outputs=stderr"};
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives a test that crashed
    const int null = ::open("/dev/null", O_RDWR);
    const int log = ::open((dir_ / "etcd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ::dup2(null, STDIN_FILENO);
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    ::execvp("etcd", argv.data());
    std::_Exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (healthy(client_port_)) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      *error = "etcd exited at start (is etcd-server installed? scripts/setup installs it); see " +
               (dir_ / "etcd.log").string();
      return false;
    }
    std::this_thread::sleep_for(50ms);
  }
  *error = "etcd was not healthy within 20 s";
  return false;
}

void TestEtcd::pause() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void TestEtcd::resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

void TestEtcd::kill_hard() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

bool TestEtcd::restart(std::string* error) {
  kill_hard();
  return launch(error);
}

TestEtcd::~TestEtcd() { kill_hard(); }

}  // namespace sessiond::testing
