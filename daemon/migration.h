// Live migration of ranges when the region's membership changes (DESIGN §6; docs/cluster.md,
// "Adding and removing nodes"). The topology's migration record (written by `sessctl cluster`)
// names the target nodes; every node that owns keys the target ring gives to another node is a
// source, and runs one migration at a time:
//
//   1. it registers an observer that queues every later write to a moving key, then streams
//      the moving states from memory (export_states: sessions with coalesced touches, access
//      history, tombstones, revocation generations) to their target owners with MIGRATE, where
//      apply() merges them with their original versions;
//   2. it sends what the observer queued meanwhile;
//   3. handover: it fences the moving keys (writes to them answer UNAVAILABLE, after the
//      writes already admitted finish), sends the last queued writes, and records
//      `migrations/M/done/NODE` in etcd;
//   4. whichever source finds every source done swaps the topology to the target (CAS on its
//      revision, epoch + 1); every source then forgets what it no longer owns.
//
// Either side may die mid-way: a source that returns streams again (apply() is idempotent) or,
// if its done marker is there, stays fenced until the swap; a receiver that returns is streamed
// to again when the source's sends fail and are retried.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>

#include "cluster/membership.h"
#include "replication/codec.h"
#include "storage/id_generator.h"
#include "storage/session_table.h"

namespace sessiond::wire {
class MigrateRequest;
class MigrateResponse;
}  // namespace sessiond::wire

namespace sessiond::daemon {

class Migrator {
 public:
  Migrator(storage::SessionTable& table, cluster::Membership& membership,
           const storage::IdGenerator& ids, std::string peer_secret,
           std::function<void(bool warning, const std::string&)> log);
  // Stops the running migration's thread (it resumes after a restart) and the observer.
  ~Migrator();
  Migrator(const Migrator&) = delete;
  Migrator& operator=(const Migrator&) = delete;

  // Follows the membership's topology from now on (and acts on the current one).
  void start();

  // A write to the key at `position`: OK (with `guard` holding the migration's gate until the
  // write is done) or UNAVAILABLE while the key is fenced for its handover.
  Status admit_write(const cluster::Routing& routing, std::uint64_t position,
                     std::shared_lock<std::shared_mutex>* guard);

  // MIGRATE on the receiving node: checks that the migration runs and that every entry belongs
  // to this node under its target, then merges each with apply().
  Status receive(const wire::MigrateRequest& request, wire::MigrateResponse* response);

 private:
  void on_topology(const std::shared_ptr<const cluster::Routing>& routing);
  void loop();  // the migration thread: runs each migration the topology names, one at a time
  void run(std::uint64_t migration);
  // Sends `entries` to node `target` (an id) until they are applied there, the migration ends
  // or we stop.
  bool send(std::uint64_t migration, const std::string& target,
            std::vector<replication::OwnedMutation>& entries);
  bool still_running(std::uint64_t migration) const;
  Status try_complete(std::uint64_t migration);
  void wait(std::chrono::milliseconds period);
  std::uint64_t position_of(const storage::Mutation& m) const;
  // Records in etcd whether this node holds sessions of users made before route keys
  // (Membership::legacy_holders): at start, after each migration, and every 10 minutes while
  // it does; receive() records it before it applies the first such session.
  void recount_legacy(bool at_start);

  storage::SessionTable& table_;
  cluster::Membership& membership_;
  const storage::IdGenerator& ids_;
  const std::string peer_secret_;
  std::function<void(bool, const std::string&)> log_;

  // Writes to moving keys hold it shared; the handover takes it exclusively to fence.
  std::shared_mutex gate_;
  std::atomic<std::uint64_t> fenced_{0};  // the migration whose moving keys are fenced

  std::mutex mu_;  // guards queue_, overflowed_, changed_
  std::condition_variable cv_;
  std::deque<replication::OwnedMutation> queue_;  // writes to moving keys not yet sent
  bool overflowed_ = false;  // the queue was full: stream the whole range again
  bool changed_ = false;     // a new topology arrived since the thread last looked
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::uint64_t subscription_ = 0;  // the membership's on_change handle
  std::mutex legacy_mu_;            // serializes counting and recording legacy holdings
  std::atomic<bool> holds_legacy_{false};
  // The running migration's progress (its thread only), put in etcd about twice a second.
  std::uint64_t moved_sessions_ = 0, moved_bytes_ = 0;
  std::chrono::steady_clock::time_point progress_put_;
};

}  // namespace sessiond::daemon
