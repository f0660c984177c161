// Failed AUTHs (issue 10): the node-wide count and its rate-limited log line, the close after
// kMaxAuthFailures on both protocols (native handlers and RESP commands), RESP HELLO before
// AUTH, and the refusal of a config file that holds secrets and others may read.
#include "daemon/auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "daemon/config.h"
#include "daemon/handlers.h"
#include "daemon/resp_commands.h"
#include "protocol/frame.h"
#include "protocol/sessiond.pb.h"
#include "storage/clock.h"
#include "storage/session_table.h"
#include "tests/support/temp_dir.h"

namespace sessiond::daemon {
namespace {

TEST(AuthFailures, LogsAtMostOncePerIntervalAndTheNextLineCountsWhatWasHeldBack) {
  storage::ManualClock clock;
  AuthFailures failures(clock, 1000);
  EXPECT_EQ(failures.record("10.0.0.1"), "1 failed AUTH attempt, latest from 10.0.0.1");
  EXPECT_EQ(failures.record("10.0.0.2"), "");
  clock.advance_ms(999);
  EXPECT_EQ(failures.record("10.0.0.3"), "");
  clock.advance_ms(1);
  EXPECT_EQ(failures.record("10.0.0.4"),
            "3 failed AUTH attempts in the last 1.0 s, latest from 10.0.0.4");
  clock.advance_ms(60'000);
  EXPECT_EQ(failures.record(""),
            "1 failed AUTH attempt in the last 60.0 s, latest from an "
            "unknown address");
  EXPECT_EQ(failures.total(), 5u);
  // The wall clock stepped back a minute: the next failure is logged, not held back.
  clock.advance_ms(-60'000);
  EXPECT_EQ(failures.record("10.0.0.5"), "1 failed AUTH attempt, latest from 10.0.0.5");
  EXPECT_EQ(failures.total(), 6u);
}

// Threads failing at once: every failure counted, one line while the clock stands still, and
// that line plus the next account for every failure.
TEST(AuthFailures, ConcurrentFailuresAreAllCountedAndLoggedOnce) {
  storage::ManualClock clock;
  AuthFailures failures(clock, 1000);
  constexpr int kThreads = 4;
  constexpr int kEach = 5000;
  std::vector<std::vector<std::string>> lines(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        std::string line = failures.record("192.0.2.1");
        if (!line.empty()) lines[t].push_back(std::move(line));
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<std::string> all;
  for (const auto& l : lines) all.insert(all.end(), l.begin(), l.end());
  ASSERT_EQ(all.size(), 1u);
  // The first line counts the failures recorded before it took the count: usually just its
  // own, more when other threads counted theirs in between (as happens on a loaded machine).
  const std::size_t space = all[0].find(' ');
  ASSERT_NE(space, std::string::npos) << all[0];
  const int first = std::stoi(all[0].substr(0, space));
  ASSERT_GE(first, 1) << all[0];
  EXPECT_EQ(all[0], first == 1
                        ? "1 failed AUTH attempt, latest from 192.0.2.1"
                        : std::to_string(first) + " failed AUTH attempts, latest from 192.0.2.1");
  EXPECT_EQ(failures.total(), std::uint64_t{kThreads} * kEach);
  // The next line counts every other failure, and its own.
  clock.advance_ms(1000);
  EXPECT_EQ(failures.record("192.0.2.1"),
            std::to_string(kThreads * kEach + 1 - first) +
                " failed AUTH attempts in the last 1.0 s, latest from 192.0.2.1");
}

// ---- the native protocol ---------------------------------------------------------------------

// The secrets of these tests: app and admin.
AuthConfig test_secrets() {
  AuthConfig a;
  a.app_secret = "app-secret-1";
  a.admin_secret = "admin-secret-1";
  return a;
}

struct Answer {
  StatusCode status;
  std::string message;  // of an error
};

class NativeAuth : public ::testing::Test {
 protected:
  NativeAuth()
      : table_({}, clock_, nullptr),
        handlers_(table_, nullptr, counters_, "", 1u << 20, test_secrets()) {
    state_.role = handlers_.auth().initial_role();
    state_.peer = "203.0.113.7";
  }
  // Appends the request to `out` as the server would, returning nothing.
  void send(protocol::Opcode op, const google::protobuf::MessageLite& request, std::string* out) {
    bodies_.push_back(request.SerializeAsString());
    const std::string& body = bodies_.back();
    protocol::FrameHeader h;
    h.opcode = static_cast<std::uint16_t>(op);
    h.request_id = static_cast<std::uint32_t>(bodies_.size());
    h.body_length = static_cast<std::uint32_t>(body.size());
    handlers_.handle(h, std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()),
                     &state_, out);
  }
  void auth_with(const std::string& secret, std::string* out) {
    wire::AuthRequest req;
    req.set_secret(secret);
    send(protocol::Opcode::kAuth, req, out);
  }
  static std::vector<Answer> answers(const std::string& out) {
    std::vector<Answer> result;
    std::span<const std::uint8_t> rest(reinterpret_cast<const std::uint8_t*>(out.data()),
                                       out.size());
    while (!rest.empty()) {
      const auto d = protocol::decode_frame(rest, 1u << 20);
      EXPECT_EQ(d.kind, protocol::Decoded::Kind::kFrame);
      if (d.kind != protocol::Decoded::Kind::kFrame) break;
      wire::ErrorResponse error;
      if (d.header.status != StatusCode::kOk) {
        EXPECT_TRUE(error.ParseFromArray(d.body.data(), static_cast<int>(d.body.size())));
      }
      result.push_back({d.header.status, error.message()});
      rest = rest.subspan(d.consumed);
    }
    return result;
  }

  storage::ManualClock clock_;
  storage::SessionTable table_;
  Counters counters_;
  Handlers handlers_;
  ConnectionState state_;
  std::vector<std::string> bodies_;  // kept: handle() reads them in place
};

// The third wrong secret is answered, marks the connection for closing, and what was pipelined
// behind it, even the right secret, gets no answer: no more guesses on this connection.
TEST_F(NativeAuth, ThirdFailedAuthClosesAndWhatFollowsIsNotHandled) {
  std::string out;
  auth_with("guess-1", &out);
  auth_with("guess-2", &out);
  EXPECT_FALSE(state_.close);
  auth_with("guess-3", &out);
  EXPECT_TRUE(state_.close);
  auth_with("app-secret-1", &out);
  send(protocol::Opcode::kPing, wire::PingRequest(), &out);
  const auto got = answers(out);
  ASSERT_EQ(got.size(), 3u);
  for (const Answer& a : got) EXPECT_EQ(a.status, StatusCode::kUnauthenticated);
  EXPECT_EQ(got[0].message, "wrong secret");
  EXPECT_NE(got[2].message.find("closing the connection after 3 failed AUTHs"), std::string::npos)
      << got[2].message;
  EXPECT_EQ(state_.role, Role::kNone);
  EXPECT_EQ(state_.auth_failures, 3u);
  EXPECT_EQ(counters_.auth_failures.total(), 3u);
}

TEST_F(NativeAuth, TheRightSecretAfterTwoFailuresStillAuthenticates) {
  std::string out;
  auth_with("typo", &out);
  auth_with("typo again", &out);
  auth_with("admin-secret-1", &out);
  wire::StatsRequest stats;
  send(protocol::Opcode::kStats, stats, &out);
  const auto got = answers(out);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[2].status, StatusCode::kOk);
  EXPECT_EQ(got[3].status, StatusCode::kOk);
  EXPECT_FALSE(state_.close);
  EXPECT_EQ(state_.role, Role::kAdmin);
  EXPECT_EQ(counters_.auth_failures.total(), 2u);
}

// ---- RESP ------------------------------------------------------------------------------------

class RespAuthFailures : public ::testing::Test {
 protected:
  RespAuthFailures()
      : table_({}, clock_, nullptr),
        auth_(test_secrets()),
        commands_(table_, clock_, {nullptr, 6379, 0, &auth_, 0, &failures_}) {
    client_.role = auth_.initial_role();
  }
  std::string run(std::vector<std::string_view> args) {
    std::string out;
    commands_.execute(args, client_, &out);
    return out;
  }

  storage::ManualClock clock_;
  storage::SessionTable table_;
  AuthConfig auth_;
  AuthFailures failures_{clock_};
  resp::Commands commands_;
  resp::ClientState client_;
};

constexpr std::string_view kHelloNoauth =
    "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
    "<proto> AUTH <user> <pass> option can be used to authenticate the client and select the "
    "RESP protocol version at the same time\r\n";
constexpr std::string_view kWrongPass =
    "-WRONGPASS invalid username-password pair or user is disabled.\r\n";

TEST_F(RespAuthFailures, HelloBeforeAuthAnswersNoauthAsRedis7) {
  EXPECT_EQ(run({"HELLO"}), kHelloNoauth);
  EXPECT_EQ(run({"HELLO", "2"}), kHelloNoauth);
  EXPECT_EQ(run({"HELLO", "2", "SETNAME", "x"}), kHelloNoauth);
  EXPECT_TRUE(client_.name.empty());  // SETNAME comes after the check, as in Redis
  EXPECT_EQ(run({"HELLO", "3"}), "-NOPROTO unsupported protocol version\r\n");
  EXPECT_EQ(failures_.total(), 0u);  // no secret was tried
  EXPECT_EQ(run({"HELLO", "2", "AUTH", "default", "app-secret-1"}).substr(0, 5), "*14\r\n");
  EXPECT_EQ(client_.role, Role::kApp);
  EXPECT_EQ(run({"HELLO"}).substr(0, 5), "*14\r\n");
}

// AUTH and HELLO ... AUTH failures add up; the third closes after its WRONGPASS, and
// execute_all runs nothing pipelined behind it.
TEST_F(RespAuthFailures, ThirdFailureClosesTheConnectionAndIsCounted) {
  std::string out;
  std::vector<std::vector<std::string_view>> pipeline = {
      {"AUTH", "guess-1"},
      {"HELLO", "2", "AUTH", "default", "guess-2"},
      {"AUTH", "default", "guess-3"},
      {"AUTH", "app-secret-1"},
      {"PING"},
  };
  commands_.execute_all(pipeline, client_, &out);
  EXPECT_EQ(out, std::string(kWrongPass) + std::string(kWrongPass) + std::string(kWrongPass));
  EXPECT_TRUE(client_.close);
  EXPECT_EQ(client_.role, Role::kNone);
  EXPECT_EQ(failures_.total(), 3u);
}

// Without secrets a wrong user name is answered as Redis does, and nothing is counted or
// closed: nothing can be guessed (tests/clients/redis-cli compares this with a real Redis).
TEST(RespAuthOff, WrongUserIsNeitherCountedNorClosed) {
  storage::ManualClock clock;
  storage::SessionTable table({}, clock, nullptr);
  AuthFailures failures(clock);
  resp::Commands commands(table, clock, {nullptr, 6379, 0, nullptr, 0, &failures});
  resp::ClientState client;
  for (int i = 0; i < 5; ++i) {
    std::string out;
    commands.execute(std::vector<std::string_view>{"AUTH", "someone", "pw"}, client, &out);
    EXPECT_EQ(out, kWrongPass);
  }
  EXPECT_FALSE(client.close);
  EXPECT_EQ(failures.total(), 0u);
}

// ---- the config file ---------------------------------------------------------------------------

class ConfigFileMode : public ::testing::Test {
 protected:
  // Writes `text` to a config file with `mode` and parses a command line that names it.
  ParsedOptions parse_with(const std::string& text, mode_t mode) {
    const std::string path = dir_.sub("sessiond.toml");
    std::FILE* f = std::fopen(path.c_str(), "w");
    EXPECT_NE(f, nullptr);
    if (f == nullptr) return {};
    std::fputs(text.c_str(), f);
    std::fclose(f);
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    const char* argv[] = {"sessiond", "--config", path.c_str()};
    return parse_options(3, argv);
  }
  testing::TempDir dir_;
};

TEST_F(ConfigFileMode, SecretsInAFileOthersMayReadOrWriteAreRefused) {
  for (const char* key : {"app-secret", "admin-secret", "peer-secret"}) {
    for (mode_t mode : {0644, 0640, 0604, 0620, 0602}) {
      const auto parsed = parse_with(std::string(key) + " = \"s3cret\"\n", mode);
      EXPECT_TRUE(parsed.exit) << key << " " << std::oct << mode;
      EXPECT_EQ(parsed.exit_code, 1) << key << " " << std::oct << mode;
      EXPECT_NE(parsed.message.find("cannot start: the config file " + dir_.sub("sessiond.toml") +
                                    " is readable or writable by others than its owner; chmod 600 "
                                    "it"),
                std::string::npos)
          << parsed.message;
    }
  }
}

TEST_F(ConfigFileMode, OwnerOnlyFileWithSecretsAndAnyFileWithoutAreAccepted) {
  auto parsed = parse_with("admin-secret = \"s3cret\"\nthreads = 3\n", 0600);
  EXPECT_FALSE(parsed.exit) << parsed.message;
  EXPECT_EQ(parsed.options.auth.admin_secret, "s3cret");
  parsed = parse_with("app-secret = \"s3cret\"\n", 0400);
  EXPECT_FALSE(parsed.exit) << parsed.message;
  parsed = parse_with("threads = 3\nlog-level = \"warn\"\n", 0666);
  EXPECT_FALSE(parsed.exit) << parsed.message;
  EXPECT_EQ(parsed.options.threads, 3u);
  parsed = parse_with("app-secret = \"\"\n", 0644);  // an empty secret is no secret
  EXPECT_FALSE(parsed.exit) << parsed.message;
}

}  // namespace
}  // namespace sessiond::daemon
