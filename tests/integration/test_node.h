// Helpers of the integration tests: a temporary directory, a real sessiond process on a free
// loopback port, and a way to run sessctl and capture what it prints.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/temp_dir.h"

namespace sessiond::testing {

// A sessiond process. start() waits (with a deadline) for the "listening on HOST:PORT" log line
// and reads the address from it; the log is drained by a thread so the node never blocks on it.
class TestNode {
 public:
  struct Options {
    std::filesystem::path data_dir;
    std::string listen = "127.0.0.1:0";
    std::string durability = "async";
    int threads = 2;
    std::vector<std::string> extra_args;  // appended to the command line
    // start() returns once the log says this followed by an address, which address() returns:
    // the native listener by default ("admin HTTP listener on " returns as soon as the admin
    // listener is bound, before recovery).
    std::string ready_text = "listening on ";
  };
  // Empty when the node did not start within the deadline (the failure says why).
  static std::unique_ptr<TestNode> start(const Options& options, std::string* error);
  // SIGTERM and wait (SIGKILL if it does not exit within 10 s).
  ~TestNode();

  const std::string& address() const { return address_; }
  // The admin HTTP listener's host:port ("" when it is off). Started nodes get one on a free
  // port unless extra_args names --admin-listen.
  std::string admin_address() const;
  pid_t pid() const { return pid_; }
  // SIGKILL, then reap: the node gets no chance to flush.
  void kill_hard();
  // SIGTERM, then the exit status (-1 if it had to be killed).
  int terminate();
  // Sends `number` to the node, then waits for its exit: the exit status (-1 if it did not exit
  // within 10 s and was killed, or if the signal killed it).
  int stop_with(int number);
  // Sends `number` to the node and returns at once (for signals that do not stop it); SIGSTOP
  // returns once every thread of the node has stopped (a stop takes effect when each thread is
  // next scheduled, not when kill() returns: a test that freezes a node and then sends work
  // must not race the node's last steps).
  void send_signal(int number);
  // Whether the process is still there (it has not exited).
  bool running();
  std::string log() const;
  // The process's resident memory now (VmRSS), in bytes; 0 when it cannot be read.
  std::size_t rss_bytes() const;
  // Waits until the log holds `text` at least `count` times; false at the deadline.
  bool wait_for_log(const std::string& text, std::chrono::milliseconds patience,
                    std::size_t count = 1) const;

 private:
  TestNode() = default;
  void wait_and_reap(std::chrono::milliseconds patience);

  pid_t pid_ = -1;
  int log_fd_ = -1;
  std::string address_;
  std::thread log_reader_;
  mutable std::mutex log_mutex_;  // guards log_
  std::string log_;
  int exit_status_ = -1;
};

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string out;
  std::string err;
};

// A TCP connection to "HOST:PORT" (IPv4 loopback in these tests) with TCP_NODELAY: the
// descriptor, or -1 when the connection failed. The caller closes it.
int connect_to(const std::string& address);

// Runs `program` with `args` and waits for it (a 30 s deadline, then SIGKILL).
ProcessResult run_process(const std::string& program, const std::vector<std::string>& args);

}  // namespace sessiond::testing
