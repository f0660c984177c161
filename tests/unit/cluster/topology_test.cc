#include "cluster/topology.h"

#include <gtest/gtest.h>

namespace sessiond::cluster {
namespace {

Topology sample() {
  Topology t;
  t.region = "eu-west";
  t.epoch = 7;
  t.replication_factor = 2;
  t.nodes = {{"n1", "10.0.0.1:7400", "10.0.0.1:6379", 1, 1, false, {}},
             {"n2", "10.0.0.2:7400", "", 2, 2, true, {"n1"}}};
  Migration m;
  m.id = 7;
  m.reason = "add-node n3";
  m.started_ms = 1'780'000'000'000;
  m.target = t.nodes;
  m.target.push_back({"n3", "10.0.0.3:7400", "", 3, 1, false, {}});
  t.migration = m;
  return t;
}

TEST(Topology, JsonRoundTrip) {
  const Topology t = sample();
  auto back = Topology::from_json(t.to_json());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, t);
  Topology plain = t;
  plain.migration.reset();
  auto plain_back = Topology::from_json(plain.to_json());
  ASSERT_TRUE(plain_back.ok());
  EXPECT_FALSE(plain_back->migration.has_value());
}

TEST(Topology, NodesComeBackSortedById) {
  auto t = Topology::from_json(
      R"({"region":"r","epoch":1,"nodes":[{"id":"b","address":"h:2","number":2},
                                          {"id":"a","address":"h:1","number":1}]})");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->nodes.size(), 2u);
  EXPECT_EQ(t->nodes[0].id, "a");
  EXPECT_EQ(t->nodes[0].weight, 1u);     // the default
  EXPECT_EQ(t->replication_factor, 1u);  // a topology from before replicas
  EXPECT_FALSE(t->nodes[0].down);
  EXPECT_EQ(t->find("b")->address, "h:2");
  EXPECT_EQ(t->find("c"), nullptr);
}

TEST(Topology, RefusesWhatCannotBeRoutedBy) {
  const std::pair<const char*, const char*> bad[] = {
      {"not json", "not a JSON object"},
      {R"({"region":"r","epoch":1})", "nodes"},
      {R"({"region":"r","epoch":1,"nodes":[{"id":"a","address":"h:1","number":1},
          {"id":"a","address":"h:2","number":2}]})",
       "appears twice"},
      {R"({"region":"r","epoch":1,"nodes":[{"id":"a b","address":"h:1","number":1}]})",
       "invalid node id"},
      {R"({"region":"r","epoch":1,"nodes":[{"id":"a","address":"h:1","number":1},
          {"id":"b","address":"h:2","number":1}]})",
       "unique"},
      {R"({"region":"r","epoch":1,"nodes":[{"id":"a","address":"h:1","number":0}]})", "1-65535"},
      {R"({"region":"r","epoch":1,"nodes":[{"id":"a","address":"h:1","number":1,"weight":0}]})",
       "weight above 0"},
      {R"({"region":"r","epoch":1,"nodes":[{"id":"a","address":"","number":1}]})", "no address"},
      {R"({"region":"r","epoch":"x","nodes":[]})", "topology"},
      {R"({"region":"r","epoch":1,"replication_factor":0,"nodes":[]})", "replication factor"},
      {R"({"region":"r","epoch":1,"replication_factor":6,"nodes":[]})", "replication factor"},
      {R"({"region":"r","epoch":1,"nodes":[{"id":"a","address":"h:1","number":1,
          "down":{"in_sync":["z"]}}]})",
       "not another node"},
      {R"({"region":"r","epoch":1,"nodes":[{"id":"a","address":"h:1","number":1,
          "down":{"in_sync":["a"]}}]})",
       "not another node"},
  };
  for (const auto& [json, why] : bad) {
    auto t = Topology::from_json(json);
    ASSERT_FALSE(t.ok()) << json;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find(why), std::string::npos) << t.status().message();
  }
}

TEST(Topology, FreeNumberSkipsCurrentAndTargetNodes) {
  Topology t = sample();
  EXPECT_EQ(t.free_number(), 4u);
  t.migration.reset();
  EXPECT_EQ(t.free_number(), 3u);
  EXPECT_EQ(Topology().free_number(), 1u);
}

TEST(Topology, NodeIds) {
  EXPECT_TRUE(valid_node_id("node-1.eu_west"));
  EXPECT_FALSE(valid_node_id(""));
  EXPECT_FALSE(valid_node_id(std::string(65, 'a')));
  EXPECT_FALSE(valid_node_id("a/b"));
}

}  // namespace
}  // namespace sessiond::cluster
