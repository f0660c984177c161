// A region of real sessiond processes on a real etcd (issue 12): membership, TOPOLOGY, routing
// (WRONG_NODE, the newer-epoch flag), placement of new sessions, and fencing when etcd is gone.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "cluster/etcd.h"
#include "cluster/membership.h"
#include "cluster/ring.h"
#include "cluster/topology.h"
#include "raw_conn.h"
#include "test_etcd.h"
#include "test_node.h"
#include "tests/support/temp_dir.h"

namespace sessiond::testing {
namespace {

using namespace std::chrono_literals;
using protocol::Opcode;

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds patience = 15s) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(25ms);
  }
  return pred();
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    etcd_ = TestEtcd::start(dir_.path() / "etcd", &error);
    ASSERT_TRUE(etcd_) << error;
    etcd_client_ =
        std::make_unique<cluster::EtcdClient>(std::vector<std::string>{etcd_->endpoint()});
  }

  TestNode* start_node(const std::string& id, std::vector<std::string> extra = {}) {
    TestNode::Options o;
    o.data_dir = dir_.path() / id;
    o.extra_args = {"--etcd", etcd_->endpoint(),  "--node-id",     id, "--lease-ttl-ms",
                    "2000",   "--route-key-file", route_key_file()};
    o.extra_args.insert(o.extra_args.end(), extra.begin(), extra.end());
    std::string error;
    auto node = TestNode::start(o, &error);
    EXPECT_TRUE(node) << error;
    if (!node) return nullptr;
    nodes_[id] = std::move(node);
    return nodes_[id].get();
  }

  // Every node of a region shares one route-key secret.
  std::string route_key_file() {
    const std::string path = dir_.sub("route-key");
    if (!std::filesystem::exists(path)) {
      std::ofstream(path) << "route-key " << std::string(64, 'a') << "\n";
      std::filesystem::permissions(
          path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    }
    return path;
  }

  wire::TopologyResponse topology_of(TestNode* node) {
    Conn c(node->address());
    c.send(Opcode::kTopology, wire::TopologyRequest(), 1);
    auto r = c.read();
    EXPECT_TRUE(r && r->status == StatusCode::kOk);
    return r ? parse<wire::TopologyResponse>(*r) : wire::TopologyResponse();
  }

  // Writes the region's topology with these nodes (all empty, so nothing has to move), as an
  // operator bootstrapping a fresh region would, and waits until every node serves by it.
  void set_region(const std::vector<std::string>& ids) {
    auto current = etcd_client_->get(cluster::topology_key("local"));
    ASSERT_TRUE(current.ok() && current->has_value());
    auto t = cluster::Topology::from_json((*current)->value);
    ASSERT_TRUE(t.ok());
    cluster::Topology next = *t;
    next.epoch += 1;
    next.nodes.clear();
    for (const std::string& id : ids) {
      auto live = etcd_client_->get(cluster::node_key("local", id));
      ASSERT_TRUE(live.ok() && live->has_value()) << id << " is not registered";
      const auto j = nlohmann_json_address((*live)->value);
      next.nodes.push_back({id, j.first, "", j.second, 1});
    }
    std::sort(next.nodes.begin(), next.nodes.end(),
              [](const auto& a, const auto& b) { return a.id < b.id; });
    cluster::Txn swap{
        {{cluster::topology_key("local"), cluster::Compare::Target::kModRevision,
          (*current)->mod_revision, ""}},
        {{cluster::TxnOp::Kind::kPut, cluster::topology_key("local"), next.to_json(), 0}},
        {}};
    ASSERT_TRUE(*etcd_client_->txn(swap));
    for (const std::string& id : ids) {
      ASSERT_TRUE(eventually([&] { return topology_of(nodes_[id].get()).epoch() == next.epoch; }))
          << id << " did not see epoch " << next.epoch;
    }
    topology_ = next;
  }

  // {address, number} from a liveness value ({"address":..,"number":..}).
  static std::pair<std::string, std::uint32_t> nlohmann_json_address(const std::string& value) {
    const auto a = value.find("\"address\":\"") + 11;
    const std::string address = value.substr(a, value.find('"', a) - a);
    const auto n = value.find("\"number\":") + 9;
    return {address, static_cast<std::uint32_t>(std::stoul(value.substr(n)))};
  }

  static std::string create(Conn& c, const std::string& user, std::uint64_t epoch,
                            Response* answer = nullptr) {
    wire::CreateRequest req;
    req.set_user_id(user);
    req.set_epoch(epoch);
    c.send(Opcode::kCreate, req, 7);
    auto r = c.read();
    EXPECT_TRUE(r);
    if (!r) return "";
    if (answer) *answer = *r;
    return r->status == StatusCode::kOk ? parse<wire::CreateResponse>(*r).session().id() : "";
  }

  static Response get(Conn& c, const std::string& id, std::uint64_t epoch = 0) {
    wire::GetRequest req;
    req.set_id(id);
    req.set_epoch(epoch);
    c.send(Opcode::kGet, req, 8);
    auto r = c.read();
    EXPECT_TRUE(r);
    return r.value_or(Response{});
  }

  TempDir dir_;
  std::unique_ptr<TestEtcd> etcd_;
  std::unique_ptr<cluster::EtcdClient> etcd_client_;
  std::map<std::string, std::unique_ptr<TestNode>> nodes_;
  cluster::Topology topology_;
};

TEST_F(ClusterTest, TheFirstNodeMakesTheRegionAndANewOneWaitsToBeAdded) {
  TestNode* n1 = start_node("n1");
  ASSERT_TRUE(n1);
  auto t = topology_of(n1);
  EXPECT_EQ(t.epoch(), 1u);
  EXPECT_EQ(t.region(), "local");
  ASSERT_EQ(t.nodes_size(), 1);
  EXPECT_EQ(t.nodes(0).id(), "n1");
  EXPECT_EQ(t.nodes(0).address(), n1->address());
  EXPECT_EQ(t.nodes(0).number(), 1u);

  TestNode* n2 = start_node("n2");
  ASSERT_TRUE(n2);
  EXPECT_TRUE(n2->wait_for_log("not in region local's topology yet", 5s));
  EXPECT_EQ(topology_of(n2).epoch(), 1u);
  // The standby node owns nothing: a create there is sent to n1, and n1's session too.
  Conn c1(n1->address()), c2(n2->address());
  Response answer;
  EXPECT_EQ(create(c2, "", 1, &answer), "");
  ASSERT_EQ(answer.status, StatusCode::kWrongNode);
  auto wrong = parse<wire::ErrorResponse>(answer);
  EXPECT_EQ(wrong.wrong_node().owner_address(), n1->address());
  EXPECT_EQ(wrong.wrong_node().owner_id(), "n1");
  EXPECT_EQ(wrong.wrong_node().epoch(), 1u);
  const std::string id = create(c1, "alice", 1);
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(get(c1, id, 1).status, StatusCode::kOk);
  EXPECT_EQ(get(c2, id, 1).status, StatusCode::kWrongNode);
  // Its node number came from etcd and stays with its id across restarts.
  EXPECT_EQ((*etcd_client_->get("/sessiond/local/numbers/2"))->value, "n2");
  // A node with another route-key secret would place users elsewhere: refused at start.
  TestNode::Options o;
  o.data_dir = dir_.path() / "n3";
  o.extra_args = {"--etcd", etcd_->endpoint(), "--node-id", "n3"};
  std::string error;
  EXPECT_FALSE(TestNode::start(o, &error));
  EXPECT_NE(error.find("route-key secret differs"), std::string::npos) << error;
}

TEST_F(ClusterTest, EveryKeyIsServedByTheOwnerTheRingNamesAndNoOtherNode) {
  for (const char* id : {"n1", "n2", "n3"}) ASSERT_TRUE(start_node(id));
  set_region({"n1", "n2", "n3"});
  const cluster::Ring ring(topology_.nodes);
  std::map<std::string, std::unique_ptr<Conn>> conns;
  for (const auto& n : topology_.nodes) conns[n.id] = std::make_unique<Conn>(n.address);
  // Anonymous sessions are made where they are asked for (each node picks a route key it
  // owns); a user's go to the user's node.
  std::vector<std::string> ids;
  std::map<std::string, int> made_on;
  for (int i = 0; i < 300; ++i) {
    const auto& n = topology_.nodes[static_cast<std::size_t>(i) % 3];
    Response answer;
    const std::string id = create(*conns[n.id], "", topology_.epoch, &answer);
    ASSERT_EQ(answer.status, StatusCode::kOk) << n.id;
    EXPECT_EQ(topology_.nodes[ring.owner(cluster::ring_position(id))].id, n.id);
    ids.push_back(id);
  }
  for (int u = 0; u < 60; ++u) {
    const std::string user = "user-" + std::to_string(u);
    Response answer;
    std::string id = create(*conns["n1"], user, topology_.epoch, &answer);
    if (answer.status == StatusCode::kWrongNode) {
      const auto owner = parse<wire::ErrorResponse>(answer).wrong_node().owner_id();
      id = create(*conns[owner], user, topology_.epoch, &answer);
    }
    ASSERT_EQ(answer.status, StatusCode::kOk) << user;
    ++made_on[topology_.nodes[ring.owner(cluster::ring_position(id))].id];
    ids.push_back(id);
  }
  EXPECT_EQ(made_on.size(), 3u) << "60 users all placed on fewer than 3 nodes";
  // The owner serves it; the others name the owner.
  for (const std::string& id : ids) {
    const auto& owner = topology_.nodes[ring.owner(cluster::ring_position(id))];
    for (const auto& n : topology_.nodes) {
      const Response r = get(*conns[n.id], id, topology_.epoch);
      if (n.id == owner.id) {
        ASSERT_EQ(r.status, StatusCode::kOk);
        EXPECT_EQ(r.flags & protocol::kFlagNewerEpoch, 0);
      } else {
        ASSERT_EQ(r.status, StatusCode::kWrongNode);
        EXPECT_EQ(parse<wire::ErrorResponse>(r).wrong_node().owner_address(), owner.address);
      }
    }
  }
  // A request routed by an older epoch is answered, flagged so the client refreshes.
  const Response stale = get(*conns[topology_.nodes[ring.owner(cluster::ring_position(ids[0]))].id],
                             ids[0], topology_.epoch - 1);
  EXPECT_EQ(stale.status, StatusCode::kOk);
  EXPECT_NE(stale.flags & protocol::kFlagNewerEpoch, 0);
}

// etcd out of reach: for less than the lease TTL nothing changes; for longer, writes are refused
// naming etcd while reads go on, and writes come back once etcd does.
TEST_F(ClusterTest, WritesStopWhenTheLeaseCannotBeRenewedAndResumeAfter) {
  TestNode* n1 = start_node("n1");
  ASSERT_TRUE(n1);
  Conn c(n1->address());
  const std::string id = create(c, "alice", 1);
  ASSERT_FALSE(id.empty());
  etcd_->pause();
  // Within the TTL (2 s, fenced at 1.8 s after the last renewal): still writable.
  EXPECT_FALSE(create(c, "bob", 1).empty());
  Response refused;
  EXPECT_TRUE(eventually(
      [&] {
        create(c, "carol", 1, &refused);
        return refused.status == StatusCode::kUnavailable;
      },
      10s));
  EXPECT_NE(parse<wire::ErrorResponse>(refused).message().find("etcd"), std::string::npos)
      << parse<wire::ErrorResponse>(refused).message();
  EXPECT_EQ(get(c, id).status, StatusCode::kOk);  // reads go on
  wire::GetRequest touch;
  touch.set_id(id);
  touch.set_touch(true);
  c.send(Opcode::kGet, touch, 9);
  auto touched = c.read();
  ASSERT_TRUE(touched);
  EXPECT_EQ(touched->status, StatusCode::kOk);  // served without sliding
  etcd_->resume();
  EXPECT_TRUE(eventually([&] { return !create(c, "dave", 1).empty(); }, 10s));
  EXPECT_TRUE(n1->wait_for_log("etcd reachable again", 5s));
}

}  // namespace
}  // namespace sessiond::testing
