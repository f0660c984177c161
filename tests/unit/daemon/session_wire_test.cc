// The GET answer written straight from a session (daemon/session_wire.h) is byte for byte what
// protobuf serializes from the wire::GetResponse built by to_wire, and parses back to it: over
// random sessions with every field empty, zero, negative, long or set in turn.
#include "daemon/session_wire.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

namespace sessiond::daemon {
namespace {

std::string random_bytes(std::mt19937_64& rng, std::size_t max) {
  std::string out(rng() % (max + 1), '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// A time (or a timeout, within the 100 years the table allows): zero, before the epoch (ten
// bytes of varint), or any millisecond to the year 2096.
std::int64_t random_time(std::mt19937_64& rng) {
  switch (rng() % 4) {
    case 0:
      return 0;
    case 1:
      return -static_cast<std::int64_t>(rng() % 1'000'000);
    default:
      return static_cast<std::int64_t>(rng() % 4'000'000'000'000ULL);
  }
}

storage::Version random_version(std::mt19937_64& rng) {
  storage::Version v;
  if (rng() % 4 != 0) v.hlc = rng() >> (rng() % 64);
  if (rng() % 2 != 0) v.region = static_cast<std::uint32_t>(rng() % 70'000);
  if (rng() % 2 != 0) v.node = static_cast<std::uint32_t>(rng());
  return v;
}

double random_coordinate(std::mt19937_64& rng) {
  switch (rng() % 4) {
    case 0:
      return 0.0;
    case 1:
      return -0.0;  // not all-zero bits: protobuf writes it
    default:
      return std::ldexp(static_cast<double>(rng() % 360'000'000), -20) - 180.0;
  }
}

storage::Session random_session(std::mt19937_64& rng) {
  storage::Session s;
  if (rng() % 5 != 0) s.user_id = random_bytes(rng, 40);
  const std::size_t fields = rng() % 6;
  for (std::size_t i = 0; i < fields; ++i) {
    // Lengths past 127 and 16383 take two and three bytes of varint.
    const std::size_t max = rng() % 3 == 0 ? 20'000 : 300;
    s.fields.push_back({random_bytes(rng, 20), random_bytes(rng, max), random_version(rng)});
  }
  s.created_at_ms = random_time(rng);
  s.last_access_ms = random_time(rng);
  s.timeouts.idle_ms = rng() % 3 == 0 ? 0 : static_cast<std::int64_t>(rng() % 10'000'000'000ULL);
  s.timeouts.absolute_ms =
      rng() % 3 == 0 ? 0 : static_cast<std::int64_t>(rng() % 3'000'000'000'000ULL);
  s.cap_ms = rng() % 2 == 0 ? storage::kNoDeadline : random_time(rng);
  if (rng() % 2 == 0)
    s.context = storage::ClientContext{random_bytes(rng, 64), rng() % 3 ? rng() : 0};
  const std::size_t entries = rng() % 4;
  for (std::size_t i = 0; i < entries; ++i) {
    storage::AccessEntry e;
    e.time_ms = random_time(rng);
    e.ip = random_bytes(rng, 40);
    e.user_agent_hash = rng() % 3 ? rng() : 0;
    e.has_location = rng() % 2 == 0;
    e.latitude = random_coordinate(rng);
    e.longitude = random_coordinate(rng);
    s.access_log.push_back(e);
  }
  s.version = random_version(rng);
  return s;
}

TEST(SessionWire, TheGetAnswerIsWhatProtobufSerializes) {
  std::mt19937_64 rng(20261203);
  for (int i = 0; i < 3000; ++i) {
    const storage::Session s = random_session(rng);
    const std::string id = rng() % 2 == 0 ? std::string(32, 'i') : random_bytes(rng, 48);
    wire::GetResponse expected;
    to_wire(s, id, expected.mutable_session());
    std::string written = "prefix";  // appended after what is already there
    append_get_response(s, id, &written);
    ASSERT_EQ(written.substr(0, 6), "prefix");
    ASSERT_EQ(written.substr(6), expected.SerializeAsString()) << "session " << i;
    wire::GetResponse parsed;
    ASSERT_TRUE(parsed.ParseFromString(written.substr(6)));
    EXPECT_EQ(parsed.session().fields_size(), static_cast<int>(s.fields.size()));
    EXPECT_EQ(parsed.session().deadline_ms(), s.deadline_ms());
  }
}

TEST(SessionWire, TheMetaAnswerIsWhatProtobufSerializesForEveryWriteThatCarriesIt) {
  std::mt19937_64 rng(20261204);
  for (int i = 0; i < 3000; ++i) {
    storage::SessionMeta m;
    m.version = random_version(rng);
    m.created_at_ms = random_time(rng);
    m.last_access_ms = random_time(rng);
    m.deadline_ms = rng() % 5 == 0 ? storage::kNoDeadline : random_time(rng);
    const std::string id = rng() % 3 == 0 ? "" : random_bytes(rng, 48);
    wire::UpdateResponse expected;
    to_wire(m, id, expected.mutable_session());
    std::string written = "prefix";
    const std::size_t n = append_meta_response(m, id, &written);
    ASSERT_EQ(written.substr(0, 6), "prefix");
    ASSERT_EQ(n, written.size() - 6);
    ASSERT_EQ(written.substr(6), expected.SerializeAsString()) << "meta " << i;
    // CREATE, TOUCH and REGENERATE answer the same message.
    wire::CreateResponse created;
    *created.mutable_session() = expected.session();
    ASSERT_EQ(written.substr(6), created.SerializeAsString());
    wire::RegenerateResponse parsed;
    ASSERT_TRUE(parsed.ParseFromString(written.substr(6)));
    EXPECT_EQ(parsed.session().deadline_ms(), m.deadline_ms);
    EXPECT_EQ(parsed.session().version().hlc(), m.version.hlc);
  }
}

TEST(SessionWire, AnEmptySessionStillCarriesItsTimeoutsAndVersion) {
  const storage::Session s;
  wire::GetResponse expected;
  to_wire(s, "", expected.mutable_session());
  std::string written;
  append_get_response(s, "", &written);
  EXPECT_EQ(written, expected.SerializeAsString());
  wire::GetResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(written));
  EXPECT_TRUE(parsed.session().has_timeouts());
  EXPECT_TRUE(parsed.session().has_version());
}

}  // namespace
}  // namespace sessiond::daemon
