// libFuzzer target for the native request handlers with the session-security policy on: every
// frame of the input goes through Handlers::handle on an in-memory table, as one connection of
// a node with signed ids (finance and healthcare presets), hijack detection and a context
// policy would see it. Each request must get exactly one response frame that decodes, with its
// request id. A request whose session id is one byte long names, by that byte, one of the
// sessions this input created (in the form the node handed out), so that the fuzzer reaches
// reads, updates and hijack findings of live sessions, signed ones included. Consecutive
// CREATEs are handled together (handle_creates), as the server does.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "daemon/handlers.h"
#include "protocol/frame.h"
#include "protocol/sessiond.pb.h"
#include "storage/clock.h"
#include "storage/session_table.h"

namespace {

using sessiond::protocol::Decoded;
using sessiond::protocol::Opcode;
namespace wire = sessiond::wire;

void check(bool ok) {
  if (!ok) std::abort();
}

// Operations whose request has the session id as field 1.
bool names_a_session(Opcode op) {
  switch (op) {
    case Opcode::kGet:
    case Opcode::kUpdate:
    case Opcode::kTouch:
    case Opcode::kDestroy:
    case Opcode::kRegenerate:
    case Opcode::kAccessLog:
      return true;
    default:
      return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr std::uint32_t kMaxBody = 4096;
  sessiond::storage::ManualClock clock;
  sessiond::storage::TableOptions options;
  options.shard_count = 4;
  options.max_sessions_per_user = 3;
  sessiond::storage::SessionTable table(options, clock, nullptr);
  sessiond::daemon::Counters counters;
  sessiond::daemon::Handlers handlers(table, nullptr, counters, "fuzz:1", kMaxBody);
  sessiond::daemon::IdKeys keys;
  keys.current.assign(sessiond::daemon::kIdKeyBytes, 'c');
  keys.previous.assign(sessiond::daemon::kIdKeyBytes, 'p');
  keys.previous_until_ms = clock.now_ms() + 1000;
  sessiond::daemon::SecurityPolicy policy;
  policy.hijack.max_distinct_ips = 2;
  handlers.set_security(policy, sessiond::daemon::IdSigner(keys), clock);

  std::vector<std::string> created;         // wire ids, in the order the node handed them out
  sessiond::daemon::ConnectionState state;  // no secrets: admin, and no AUTH ever fails
  state.role = sessiond::daemon::Role::kAdmin;
  // Checks that `out` holds exactly one response for each of `requests`, in order, and keeps
  // the ids that CREATE and REGENERATE handed out.
  const auto check_responses = [&](const std::vector<sessiond::protocol::FrameHeader>& requests,
                                   const std::string& out) {
    std::span<const std::uint8_t> answers(reinterpret_cast<const std::uint8_t*>(out.data()),
                                          out.size());
    for (const auto& request : requests) {
      const Decoded r = sessiond::protocol::decode_frame(answers, kMaxBody);
      check(r.kind == Decoded::Kind::kFrame);
      check(r.header.is_response() && r.header.request_id == request.request_id);
      answers = answers.subspan(r.consumed);
      if (r.header.status != sessiond::StatusCode::kOk) continue;
      const auto op = static_cast<Opcode>(request.opcode);
      if (op == Opcode::kCreate) {
        wire::CreateResponse resp;
        check(resp.ParseFromArray(r.body.data(), static_cast<int>(r.body.size())));
        created.push_back(resp.session().id());
      } else if (op == Opcode::kRegenerate) {
        wire::RegenerateResponse resp;
        check(resp.ParseFromArray(r.body.data(), static_cast<int>(r.body.size())));
        created.push_back(resp.session().id());
      }
    }
    check(answers.empty());
  };
  // Consecutive CREATEs go to handle_creates together, as the server sends them.
  std::vector<sessiond::daemon::Handlers::Request> creates;
  std::vector<sessiond::protocol::FrameHeader> create_headers;
  const auto flush_creates = [&] {
    if (creates.empty()) return;
    std::string out;
    handlers.handle_creates(creates, &state, &out);
    check_responses(create_headers, out);
    creates.clear();
    create_headers.clear();
  };
  std::span<const std::uint8_t> rest(data, size);
  while (!rest.empty()) {
    Decoded d = sessiond::protocol::decode_frame(rest, kMaxBody);
    if (d.kind != Decoded::Kind::kFrame) break;  // the frame decoder has its own target
    rest = rest.subspan(d.consumed);
    const auto op = static_cast<Opcode>(d.header.opcode);
    if (op == Opcode::kCreate) {
      creates.push_back({d.header, d.body});  // the body stays valid: it points into `data`
      create_headers.push_back(d.header);
      continue;
    }
    flush_creates();
    clock.advance_ms(d.header.request_id & 0xffff);  // time moves as the input says
    std::string body(reinterpret_cast<const char*>(d.body.data()), d.body.size());
    if (names_a_session(op) && !created.empty()) {
      wire::TouchRequest id_only;  // field 1 only; the other fields stay as unknown fields
      if (id_only.ParseFromString(body) && id_only.id().size() == 1) {
        id_only.set_id(created[static_cast<std::uint8_t>(id_only.id()[0]) % created.size()]);
        body = id_only.SerializeAsString();
      }
    }
    std::string out;
    const auto bytes = std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
    handlers.handle(d.header, bytes, &state, &out);
    check_responses({d.header}, out);
  }
  flush_creates();
  return 0;
}
