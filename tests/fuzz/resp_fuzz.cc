// libFuzzer target for the RESP listener's input path: parses every command in the input as
// the listener does (daemon/resp.h), checks the parser's promises and that a parsed command
// re-encoded as an array of bulk strings parses back to the same arguments, then executes it
// (daemon/resp_commands.h) on an in-memory table and checks that exactly one reply came back,
// and that no reply passes the reply limit (a multi-key reply past it becomes an error). The
// commands of one input share a connection (transactions, databases, subscriptions).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/resp.h"
#include "daemon/resp_commands.h"
#include "storage/clock.h"
#include "storage/session_table.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// One reply: a type byte, and CRLF at the end.
bool one_reply(const std::string& out) {
  return out.size() >= 3 && std::string_view("+-:$*").find(out[0]) != std::string_view::npos &&
         out.compare(out.size() - 2, 2, "\r\n") == 0;
}

// Above the largest single value (max_session_bytes below), so only replies that grow with
// their arguments or the data can reach it.
constexpr std::size_t kMaxReplyBytes = 96 << 10;

struct Engine {
  Engine()
      : table(options(), clock, nullptr),
        commands(table, clock, {nullptr, 0, 0, nullptr, kMaxReplyBytes}) {}
  static sessiond::storage::TableOptions options() {
    sessiond::storage::TableOptions o;
    o.shard_count = 4;
    o.max_session_bytes = 64 << 10;
    return o;
  }
  sessiond::storage::ManualClock clock;
  sessiond::storage::SessionTable table;
  sessiond::daemon::resp::Commands commands;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using sessiond::daemon::resp::Parsed;
  sessiond::daemon::resp::Limits limits;
  limits.max_bulk_bytes = 4096;  // small, so short inputs reach the limit paths
  limits.max_arguments = 64;
  limits.max_inline_bytes = 1024;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> args;
  // One connection per input: MULTI, WATCH, SELECT and SUBSCRIBE carry over to its next
  // commands.
  sessiond::daemon::resp::ClientState client;
  while (!rest.empty()) {
    const Parsed p = sessiond::daemon::resp::parse_command(rest, limits, &args);
    if (p.kind == Parsed::Kind::kNeedMore || p.kind == Parsed::Kind::kError) {
      check(p.kind == Parsed::Kind::kNeedMore || p.error.rfind("ERR Protocol error: ", 0) == 0);
      break;
    }
    check(p.consumed > 0 && p.consumed <= rest.size());
    if (p.kind == Parsed::Kind::kCommand) {
      check(!args.empty() && args.size() <= limits.max_arguments);
      std::string encoded;
      sessiond::daemon::resp::append_array_header(&encoded, args.size());
      for (std::string_view a : args) {
        check(a.size() <= rest.size());  // quoted inline arguments only ever shrink
        sessiond::daemon::resp::append_bulk(&encoded, a);
      }
      const std::vector<std::string> copy(args.begin(), args.end());
      std::vector<std::string_view> again;
      sessiond::daemon::resp::Limits roomy;
      roomy.max_bulk_bytes = 1u << 20;
      const Parsed q = sessiond::daemon::resp::parse_command(encoded, roomy, &again);
      check(q.kind == Parsed::Kind::kCommand && q.consumed == encoded.size());
      check(std::vector<std::string>(again.begin(), again.end()) == copy);

      static Engine* engine = new Engine;
      std::string out;
      engine->commands.execute(args, client, &out);
      check(one_reply(out));
      // The limit, or an error in its place; EXEC's array may pass it by its last command's
      // reply and a short error for each command after.
      const bool exec = args[0].size() == 4 && (args[0][0] | 0x20) == 'e' &&
                        (args[0][1] | 0x20) == 'x' && (args[0][2] | 0x20) == 'e' &&
                        (args[0][3] | 0x20) == 'c';
      check(out.size() <= (exec ? 2 * kMaxReplyBytes + 128 * 10'000 : kMaxReplyBytes + 256));
      engine->clock.advance_ms(37);  // TTLs run out across commands
      if (engine->table.size() > 1000) {
        const std::vector<std::string_view> flush{"FLUSHDB"};
        out.clear();
        engine->commands.execute(flush, client, &out);
        check(out == "+OK\r\n");
      }
    }
    rest.remove_prefix(p.consumed);
  }
  return 0;
}
