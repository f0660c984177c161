// protocol/crypto.h: the buffered CSPRNG and the keyed HMAC-SHA256, against OpenSSL's one-call
// functions and across a fork.
#include "protocol/crypto.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace sessiond {
namespace {

std::array<std::uint8_t, 32> one_shot_hmac(std::string_view key, std::string_view data) {
  std::array<std::uint8_t, 32> out{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &length);
  EXPECT_EQ(length, 32u);
  return out;
}

TEST(HmacSha256, MatchesRfc4231AndOpenSslsOneShotHmacOnEveryThread) {
  // RFC 4231, test case 2.
  const HmacSha256 jefe("Jefe");
  const auto tag = jefe("what do ya want for nothing?");
  const std::array<std::uint8_t, 32> expected = {0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e,
                                                 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
                                                 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83,
                                                 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
  EXPECT_EQ(tag, expected);
  // Several keys used in turn on several threads: each tag is its own key's (the per-thread
  // copies are told apart), more keys than a thread keeps copies of.
  std::vector<std::string> keys;
  std::vector<HmacSha256> macs;
  for (int i = 0; i < 12; ++i) {
    keys.push_back("key-" + std::to_string(i) + std::string(static_cast<std::size_t>(i) * 9, 'k'));
    macs.emplace_back(keys.back());
  }
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round) {
        for (std::size_t k = 0; k < keys.size(); ++k) {
          const std::string data = "user" + std::to_string(round * 7 + t) + std::string(k, 'x');
          if (macs[k](data) != one_shot_hmac(keys[k], data)) ++wrong;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(RandomBytes, DrawsDoNotRepeatWithinOrAcrossThreadsAndLargeDrawsWork) {
  std::vector<std::thread> threads;
  std::vector<std::vector<std::array<std::uint8_t, 24>>> drawn(2);
  for (std::size_t t = 0; t < drawn.size(); ++t) {
    threads.emplace_back([&, t] {
      // Past several refills of the block.
      for (int i = 0; i < 2000; ++i) {
        std::array<std::uint8_t, 24> id{};
        ASSERT_TRUE(random_bytes(id.data(), id.size()));
        drawn[t].push_back(id);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::set<std::array<std::uint8_t, 24>> distinct;
  for (const auto& list : drawn) distinct.insert(list.begin(), list.end());
  EXPECT_EQ(distinct.size(), 4000u);
  std::vector<std::uint8_t> large(10000, 0);
  ASSERT_TRUE(random_bytes(large.data(), large.size()));
  EXPECT_GT(std::set<std::uint8_t>(large.begin(), large.end()).size(), 200u);
}

// A forked child must not hand out the bytes its parent's block still holds: the two would
// issue the same session ids.
TEST(RandomBytes, AForkedChildDrawsOtherBytesThanItsParent) {
  std::array<std::uint8_t, 24> first{};
  ASSERT_TRUE(random_bytes(first.data(), first.size()));  // this thread's block is filled
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::array<std::uint8_t, 24> drawn{};
    const bool ok = random_bytes(drawn.data(), drawn.size());
    const ssize_t n = ::write(pipe_fds[1], drawn.data(), drawn.size());
    ::_exit(ok && n == static_cast<ssize_t>(drawn.size()) ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  std::array<std::uint8_t, 24> in_child{};
  std::size_t got = 0;
  while (got < in_child.size()) {
    const ssize_t n = ::read(pipe_fds[0], in_child.data() + got, in_child.size() - got);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(got, in_child.size());
  std::array<std::uint8_t, 24> in_parent{};
  ASSERT_TRUE(random_bytes(in_parent.data(), in_parent.size()));
  EXPECT_NE(in_child, in_parent);
  EXPECT_NE(in_child, first);
}

}  // namespace
}  // namespace sessiond
