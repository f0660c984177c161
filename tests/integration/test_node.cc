#include "test_node.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>
#include <thread>

#ifndef SESSIOND_DAEMON_PATH
#error "SESSIOND_DAEMON_PATH must name the sessiond binary"
#endif

namespace sessiond::testing {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// fork + exec with stdout and stderr going to the given descriptors.
pid_t spawn(const std::string& program, const std::vector<std::string>& args, int out_fd,
            int err_fd) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives a test that crashed
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    ::execv(program.c_str(), argv.data());
    std::_Exit(127);
  }
  return pid;
}

}  // namespace

std::unique_ptr<TestNode> TestNode::start(const Options& options, std::string* error) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    *error = std::string("pipe: ") + std::strerror(errno);
    return nullptr;
  }
  std::unique_ptr<TestNode> node(new TestNode());
  // The daemon logs to stdout or stderr; both go to one pipe.
  std::vector<std::string> args = {
      "--listen",     options.listen,     "--data-dir", options.data_dir.string(),
      "--durability", options.durability, "--threads",  std::to_string(options.threads)};
  if (std::find(options.extra_args.begin(), options.extra_args.end(), "--admin-listen") ==
      options.extra_args.end()) {
    args.insert(args.end(), {"--admin-listen", "127.0.0.1:0"});
  }
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  node->pid_ = spawn(SESSIOND_DAEMON_PATH, args, fds[1], fds[1]);
  ::close(fds[1]);
  node->log_fd_ = fds[0];
  node->log_reader_ = std::thread([raw = node.get()] {
    char buffer[4096];
    while (true) {
      const ssize_t n = ::read(raw->log_fd_, buffer, sizeof buffer);
      if (n <= 0) break;
      std::lock_guard lock(raw->log_mutex_);
      raw->log_.append(buffer, static_cast<std::size_t>(n));
    }
  });

  const std::string kListening = options.ready_text;
  const auto deadline = Clock::now() + 15s;
  while (Clock::now() < deadline) {
    {
      std::lock_guard lock(node->log_mutex_);
      const auto at = node->log_.find(kListening);
      if (at != std::string::npos) {
        const auto begin = at + kListening.size();
        const auto end = node->log_.find_first_not_of("0123456789.:", begin);
        if (end != std::string::npos) {  // the whole address has arrived
          node->address_ = node->log_.substr(begin, end - begin);
          return node;
        }
      }
    }
    int status = 0;
    if (::waitpid(node->pid_, &status, WNOHANG) == node->pid_) {
      node->pid_ = -1;
      node->log_reader_.join();
      *error = "sessiond exited before listening:\n" + node->log_;
      return nullptr;
    }
    // Polling the log with a short pause: the condition, not the pause, ends the wait.
    std::this_thread::sleep_for(10ms);
  }
  *error = "sessiond did not report 'listening on' within 15 s:\n" + node->log();
  return nullptr;  // the destructor stops it
}

std::string TestNode::admin_address() const {
  constexpr std::string_view kAdmin = "admin HTTP listener on ";
  const std::string text = log();
  const auto at = text.find(kAdmin);
  if (at == std::string::npos) return {};
  const auto begin = at + kAdmin.size();
  return text.substr(begin, text.find_first_not_of("0123456789.:", begin) - begin);
}

void TestNode::wait_and_reap(std::chrono::milliseconds patience) {
  if (pid_ <= 0) return;
  const auto deadline = Clock::now() + patience;
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      break;
    }
    if (Clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      exit_status_ = -1;
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  pid_ = -1;
  if (log_reader_.joinable()) log_reader_.join();
  if (log_fd_ >= 0) {
    ::close(log_fd_);
    log_fd_ = -1;
  }
}

TestNode::~TestNode() {
  if (pid_ > 0) ::kill(pid_, SIGTERM);
  wait_and_reap(10s);
}

void TestNode::kill_hard() {
  if (pid_ > 0) ::kill(pid_, SIGKILL);
  wait_and_reap(10s);
}

int TestNode::terminate() { return stop_with(SIGTERM); }

int TestNode::stop_with(int number) {
  if (pid_ > 0) ::kill(pid_, number);
  wait_and_reap(10s);
  return exit_status_;
}

void TestNode::send_signal(int number) {
  if (pid_ <= 0) return;
  ::kill(pid_, number);
  if (number != SIGSTOP) return;
  // Every thread's state (the field after the command's closing parenthesis) is T: stopped.
  auto all_stopped = [this] {
    std::error_code ec;
    bool any = false;
    for (const auto& task :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid_) + "/task", ec)) {
      std::ifstream in(task.path() / "stat");
      std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const auto paren = stat.rfind(')');
      if (paren == std::string::npos || paren + 2 >= stat.size()) continue;  // gone meanwhile
      const char state = stat[paren + 2];
      if (state != 'T' && state != 't') return false;
      any = true;
    }
    return any;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!all_stopped() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool TestNode::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) != pid_) return true;
  exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  pid_ = -1;
  if (log_reader_.joinable()) log_reader_.join();
  return false;
}

std::string TestNode::log() const {
  std::lock_guard lock(log_mutex_);
  return log_;
}

bool TestNode::wait_for_log(const std::string& text, std::chrono::milliseconds patience,
                            std::size_t count) const {
  const auto deadline = Clock::now() + patience;
  while (true) {
    std::size_t seen = 0;
    {
      std::lock_guard lock(log_mutex_);
      for (auto at = log_.find(text); at != std::string::npos; at = log_.find(text, at + 1)) {
        ++seen;
      }
    }
    if (seen >= count) return true;
    if (Clock::now() >= deadline) return false;
    // Polling the log with a short pause: the condition, not the pause, ends the wait.
    std::this_thread::sleep_for(10ms);
  }
}

ProcessResult run_process(const std::string& program, const std::vector<std::string>& args) {
  int out[2];
  int err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return {};
  const pid_t pid = spawn(program, args, out[1], err[1]);
  ::close(out[1]);
  ::close(err[1]);
  ProcessResult result;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  const auto deadline = Clock::now() + 30s;
  while (open_fds > 0 && Clock::now() < deadline) {
    if (::poll(fds, 2, 100) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buffer[4096];
      const ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        sinks[i]->append(buffer, static_cast<std::size_t>(n));
      }
    }
  }
  if (open_fds > 0) ::kill(pid, SIGKILL);
  for (auto& fd : fds) {
    if (fd.fd >= 0) ::close(fd.fd);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

int connect_to(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) return -1;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1))));
  if (::inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr) != 1) return -1;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

std::size_t TestNode::rss_bytes() const {
  std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // "N kB"
  }
  return 0;
}

}  // namespace sessiond::testing
