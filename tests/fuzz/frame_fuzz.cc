// libFuzzer target for the frame decoder and the request bodies: decodes every frame in the
// input as the daemon would (header first, then the body as the opcode's message), re-encodes
// what parsed, and checks the decoder's promises. Built with clang by scripts/fuzz; with any
// compiler, tests/fuzz/replay_main.cc replays the seed corpus as a unit test.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>

#include "protocol/frame.h"
#include "protocol/sessiond.pb.h"

namespace {

using sessiond::protocol::Decoded;
using sessiond::protocol::Opcode;

void check(bool ok) {
  if (!ok) std::abort();
}

std::unique_ptr<google::protobuf::MessageLite> request_for(std::uint16_t opcode) {
  namespace wire = sessiond::wire;
  switch (static_cast<Opcode>(opcode)) {
    case Opcode::kPing:
      return std::make_unique<wire::PingRequest>();
    case Opcode::kAuth:
      return std::make_unique<wire::AuthRequest>();
    case Opcode::kCreate:
      return std::make_unique<wire::CreateRequest>();
    case Opcode::kGet:
      return std::make_unique<wire::GetRequest>();
    case Opcode::kUpdate:
      return std::make_unique<wire::UpdateRequest>();
    case Opcode::kTouch:
      return std::make_unique<wire::TouchRequest>();
    case Opcode::kDestroy:
      return std::make_unique<wire::DestroyRequest>();
    case Opcode::kRegenerate:
      return std::make_unique<wire::RegenerateRequest>();
    case Opcode::kListUser:
      return std::make_unique<wire::ListUserRequest>();
    case Opcode::kRevokeUser:
      return std::make_unique<wire::RevokeUserRequest>();
    case Opcode::kAccessLog:
      return std::make_unique<wire::AccessLogRequest>();
    case Opcode::kStats:
      return std::make_unique<wire::StatsRequest>();
    case Opcode::kTopology:
      return std::make_unique<wire::TopologyRequest>();
    default:
      return std::make_unique<wire::PingRequest>();  // internal ops: a bytes-only message
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A small limit so the fuzzer reaches the over-limit path with short inputs.
  constexpr std::uint32_t kMaxBody = 4096;
  std::span<const std::uint8_t> rest(data, size);
  while (!rest.empty()) {
    Decoded d = sessiond::protocol::decode_frame(rest, kMaxBody);
    if (d.kind == Decoded::Kind::kNeedMore) {
      check(d.need > rest.size() && d.need <= sessiond::protocol::kHeaderSize + kMaxBody);
      break;
    }
    if (d.kind == Decoded::Kind::kError) {
      check(!d.error.ok());
      if (d.framing_lost) break;
      check(d.consumed >= sessiond::protocol::kHeaderSize && d.consumed <= rest.size());
      rest = rest.subspan(d.consumed);
      continue;
    }
    check(d.consumed == sessiond::protocol::kHeaderSize + d.body.size());
    check(d.consumed <= rest.size() && d.body.size() <= kMaxBody);
    check(d.body.data() == rest.data() + sessiond::protocol::kHeaderSize);
    auto message = request_for(d.header.opcode);
    if (sessiond::protocol::parse_body(d.body, static_cast<Opcode>(d.header.opcode), message.get())
            .ok()) {
      std::string again;
      sessiond::protocol::FrameHeader h = d.header;
      if (sessiond::protocol::append_frame(h, *message, &again, 1u << 30).ok()) {
        auto redecoded = sessiond::protocol::decode_frame(
            std::span(reinterpret_cast<const std::uint8_t*>(again.data()), again.size()), 1u << 30);
        check(redecoded.kind == Decoded::Kind::kFrame);
        check(redecoded.header.request_id == h.request_id);
      }
    }
    rest = rest.subspan(d.consumed);
  }
  return 0;
}
