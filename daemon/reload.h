// Reloader: what SIGHUP does (docs/operations.md). It re-reads the command line and the --config
// file the node started with and applies, while serving, what can change without a restart: the
// log level, the session-security policies, the keys of signed ids, and the native listener's
// TLS certificate, key and client CA. Settings that take a restart are named in a warning and
// keep their running values.
#pragma once

#include <string>
#include <vector>

#include "daemon/config.h"
#include "daemon/handlers.h"
#include "daemon/security.h"
#include "daemon/server.h"
#include "protocol/status.h"

namespace sessiond::daemon {

// The keys of signed ids a node with `options` uses, and the file they come from: that of
// --id-key-file, else DATA_DIR/id-keys, made when missing by a node that signs ids. Empty keys
// (signer off) when the node signs nothing and has no key file. Errors name the file.
struct NodeIdKeys {
  IdKeys keys;
  std::string path;
  bool loaded = false;  // a key file was read (or made)
};
Result<NodeIdKeys> load_node_id_keys(const ServerOptions& options);

// The flags whose value differs between `running` and `wanted` and that only a restart can
// change (--listen, --data-dir, --threads, ...), by name.
std::vector<std::string> settings_needing_restart(const ServerOptions& running,
                                                  const ServerOptions& wanted);

class Reloader {
 public:
  // `argv` (main's) must outlive the Reloader; `running` is what the node started with, and
  // `keys` the id keys it loaded.
  Reloader(int argc, const char* const* argv, ServerOptions running, IdKeys keys,
           Handlers& handlers, Server& server);

  // Re-reads the command line and config file and applies what can be reloaded, all or
  // nothing: when something cannot be loaded (a bad config, key or certificate file) nothing
  // changes, and the status says what failed. Logs one line per thing reloaded and a warning
  // for changed settings that need a restart. One caller at a time (main's signal thread).
  Status reload();

 private:
  int argc_;
  const char* const* argv_;
  ServerOptions running_;  // what the node runs with now
  IdKeys keys_;            // the id keys in use (to say whether a reload rotated them)
  Handlers& handlers_;
  Server& server_;
};

}  // namespace sessiond::daemon
