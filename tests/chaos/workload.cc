// chaos-workload: the client side of a chaos run (docs/chaos.md). On the client library, it
// creates, reads, updates, touches, regenerates, revokes and destroys sessions in every region
// at a set rate, and records every call with its outcome, version and real time as a line of
// the history (history.h). Users live in one region (their writes go there, as a sticky load
// balancer sends them), a fifth of the updates and touches come from another region (a user
// who roams), and reads go everywhere, a third of them to sessions recently ended.
//
//   chaos-workload --region r1=198.18.1.11:7400,198.18.1.12:7400 --region r2=... --out FILE
//                  --control DIR [--rate 60] [--threads 2] [--users 8] [--seed N]
//                  [--idle-ms 300000] [--converge-timeout-s 90]
//
// Control files in DIR, polled every 20 ms: "burst" ("REGION NODE PID") destroys up to 24 of
// the sessions NODE owns at once, kills PID the moment the last is acknowledged, and then
// writes "burst.done"; "stop" ends the load: then every node's digests are compared with every
// peer region until they are equal or the timeout passes ("converged"), and every session the
// history names is read in every region (phase "final"). Exit 0 once all is written.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/ring.h"
#include "protocol/base64url.h"
#include "sessiond/client.h"

namespace {

using namespace sessiond;  // NOLINT(google-build-using-namespace)
using json = nlohmann::json;
using std::chrono::milliseconds;

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A region: its seeds, and one client per caller thread (each an application server with its
// own copy of the topology, so that a node that takes writes it should not is seen beside the
// one that should: invariant 5).
struct Region {
  std::string name;
  std::vector<std::string> seeds;
  std::vector<std::unique_ptr<Client>> clients;
  Client& client() { return *clients.front(); }
};

// Writes history lines from every thread.
class Recorder {
 public:
  explicit Recorder(const std::string& path) : out_(path, std::ios::app) {}
  bool ok() const { return out_.good(); }
  void write(const json& record) {
    auto line = record.dump();
    std::lock_guard lock(mutex_);
    out_ << line << '\n';
  }
  void flush() {
    std::lock_guard lock(mutex_);
    out_.flush();
  }

 private:
  std::mutex mutex_;  // guards out_
  std::ofstream out_;
};

json version_json(const Version& v) { return json::array({v.hlc, v.region, v.node}); }

// The sessions the load knows of, to pick ids from: alive (as far as it knows) and recently
// ended.
class Model {
 public:
  struct Live {
    std::string user;
    std::size_t home;  // region index
  };
  void add(const std::string& id, const std::string& user, std::size_t home) {
    std::lock_guard lock(mutex_);
    if (live_.emplace(id, Live{user, home}).second) live_ids_.push_back(id);
  }
  void end(const std::string& id) {
    std::lock_guard lock(mutex_);
    if (live_.erase(id) == 0) return;
    ended_.push_back(id);
    if (ended_.size() > 256) ended_.erase(ended_.begin());
  }
  void end_user(const std::string& user) {
    std::vector<std::string> ids;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, live] : live_) {
        if (live.user == user) ids.push_back(id);
      }
    }
    for (const auto& id : ids) end(id);
  }
  // A random alive id (with home == `home` unless home is npos); empty when there is none.
  std::string pick_live(std::mt19937_64& random, std::size_t home) {
    std::lock_guard lock(mutex_);
    for (int attempt = 0; attempt < 16 && !live_ids_.empty(); ++attempt) {
      auto index = std::uniform_int_distribution<std::size_t>(0, live_ids_.size() - 1)(random);
      const auto& id = live_ids_[index];
      auto found = live_.find(id);
      if (found == live_.end()) {  // ended since: drop it from the vector
        live_ids_[index] = live_ids_.back();
        live_ids_.pop_back();
        continue;
      }
      if (home == std::string::npos || found->second.home == home) return id;
    }
    return {};
  }
  std::string user_of(const std::string& id) {
    std::lock_guard lock(mutex_);
    auto found = live_.find(id);
    return found == live_.end() ? std::string() : found->second.user;
  }
  std::string pick_ended(std::mt19937_64& random) {
    std::lock_guard lock(mutex_);
    if (ended_.empty()) return {};
    return ended_[std::uniform_int_distribution<std::size_t>(0, ended_.size() - 1)(random)];
  }
  std::vector<std::string> live_in(std::size_t home, std::size_t limit) {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& [id, live] : live_) {
      if (live.home == home && out.size() < limit) out.push_back(id);
    }
    return out;
  }

 private:
  std::mutex mutex_;  // guards everything below
  std::map<std::string, Live> live_;
  std::vector<std::string> live_ids_;  // may hold ended ids, dropped when met
  std::vector<std::string> ended_;     // the last 256 ended
};

struct Options {
  std::vector<std::string> region_args;
  std::string out, control;
  double rate = 60;  // operations per second per region
  int threads = 2;   // per region
  int users = 16;    // per region
  std::uint64_t seed = 1;
  std::int64_t idle_ms = 300000;
  int converge_timeout_s = 90;
};

class Workload {
 public:
  Workload(Options options, std::vector<Region> regions)
      : options_(std::move(options)), regions_(std::move(regions)), recorder_(options_.out) {}

  bool ok() const { return recorder_.ok(); }

  int run() {
    recorder_.write({{"type", "start"}, {"t", now_us()}, {"seed", options_.seed}});
    std::vector<std::thread> workers;
    for (std::size_t r = 0; r < regions_.size(); ++r) {
      for (int t = 0; t < options_.threads; ++t) {
        workers.emplace_back([this, r, t] {
          work(r, static_cast<std::size_t>(t), options_.seed * 1000 + r * 100 + t);
        });
      }
    }
    std::thread watcher([this] { watch_loop(); });
    control_loop();
    stop_ = true;
    for (auto& worker : workers) worker.join();
    watcher.join();
    recorder_.write({{"type", "load-end"}, {"t", now_us()}});
    recorder_.flush();
    converge();
    final_reads();
    recorder_.flush();
    return 0;
  }

 private:
  json op_record(const char* op, std::size_t r, std::string_view id, std::int64_t t0,
                 const Status& status) {
    return json{{"type", "op"},
                {"op", op},
                {"region", regions_[r].name},
                {"id", std::string(id)},
                {"t0", t0},
                {"t1", now_us()},
                {"status", std::string(status_code_name(status.code()))},
                {"phase", final_phase_ ? "final" : "run"}};
  }
  // What a read saw: the value of `w`, the version, the deadline, and whether from a replica.
  static void add_read(json& record, const Session& session) {
    const Field* w = session.field("w");
    record["w"] = w ? w->value : "";
    record["ver"] = version_json(session.version);
    record["deadline"] = session.deadline_ms;
    record["stale"] = session.possibly_stale;
  }
  static void add_meta(json& record, const SessionMeta& meta) {
    record["ver"] = version_json(meta.version);
    record["deadline"] = meta.deadline_ms;
  }

  std::string user_of(std::size_t r, int index) {
    return "u" + std::to_string(r + 1) + "-" + std::to_string(index);
  }

  void work(std::size_t r, std::size_t t, std::uint64_t seed) {
    std::mt19937_64 random(seed);
    auto interval = std::chrono::duration<double>(options_.threads / options_.rate);
    auto next = std::chrono::steady_clock::now();
    std::uniform_int_distribution<int> percent(0, 99);
    auto& client = *regions_[r].clients[t];
    while (!stop_) {
      next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(interval);
      std::this_thread::sleep_until(next);
      if (std::chrono::steady_clock::now() > next + std::chrono::seconds(2)) {
        next = std::chrono::steady_clock::now();  // fell behind during an outage: no catch-up burst
      }
      int dice = percent(random);
      auto roam = [&] { return percent(random) < 20 ? std::string::npos : r; };
      if (dice < 14) {
        create(r, random, client);
      } else if (dice < 50) {
        bool dead = percent(random) < 33;
        auto id = dead ? model_.pick_ended(random) : model_.pick_live(random, std::string::npos);
        if (!id.empty()) get(r, client, id, percent(random) < 30);
      } else if (dice < 70) {
        auto id = model_.pick_live(random, roam());
        if (!id.empty()) update(r, client, id);
      } else if (dice < 78) {
        auto id = model_.pick_live(random, roam());
        if (!id.empty()) touch(r, client, id);
      } else if (dice < 88) {
        auto id = model_.pick_live(random, r);
        if (!id.empty()) destroy(r, client, id);
      } else if (dice < 98) {
        auto id = model_.pick_live(random, r);
        if (!id.empty()) regenerate(r, client, id);
      } else {
        revoke(r, client,
               user_of(r, std::uniform_int_distribution<int>(1, options_.users)(random)));
      }
    }
  }

  std::string next_w(const char* kind, std::size_t r) {
    return std::string(kind) + std::to_string(r + 1) + "-" + std::to_string(++sequence_);
  }

  void create(std::size_t r, std::mt19937_64& random, Client& client) {
    CreateOptions create;
    create.user_id = user_of(r, std::uniform_int_distribution<int>(1, options_.users)(random));
    auto w = next_w("c", r);
    create.fields = {{"w", w}};
    create.timeouts = Timeouts{options_.idle_ms, 0};
    auto t0 = now_us();
    auto result = client.create(create);
    auto record = op_record("create", r, result.ok() ? result->id : "", t0, result.status());
    record["user"] = create.user_id;
    record["w"] = w;
    if (result.ok()) {
      add_meta(record, *result);
      model_.add(result->id, create.user_id, r);
    }
    recorder_.write(record);
  }

  void get(std::size_t r, Client& client, const std::string& id, bool touch) {
    GetOptions options;
    options.touch = touch;
    auto t0 = now_us();
    auto result = client.get(id, options);
    auto record = op_record(touch ? "get-touch" : "get", r, id, t0, result.status());
    if (result.ok()) add_read(record, *result);
    recorder_.write(record);
  }

  void update(std::size_t r, Client& client, const std::string& id) {
    UpdateOptions update;
    auto w = next_w("u", r);
    update.set = {{"w", w}};
    auto t0 = now_us();
    auto result = client.update(id, update);
    auto record = op_record("update", r, id, t0, result.status());
    record["w"] = w;
    if (result.ok()) add_meta(record, *result);
    if (result.status().code() == StatusCode::kNotFound) model_.end(id);
    recorder_.write(record);
  }

  void touch(std::size_t r, Client& client, const std::string& id) {
    auto t0 = now_us();
    auto result = client.touch(id);
    auto record = op_record("touch", r, id, t0, result.status());
    if (result.ok()) add_meta(record, *result);
    recorder_.write(record);
  }

  void destroy(std::size_t r, Client& client, const std::string& id) {
    auto t0 = now_us();
    auto status = client.destroy(id);
    recorder_.write(op_record("destroy", r, id, t0, status));
    if (status.ok() || status.code() == StatusCode::kNotFound) model_.end(id);
  }

  void regenerate(std::size_t r, Client& client, const std::string& id) {
    RegenerateOptions options;
    auto w = next_w("g", r);
    options.replace_fields = std::vector<FieldValue>{{"w", w}};
    auto t0 = now_us();
    auto result = client.regenerate(id, options);
    auto record = op_record("regenerate", r, id, t0, result.status());
    record["w"] = w;
    if (result.ok()) {
      add_meta(record, *result);
      record["new_id"] = result->id;
      auto user = model_.user_of(id);
      model_.end(id);
      model_.add(result->id, user, r);
    }
    recorder_.write(record);
  }

  void revoke(std::size_t r, Client& client, const std::string& user) {
    auto t0 = now_us();
    auto result = client.revoke_user(user);
    auto record = op_record("revoke", r, "", t0, result.status());
    record["user"] = user;
    if (result.ok()) {
      record["count"] = *result;
      model_.end_user(user);
    }
    recorder_.write(record);
  }

  void control_loop() {
    namespace fs = std::filesystem;
    std::map<std::string, std::uint64_t> epochs;
    auto last_topology = std::chrono::steady_clock::now() - std::chrono::seconds(10);
    for (;;) {
      fs::path stop = fs::path(options_.control) / "stop";
      fs::path burst = fs::path(options_.control) / "burst";
      if (fs::exists(stop)) return;
      if (fs::exists(burst)) {
        std::string region, node;
        pid_t pid = 0;
        std::ifstream(burst) >> region >> node >> pid;
        fs::remove(burst);
        destroy_burst(region, node, pid);
        std::ofstream(fs::path(options_.control) / "burst.done") << region << "\n";
      }
      if (std::chrono::steady_clock::now() - last_topology > std::chrono::seconds(1)) {
        last_topology = std::chrono::steady_clock::now();
        record_topologies(epochs);
        recorder_.flush();
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
  }

  // Reads the sessions of the last bursts in their region every 250 ms for 20 s.
  void watch_loop() {
    while (!stop_) {
      std::vector<Watched> now;
      {
        std::lock_guard lock(watch_mutex_);
        std::erase_if(watched_,
                      [](const Watched& w) { return w.until < std::chrono::steady_clock::now(); });
        now = watched_;
      }
      for (const auto& w : now) get(w.region, regions_[w.region].client(), w.id, false);
      std::this_thread::sleep_for(milliseconds(250));
    }
  }

  // The live sessions of region r that node `node_id` owns now, by the region's ring.
  std::vector<std::string> owned_by(std::size_t r, const std::string& node_id, std::size_t limit) {
    auto topology = regions_[r].client().topology();
    if (!topology.ok()) return {};
    std::vector<cluster::Node> nodes;
    for (const auto& n : topology->nodes) {
      cluster::Node node;
      node.id = n.id;
      node.address = n.address;
      node.number = n.number;
      node.weight = n.weight;
      nodes.push_back(std::move(node));
    }
    cluster::Ring ring(nodes);
    std::vector<std::string> out;
    if (ring.empty()) return out;
    for (const auto& id : model_.live_in(r, std::numeric_limits<std::size_t>::max())) {
      auto raw = base64url_decode(id);
      if (!raw.ok() || raw->size() < 8) continue;
      if (nodes[ring.owner(cluster::ring_position(*raw))].id != node_id) continue;
      out.push_back(id);
      if (out.size() >= limit) break;
    }
    return out;
  }

  // Destroys up to 24 sessions that `node_id` of `region` owns, all at once, and kills the node
  // (SIGKILL to `pid`) the moment the last acknowledgement arrives: what an acknowledged logout
  // must survive.
  void destroy_burst(const std::string& region, const std::string& node_id, pid_t pid) {
    for (std::size_t r = 0; r < regions_.size(); ++r) {
      if (regions_[r].name != region) continue;
      auto ids = owned_by(r, node_id, 24);
      std::mutex mutex;  // guards left
      std::condition_variable done;
      std::size_t left = ids.size();
      for (const auto& id : ids) {
        auto t0 = now_us();
        regions_[r].client().async_destroy(id, [&, r, id, t0](Status status) {
          recorder_.write(op_record("destroy", r, id, t0, status));
          if (status.ok() || status.code() == StatusCode::kNotFound) model_.end(id);
          std::lock_guard lock(mutex);
          if (--left == 0) done.notify_all();
        });
      }
      std::unique_lock lock(mutex);
      done.wait(lock, [&] { return left == 0; });
      if (pid > 0) ::kill(pid, SIGKILL);
      {
        // Read on, as an application checks a session on every request: a logout that the
        // failover undid shows at once.
        std::lock_guard watch(watch_mutex_);
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        for (const auto& id : ids) watched_.push_back(Watched{r, id, until});
      }
      std::fprintf(stderr, "chaos-workload: %zu destroys on %s of %s, then SIGKILL\n", ids.size(),
                   node_id.c_str(), region.c_str());
    }
    recorder_.flush();
  }

  void record_topologies(std::map<std::string, std::uint64_t>& epochs) {
    for (auto& region : regions_) {
      Client::CallTimeout quick(milliseconds(500));
      auto topology = region.client().refresh_topology();
      if (!topology.ok() || epochs[region.name] == topology->epoch) continue;
      epochs[region.name] = topology->epoch;
      json nodes = json::array();
      for (const auto& node : topology->nodes) {
        nodes.push_back({{"id", node.id}, {"number", node.number}, {"address", node.address}});
      }
      recorder_.write({{"type", "topology"},
                       {"region", region.name},
                       {"t", now_us()},
                       {"epoch", topology->epoch},
                       {"nodes", nodes}});
    }
  }

  // Every node's digests against every peer region, until all are equal or the timeout.
  void converge() {
    auto start = now_us();
    auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(options_.converge_timeout_s);
    std::map<std::string, std::unique_ptr<Client>> nodes;
    for (const auto& region : regions_) {
      for (const auto& seed : region.seeds) {
        ClientOptions options;
        options.address = seed;
        options.timeout = milliseconds(5000);
        nodes[region.name + " " + seed] = std::make_unique<Client>(options);
      }
    }
    for (;;) {
      bool equal = true;
      std::vector<json> round;
      for (const auto& region : regions_) {
        for (const auto& seed : region.seeds) {
          auto& client = *nodes[region.name + " " + seed];
          for (const auto& peer : regions_) {
            if (peer.name == region.name) continue;
            auto reports = client.repair(peer.name, /*check_only=*/true);
            json record{{"type", "digest"},  {"region", region.name}, {"node", seed},
                        {"peer", peer.name}, {"t", now_us()},         {"differing", 0},
                        {"error", ""}};
            if (!reports.ok()) {
              record["error"] = reports.status().ToString();
              equal = false;
            } else {
              for (const auto& report : *reports) {
                record["differing"] = report.buckets_differing;
                if (!report.error.empty()) record["error"] = report.error;
                if (report.buckets_differing != 0 || !report.error.empty()) equal = false;
              }
            }
            round.push_back(record);
          }
        }
      }
      if (regions_.size() < 2) equal = true;
      if (equal || std::chrono::steady_clock::now() >= deadline) {
        for (const auto& record : round) recorder_.write(record);
        if (!equal) repair_for_diagnosis(nodes);
        recorder_.write({{"type", "converged"},
                         {"t", now_us()},
                         {"ok", equal},
                         {"ms", (now_us() - start) / 1000}});
        return;
      }
      std::this_thread::sleep_for(milliseconds(500));
    }
  }

  // After a failed convergence: what a real anti-entropy round moves, for the record (the
  // verdict stays: the digests were not equal in time).
  void repair_for_diagnosis(std::map<std::string, std::unique_ptr<Client>>& nodes) {
    for (auto& [name, client] : nodes) {
      auto reports = client->repair();
      if (!reports.ok()) continue;
      for (const auto& report : *reports) {
        recorder_.write({{"type", "repair"},
                         {"node", name},
                         {"peer", report.region},
                         {"t", now_us()},
                         {"differing", report.buckets_differing},
                         {"pulled", report.pulled},
                         {"pushed", report.pushed},
                         {"error", report.error}});
      }
    }
  }

  // Every id the history names (created, regenerated to, or read), read in every region.
  void final_reads() {
    final_phase_ = true;
    std::set<std::string> ids;
    {
      recorder_.flush();
      std::ifstream in(options_.out);
      std::string line;
      while (std::getline(in, line)) {
        auto record = json::parse(line, nullptr, false);
        if (record.is_discarded() || record.value("type", "") != "op") continue;
        for (const char* key : {"id", "new_id"}) {
          auto id = record.value(key, "");
          if (!id.empty()) ids.insert(id);
        }
      }
    }
    for (std::size_t r = 0; r < regions_.size(); ++r) {
      std::vector<std::string> batch(ids.begin(), ids.end());
      Client::CallTimeout generous(milliseconds(10000));
      auto results = regions_[r].client().get_many(batch);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        auto record = op_record("get", r, batch[i], now_us(), results[i].status());
        if (results[i].ok()) add_read(record, *results[i]);
        recorder_.write(record);
      }
    }
  }

  Options options_;
  std::vector<Region> regions_;
  Recorder recorder_;
  Model model_;
  struct Watched {
    std::size_t region;
    std::string id;
    std::chrono::steady_clock::time_point until;
  };
  std::mutex watch_mutex_;  // guards watched_
  std::vector<Watched> watched_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> final_phase_{false};  // the reads after convergence
  std::atomic<std::uint64_t> sequence_{0};
};

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"chaos-workload: the recorded client load of a chaos run (docs/chaos.md)"};
  app.add_option("--region", options.region_args, "NAME=HOST:PORT[,HOST:PORT...] (repeatable)")
      ->required();
  app.add_option("--out", options.out, "history file (appended to)")->required();
  app.add_option("--control", options.control, "directory of the control files")->required();
  app.add_option("--rate", options.rate, "operations per second in each region")
      ->check(CLI::Range(1.0, 100000.0));
  app.add_option("--threads", options.threads, "callers per region")->check(CLI::Range(1, 64));
  app.add_option("--users", options.users, "users per region")->check(CLI::Range(1, 100000));
  app.add_option("--seed", options.seed, "seed of the operation mix");
  app.add_option("--idle-ms", options.idle_ms, "idle timeout of the sessions");
  app.add_option("--converge-timeout-s", options.converge_timeout_s,
                 "how long to wait for equal digests after the load");
  CLI11_PARSE(app, argc, argv);

  std::vector<Region> regions;
  for (const auto& arg : options.region_args) {
    auto eq = arg.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "chaos-workload: --region wants NAME=HOST:PORT[,...], got %s\n",
                   arg.c_str());
      return 2;
    }
    Region region;
    region.name = arg.substr(0, eq);
    std::string rest = arg.substr(eq + 1);
    for (std::size_t start = 0; start <= rest.size();) {
      auto comma = rest.find(',', start);
      if (comma == std::string::npos) comma = rest.size();
      if (comma > start) region.seeds.push_back(rest.substr(start, comma - start));
      start = comma + 1;
    }
    ClientOptions client;
    client.seeds = region.seeds;
    client.timeout = milliseconds(1000);
    // Each caller's seeds in another order, as application servers are configured: a node
    // that answers TOPOLOGY with a stale view (cut off from etcd) misleads only some of them.
    for (int t = 0; t < options.threads; ++t) {
      std::vector<std::string> seeds = region.seeds;
      std::rotate(seeds.begin(), seeds.begin() + static_cast<std::ptrdiff_t>(t % seeds.size()),
                  seeds.end());
      client.seeds = seeds;
      region.clients.push_back(std::make_unique<Client>(client));
    }
    regions.push_back(std::move(region));
  }
  Workload workload(options, std::move(regions));
  if (!workload.ok()) {
    std::fprintf(stderr, "chaos-workload: cannot write %s\n", options.out.c_str());
    return 1;
  }
  return workload.run();
}
