// Server: the native-protocol listener and, when configured, the RESP listener (DESIGN §10).
// W worker threads, each running its own io_context; connections of both listeners are handed
// out round-robin and served by one coroutine each.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "cluster/membership.h"
#include "daemon/config.h"
#include "daemon/handlers.h"
#include "daemon/metrics.h"
#include "daemon/resp_commands.h"
#include "daemon/tls.h"
#include "protocol/status.h"

namespace sessiond::daemon {

class Server {
 public:
  // `resp` serves the RESP listener; it must be given when options.resp_port >= 0.
  Server(const ServerOptions& options, Handlers& handlers, Counters& counters,
         resp::Commands* resp = nullptr);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The TLS context of the native listener, when the caller has made it already (main does,
  // to fail on unusable certificate files before recovery); otherwise bind() makes it from
  // options.tls. Call before bind().
  void use_tls_context(SslCtxPtr context);
  // Replaces the native listener's TLS context while serving (a SIGHUP reload): connections
  // accepted from then on use `context`, those already open keep the one they started with.
  // Safe from any thread; ignored when the listener is plaintext (turning TLS on or off takes
  // a restart).
  void reload_tls(SslCtxPtr context);
  // Cluster mode (docs/cluster.md, "RESP in a cluster"): a RESP command for keys another node
  // owns is forwarded to that node's RESP listener and its reply relayed. Set before run().
  // With `replicas`, RESP replies wait for replicas as --replica-ack says (docs/cluster.md).
  void set_cluster(cluster::Membership* membership, Replicas* replicas);
  // Where request latencies and answer statuses are counted (daemon/metrics.h); none when not
  // set. Set before run().
  void set_metrics(RequestMetrics* metrics);
  // Answers held for replicas (--replica-ack) are looked at again: their replicas confirmed
  // more. Safe from any thread (a shipper's calls it).
  void wake_replica_waits();
  // Whether every worker thread runs a task posted to it within `timeout` (none is stuck): the
  // systemd watchdog's test. Safe from any thread while run() runs.
  bool workers_respond(std::chrono::milliseconds timeout);
  // Binds the listeners; UNAVAILABLE naming the address when it cannot (in use, no permission).
  Status bind();
  // The bound "host:port" (the real port when asked for port 0).
  std::string address() const;
  // The RESP listener's bound "host:port"; empty when it is off.
  std::string resp_address() const;
  // Serves until stop(): starts the worker threads and returns when they have finished.
  void run();
  // Stops accepting, lets every connection finish the frames it has received, then makes
  // run() return. Safe from any thread and from a signal handler's io_context.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sessiond::daemon
