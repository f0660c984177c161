// "host:port" addresses, as the node's --listen and the client's ClientOptions::address take
// them: one parser, so that both accept and refuse the same texts.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "protocol/status.h"

namespace sessiond {

struct HostPort {
  std::string host;  // a name or an IP address, without the brackets of "[v6]"
  std::uint16_t port = 0;
};

// Splits "host:port", or "[v6]:port" for an IPv6 address (a bare one is ambiguous and refused).
// The port is 0-65535: 0 means "any free port" to a listener, and callers that connect refuse it.
// INVALID_ARGUMENT quoting the text and saying what is wrong with it otherwise.
Result<HostPort> parse_host_port(std::string_view text);

}  // namespace sessiond
