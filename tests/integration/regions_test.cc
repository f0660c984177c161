// Two regions of two real sessiond nodes each, every region on its own real etcd, replicating to
// each other (issue 14, docs/regions.md): sessions cross, concurrent writes merge, and destroy,
// revoke and regenerate stay final across a cut between the regions.
//
// A cut: each node advertises a TcpProxy in front of its listener, so that everything that dials
// it by the topology (the other region's shippers, its own region's peers) goes through the
// proxy, and cut() stops all of it, while the test reaches each node directly at its listener.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <map>
#include <set>

#include "cluster/ring.h"
#include "raw_conn.h"
#include "replication/region_shipper.h"
#include "sessiond/client.h"
#include "storage/id_generator.h"
#include "tcp_proxy.h"
#include "test_etcd.h"
#include "test_node.h"
#include "tests/support/eventually.h"
#include "tests/support/temp_dir.h"

namespace sessiond::testing {
namespace {

using namespace std::chrono_literals;
using protocol::Opcode;

struct Region {
  std::string name;
  std::unique_ptr<TestEtcd> etcd;
  std::vector<std::string> ids;      // its nodes, in start order
  std::map<std::string, int> ports;  // each node's listener
  std::map<std::string, std::string> advertised;
  std::map<std::string, std::unique_ptr<TcpProxy>> proxies;  // when behind proxies
  std::map<std::string, std::unique_ptr<TestNode>> nodes;

  std::string seeds() const {
    std::string out;
    for (const auto& id : ids) out += (out.empty() ? "" : ",") + advertised.at(id);
    return out;
  }
  std::string listen(const std::string& id) const {
    return "127.0.0.1:" + std::to_string(ports.at(id));
  }
};

class RegionsTest : public ::testing::Test {
 protected:
  // Starts regions east and west, two nodes each, each node with `extra` flags; behind proxies
  // when `proxied`.
  void start_regions(bool proxied, std::vector<std::string> extra = {},
                     std::map<std::string, std::vector<std::string>> per_region = {}) {
    per_region_ = std::move(per_region);
    for (const char* name : {"east", "west"}) {
      auto& r = regions_[name];
      r.name = name;
      std::string error;
      r.etcd = TestEtcd::start(dir_.path() / (std::string(name) + "-etcd"), &error);
      ASSERT_TRUE(r.etcd) << error;
      for (int i = 1; i <= 2; ++i) {
        const std::string id = std::string(name) + "-" + std::to_string(i);
        r.ids.push_back(id);
        r.ports[id] = free_loopback_port();
        r.advertised[id] = "127.0.0.1:" + std::to_string(r.ports[id]);
        if (proxied) {
          r.proxies[id] = TcpProxy::start(r.advertised[id]);
          ASSERT_TRUE(r.proxies[id]);
          r.advertised[id] = r.proxies[id]->address();
        }
      }
    }
    extra_ = std::move(extra);
    for (auto& [name, r] : regions_) {
      for (const auto& id : r.ids) ASSERT_NO_FATAL_FAILURE(start_node(r, id));
      // The region's first node made its topology; the second joins it.
      const ProcessResult add =
          run_process(SESSCTL_PATH, {"cluster", "--etcd", r.etcd->endpoint(), "--region", r.name,
                                     "add-node", r.ids[1], r.advertised[r.ids[1]]});
      ASSERT_EQ(add.exit_code, 0) << add.out << add.err;
      const ProcessResult settled =
          run_process(SESSCTL_PATH, {"cluster", "--etcd", r.etcd->endpoint(), "--region", r.name,
                                     "status", "--wait-ms", "25000"});
      ASSERT_EQ(settled.exit_code, 0) << settled.out << settled.err;
      ASSERT_TRUE(eventually([&] {
        return topology_of(r, r.ids[0]).topology.nodes.size() == 2 &&
               topology_of(r, r.ids[1]).topology.epoch == topology_of(r, r.ids[0]).topology.epoch;
      }));
    }
  }

  void start_node(Region& r, const std::string& id) {
    const Region& peer = regions_.at(r.name == "east" ? "west" : "east");
    TestNode::Options o;
    o.data_dir = dir_.path() / id;
    o.listen = r.listen(id);
    o.extra_args = {"--etcd",         r.etcd->endpoint(),  "--region",
                    r.name,           "--node-id",         id,
                    "--advertise",    r.advertised.at(id), "--route-key-file",
                    route_key_file(), "--peer-region",     peer.name + "=" + peer.seeds()};
    o.extra_args.insert(o.extra_args.end(), extra_.begin(), extra_.end());
    const auto& mine = per_region_[r.name];
    o.extra_args.insert(o.extra_args.end(), mine.begin(), mine.end());
    if (std::find(o.extra_args.begin(), o.extra_args.end(), "--lease-ttl-ms") ==
        o.extra_args.end()) {
      o.extra_args.insert(o.extra_args.end(), {"--lease-ttl-ms", "2000"});
    }
    std::string error;
    auto node = TestNode::start(o, &error);
    ASSERT_TRUE(node) << error;
    r.nodes[id] = std::move(node);
  }

  std::string route_key_file() {
    const std::string path = dir_.sub("route-key");
    if (!std::filesystem::exists(path)) {
      std::ofstream(path) << "route-key " << std::string(64, 'a') << "\n";
      std::filesystem::permissions(
          path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    }
    return path;
  }
  static storage::IdGenerator ids() {
    storage::RouteKeySecret secret;
    secret.fill(0xaa);
    return storage::IdGenerator(secret);
  }

  replication::PeerRegionView topology_of(Region& r, const std::string& id) {
    Conn c(r.listen(id));
    c.send(Opcode::kTopology, wire::TopologyRequest(), 1);
    auto answer = c.read();
    if (!answer || answer->status != StatusCode::kOk) return {};
    return replication::PeerRegionView::from_wire(parse<wire::TopologyResponse>(*answer));
  }

  // Sends `request` straight to the listener of the node of `r` that owns `position`.
  Response call_at(Region& r, std::uint64_t position, Opcode opcode,
                   const google::protobuf::MessageLite& request) {
    const auto view = topology_of(r, r.ids[0]);
    const auto owner = view.owner(position);
    EXPECT_TRUE(owner);
    if (!owner) return {};
    Conn c(r.listen(view.topology.nodes[*owner].id));
    c.send(opcode, request, 9);
    auto answer = c.read();
    EXPECT_TRUE(answer) << "no answer from " << view.topology.nodes[*owner].id;
    if (!answer) {
      Response none;
      none.status = StatusCode::kUnavailable;
      return none;
    }
    return *answer;
  }
  Response call_for(Region& r, const std::string& id, Opcode opcode,
                    const google::protobuf::MessageLite& request) {
    return call_at(r, cluster::ring_position(id), opcode, request);
  }

  std::string create(Region& r, const std::string& user,
                     std::vector<std::pair<std::string, std::string>> fields = {}) {
    wire::CreateRequest req;
    req.set_user_id(user);
    for (const auto& [name, value] : fields) {
      auto* f = req.add_fields();
      f->set_name(name);
      f->set_value(value);
    }
    const Response answer = call_at(r, ids().route_key_of_user(user), Opcode::kCreate, req);
    EXPECT_EQ(answer.status, StatusCode::kOk) << error_message(answer);
    return answer.status == StatusCode::kOk ? parse<wire::CreateResponse>(answer).session().id()
                                            : std::string();
  }
  Response get(Region& r, const std::string& id) {
    wire::GetRequest req;
    req.set_id(id);
    return call_for(r, id, Opcode::kGet, req);
  }
  // The session's fields in `r` (name -> value); empty when it is not there.
  std::map<std::string, std::string> fields(Region& r, const std::string& id) {
    const Response answer = get(r, id);
    std::map<std::string, std::string> out;
    if (answer.status != StatusCode::kOk) return out;
    const auto session = parse<wire::GetResponse>(answer);
    for (const auto& f : session.session().fields()) {
      out[f.name()] = f.value();
    }
    out["\x01present"] = "";
    return out;
  }
  bool present(Region& r, const std::string& id) { return get(r, id).status == StatusCode::kOk; }
  // The session's deadline in `r` (0 when it is not there).
  std::int64_t deadline(Region& r, const std::string& id) {
    const Response answer = get(r, id);
    return answer.status == StatusCode::kOk
               ? parse<wire::GetResponse>(answer).session().deadline_ms()
               : 0;
  }
  std::uint64_t set_aside_from(Region& r, const std::string& peer) {
    std::uint64_t total = 0;
    for (const auto& id : r.ids) {
      ClientOptions o;
      o.address = r.listen(id);
      Client node(o);
      auto stats = node.stats();
      if (!stats.ok()) continue;
      for (const auto& p : stats->regions) total += p.region == peer ? p.set_aside : 0;
    }
    return total;
  }
  // How many of `raw_ids` `r` does not hold: one connection per node, GETs pipelined.
  std::size_t missing_in(Region& r, const std::vector<std::string>& raw_ids) {
    const auto view = topology_of(r, r.ids[0]);
    std::map<std::string, std::unique_ptr<Conn>> conns;
    std::map<std::string, std::size_t> sent;
    for (const std::string& id : raw_ids) {
      const auto owner = view.owner(cluster::ring_position(id));
      if (!owner) return raw_ids.size();
      const std::string& node = view.topology.nodes[*owner].id;
      auto& c = conns[node];
      if (!c) c = std::make_unique<Conn>(r.listen(node));
      wire::GetRequest req;
      req.set_id(id);
      c->send(Opcode::kGet, req, static_cast<std::uint32_t>(sent[node]++));
    }
    std::size_t missing = 0;
    for (auto& [node, c] : conns) {
      for (std::size_t i = 0; i < sent[node]; ++i) {
        auto answer = c->read();
        if (!answer) return raw_ids.size();
        missing += answer->status == StatusCode::kOk ? 0 : 1;
      }
    }
    return missing;
  }
  bool gone(Region& r, const std::string& id) { return get(r, id).status == StatusCode::kNotFound; }
  StatusCode update(Region& r, const std::string& id, const std::string& name,
                    const std::string& value) {
    wire::UpdateRequest req;
    req.set_id(id);
    auto* f = req.add_set();
    f->set_name(name);
    f->set_value(value);
    return call_for(r, id, Opcode::kUpdate, req).status;
  }
  StatusCode destroy(Region& r, const std::string& id) {
    wire::DestroyRequest req;
    req.set_id(id);
    return call_for(r, id, Opcode::kDestroy, req).status;
  }

  StatusCode touch(Region& r, const std::string& id) {
    wire::TouchRequest req;
    req.set_id(id);
    return call_for(r, id, Opcode::kTouch, req).status;
  }
  std::string regenerate(Region& r, const std::string& id) {
    wire::RegenerateRequest req;
    req.set_id(id);
    const Response answer = call_for(r, id, Opcode::kRegenerate, req);
    EXPECT_EQ(answer.status, StatusCode::kOk) << error_message(answer);
    return answer.status == StatusCode::kOk ? parse<wire::RegenerateResponse>(answer).session().id()
                                            : std::string();
  }
  StatusCode revoke_user(Region& r, const std::string& user) {
    wire::RevokeUserRequest req;
    req.set_user_id(user);
    return call_at(r, ids().route_key_of_user(user), Opcode::kRevokeUser, req).status;
  }

  // The buckets whose digests differ between the regions, summed over east's nodes (each
  // compares the ranges it owns with west's owners of them); -1 when a node could not compare.
  long differing_buckets() {
    long total = 0;
    for (const auto& id : east().ids) {
      ClientOptions o;
      o.address = east().listen(id);
      Client node(o);
      auto rounds = node.repair("", /*check_only=*/true);
      if (!rounds.ok() || rounds->size() != 1 || !(*rounds)[0].error.empty()) return -1;
      total += static_cast<long>((*rounds)[0].buckets_differing);
    }
    return total;
  }

  // A completed anti-entropy round on every node of both regions now, so that none is due
  // during a one-way cut (a round would pull across it).
  void settle_repairs() {
    for (Region* r : {&east(), &west()}) {
      for (const auto& id : r->ids) {
        ClientOptions o;
        o.address = r->listen(id);
        o.timeout = 30s;
        Client node(o);
        std::string why;
        ASSERT_TRUE(eventually([&] {
          auto rounds = node.repair();
          why = rounds.ok() ? std::string() : rounds.status().ToString();
          for (const auto& round : rounds.ok() ? *rounds : std::vector<RegionRepair>{}) {
            if (!round.error.empty()) why = round.error;
          }
          return why.empty();
        })) << why;
      }
    }
  }

  void restart(Region& r, const std::string& id) {
    r.nodes.erase(id);
    ASSERT_NO_FATAL_FAILURE(start_node(r, id));
  }

  void cut() {
    for (auto& [name, r] : regions_) {
      for (auto& [id, p] : r.proxies) p->cut();
    }
  }
  void cut(Region& r) {
    for (auto& [id, p] : r.proxies) p->cut();
  }
  void heal(Region& r) {
    for (auto& [id, p] : r.proxies) p->heal();
  }
  void heal() {
    for (auto& [name, r] : regions_) {
      for (auto& [id, p] : r.proxies) p->heal();
    }
  }

  Region& east() { return regions_.at("east"); }
  Region& west() { return regions_.at("west"); }

  TempDir dir_;
  std::map<std::string, Region> regions_;
  void revoke_during_a_cut();

  std::vector<std::string> extra_;
  std::map<std::string, std::vector<std::string>> per_region_;
};

TEST_F(RegionsTest, ASessionCreatedInOneRegionIsReadableInTheOther) {
  ASSERT_NO_FATAL_FAILURE(start_regions(false));
  // Through the client library of each region, as applications would.
  ClientOptions eo, wo;
  eo.address = east().seeds();
  wo.address = west().seeds();
  Client in_east(eo), in_west(wo);
  std::vector<std::string> made;
  std::vector<std::chrono::milliseconds> delays;
  for (int i = 0; i < 20; ++i) {
    CreateOptions create;
    create.user_id = "user-" + std::to_string(i);
    create.fields = {{"cart", std::to_string(i)}};
    auto created = in_east.create(create);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(eventually([&] { return in_west.get(created->id).ok(); }, 10s))
        << "session " << i << " never reached west";
    delays.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start));
    auto there = in_west.get(created->id);
    ASSERT_EQ(there->fields.size(), 1u);
    EXPECT_EQ(there->fields[0].value, std::to_string(i));
    EXPECT_EQ(there->user_id, create.user_id);
  }
  // At low load a session is readable in the other region within a second (the median, so that
  // one slow moment of a loaded machine does not decide).
  std::sort(delays.begin(), delays.end());
  EXPECT_LT(delays[delays.size() / 2], 1000ms);
  // And back the other way.
  CreateOptions create;
  create.user_id = "westerner";
  auto created = in_west.create(create);
  ASSERT_TRUE(created.ok());
  ASSERT_TRUE(eventually([&] { return in_east.get(created->id).ok(); }, 10s));
}

TEST_F(RegionsTest, ConcurrentWritesToOneSessionInBothRegionsMerge) {
  ASSERT_NO_FATAL_FAILURE(start_regions(false));
  const std::string id = create(east(), "alice", {{"theme", "dark"}});
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(eventually([&] { return present(west(), id); }));
  // Different fields at once in each region: both end in both.
  ASSERT_EQ(update(east(), id, "cart", "3 items"), StatusCode::kOk);
  ASSERT_EQ(update(west(), id, "lang", "fr"), StatusCode::kOk);
  for (Region* r : {&east(), &west()}) {
    ASSERT_TRUE(eventually([&] {
      const auto f = fields(*r, id);
      return f.contains("cart") && f.contains("lang") && f.contains("theme");
    })) << r->name
        << " lacks a field";
  }
  // The same field in both: one value wins, the same everywhere.
  ASSERT_EQ(update(east(), id, "theme", "light"), StatusCode::kOk);
  ASSERT_EQ(update(west(), id, "theme", "blue"), StatusCode::kOk);
  ASSERT_TRUE(eventually([&] {
    const auto e = fields(east(), id), w = fields(west(), id);
    return !e.empty() && e == w && (e.at("theme") == "light" || e.at("theme") == "blue");
  })) << "east "
      << fields(east(), id)["theme"] << ", west " << fields(west(), id)["theme"];
}

TEST_F(RegionsTest, ADestroyDuringACutWinsOverAnUpdateInTheOtherRegion) {
  // No replica acknowledgements: the cut stops a region's own replication too.
  ASSERT_NO_FATAL_FAILURE(start_regions(true, {"--replica-ack", "none"}));
  const std::string id = create(east(), "bob", {{"cart", "1"}});
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(eventually([&] { return present(west(), id); }));
  cut();
  ASSERT_EQ(destroy(east(), id), StatusCode::kOk);
  // West has not heard of it: its user goes on and updates the session there.
  ASSERT_EQ(update(west(), id, "cart", "2"), StatusCode::kOk);
  ASSERT_TRUE(present(west(), id));
  heal();
  ASSERT_TRUE(eventually([&] { return gone(west(), id); })) << "the destroy never won in west";
  ASSERT_TRUE(gone(east(), id)) << "west's update brought the session back in east";
  // And it stays gone once both have exchanged everything.
  const std::string marker = create(west(), "bob-later");
  ASSERT_TRUE(eventually([&] { return present(east(), marker); }));
  EXPECT_TRUE(gone(east(), id));
  EXPECT_TRUE(gone(west(), id));
}

TEST_F(RegionsTest, RevokeUserEndsTheSessionsTheOtherRegionMadeDuringACut) {
  ASSERT_NO_FATAL_FAILURE(start_regions(true, {"--replica-ack", "none"}));
  revoke_during_a_cut();
}

// Revocation generations do not depend on clocks: the same with west's clock 50 s ahead (within
// the skew bound, so its writes are taken at once, stamped 50 s in east's future).
TEST_F(RegionsTest, RevokeUserIsFinalWhenTheOtherRegionsClockRunsAhead) {
  ASSERT_NO_FATAL_FAILURE(start_regions(true, {"--replica-ack", "none"},
                                        {{"west", {"--test-clock-offset-ms", "50000"}}}));
  revoke_during_a_cut();
}

void RegionsTest::revoke_during_a_cut() {
  const std::string before = create(east(), "carol");
  ASSERT_TRUE(eventually([&] { return present(west(), before); }));
  cut();
  // West, cut off, lets carol log in again; east revokes all of carol's sessions meanwhile.
  const std::string during = create(west(), "carol");
  ASSERT_FALSE(during.empty());
  ASSERT_EQ(revoke_user(east(), "carol"), StatusCode::kOk);
  ASSERT_TRUE(gone(east(), before));
  ASSERT_TRUE(present(west(), during));
  heal();
  // The revocation generation reaches west and ends what it made; east never sees it alive.
  ASSERT_TRUE(eventually([&] { return gone(west(), during) && gone(west(), before); }))
      << "west kept carol's sessions after the heal";
  const std::string marker = create(west(), "carol-marker");
  ASSERT_TRUE(eventually([&] { return present(east(), marker); }));
  EXPECT_TRUE(gone(east(), during)) << "a session made during the cut came back in east";
  EXPECT_TRUE(gone(east(), before));
  // A session made after the revoke, with everything known, lives.
  const std::string after = create(west(), "carol");
  ASSERT_TRUE(eventually([&] { return present(east(), after); }));
}

TEST_F(RegionsTest, ARegenerateKillsTheOldIdThatTheOtherRegionTouchesDuringACut) {
  ASSERT_NO_FATAL_FAILURE(start_regions(true, {"--replica-ack", "none"}));
  const std::string old_id = create(east(), "dave", {{"cart", "1"}});
  ASSERT_TRUE(eventually([&] { return present(west(), old_id); }));
  cut();
  const std::string new_id = regenerate(east(), old_id);
  ASSERT_FALSE(new_id.empty());
  ASSERT_EQ(touch(west(), old_id), StatusCode::kOk);  // west has not heard yet
  ASSERT_EQ(update(west(), old_id, "cart", "2"), StatusCode::kOk);
  heal();
  ASSERT_TRUE(eventually([&] { return gone(west(), old_id) && present(west(), new_id); }));
  const std::string marker = create(west(), "dave-marker");
  ASSERT_TRUE(eventually([&] { return present(east(), marker); }));
  EXPECT_TRUE(gone(east(), old_id)) << "the touch in west brought the old id back in east";
  EXPECT_TRUE(present(east(), new_id));
}

TEST_F(RegionsTest, KillNineOfAShippingAndOfAnApplyingNodeLosesNothing) {
  // Batches wait 200 ms for more: the last writes are surely not shipped when the kill comes.
  ASSERT_NO_FATAL_FAILURE(start_regions(false, {"--region-batch-delay-ms", "200"}));
  ClientOptions eo;
  eo.address = east().seeds();
  Client in_east(eo);
  // Sessions acknowledged in east as fast as it takes them; the two kills land while batches
  // are on their way.
  std::vector<std::string> made;
  for (int i = 0; i < 1500; ++i) {
    CreateOptions c;
    c.user_id = "load-" + std::to_string(i);
    c.fields = {{"n", std::to_string(i)}};
    auto created = in_east.create(c);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    made.push_back(created->id);
  }
  east().nodes.at("east-1")->kill_hard();
  west().nodes.at("west-1")->kill_hard();
  ASSERT_NO_FATAL_FAILURE(restart(east(), "east-1"));
  ASSERT_NO_FATAL_FAILURE(restart(west(), "west-1"));
  ClientOptions wo;
  wo.address = west().seeds();
  Client in_west(wo);
  std::size_t missing = made.size();
  ASSERT_TRUE(eventually(
      [&] {
        missing = 0;
        const auto got = in_west.get_many(made);
        for (const auto& g : got) missing += g.ok() ? 0 : 1;
        return missing == 0;
      },
      60s))
      << missing << " of " << made.size() << " acknowledged sessions never reached west";
}

TEST_F(RegionsTest, APartitionUnderLoadEndsWithEqualDigestsSoonAfterTheHeal) {
  ASSERT_NO_FATAL_FAILURE(start_regions(true, {"--replica-ack", "none"}));
  // Sessions both regions know, for the destroys and updates during the partition.
  std::vector<std::string> shared;
  for (int i = 0; i < 40; ++i) shared.push_back(create(east(), "shared-" + std::to_string(i)));
  ASSERT_TRUE(eventually([&] { return present(west(), shared.back()); }));
  ASSERT_EQ(differing_buckets(), 0);
  cut();
  // 60 s of writes and destroys in both regions (bounded: a write every 20 ms per region).
  const auto end = std::chrono::steady_clock::now() + 60s;
  std::size_t round = 0;
  std::set<std::string> destroyed;
  while (std::chrono::steady_clock::now() < end) {
    for (Region* r : {&east(), &west()}) {
      const std::string& target = shared[round % shared.size()];
      switch (round % 4) {
        case 0:
          create(*r, r->name + "-user-" + std::to_string(round));
          break;
        case 1:
          (void)update(*r, target, r->name, std::to_string(round));
          break;
        case 2:
          if (round % 12 == 2 && destroy(*r, target) == StatusCode::kOk) destroyed.insert(target);
          break;
        default:
          (void)touch(*r, target);
      }
    }
    ++round;
    std::this_thread::sleep_for(20ms);
  }
  heal();
  const auto healed = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return differing_buckets() == 0; }, 10s))
      << "digests still differ 10 s after the heal: " << differing_buckets() << " buckets";
  std::cout << "digests equal "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - healed)
                   .count()
            << " ms after the heal (" << round << " rounds of writes)\n";
  for (const std::string& id : destroyed) {
    EXPECT_TRUE(gone(east(), id) && gone(west(), id)) << "a destroyed session is back";
  }
}

TEST_F(RegionsTest, APeerCutOffPastTheLogsRetentionConvergesThroughAntiEntropy) {
  ASSERT_NO_FATAL_FAILURE(
      start_regions(true, {"--replica-ack", "none", "--replication-log-retention", "1024"}));
  const std::string before = create(east(), "erin");
  ASSERT_TRUE(eventually([&] { return present(west(), before); }));
  cut();
  // Far more than the log keeps.
  std::vector<std::string> made;
  for (int i = 0; i < 3000; ++i) made.push_back(create(east(), "retained-" + std::to_string(i)));
  ASSERT_EQ(destroy(east(), before), StatusCode::kOk);
  heal();
  std::size_t missing = made.size();
  ASSERT_TRUE(eventually(
      [&] {
        missing = missing_in(west(), made);
        return missing == 0 && gone(west(), before);
      },
      60s))
      << missing << " of " << made.size() << " sessions never reached west\n"
      << east().nodes.at("east-1")->log() << east().nodes.at("east-2")->log();
  // Said so in the log and the metrics.
  bool logged = false;
  for (const auto& id : east().ids) {
    logged = logged || east().nodes.at(id)->log().find("fell behind the log's retention") !=
                           std::string::npos;
  }
  EXPECT_TRUE(logged);
  std::uint64_t gaps = 0;
  for (const auto& id : east().ids) {
    ClientOptions o;
    o.address = east().listen(id);
    Client node(o);
    auto stats = node.stats();
    ASSERT_TRUE(stats.ok());
    ASSERT_EQ(stats->regions.size(), 1u);
    gaps += stats->regions[0].retention_gaps;
  }
  EXPECT_GT(gaps, 0u);
}

TEST_F(RegionsTest, AClientReadsFromTheNextRegionAndKeepsItsOwnWrites) {
  ASSERT_NO_FATAL_FAILURE(start_regions(true, {"--replica-ack", "none"}));
  ClientOptions o;
  o.address = east().seeds();
  o.fallback_regions = {west().seeds()};
  o.timeout = 1000ms;
  o.read_your_writes = 100;
  Client client(o);
  ClientOptions plain = o;
  plain.read_your_writes = 0;
  Client forgetful(plain);
  CreateOptions c;
  c.user_id = "frank";
  c.fields = {{"step", "1"}};
  auto made = client.create(c);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  ClientOptions wo;
  wo.address = west().seeds();
  Client in_west(wo);
  ASSERT_TRUE(eventually([&] { return in_west.get(made->id).ok(); }));

  // East stops answering: reads go to west.
  cut(east());
  auto read = client.get(made->id);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->fields.at(0).value, "1");
  heal(east());

  // West falls behind (its links are cut), then east freezes: west has not got the update nor
  // the new session, so a client that wrote them hears BEHIND, not the stale copy.
  ASSERT_NO_FATAL_FAILURE(settle_repairs());
  cut(west());
  UpdateOptions u;
  u.set = {{"step", "2"}};
  ASSERT_TRUE(client.update(made->id, u).ok());
  auto later = client.create(c);
  ASSERT_TRUE(later.ok());
  for (const auto& id : east().ids) east().nodes.at(id)->send_signal(SIGSTOP);
  heal(west());
  auto behind = client.get(made->id);
  EXPECT_EQ(behind.status().code(), StatusCode::kBehind) << behind.status().ToString();
  EXPECT_EQ(client.get(later->id).status().code(), StatusCode::kBehind);
  // A client that asks for nothing gets west's older copy.
  auto stale = forgetful.get(made->id);
  ASSERT_TRUE(stale.ok()) << stale.status().ToString();
  EXPECT_EQ(stale->fields.at(0).value, "1");
  for (const auto& id : east().ids) east().nodes.at(id)->send_signal(SIGCONT);
  // Once west has it (or east answers again), the client reads its own write.
  ASSERT_TRUE(eventually([&] {
    auto r = client.get(made->id);
    return r.ok() && r->fields.at(0).value == "2";
  }));
}

TEST_F(RegionsTest, WritesWithAClockBeyondTheSkewBoundAreSetAsideWithoutStallingTheStream) {
  // West's clock runs 70 s ahead, past the 60 s bound: east sets its new states aside (and
  // takes them once its own clock has caught up), while tombstones behind them still apply.
  ASSERT_NO_FATAL_FAILURE(
      start_regions(false, {}, {{"west", {"--test-clock-offset-ms", "70000"}}}));
  const std::string known = create(east(), "gina");
  ASSERT_TRUE(eventually([&] { return present(west(), known); }));
  const std::string ahead = create(west(), "henry");
  ASSERT_EQ(destroy(west(), known), StatusCode::kOk);
  ASSERT_TRUE(eventually([&] { return gone(east(), known); })) << "the stream stalled";
  EXPECT_FALSE(present(east(), ahead)) << "a state 70 s ahead was adopted";
  EXPECT_GT(set_aside_from(east(), "west"), 0u);
  // Once east's clock is within the bound of it (about 10 s), it is taken.
  ASSERT_TRUE(eventually([&] { return present(east(), ahead); }, 40s));
}

TEST_F(RegionsTest, DeadlinesAgreeAcrossRegionsWithinTheCoalescingSlack) {
  ASSERT_NO_FATAL_FAILURE(start_regions(false));
  wire::CreateRequest req;
  req.set_user_id("ivy");
  req.mutable_timeouts()->set_idle_ms(20'000);
  const Response made = call_at(east(), ids().route_key_of_user("ivy"), Opcode::kCreate, req);
  ASSERT_EQ(made.status, StatusCode::kOk);
  const std::string id = parse<wire::CreateResponse>(made).session().id();
  ASSERT_TRUE(eventually([&] { return present(west(), id); }));
  // idle 20 s x the default coalescing fraction 0.1 + 1 s.
  constexpr std::int64_t kBound = 20'000 / 10 + 1'000;
  std::int64_t worst = 0;
  // The user is active in east for 8 s; west's deadline follows within the bound throughout.
  const auto end = std::chrono::steady_clock::now() + 8s;
  while (std::chrono::steady_clock::now() < end) {
    ASSERT_EQ(touch(east(), id), StatusCode::kOk);
    std::this_thread::sleep_for(200ms);
    const std::int64_t e = deadline(east(), id), w = deadline(west(), id);
    ASSERT_GT(w, 0) << "the session expired in west while its user was active in east";
    worst = std::max(worst, std::abs(e - w));
  }
  EXPECT_LE(worst, kBound);
  std::cout << "deadlines differed by at most " << worst << " ms (bound " << kBound << ")\n";
}

// West is cut off by freezing its nodes (SIGSTOP): a cut of its proxies alone would leave its
// own connections to east open, and its anti-entropy would pull what east did meanwhile. Leases
// long enough that the freeze is no failover.
TEST_F(RegionsTest, ARangeMovedInOneRegionWhileTheOtherIsCutOffLosesAndResurrectsNothing) {
  ASSERT_NO_FATAL_FAILURE(start_regions(false, {"--lease-ttl-ms", "60000"}));
  std::vector<std::string> before;
  for (int i = 0; i < 40; ++i) before.push_back(create(east(), "mover-" + std::to_string(i)));
  ASSERT_TRUE(eventually([&] { return missing_in(west(), before) == 0; }));
  for (const auto& id : west().ids) west().nodes.at(id)->send_signal(SIGSTOP);
  std::vector<std::string> destroyed(before.begin(), before.begin() + 10);
  for (const auto& id : destroyed) ASSERT_EQ(destroy(east(), id), StatusCode::kOk);
  std::vector<std::string> made;
  for (int i = 0; i < 20; ++i) made.push_back(create(east(), "during-" + std::to_string(i)));
  // East moves east-2's ranges to east-1 meanwhile.
  const ProcessResult drain = run_process(
      SESSCTL_PATH,
      {"cluster", "--etcd", east().etcd->endpoint(), "--region", "east", "drain", "east-2"});
  const ProcessResult settled =
      run_process(SESSCTL_PATH, {"cluster", "--etcd", east().etcd->endpoint(), "--region", "east",
                                 "status", "--wait-ms", "25000"});
  for (const auto& id : west().ids) west().nodes.at(id)->send_signal(SIGCONT);
  ASSERT_EQ(drain.exit_code, 0) << drain.out << drain.err;
  ASSERT_EQ(settled.exit_code, 0) << settled.out << settled.err;
  std::vector<std::string> alive(before.begin() + 10, before.end());
  alive.insert(alive.end(), made.begin(), made.end());
  ASSERT_TRUE(eventually([&] { return missing_in(west(), alive) == 0; }))
      << missing_in(west(), alive) << " sessions missing in west";
  ASSERT_TRUE(eventually([&] {
    for (const auto& id : destroyed) {
      if (!gone(west(), id)) return false;
    }
    return true;
  })) << "a destroyed session lives on in west";
  // West's users go on with the sessions they have: nothing east destroyed comes back.
  for (const auto& id : before) (void)touch(west(), id);
  const std::string marker = create(west(), "mover-marker");
  ASSERT_TRUE(eventually([&] { return present(east(), marker); }));
  for (const auto& id : destroyed) EXPECT_TRUE(gone(east(), id)) << "resurrected in east";
  EXPECT_EQ(missing_in(east(), alive), 0u);
}

}  // namespace
}  // namespace sessiond::testing
