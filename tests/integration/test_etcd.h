// A real etcd (Debian's etcd-server) for the cluster tests: its own data directory and free
// loopback ports, started and waited for (its /health) with a deadline; it can be paused
// (SIGSTOP: a etcd that answers nothing), resumed, killed and started again on the same data.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>

namespace sessiond::testing {

class TestEtcd {
 public:
  // Empty when etcd did not become healthy within the deadline (`error` says why).
  static std::unique_ptr<TestEtcd> start(const std::filesystem::path& dir, std::string* error);
  ~TestEtcd();

  // "127.0.0.1:PORT", the --etcd value.
  const std::string& endpoint() const { return endpoint_; }
  void pause();
  void resume();
  // SIGKILL and reap.
  void kill_hard();
  // Starts it again on the same data and ports after kill_hard(); false if not healthy in time.
  bool restart(std::string* error);

 private:
  TestEtcd() = default;
  bool launch(std::string* error);

  std::filesystem::path dir_;
  std::string endpoint_;
  int client_port_ = 0;
  int peer_port_ = 0;
  pid_t pid_ = -1;
};

// A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range.
int free_loopback_port();

}  // namespace sessiond::testing
