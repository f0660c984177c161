#include "protocol/host_port.h"

#include <charconv>

namespace sessiond {

Result<HostPort> parse_host_port(std::string_view text) {
  const std::string quoted = "'" + std::string(text) + "'";
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) {
    return Status::InvalidArgument(quoted + " is not HOST:PORT");
  }
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return Status::InvalidArgument(quoted + " has an IPv6 host without brackets ([::1]:7400)");
  }
  if (host.empty()) return Status::InvalidArgument(quoted + " has no host");
  unsigned value = 0;
  const char* begin = text.data() + colon + 1;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr != end || value > 65535) {
    return Status::InvalidArgument(quoted + " has no valid port (0-65535)");
  }
  return HostPort{std::string(host), static_cast<std::uint16_t>(value)};
}

}  // namespace sessiond
