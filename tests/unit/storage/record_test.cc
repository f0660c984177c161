#include "storage/detail/record.h"

#include <gtest/gtest.h>

namespace sessiond::storage::detail {
namespace {

RecordPtr sample_record(bool with_extras) {
  const Version v{100, 3};
  std::vector<FieldRef> fields = {{"cart", "[1,2,3]", v},
                                  {"role", "admin", Version{77, 1}},  // older field write
                                  {"theme", std::string_view("d\0rk", 4), v}};
  std::string blob;
  encode_blob("user-42", fields, v, &blob);
  RecordPtr r = Record::make(new_session_id(), blob);
  r->created_at_ms = 1'700'000'000'000;
  r->last_access_ms = r->created_at_ms + 5000;
  r->idle_ms = 600'000;
  r->absolute_ms = 1'800'000;
  r->set_version(v);
  if (with_extras) {
    r->set_preset(Preset::kGaming);  // the highest code the flags hold
    r->signed_id = 1;
    r->extras = std::make_unique<Extras>();
    r->extras->context = ClientContext{"203.0.113.7", 0xabcdef};
    r->extras->access_log.push_back({r->created_at_ms, "203.0.113.7", 0xabcdef, true, 48.85, 2.35});
    r->extras->access_log.push_back({r->last_access_ms, "198.51.100.1", 12, false, 0, 0});
  }
  return r;
}

}  // namespace

TEST(RecordCodec, BlobKeepsFieldsAndPerFieldVersions) {
  RecordPtr r = sample_record(false);
  Session s;
  record_to_session(*r, &s);
  EXPECT_EQ(s.user_id, "user-42");
  ASSERT_EQ(s.fields.size(), 3u);
  EXPECT_EQ(s.fields[0].name, "cart");
  EXPECT_EQ(s.fields[0].version, r->version());
  EXPECT_EQ(s.fields[1].version, (Version{77, 1}));
  EXPECT_EQ(s.fields[2].value, std::string("d\0rk", 4));
  EXPECT_EQ(blob_user_id(r->blob()), "user-42");
}

TEST(RecordCodec, ValueRoundTripsEverything) {
  for (bool extras : {false, true}) {
    RecordPtr r = sample_record(extras);
    std::string value;
    encode_value(*r, &value);
    EXPECT_EQ(value_deadline(value), r->persisted_deadline_ms());
    std::string_view id(reinterpret_cast<const char*>(r->id.data()), r->id.size());
    auto back = decode_value(id, value);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    Session a, b;
    record_to_session(*r, &a);
    record_to_session(**back, &b);
    EXPECT_EQ(a, b);
    EXPECT_EQ(b.preset, extras ? std::optional(Preset::kGaming) : std::nullopt);
    EXPECT_EQ(b.signed_id, extras);
  }
}

TEST(RecordCodec, UnknownFlagsAndPresetsAreRejected) {
  RecordPtr r = sample_record(false);
  std::string value;
  encode_value(*r, &value);
  std::string_view id(reinterpret_cast<const char*>(r->id.data()), r->id.size());
  // The flags byte follows the header's varints; find it as the byte that changes with them.
  r->set_preset(Preset::kMedia);
  std::string with_preset;
  encode_value(*r, &with_preset);
  ASSERT_EQ(with_preset.size(), value.size());
  std::size_t at = 0;
  while (at < value.size() && value[at] == with_preset[at]) ++at;
  ASSERT_LT(at, value.size());
  for (int flags : {6 << 2, 7 << 2, 32, 64, 128}) {
    std::string bad = value;
    bad[at] = static_cast<char>(flags);
    EXPECT_FALSE(decode_value(id, bad).ok()) << flags;
  }
}

TEST(RecordCodec, EveryTruncationIsRejectedNotMisread) {
  RecordPtr r = sample_record(true);
  std::string value;
  encode_value(*r, &value);
  std::string_view id(reinterpret_cast<const char*>(r->id.data()), r->id.size());
  for (std::size_t len = 0; len < value.size(); ++len) {
    auto back = decode_value(id, std::string_view(value).substr(0, len));
    EXPECT_FALSE(back.ok()) << "accepted a value truncated to " << len << " bytes";
  }
}

TEST(RecordCodec, GarbageAndWrongKeysAreRejected) {
  RecordPtr r = sample_record(true);
  std::string value;
  encode_value(*r, &value);
  EXPECT_FALSE(decode_value("short", value).ok());
  std::string wrong_format = value;
  wrong_format[0] = 9;
  std::string_view id(reinterpret_cast<const char*>(r->id.data()), r->id.size());
  EXPECT_FALSE(decode_value(id, wrong_format).ok());
  EXPECT_FALSE(value_deadline(wrong_format).has_value());
  // A flipped deadline no longer matches the timeouts it claims to derive from.
  std::string wrong_deadline = value;
  wrong_deadline[kValueDeadlineOffset] ^= 1;
  EXPECT_FALSE(decode_value(id, wrong_deadline).ok());
}

TEST(RecordCodec, VarintsRoundTripAtTheEdges) {
  for (std::uint64_t v : {0ull, 1ull, 127ull, 128ull, 16383ull, 16384ull, ~0ull}) {
    std::string buf;
    put_varint(&buf, v);
    std::string_view in = buf;
    std::uint64_t out = 0;
    ASSERT_TRUE(get_varint(&in, &out));
    EXPECT_EQ(out, v);
    EXPECT_TRUE(in.empty());
  }
  std::string_view overlong("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11);
  std::uint64_t out = 0;
  EXPECT_FALSE(get_varint(&overlong, &out));
}

}  // namespace sessiond::storage::detail
