// libFuzzer target for the RESP parser (daemon/resp.h): parses every command in the input as
// the RESP listener will, checks the parser's promises, and checks that a parsed command
// re-encoded as an array of bulk strings parses back to the same arguments.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/resp.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using sessiond::daemon::resp::Parsed;
  sessiond::daemon::resp::Limits limits;
  limits.max_bulk_bytes = 4096;  // small, so short inputs reach the limit paths
  limits.max_arguments = 64;
  limits.max_inline_bytes = 1024;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> args;
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
    }
    rest.remove_prefix(p.consumed);
  }
  return 0;
}
