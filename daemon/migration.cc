#include "daemon/migration.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "cluster/ring.h"
#include "protocol/sessiond.pb.h"
#include "replication/applier.h"
#include "replication/peer_link.h"

namespace sessiond::daemon {
namespace {

using namespace std::chrono_literals;

// Writes to moving keys queued while the range streams; past this the queue is dropped and the
// range streamed again (a state-based merge needs the latest state, not every step).
constexpr std::size_t kMaxQueued = 100'000;
constexpr std::size_t kBatch = 256;  // entries per MIGRATE

std::uint64_t id_position(const storage::SessionId& id) {
  return cluster::ring_position(
      std::string_view(reinterpret_cast<const char*>(id.data()), id.size()));
}

}  // namespace

Migrator::Migrator(storage::SessionTable& table, cluster::Membership& membership,
                   const storage::IdGenerator& ids, std::string peer_secret,
                   std::function<void(bool, const std::string&)> log)
    : table_(table),
      membership_(membership),
      ids_(ids),
      peer_secret_(std::move(peer_secret)),
      log_(std::move(log)) {}

Migrator::~Migrator() {
  if (subscription_ != 0) membership_.remove_on_change(subscription_);
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Migrator::recount_legacy(bool at_start) {
  std::lock_guard lock(legacy_mu_);
  const std::size_t n = table_.count_off_user_key();
  if (!at_start && (n > 0) == holds_legacy_.load()) return;
  if (at_start && n == 0) {
    const auto holders = membership_.legacy_holders();
    if (std::find(holders.begin(), holders.end(), membership_.options().node_id) == holders.end()) {
      return;
    }
  }
  if (Status s = membership_.set_legacy_sessions(n); !s.ok()) {
    log_(true, "recording in etcd that this node holds " + std::to_string(n) +
                   " sessions made before route keys failed: " + s.ToString());
    return;
  }
  holds_legacy_ = n > 0;
  if (n > 0) {
    log_(false, std::to_string(n) +
                    " sessions of users were made before route keys: they stay where their ids "
                    "route, and this node answers for them to their users' nodes");
  }
}

void Migrator::start() {
  recount_legacy(true);
  subscription_ = membership_.on_change(
      [this](const std::shared_ptr<const cluster::Routing>& r) { on_topology(r); });
  thread_ = std::thread([this] { loop(); });
}

std::uint64_t Migrator::position_of(const storage::Mutation& m) const {
  return replication::position_of(m, ids_);
}

void Migrator::on_topology(const std::shared_ptr<const cluster::Routing>&) {
  {
    std::lock_guard lock(mu_);
    changed_ = true;
  }
  cv_.notify_all();
}

void Migrator::loop() {
  std::uint64_t last = 0;  // the migration last run; a restart runs the current one again
  auto recounted = std::chrono::steady_clock::now();
  while (!stop_) {
    const auto routing = membership_.routing();
    if (routing->topology.migration && routing->topology.migration->id != last) {
      last = routing->topology.migration->id;
      run(last);
      recount_legacy(false);
      recounted = std::chrono::steady_clock::now();
      continue;
    }
    if (holds_legacy_ && std::chrono::steady_clock::now() - recounted > 10min) {
      recount_legacy(false);  // they expire: the entry goes with the last
      recounted = std::chrono::steady_clock::now();
    }
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, 1s, [&] { return stop_ || changed_; });
    changed_ = false;
  }
}

bool Migrator::still_running(std::uint64_t migration) const {
  const auto routing = membership_.routing();
  return !stop_ && routing->topology.migration && routing->topology.migration->id == migration;
}

void Migrator::wait(std::chrono::milliseconds period) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, period, [&] { return stop_.load(); });
}

Status Migrator::admit_write(const cluster::Routing& routing, std::uint64_t position,
                             std::shared_lock<std::shared_mutex>* guard) {
  if (!routing.topology.migration) return {};
  const cluster::Node* to = routing.target_owner(position);
  if (to == nullptr || !routing.self || to->id == routing.topology.nodes[*routing.self].id) {
    return {};
  }
  *guard = std::shared_lock(gate_);
  // The request routed by a topology that has been replaced meanwhile (the swap, and this
  // node's forget, may have happened since): not here any more.
  if (fenced_.load() == routing.topology.migration->id ||
      membership_.routing()->topology.epoch != routing.topology.epoch) {
    guard->unlock();
    return Status::Unavailable("this key is moving to node " + to->id + " (" +
                               routing.topology.migration->reason +
                               "); its handover takes moments: retry");
  }
  return {};
}

bool Migrator::send(std::uint64_t migration, const std::string& target,
                    std::vector<replication::OwnedMutation>& entries) {
  if (entries.empty()) return true;
  wire::MigrateRequest request;
  request.set_migration(migration);
  request.set_from_node(membership_.options().node_id);
  for (const auto& e : entries) replication::to_wire(e.m, request.add_entries());
  auto backoff = 100ms;
  bool complained = false;
  for (;;) {
    // The target's address as the topology says now: a node that restarted elsewhere
    // corrects it there.
    std::string address;
    const auto routing = membership_.routing();
    if (routing->topology.migration) {
      for (const cluster::Node& n : routing->topology.migration->target) {
        if (n.id == target) address = n.address;
      }
    }
    replication::PeerLink link(address, peer_secret_);
    wire::MigrateResponse response;
    Status s = address.empty() ? Status::Unavailable("node " + target + " has no address")
                               : link.call(protocol::Opcode::kMigrate, request, &response);
    if (s.ok()) {
      for (const auto& e : entries) moved_sessions_ += e.m.kind == storage::Mutation::Kind::kPut;
      moved_bytes_ += request.ByteSizeLong();
      if (std::chrono::steady_clock::now() - progress_put_ > 500ms) {
        progress_put_ = std::chrono::steady_clock::now();
        const nlohmann::json p = {{"sessions", moved_sessions_}, {"bytes", moved_bytes_}};
        (void)membership_.etcd().put(
            cluster::migration_prefix(routing->topology.region, migration) + "progress/" +
                membership_.options().node_id,
            p.dump());
      }
      if (complained)
        log_(false, "migration " + std::to_string(migration) + ": " + target + " answers again");
      entries.clear();
      return true;
    }
    if (!complained) {
      log_(true, "migration " + std::to_string(migration) + ": sending to " + target +
                     " failed (retrying): " + s.ToString());
      complained = true;
    }
    wait(backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, 2s);
    if (!still_running(migration)) return false;
  }
}

void Migrator::run(std::uint64_t migration) {
  const auto routing = membership_.routing();
  if (!routing->topology.migration || routing->topology.migration->id != migration) return;
  const std::string self = membership_.options().node_id;
  const std::string region = routing->topology.region;
  const std::string prefix = cluster::migration_prefix(region, migration);
  const bool source = routing->self.has_value();
  auto moving = [routing, self](std::uint64_t position) {
    if (!routing->owns(position)) return false;
    const cluster::Node* to = routing->target_owner(position);
    return to != nullptr && to->id != self;
  };
  const storage::SessionTable::Selection select{
      [&](const storage::SessionId& id) { return moving(id_position(id)); },
      [&](std::string_view user) { return moving(ids_.route_key_of_user(user)); }};

  if (source) {
    log_(false, "migration " + std::to_string(migration) + " (" +
                    routing->topology.migration->reason + "): streaming this node's moving keys");
    auto done = membership_.etcd().get(prefix + "done/" + self);
    while (!done.ok() && still_running(migration)) {
      wait(500ms);
      done = membership_.etcd().get(prefix + "done/" + self);
    }
    if (!still_running(migration)) return;
    if (done->has_value()) {
      fenced_ = migration;  // handed over before a restart: stays fenced until the swap
    } else {
      {
        std::lock_guard lock(mu_);
        queue_.clear();
      }
      // By value: a call already under way when the observer is removed may still finish.
      const std::uint64_t observer =
          table_.on_change([this, moving](const storage::Mutation& m, std::uint64_t) {
            if (!moving(position_of(m))) return;
            std::lock_guard lock(mu_);
            if (queue_.size() >= kMaxQueued) {
              overflowed_ = true;
              queue_.clear();
              return;
            }
            queue_.emplace_back(m);
          });
      std::uint64_t sessions = 0, entries_sent = 0;
      moved_sessions_ = moved_bytes_ = 0;
      bool handed_over = false;
      while (still_running(migration)) {
        {
          std::lock_guard lock(mu_);
          overflowed_ = false;
        }
        std::map<std::string, std::vector<replication::OwnedMutation>> pending;
        std::map<std::string, std::size_t> pending_bytes;
        bool ok = true;
        auto add = [&](const storage::Mutation& m) {
          const cluster::Node* to = routing->target_owner(position_of(m));
          if (to == nullptr) return;
          auto& list = pending[to->id];
          list.emplace_back(m);
          ++entries_sent;
          if (m.kind == storage::Mutation::Kind::kPut) ++sessions;
          std::size_t& bytes = pending_bytes[to->id];
          bytes += m.value.size() + m.user.size() + 64;
          if (list.size() >= kBatch || bytes >= replication::kMaxBatchBytes) {
            ok = ok && send(migration, to->id, list);
            bytes = 0;
          }
        };
        table_.export_states(select, [&](std::span<const storage::Mutation> batch) {
          for (const auto& m : batch) add(m);
        });
        auto flush = [&] {
          for (auto& [target, list] : pending) ok = ok && send(migration, target, list);
        };
        flush();
        // The writes queued meanwhile; then fence, and the last of them.
        auto drain = [&] {
          for (;;) {
            std::deque<replication::OwnedMutation> taken;
            {
              std::lock_guard lock(mu_);
              taken.swap(queue_);
            }
            if (taken.empty()) return;
            for (const auto& m : taken) add(m.m);
            flush();
          }
        };
        drain();
        if (!ok) break;
        // Fence first (new writes to moving keys are refused from here on), then wait for the
        // writes admitted before to finish: taking the gate exclusively needs no lull in the
        // traffic, since refused writes hold it only for a moment.
        fenced_ = migration;
        { std::unique_lock gate(gate_); }
        drain();
        bool again;
        {
          std::lock_guard lock(mu_);
          again = overflowed_;
        }
        if (!ok) break;
        if (again) continue;  // the queue overflowed: stream the range again (fenced now)
        handed_over = true;
        break;
      }
      table_.remove_observer(observer);
      if (!handed_over) {
        fenced_ = 0;
        return;
      }
      const nlohmann::json progress = {
          {"sessions", moved_sessions_}, {"bytes", moved_bytes_}, {"entries", entries_sent}};
      while (still_running(migration)) {
        if (membership_.etcd().put(prefix + "done/" + self, progress.dump()).ok()) break;
        wait(500ms);
      }
      log_(false, "migration " + std::to_string(migration) + ": handed over " +
                      std::to_string(sessions) + " sessions (" + std::to_string(entries_sent) +
                      " entries)");
    }
  }
  // Until the swap: every source tries it once all are done.
  while (still_running(migration)) {
    if (source) {
      if (Status s = try_complete(migration); !s.ok()) {
        log_(true, "migration " + std::to_string(migration) + ": " + s.ToString());
      }
    }
    wait(250ms);
  }
  if (stop_) return;
  if (source) {
    // What this node neither owns nor replicates now, nor is about to own: a later migration
    // may already run and be streaming keys to it.
    const auto after = membership_.routing();
    auto gone_at = [&](std::uint64_t position) {
      if (after->owns(position) || after->replicates(position)) return false;
      const cluster::Node* to = after->target_owner(position);
      return to == nullptr || to->id != self;
    };
    const storage::SessionTable::Selection gone{
        [&](const storage::SessionId& id) { return gone_at(id_position(id)); },
        [&](std::string_view user) { return gone_at(ids_.route_key_of_user(user)); }};
    auto forgotten = table_.forget(gone);
    log_(!forgotten.ok(),
         forgotten.ok() ? "migration " + std::to_string(migration) + " done: forgot " +
                              std::to_string(*forgotten) + " sessions now owned elsewhere"
                        : "forgetting moved sessions failed: " + forgotten.status().ToString());
  }
  fenced_ = 0;
}

Status Migrator::try_complete(std::uint64_t migration) {
  auto current = membership_.read_topology();
  if (!current.ok()) return current.status();
  const cluster::Topology& t = current->first;
  if (!t.migration || t.migration->id != migration) return {};
  const std::string prefix = cluster::migration_prefix(t.region, migration);
  auto done = membership_.etcd().get_prefix(prefix + "done/");
  if (!done.ok()) return done.status();
  for (const cluster::Node& n : t.nodes) {
    if (n.down) continue;  // owns nothing, streams nothing (a dead node never would)
    bool found = false;
    for (const auto& kv : done->kvs) found = found || kv.key == prefix + "done/" + n.id;
    if (!found) return {};
  }
  cluster::Topology next = t;
  next.nodes = t.migration->target;
  next.migration.reset();
  next.epoch = t.epoch + 1;
  auto swapped = membership_.replace_topology(
      next, current->second, {{cluster::TxnOp::Kind::kDeletePrefix, prefix, "", 0}});
  if (!swapped.ok()) return swapped.status();
  if (*swapped) {
    log_(false, "migration " + std::to_string(migration) + " complete: topology epoch " +
                    std::to_string(next.epoch) + " (" + t.migration->reason + ")");
  }
  return {};
}

Status Migrator::receive(const wire::MigrateRequest& request, wire::MigrateResponse* response) {
  const auto routing = membership_.routing();
  if (!routing->topology.migration || routing->topology.migration->id != request.migration()) {
    return Status::Unavailable("no migration " + std::to_string(request.migration()) +
                               " runs here (yet); topology epoch " +
                               std::to_string(routing->topology.epoch));
  }
  const std::string& self = membership_.options().node_id;
  std::vector<replication::OwnedMutation> entries;
  entries.reserve(static_cast<std::size_t>(request.entries_size()));
  for (const auto& e : request.entries()) {
    auto m = replication::from_wire(e);
    if (!m.ok()) return m.status();
    const cluster::Node* to = routing->target_owner(position_of(m->m));
    if (to == nullptr || to->id != self) {
      return Status::InvalidArgument("an entry of migration " +
                                     std::to_string(request.migration()) +
                                     " that this node does not take over");
    }
    entries.push_back(std::move(m).value());
  }
  // A session of a user whose id does not carry the user's route key (made before route keys)
  // stays where its id routes: the user's node must know to ask here before it is applied.
  std::size_t off_key = 0;
  for (const auto& e : entries) {
    off_key += e.m.kind == storage::Mutation::Kind::kPut && !e.m.user.empty() &&
               storage::route_key_of(e.m.id) != ids_.route_key_of_user(e.m.user);
  }
  std::unique_lock<std::mutex> legacy;
  if (off_key > 0) {
    legacy = std::unique_lock(legacy_mu_);  // a recount does not clear it meanwhile
    if (!holds_legacy_) {
      if (Status s = membership_.set_legacy_sessions(table_.count_off_user_key() + off_key);
          !s.ok()) {
        return Status::Unavailable(
            "cannot record in etcd that this node holds sessions made "
            "before route keys: " +
            s.message());
      }
      holds_legacy_ = true;
    }
  }
  auto applied = replication::apply_entries(table_, entries);
  if (!applied.ok()) return applied.status();
  response->set_applied(applied->applied);
  response->set_set_aside(applied->set_aside);
  return {};
}

}  // namespace sessiond::daemon
