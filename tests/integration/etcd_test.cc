// The etcd client (cluster/etcd.h) against a real etcd on loopback.
#include "cluster/etcd.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "test_etcd.h"
#include "tests/support/eventually.h"
#include "tests/support/temp_dir.h"

namespace sessiond::cluster {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::TestEtcd;

class EtcdClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    etcd_ = TestEtcd::start(dir_.path(), &error);
    ASSERT_TRUE(etcd_) << error;
    client_ = std::make_unique<EtcdClient>(std::vector<std::string>{etcd_->endpoint()});
  }

  sessiond::testing::TempDir dir_;
  std::unique_ptr<TestEtcd> etcd_;
  std::unique_ptr<EtcdClient> client_;
};

TEST_F(EtcdClientTest, PutGetPrefixErase) {
  ASSERT_TRUE(client_->put("/t/a", std::string("binary\0value", 12)).ok());
  ASSERT_TRUE(client_->put("/t/b", "2").ok());
  ASSERT_TRUE(client_->put("/u/c", "3").ok());
  auto a = client_->get("/t/a");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->value, std::string("binary\0value", 12));
  EXPECT_GT((*a)->mod_revision, 0);
  auto missing = client_->get("/t/none");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  auto range = client_->get_prefix("/t/");
  ASSERT_TRUE(range.ok());
  ASSERT_EQ(range->kvs.size(), 2u);
  EXPECT_EQ(range->kvs[0].key, "/t/a");
  EXPECT_EQ(range->kvs[1].key, "/t/b");
  EXPECT_GE(range->revision, range->kvs[1].mod_revision);
  auto erased = client_->erase("/t/b");
  ASSERT_TRUE(erased.ok());
  EXPECT_EQ(*erased, 1);
  EXPECT_FALSE(client_->get("/t/b")->has_value());
}

TEST_F(EtcdClientTest, CompareAndSwapOnRevisions) {
  // Create only if absent (create revision 0): the first wins, the second is refused.
  Txn create{
      {{"/k", Compare::Target::kCreateRevision, 0, ""}}, {{TxnOp::Kind::kPut, "/k", "one", 0}}, {}};
  auto first = client_->txn(create);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(*first);
  create.success[0].value = "two";
  EXPECT_FALSE(*client_->txn(create));
  EXPECT_EQ((*client_->get("/k"))->value, "one");
  // Swap on the mod revision read: a stale revision fails and changes nothing.
  const std::int64_t revision = (*client_->get("/k"))->mod_revision;
  Txn swap{{{"/k", Compare::Target::kModRevision, revision, ""}},
           {{TxnOp::Kind::kPut, "/k", "three", 0}, {TxnOp::Kind::kPut, "/k2", "also", 0}},
           {}};
  EXPECT_TRUE(*client_->txn(swap));
  EXPECT_FALSE(*client_->txn(swap));
  EXPECT_EQ((*client_->get("/k"))->value, "three");
  EXPECT_EQ((*client_->get("/k2"))->value, "also");
  // On a value, and a prefix delete.
  Txn by_value{{{"/k", Compare::Target::kValue, 0, "three"}},
               {{TxnOp::Kind::kDeletePrefix, "/k", "", 0}},
               {}};
  EXPECT_TRUE(*client_->txn(by_value));
  EXPECT_TRUE(client_->get_prefix("/k")->kvs.empty());
}

TEST_F(EtcdClientTest, LeasesKeepKeysAliveAndTheirEndRemovesThem) {
  auto lease = client_->grant_lease(1000ms);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(client_->put("/live/n1", "x", *lease).ok());
  EXPECT_EQ((*client_->get("/live/n1"))->lease, *lease);
  auto ttl = client_->keep_alive(*lease);
  ASSERT_TRUE(ttl.ok());
  EXPECT_GE(*ttl, 1);
  ASSERT_TRUE(client_->revoke_lease(*lease).ok());
  EXPECT_FALSE(client_->get("/live/n1")->has_value());
  EXPECT_EQ(client_->keep_alive(*lease).status().code(), StatusCode::kNotFound);
  // Without keep-alives a lease runs out and takes its key with it.
  auto short_lease = client_->grant_lease(1000ms);
  ASSERT_TRUE(short_lease.ok());
  ASSERT_TRUE(client_->put("/live/n2", "y", *short_lease).ok());
  EXPECT_TRUE(eventually([&] { return !client_->get("/live/n2")->has_value(); }));
}

TEST_F(EtcdClientTest, WatchSeesPutsAndDeletesInOrderUntilStopped) {
  const std::int64_t start = client_->get_prefix("/w/")->revision + 1;
  std::mutex mu;
  std::vector<std::string> seen;
  std::atomic<bool> stop{false};
  Status ended;
  std::thread watcher([&] {
    ended = client_->watch(
        "/w/", start,
        [&](const std::vector<WatchEvent>& events, std::int64_t) {
          std::lock_guard lock(mu);
          for (const auto& e : events)
            seen.push_back((e.deleted ? "-" : "+") + e.kv.key + "=" + e.kv.value);
        },
        stop, 200ms);
  });
  ASSERT_TRUE(client_->put("/w/a", "1").ok());
  ASSERT_TRUE(client_->put("/other", "not watched").ok());
  ASSERT_TRUE(client_->put("/w/a", "2").ok());
  ASSERT_TRUE(client_->erase("/w/a").ok());
  const std::vector<std::string> expected = {"+/w/a=1", "+/w/a=2", "-/w/a="};
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return seen.size() >= expected.size();
  }));
  stop = true;
  watcher.join();  // within a poll
  EXPECT_TRUE(ended.ok()) << ended.ToString();
  std::lock_guard lock(mu);
  EXPECT_EQ(seen, expected);
}

TEST_F(EtcdClientTest, UnreachableEndpointsAreNamedAndTheNextOneIsTried) {
  const std::string dead = "127.0.0.1:" + std::to_string(sessiond::testing::free_loopback_port());
  EtcdClient only_dead({dead}, 500ms);
  auto r = only_dead.get("/x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find(dead), std::string::npos) << r.status().message();
  EtcdClient fallback({dead, etcd_->endpoint()}, 500ms);
  EXPECT_TRUE(fallback.put("/x", "1").ok());
  EXPECT_EQ((*fallback.get("/x"))->value, "1");
}

TEST(EtcdEndpoints, ParsesTheFlagAndRefusesWhatItCannotDial) {
  auto two = EtcdClient::parse_endpoints("http://127.0.0.1:2379,10.0.0.2:2379/");
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(*two, (std::vector<std::string>{"127.0.0.1:2379", "10.0.0.2:2379"}));
  EXPECT_FALSE(EtcdClient::parse_endpoints("").ok());
  EXPECT_FALSE(EtcdClient::parse_endpoints("https://127.0.0.1:2379").ok());
  EXPECT_FALSE(EtcdClient::parse_endpoints("127.0.0.1").ok());
  EXPECT_EQ(prefix_end("/a/"), "/a0");
  EXPECT_EQ(prefix_end(std::string("a\xff", 2)), "b");
}

}  // namespace
}  // namespace sessiond::cluster
