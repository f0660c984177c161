// Whether a file named in the configuration can be read, checked before a library (OpenSSL)
// tries and reports it less clearly: the node's and the client's TLS files.
#pragma once

#include <string>
#include <string_view>

#include "protocol/status.h"

namespace sessiond {

// OK when `path` can be opened for reading; else INVALID_ARGUMENT "cannot read <what> <path>:
// <errno text>" (the clearest message for the common mistakes: a typo, a file owned by root).
Status check_readable(const std::string& path, std::string_view what);

}  // namespace sessiond
