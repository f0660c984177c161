// The client's routing decisions as pure functions (client/detail/routing.h): seeds, owners
// (against cluster::Ring directly: client and daemon must agree), the epoch stamp.
#include "detail/routing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

namespace sessiond::client_detail {
namespace {

ClientOptions with_address(std::string address) {
  ClientOptions options;
  options.address = std::move(address);
  return options;
}

TEST(SeedAddresses, AddressSplitsAtCommasTrimmedWithoutRepeats) {
  EXPECT_EQ(seed_addresses(with_address("a:1")), std::vector<std::string>{"a:1"});
  EXPECT_EQ(seed_addresses(with_address(" a:1, b:2,,c:3 ,a:1,")),
            (std::vector<std::string>{"a:1", "b:2", "c:3"}));
}

TEST(SeedAddresses, TheListWinsOverTheAddress) {
  ClientOptions options = with_address("a:1,b:2");
  options.seeds = {"c:3", " d:4 ", "c:3"};
  EXPECT_EQ(seed_addresses(options), (std::vector<std::string>{"c:3", "d:4"}));
}

TEST(SeedAddresses, NothingUsableLeavesOneEntryForTheTransportToRefuse) {
  EXPECT_EQ(seed_addresses(with_address("")), std::vector<std::string>{""});
  EXPECT_EQ(seed_addresses(with_address(" , ")), std::vector<std::string>{","});
}

wire::TopologyResponse topology(std::uint64_t epoch,
                                std::vector<std::pair<std::string, std::uint32_t>> nodes) {
  wire::TopologyResponse response;
  response.set_epoch(epoch);
  response.set_region("eu");
  std::uint32_t number = 1;
  for (auto& [id, weight] : nodes) {
    auto* node = response.add_nodes();
    node->set_id(id);
    node->set_address(id + ".example:7400");
    node->set_region("eu");
    node->set_weight(weight);
    node->set_number(number++);
  }
  return response;
}

std::string random_bytes(std::mt19937_64& rng, std::size_t size) {
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

TEST(RoutingTable, OwnerIsTheRingOwnerOfTheRouteKeyWhateverOrderTheNodesCameIn) {
  // Sent out of id order: the table sorts them as the daemon's ring has them.
  const auto response =
      topology(9, {{"n4", 2}, {"n1", 1}, {"n3", 3}, {"n2", 1}, {"n5", 0}, {"n0", 1}});
  const RoutingTable table = RoutingTable::from_wire(response);
  ASSERT_TRUE(table.routes());

  std::vector<cluster::Node> nodes;
  for (const auto& in : response.nodes()) {
    cluster::Node node;
    node.id = in.id();
    node.address = in.address();
    node.weight = in.weight();
    node.number = in.number();
    nodes.push_back(node);
  }
  std::sort(nodes.begin(), nodes.end(), [](auto& a, auto& b) { return a.id < b.id; });
  const cluster::Ring ring(nodes);

  std::mt19937_64 rng(12);
  std::vector<int> owned(nodes.size());
  for (int i = 0; i < 4000; ++i) {
    const std::string id = random_bytes(rng, 32);
    const std::size_t owner = ring.owner(cluster::ring_position(id));
    ++owned[owner];
    EXPECT_EQ(table.owner_of(id), nodes[owner].address);
    // A signed id (id || tag) routes as its first 32 bytes.
    EXPECT_EQ(table.owner_of(id + random_bytes(rng, 16)), nodes[owner].address);
  }
  EXPECT_EQ(owned[5], 0);  // n5: weight 0, drained
  for (std::size_t n = 0; n < 5; ++n) EXPECT_GT(owned[n], 0) << nodes[n].id;
}

TEST(RoutingTable, SessionsOfOneRouteKeyShareTheirOwner) {
  const RoutingTable table = RoutingTable::from_wire(topology(3, {{"a", 1}, {"b", 1}, {"c", 1}}));
  std::mt19937_64 rng(5);
  for (int i = 0; i < 100; ++i) {
    const std::string route_key = random_bytes(rng, 8);
    EXPECT_EQ(table.owner_of(route_key + random_bytes(rng, 24)),
              table.owner_of(route_key + random_bytes(rng, 24)));
  }
}

TEST(RoutingTable, EpochZeroOrNoWeightRoutesNothing) {
  const std::string id(32, 'x');
  EXPECT_FALSE(RoutingTable::from_wire(topology(0, {{"solo", 1}})).routes());
  EXPECT_EQ(RoutingTable::from_wire(topology(0, {{"solo", 1}})).owner_of(id), "");
  EXPECT_FALSE(RoutingTable::from_wire(topology(4, {{"a", 0}, {"b", 0}})).routes());
  EXPECT_FALSE(RoutingTable::from_wire(topology(4, {})).routes());
  EXPECT_EQ(RoutingTable().owner_of(id), "");
}

TEST(RoutingTable, PublicFormKeepsEveryField) {
  auto response = topology(6, {{"b", 2}, {"a", 1}});
  response.set_migrating(true);
  response.mutable_nodes(0)->set_resp_address("b.example:6379");
  const Topology out = RoutingTable::from_wire(response).to_public();
  EXPECT_EQ(out.epoch, 6u);
  EXPECT_EQ(out.region, "eu");
  EXPECT_TRUE(out.migrating);
  ASSERT_EQ(out.nodes.size(), 2u);
  EXPECT_EQ(out.nodes[0].id, "a");
  EXPECT_EQ(out.nodes[1].id, "b");
  EXPECT_EQ(out.nodes[1].address, "b.example:7400");
  EXPECT_EQ(out.nodes[1].resp_address, "b.example:6379");
  EXPECT_EQ(out.nodes[1].weight, 2u);
  EXPECT_EQ(out.nodes[1].number, 1u);
  EXPECT_EQ(out.nodes[1].region, "eu");
}

TEST(WithEpoch, AppendsWhatProtobufWouldHaveSerialized) {
  for (std::uint64_t epoch : {std::uint64_t{1}, std::uint64_t{127}, std::uint64_t{128},
                              std::uint64_t{300}, std::uint64_t{1} << 35, ~std::uint64_t{0}}) {
    wire::CreateRequest create;
    create.set_user_id("alice");
    create.add_fields()->set_name("cart");
    create.set_request_id(std::string(16, '\x7f'));
    const std::string base = create.SerializeAsString();
    create.set_epoch(epoch);
    EXPECT_EQ(with_epoch(base, epoch), create.SerializeAsString()) << epoch;

    wire::GetRequest get;
    get.set_id(std::string(32, 'i'));
    get.set_touch(true);
    const std::string get_base = get.SerializeAsString();
    get.set_epoch(epoch);
    EXPECT_EQ(with_epoch(get_base, epoch), get.SerializeAsString()) << epoch;
    wire::GetRequest parsed;
    ASSERT_TRUE(parsed.ParseFromString(with_epoch(get_base, epoch)));
    EXPECT_EQ(parsed.epoch(), epoch);
    EXPECT_TRUE(parsed.touch());
  }
  EXPECT_EQ(with_epoch("abc", 0), "abc");
}

TEST(RequestId, SixteenFreshRandomBytesEachTime) {
  auto a = new_request_id();
  auto b = new_request_id();
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->size(), 16u);
  EXPECT_NE(*a, *b);
}

}  // namespace
}  // namespace sessiond::client_detail
