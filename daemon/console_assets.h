// The web console's files (daemon/console/ and Debian's Chart.js), compiled into the binary by
// cmake/EmbedFiles.cmake: nothing is read from disk or fetched from elsewhere at run time.
#pragma once

#include <span>
#include <string_view>

namespace sessiond::daemon {

struct ConsoleFile {
  std::string_view path;  // "/index.html", "/console.js", "/chart.min.js", ...
  std::string_view content_type;
  std::string_view body;
};

std::span<const ConsoleFile> console_files();

}  // namespace sessiond::daemon
