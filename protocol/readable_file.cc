#include "protocol/readable_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sessiond {

Status check_readable(const std::string& path, std::string_view what) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return Status::InvalidArgument("cannot read " + std::string(what) + " " + path + ": " +
                                   std::strerror(errno));
  }
  std::fclose(file);
  return {};
}

}  // namespace sessiond
