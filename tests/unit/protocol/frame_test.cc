#include "protocol/frame.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "protocol/sessiond.pb.h"

namespace sessiond::protocol {
namespace {

std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

std::string hex(const std::string& s) {
  std::string out;
  char buf[4];
  for (unsigned char c : s) {
    std::snprintf(buf, sizeof buf, "%02x ", c);
    out += buf;
  }
  if (!out.empty()) out.pop_back();
  return out;
}

std::string ping_frame(std::uint32_t request_id, const std::string& payload) {
  wire::PingRequest ping;
  ping.set_payload(payload);
  FrameHeader h;
  h.opcode = static_cast<std::uint16_t>(Opcode::kPing);
  h.request_id = request_id;
  std::string out;
  EXPECT_TRUE(append_frame(h, ping, &out).ok());
  return out;
}

TEST(Frame, ExampleFrameOfTheProtocolDocument) {
  // docs/protocol.md quotes these bytes; change both or neither.
  EXPECT_EQ(hex(ping_frame(1, "hi")),
            "53 44 01 00 01 00 00 00 01 00 00 00 04 00 00 00 0a 02 68 69");
}

TEST(Frame, HeaderRoundTrips) {
  FrameHeader h;
  h.flags = kFlagResponse;
  h.opcode = static_cast<std::uint16_t>(Opcode::kRevokeUser);
  h.status = StatusCode::kWrongNode;
  h.request_id = 0xdeadbeef;
  h.body_length = 0;
  std::uint8_t raw[kHeaderSize];
  encode_header(h, raw);
  Decoded d = decode_frame(std::span(raw, kHeaderSize));
  ASSERT_EQ(d.kind, Decoded::Kind::kFrame);
  EXPECT_TRUE(d.header.is_response());
  EXPECT_EQ(d.header.opcode, h.opcode);
  EXPECT_EQ(d.header.status, StatusCode::kWrongNode);
  EXPECT_EQ(d.header.request_id, 0xdeadbeefu);
  EXPECT_EQ(d.consumed, kHeaderSize);
  EXPECT_TRUE(d.body.empty());
}

TEST(Frame, PartialInputAsksForExactlyWhatIsMissing) {
  const auto frame = bytes_of(ping_frame(7, "payload"));
  for (std::size_t n = 0; n < frame.size(); ++n) {
    Decoded d = decode_frame(std::span(frame.data(), n));
    ASSERT_EQ(d.kind, Decoded::Kind::kNeedMore) << n;
    EXPECT_EQ(d.need, n < kHeaderSize ? kHeaderSize : frame.size()) << n;
  }
  Decoded d = decode_frame(frame);
  ASSERT_EQ(d.kind, Decoded::Kind::kFrame);
  wire::PingRequest ping;
  ASSERT_TRUE(parse_body(d.body, Opcode::kPing, &ping).ok());
  EXPECT_EQ(ping.payload(), "payload");
}

TEST(Frame, PipelinedFramesDecodeOneAfterAnother) {
  std::string stream;
  for (std::uint32_t i = 1; i <= 100; ++i) stream += ping_frame(i, std::string(i, 'x'));
  const auto buffer = bytes_of(stream);
  std::span<const std::uint8_t> rest(buffer);
  for (std::uint32_t i = 1; i <= 100; ++i) {
    Decoded d = decode_frame(rest);
    ASSERT_EQ(d.kind, Decoded::Kind::kFrame) << i;
    EXPECT_EQ(d.header.request_id, i);
    EXPECT_EQ(d.body.size(), i + 2u);
    rest = rest.subspan(d.consumed);
  }
  EXPECT_TRUE(rest.empty());
}

TEST(Frame, OversizedBodyIsRefusedFromTheHeaderAlone) {
  FrameHeader h;
  h.opcode = static_cast<std::uint16_t>(Opcode::kCreate);
  h.body_length = 0xffffffff;  // claims 4 GiB; only the header is there
  std::uint8_t raw[kHeaderSize];
  encode_header(h, raw);
  Decoded d = decode_frame(std::span(raw, kHeaderSize));
  ASSERT_EQ(d.kind, Decoded::Kind::kError);
  EXPECT_EQ(d.error.code(), StatusCode::kTooLarge);
  EXPECT_TRUE(d.framing_lost);
  EXPECT_EQ(d.header.request_id, h.request_id);  // so the error can answer the request
  // Exactly at the limit is fine (and then needs the body).
  h.body_length = 100;
  encode_header(h, raw);
  EXPECT_EQ(decode_frame(std::span(raw, kHeaderSize), 100).kind, Decoded::Kind::kNeedMore);
  EXPECT_EQ(decode_frame(std::span(raw, kHeaderSize), 99).kind, Decoded::Kind::kError);
}

TEST(Frame, UnknownOpcodeIsSkippedWithoutLosingFraming) {
  std::string stream;
  FrameHeader h;
  h.opcode = 999;
  h.request_id = 5;
  wire::PingRequest body;
  body.set_payload("ignored");
  ASSERT_TRUE(append_frame(h, body, &stream).ok());
  stream += ping_frame(6, "next");
  const auto buffer = bytes_of(stream);
  Decoded d = decode_frame(buffer);
  ASSERT_EQ(d.kind, Decoded::Kind::kError);
  EXPECT_EQ(d.error.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(d.error.message().find("999"), std::string::npos);
  EXPECT_FALSE(d.framing_lost);
  EXPECT_EQ(d.header.request_id, 5u);
  Decoded next = decode_frame(std::span(buffer).subspan(d.consumed));
  ASSERT_EQ(next.kind, Decoded::Kind::kFrame);
  EXPECT_EQ(next.header.request_id, 6u);
}

TEST(Frame, ResponsesMayEchoAnyOpcode) {
  // The answer to an unknown opcode echoes it; a refusal sent before any request has opcode 0.
  for (std::uint16_t opcode : {std::uint16_t{0}, std::uint16_t{4242}}) {
    FrameHeader h;
    h.flags = kFlagResponse;
    h.opcode = opcode;
    h.status = StatusCode::kInvalidArgument;
    std::uint8_t raw[kHeaderSize];
    encode_header(h, raw);
    EXPECT_EQ(decode_frame(std::span(raw, kHeaderSize)).kind, Decoded::Kind::kFrame) << opcode;
  }
}

TEST(Frame, ForeignProtocolsAreRejectedAtTheFirstByte) {
  for (std::string foreign : {"GET / HTTP/1.1\r\n", "*1\r\n$4\r\nPING\r\n", "\x16\x03\x01"}) {
    const auto buffer = bytes_of(foreign);
    Decoded d = decode_frame(std::span(buffer.data(), 1));
    ASSERT_EQ(d.kind, Decoded::Kind::kError) << foreign;
    EXPECT_TRUE(d.framing_lost);
    EXPECT_NE(d.error.message().find("magic"), std::string::npos);
  }
  // 'S' followed by something else fails at the second byte.
  const std::uint8_t half[] = {'S', 'X'};
  EXPECT_EQ(decode_frame(half).kind, Decoded::Kind::kError);
}

TEST(Frame, WrongVersionAndReservedBitsLoseFraming) {
  auto frame = bytes_of(ping_frame(1, ""));
  frame[2] = 2;
  Decoded d = decode_frame(frame);
  ASSERT_EQ(d.kind, Decoded::Kind::kError);
  EXPECT_TRUE(d.framing_lost);
  EXPECT_NE(d.error.message().find("version 2"), std::string::npos);
  frame[2] = kProtocolVersion;
  frame[3] = 0x80;
  EXPECT_EQ(decode_frame(frame).kind, Decoded::Kind::kError);
  frame[3] = kFlagNewerEpoch;  // a response flag, not for requests
  EXPECT_EQ(decode_frame(frame).kind, Decoded::Kind::kError);
  frame[3] = kFlagResponse | kFlagNewerEpoch;
  EXPECT_EQ(decode_frame(frame).kind, Decoded::Kind::kFrame);
  frame[3] = 0;
  frame[7] = 1;
  EXPECT_EQ(decode_frame(frame).kind, Decoded::Kind::kError);
}

TEST(Frame, UnparsableBodyIsInvalidArgumentNamingTheOperation) {
  const std::uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
  wire::CreateRequest create;
  Status s = parse_body(garbage, Opcode::kCreate, &create);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("CREATE"), std::string::npos);
}

TEST(Frame, AppendRefusesBodiesOverTheLimit) {
  wire::PingRequest big;
  big.set_payload(std::string(2000, 'x'));
  std::string out;
  EXPECT_EQ(append_frame(FrameHeader{}, big, &out, 1000).code(), StatusCode::kTooLarge);
  EXPECT_TRUE(out.empty());
}

TEST(Frame, EveryOperationMessageRoundTrips) {
  wire::CreateRequest create;
  create.set_user_id("alice");
  auto* f = create.add_fields();
  f->set_name("cart");
  f->set_value(std::string("\0\1\2", 3));
  create.set_preset(wire::FINANCE);
  create.mutable_context()->set_ip("203.0.113.7");
  FrameHeader h;
  h.opcode = static_cast<std::uint16_t>(Opcode::kCreate);
  h.request_id = 42;
  std::string out;
  ASSERT_TRUE(append_frame(h, create, &out).ok());
  const auto buffer = bytes_of(out);
  Decoded d = decode_frame(buffer);
  ASSERT_EQ(d.kind, Decoded::Kind::kFrame);
  wire::CreateRequest back;
  ASSERT_TRUE(parse_body(d.body, Opcode::kCreate, &back).ok());
  EXPECT_EQ(back.user_id(), "alice");
  EXPECT_EQ(back.fields(0).value(), std::string("\0\1\2", 3));
  EXPECT_EQ(back.policy_case(), wire::CreateRequest::kPreset);
  EXPECT_EQ(back.context().ip(), "203.0.113.7");
}

TEST(Opcode, NamesAndKnownSet) {
  EXPECT_EQ(opcode_name(Opcode::kRevokeUser), "REVOKE_USER");
  EXPECT_TRUE(is_known_opcode(1));
  EXPECT_TRUE(is_known_opcode(13));
  EXPECT_TRUE(is_known_opcode(14));
  EXPECT_FALSE(is_known_opcode(0));
  EXPECT_FALSE(is_known_opcode(15));
  EXPECT_FALSE(is_known_opcode(63));
  EXPECT_TRUE(is_known_opcode(64));
  EXPECT_FALSE(is_known_opcode(67));
}

TEST(PrintableText, KeepsValidUtf8AndEscapesEverythingElse) {
  EXPECT_EQ(printable_text("field 'cart' given twice"), "field 'cart' given twice");
  EXPECT_EQ(printable_text("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8d\xaa"),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8d\xaa");  // 2, 3 and 4 bytes
  EXPECT_EQ(printable_text("a\xff"
                           "b"),
            "a\\xffb");                                                   // never valid
  EXPECT_EQ(printable_text("line\nbreak\t"), "line\\x0abreak\\x09");      // control characters
  EXPECT_EQ(printable_text("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
  EXPECT_EQ(printable_text("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // a surrogate
  EXPECT_EQ(printable_text("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // past U+10FFFF
  EXPECT_EQ(printable_text("end\xe2\x82"), "end\\xe2\\x82");              // cut short
  EXPECT_EQ(printable_text(std::string("nul\0", 4)), "nul\\x00");
  EXPECT_EQ(printable_text("a\\x41"), "a\\x5cx41");  // a backslash is escaped too
  EXPECT_EQ(printable_text("\xc2\x85\xc2\xa0"), "\\xc2\\x85\xc2\xa0");  // C1 NEL; NBSP kept
  EXPECT_EQ(printable_text("\xe2\x80\xae"
                           "evil"),
            "\\xe2\\x80\\xaeevil");                              // RIGHT-TO-LEFT OVERRIDE
  EXPECT_EQ(printable_text("\xe2\x81\xa6"), "\\xe2\\x81\\xa6");  // LEFT-TO-RIGHT ISOLATE
  EXPECT_EQ(printable_text("\xe2\x80\x94"), "\xe2\x80\x94");     // EM DASH kept
}

TEST(PrintableText, IsCutAtTheLimitBetweenCharacters) {
  EXPECT_EQ(printable_text("abcdef", 4), "abcd...");
  EXPECT_EQ(printable_text("ab\xff", 4), "ab...");                    // an escape is not split
  EXPECT_EQ(printable_text("a\xc3\xa9\xc3\xa9", 4), "a\xc3\xa9...");  // nor a character
  EXPECT_EQ(printable_text(std::string(100'000, '\xff'), 1024).size(), 1024u + 3);
  EXPECT_EQ(printable_text("short", 1024), "short");
}

// Whatever a client sends, an error message quoting it stays a message the receiver can parse
// (protobuf refuses a string field that is not UTF-8, and the whole response with it).
TEST(PrintableText, AnyBytesMakeAParsableErrorResponse) {
  std::mt19937 rng(7);
  for (int round = 0; round < 2000; ++round) {
    std::string bytes(static_cast<std::size_t>(rng() % 24), '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    if (round < 256) bytes = std::string(1, static_cast<char>(round));
    wire::ErrorResponse error;
    error.set_message("field '" + printable_text(bytes) + "' given twice");
    wire::ErrorResponse back;
    ASSERT_TRUE(back.ParseFromString(error.SerializeAsString())) << round;
    EXPECT_EQ(back.message(), error.message());
  }
}

}  // namespace
}  // namespace sessiond::protocol

namespace sessiond::protocol {
namespace {

TEST(BodyScan, HasFieldSeesTopLevelFieldsWithAValueOnly) {
  wire::CreateRequest req;
  req.set_user_id("alice");
  req.add_fields()->set_name("cart");
  req.mutable_fields(0)->set_value(std::string(300, 'v'));  // a two-byte length
  std::string body = req.SerializeAsString();
  EXPECT_TRUE(has_field(bytes_of(body), 1));
  EXPECT_TRUE(has_field(bytes_of(body), 2));
  EXPECT_FALSE(has_field(bytes_of(body), 14));
  req.set_request_id(std::string(16, 'r'));
  req.set_epoch(300);
  body = req.SerializeAsString();
  EXPECT_TRUE(has_field(bytes_of(body), 14));
  EXPECT_TRUE(has_field(bytes_of(body), 15));
  // Field 1 inside a field's message is not a top-level field 1 (Field.name is 1).
  wire::CreateRequest nested;
  nested.add_fields()->set_name("x");
  body = nested.SerializeAsString();
  EXPECT_FALSE(has_field(bytes_of(body), 1));
  // Cut short, or a length past the end: not well-formed, so no field.
  body = req.SerializeAsString();
  EXPECT_FALSE(has_field(bytes_of(body.substr(0, body.size() - 1)), 14));
  EXPECT_FALSE(has_field(bytes_of(std::string("\x72\x7f", 2)), 14));
}

TEST(BodyScan, TheHashWithoutTheEpochIgnoresTheEpochAndNothingElse) {
  wire::CreateRequest req;
  req.set_user_id("alice");
  req.add_fields()->set_name("cart");
  req.mutable_fields(0)->set_value("3 items");
  req.set_request_id(std::string(16, 'r'));
  const std::string plain = req.SerializeAsString();  // epoch 0 is not written at all
  const std::uint64_t h = hash_without_field(bytes_of(plain), 15);
  for (std::uint64_t epoch : {1ULL, 127ULL, 128ULL, 1ULL << 40}) {
    req.set_epoch(epoch);
    EXPECT_EQ(hash_without_field(bytes_of(req.SerializeAsString()), 15), h) << epoch;
  }
  // The epoch in the middle of the body (another client's order) is left out too.
  const std::string epoch_field = "\x78\x07";  // field 15, varint 7
  const std::size_t after_user = 2 + req.user_id().size();
  std::string middle = plain;
  middle.insert(after_user, epoch_field);
  EXPECT_EQ(hash_without_field(bytes_of(middle), 15), h);
  // Any other difference shows.
  req.set_epoch(0);
  req.set_user_id("mallory");
  EXPECT_NE(hash_without_field(bytes_of(req.SerializeAsString()), 15), h);
  req.set_user_id("alice");
  req.mutable_fields(0)->set_value("4 items");
  EXPECT_NE(hash_without_field(bytes_of(req.SerializeAsString()), 15), h);
  // Not well-formed: hashed whole, so still told apart from the well-formed body.
  EXPECT_NE(hash_without_field(bytes_of(plain + "\x7f"), 15), h);
}

}  // namespace
}  // namespace sessiond::protocol
