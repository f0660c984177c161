// Client behaviour that needs no sessiond: argument checks, deadlines against a listener that
// never answers, refused connections, shutdown. tests/integration/ covers the real daemon.
#include "sessiond/client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <string>

#include "closed_port.h"

namespace sessiond {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A TCP listener on 127.0.0.1 that accepts connections (the kernel completes them into the
// backlog) but never reads or answers: every call to it must run into its deadline.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t length = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length);
    port_ = ntohs(addr.sin_port);
  }
  ~SilentListener() { ::close(fd_); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

using client_test_support::ClosedPort;

Client::Options options_for(std::string address, std::chrono::milliseconds timeout) {
  Client::Options options;
  options.address = std::move(address);
  options.timeout = timeout;
  return options;
}

TEST(Client, MalformedIdIsInvalidArgumentWithoutARoundTrip) {
  ClosedPort port;
  Client client(options_for(port.address(), 2s));
  const auto start = Clock::now();
  auto session = client.get("not-an-id");
  EXPECT_EQ(session.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(session.status().message().find("not-an-id"), std::string::npos);
  EXPECT_EQ(client.destroy("").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(client.revoke_user("alice", "bad keep").code(), StatusCode::kInvalidArgument);
  EXPECT_LT(Clock::now() - start, 1s);
}

TEST(Client, NegativeTimeoutsAreInvalidArgument) {
  ClosedPort port;
  Client client(options_for(port.address(), 2s));
  CreateOptions create;
  create.timeouts = Timeouts{-1, 0};
  EXPECT_EQ(client.create(create).code(), StatusCode::kInvalidArgument);
}

TEST(Client, MalformedAddressIsInvalidArgument) {
  Client client(options_for("no-port-here", 2s));
  auto ping = client.ping();
  EXPECT_EQ(ping.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ping.status().message().find("HOST:PORT"), std::string::npos);
}

TEST(Client, PortZeroAndBareIpv6AreNotAddressesOfANode) {
  for (const char* address : {"127.0.0.1:0", "::1:7400"}) {
    Client client(options_for(address, 2s));
    auto ping = client.ping();
    EXPECT_EQ(ping.code(), StatusCode::kInvalidArgument) << address;
    EXPECT_NE(ping.status().message().find("port 1-65535"), std::string::npos) << address;
  }
}

TEST(Client, CallWithoutAnswerFailsUnavailableAtItsDeadline) {
  SilentListener listener;
  Client client(options_for(listener.address(), 300ms));
  const auto start = Clock::now();
  auto ping = client.ping("hello");
  const auto elapsed = Clock::now() - start;
  EXPECT_EQ(ping.code(), StatusCode::kUnavailable);
  EXPECT_NE(ping.status().message().find("no answer"), std::string::npos)
      << ping.status().ToString();
  EXPECT_GE(elapsed, 290ms);
  EXPECT_LT(elapsed, 2s);
}

TEST(Client, ManyPipelinedCallsAllTimeOutTogether) {
  SilentListener listener;
  Client client(options_for(listener.address(), 300ms));
  std::vector<std::string> ids(500, session_id_from_bytes(std::string(32, 'a')));
  const auto start = Clock::now();
  auto results = client.get_many(ids);
  ASSERT_EQ(results.size(), ids.size());
  for (const auto& result : results) {
    EXPECT_EQ(result.code(), StatusCode::kUnavailable);
    EXPECT_NE(result.status().message().find("within 300 ms"), std::string::npos)
        << result.status().ToString();
  }
  // Together, not one after another: one by one they would take 500 x 300 ms = 150 s. The
  // bound is loose on purpose (sanitizer builds on a loaded machine are slow); what it tells
  // apart is parallel from serial, not fast from slow.
  EXPECT_LT(Clock::now() - start, 30s);
}

TEST(Client, RefusedConnectionFailsAfterBackoffNotAtTheDeadline) {
  ClosedPort port;
  Client::Options options = options_for(port.address(), 10s);
  options.backoff_initial = 5ms;
  options.max_retries = 3;
  Client client(options);
  const auto start = Clock::now();
  auto ping = client.ping();
  EXPECT_EQ(ping.code(), StatusCode::kUnavailable);
  EXPECT_NE(ping.status().message().find("cannot connect"), std::string::npos)
      << ping.status().ToString();
  EXPECT_NE(ping.status().message().find("4 attempts"), std::string::npos)
      << ping.status().ToString();
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST(Client, SynchronousCallFromACallbackIsRefusedInsteadOfDeadlocking) {
  ClosedPort port;
  Client::Options options = options_for(port.address(), 2s);
  options.max_retries = 0;
  Client client(options);
  std::promise<StatusCode> inner;
  client.async_ping("", [&](Result<PingResult>) { inner.set_value(client.stats().code()); });
  auto future = inner.get_future();
  ASSERT_EQ(future.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(future.get(), StatusCode::kInternal);
}

TEST(Client, DestroyingTheClientFailsOutstandingCalls) {
  SilentListener listener;
  std::promise<Status> outcome;
  {
    Client client(options_for(listener.address(), 60s));
    client.async_touch(session_id_from_bytes(std::string(32, 'b')),
                       [&](Result<SessionMeta> result) { outcome.set_value(result.status()); });
  }
  auto future = outcome.get_future();
  ASSERT_EQ(future.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(future.get().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace sessiond
