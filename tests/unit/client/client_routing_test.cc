// The client's routing against fake nodes (fake_node.h) that answer TOPOLOGY with a cluster and
// the calls as a node of it would: where calls go, with which epoch, what is retried and with
// which bytes. A real multi-node cluster is tests/integration's business.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "closed_port.h"
#include "cluster/ring.h"
#include "detail/router.h"
#include "fake_node.h"
#include "protocol/sessiond.pb.h"
#include "sessiond/client.h"

namespace sessiond {
namespace {

using namespace std::chrono_literals;
using protocol::Opcode;
using testing::FakeNode;
using Clock = std::chrono::steady_clock;

// A region of fake nodes: nodes()[i] has id "n<i>", weight 1.
wire::TopologyResponse topology_of(std::uint64_t epoch, const std::vector<std::string>& addresses) {
  wire::TopologyResponse response;
  response.set_epoch(epoch);
  response.set_region("test");
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    auto* node = response.add_nodes();
    node->set_id("n" + std::to_string(i));
    node->set_address(addresses[i]);
    node->set_region("test");
    node->set_weight(1);
    node->set_number(static_cast<std::uint32_t>(i + 1));
  }
  return response;
}

cluster::Ring ring_of(const wire::TopologyResponse& topology) {
  std::vector<cluster::Node> nodes;
  for (const auto& in : topology.nodes()) {
    cluster::Node node;
    node.id = in.id();
    node.address = in.address();
    node.weight = in.weight();
    nodes.push_back(node);
  }
  return cluster::Ring(nodes);
}

FakeNode::Answer ok(const google::protobuf::MessageLite& message, std::uint8_t flags = 0) {
  FakeNode::Answer answer;
  answer.body = message.SerializeAsString();
  answer.flags = flags;
  return answer;
}

FakeNode::Answer wrong_node(const std::string& owner, std::uint64_t epoch) {
  wire::ErrorResponse error;
  error.set_message("not the owner");
  error.mutable_wrong_node()->set_owner_address(owner);
  error.mutable_wrong_node()->set_epoch(epoch);
  FakeNode::Answer answer;
  answer.status = StatusCode::kWrongNode;
  answer.body = error.SerializeAsString();
  return answer;
}

FakeNode::Answer dropped() {
  FakeNode::Answer answer;
  answer.drop_connection = true;
  return answer;
}

wire::GetResponse session_with_id(const std::string& raw_id) {
  wire::GetResponse response;
  response.mutable_session()->set_id(raw_id);
  return response;
}

wire::CreateResponse created(const std::string& raw_id) {
  wire::CreateResponse response;
  response.mutable_session()->set_id(raw_id);
  return response;
}

template <typename Message>
Message parsed(const FakeNode::Request& request) {
  Message message;
  EXPECT_TRUE(message.ParseFromString(request.body));
  return message;
}

std::string random_raw_id(std::mt19937_64& rng) {
  std::string id(32, '\0');
  for (char& c : id) c = static_cast<char>(rng());
  return id;
}

Client::Options options_for(std::string address, std::chrono::milliseconds timeout = 5s) {
  Client::Options options;
  options.address = std::move(address);
  options.timeout = timeout;
  options.backoff_initial = 1ms;
  options.max_retries = 1;
  return options;
}

using client_test_support::ClosedPort;

// A connection finds the call an answer is for by its request id, in a table indexed by the id's
// low bits: one call left unanswered while a hundred later calls on the same connection are
// answered makes their ids collide with its slot, and every answer still reaches its own call.
TEST(ClientRouting, AnswersFindTheirCallsAroundOneThatIsNeverAnswered) {
  FakeNode node;
  node.start([](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(wire::TopologyResponse());
    const auto ping = parsed<wire::PingRequest>(request);
    if (ping.payload() == "held") {
      FakeNode::Answer silence;
      silence.no_answer = true;
      return silence;
    }
    wire::PingResponse response;
    response.set_payload(ping.payload());
    return ok(response);
  });
  Client::Options options = options_for(node.address(), 3s);
  options.pool_size = 1;
  Client client(options);
  std::atomic<bool> held_done = false;
  Status held_status;
  client.async_ping("held", [&](Result<PingResult> result) {
    held_status = result.status();
    held_done = true;
  });
  for (int i = 0; i < 100; ++i) {
    auto pong = client.ping("one by one " + std::to_string(i));
    ASSERT_TRUE(pong.ok()) << pong.status().ToString();
    EXPECT_EQ(pong->payload, "one by one " + std::to_string(i));
  }
  std::atomic<int> answered = 0;
  std::atomic<int> wrong = 0;
  for (int i = 0; i < 100; ++i) {  // pipelined: many outstanding at once
    const std::string payload = "together " + std::to_string(i);
    client.async_ping(payload, [&, payload](Result<PingResult> result) {
      if (!result.ok() || result->payload != payload) ++wrong;
      ++answered;
    });
  }
  const auto deadline = Clock::now() + 20s;
  while ((answered < 100 || !held_done) && Clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  ASSERT_EQ(answered, 100);
  EXPECT_EQ(wrong, 0);
  ASSERT_TRUE(held_done);
  EXPECT_EQ(held_status.code(), StatusCode::kUnavailable) << held_status.ToString();
}

TEST(ClientRouting, KeyedCallsGoToTheRingOwnerWithItsEpoch) {
  std::vector<std::unique_ptr<FakeNode>> nodes;
  std::vector<std::string> addresses;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back(std::make_unique<FakeNode>());
    addresses.push_back(nodes.back()->address());
  }
  const auto topology = topology_of(7, addresses);
  const cluster::Ring ring = ring_of(topology);
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    // Copies: a node may still answer while the test's locals are being destroyed.
    nodes[i]->start([topology, ring, addresses, i](const FakeNode::Request& request) {
      if (request.opcode == Opcode::kTopology) return ok(topology);
      const auto get = parsed<wire::GetRequest>(request);
      const std::size_t owner = ring.owner(cluster::ring_position(get.id()));
      if (owner != i) return wrong_node(addresses[owner], 7);
      return ok(session_with_id(get.id()));
    });
  }
  Client client(options_for(addresses[0] + "," + addresses[1]));
  auto known = client.topology();
  ASSERT_TRUE(known.ok()) << known.status().ToString();
  EXPECT_EQ(known->epoch, 7u);
  EXPECT_EQ(known->source, addresses[0]);
  ASSERT_EQ(known->nodes.size(), 3u);
  EXPECT_EQ(known->nodes[2].address, addresses[2]);

  std::mt19937_64 rng(1);
  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i) ids.push_back(session_id_from_bytes(random_raw_id(rng)));
  for (const auto& result : client.get_many(ids)) {
    ASSERT_TRUE(result.ok()) << result.status().ToString();
  }
  // Each get went straight to its owner, with the epoch it was routed by.
  std::size_t gets = 0;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    for (const auto& request : nodes[i]->requests(Opcode::kGet)) {
      const auto get = parsed<wire::GetRequest>(request);
      EXPECT_EQ(ring.owner(cluster::ring_position(get.id())), i);
      EXPECT_EQ(get.epoch(), 7u);
      ++gets;
    }
    EXPECT_FALSE(nodes[i]->requests(Opcode::kGet).empty()) << i;
  }
  EXPECT_EQ(gets, ids.size());
}

TEST(ClientRouting, WrongNodeIsFollowedOnceWithTheSameBytesButTheEpoch) {
  FakeNode seed;
  FakeNode owner;
  wire::TopologyResponse alone;  // epoch 0: a node without a cluster, alone
  alone.add_nodes()->set_address(seed.address());
  seed.start([alone, owner_address = owner.address()](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(alone);
    return wrong_node(owner_address, 5);
  });
  owner.start([&](const FakeNode::Request&) { return ok(created(std::string(32, 'c'))); });

  Client client(options_for(seed.address()));
  CreateOptions create;
  create.user_id = "alice";
  auto meta = client.create(create);
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  EXPECT_EQ(meta->id, session_id_from_bytes(std::string(32, 'c')));

  const auto first = seed.requests(Opcode::kCreate);
  const auto retry = owner.requests(Opcode::kCreate);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(retry.size(), 1u);
  const auto sent = parsed<wire::CreateRequest>(first[0]);
  const auto resent = parsed<wire::CreateRequest>(retry[0]);
  EXPECT_EQ(sent.request_id().size(), 16u);
  EXPECT_EQ(resent.request_id(), sent.request_id());
  EXPECT_EQ(sent.epoch(), 0u);
  EXPECT_EQ(resent.epoch(), 5u);  // routed by the answer's epoch
  auto expected = sent;
  expected.set_epoch(5);
  EXPECT_EQ(retry[0].body, expected.SerializeAsString());
}

// While ownership moves, a node that has not seen the newest topology may point at the
// previous owner: WRONG_NODE is followed a few times (Router::kMaxWrongNodeFollows).
TEST(ClientRouting, WrongNodeIsFollowedAlongAChain) {
  FakeNode a;
  FakeNode b;
  FakeNode c;
  a.start([&a, b_address = b.address()](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(topology_of(0, {a.address()}));
    return wrong_node(b_address, 2);
  });
  b.start([c_address = c.address()](const FakeNode::Request&) { return wrong_node(c_address, 2); });
  c.start([&](const FakeNode::Request&) { return ok(wire::DestroyResponse()); });
  Client client(options_for(a.address()));
  const Status status = client.destroy(session_id_from_bytes(std::string(32, 'd')));
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(b.requests(Opcode::kDestroy).size(), 1u);
  EXPECT_EQ(c.requests(Opcode::kDestroy).size(), 1u);
}

// Nodes that point at each other: the client stops following and WRONG_NODE is the answer.
TEST(ClientRouting, WrongNodeBackAndForthEndsInWrongNode) {
  FakeNode a;
  FakeNode b;
  a.start([&a, b_address = b.address()](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(topology_of(0, {a.address()}));
    return wrong_node(b_address, 2);
  });
  b.start([&a](const FakeNode::Request&) { return wrong_node(a.address(), 2); });
  Client client(options_for(a.address()));
  const Status status = client.destroy(session_id_from_bytes(std::string(32, 'd')));
  EXPECT_EQ(status.code(), StatusCode::kWrongNode) << status.ToString();
  const std::size_t sent =
      a.requests(Opcode::kDestroy).size() + b.requests(Opcode::kDestroy).size();
  EXPECT_EQ(sent, 1u + static_cast<std::size_t>(client_detail::Router::kMaxWrongNodeFollows));
}

// A node that has not seen the newest topology yet (its watch lags) points back at the owner by
// its older one. The client does not go round in circles between the two: it asks the lagging
// node again until it has caught up, within the deadline.
TEST(ClientRouting, ANodeBehindTheTopologyIsAskedAgainNotFollowedBack) {
  FakeNode a;
  FakeNode b;
  std::atomic<int> b_calls{0};
  a.start([&a, b_address = b.address()](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(topology_of(0, {a.address()}));
    return wrong_node(b_address, 3);  // a has epoch 3, in which b owns the key
  });
  b.start([&](const FakeNode::Request&) {
    // Still at epoch 1, in which a owned the key, for its first few answers.
    if (++b_calls <= 2 * client_detail::Router::kMaxWrongNodeFollows) {
      return wrong_node(a.address(), 1);
    }
    return ok(wire::DestroyResponse());
  });
  Client client(options_for(a.address()));
  const Status status = client.destroy(session_id_from_bytes(std::string(32, 'd')));
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(a.requests(Opcode::kDestroy).size(), 1u);
  const auto at_b = b.requests(Opcode::kDestroy);
  ASSERT_EQ(at_b.size(), 1u + 2 * client_detail::Router::kMaxWrongNodeFollows);
  for (const auto& request : at_b) EXPECT_EQ(parsed<wire::DestroyRequest>(request).epoch(), 3u);
}

// A key at its handover: the node did not run the write and says when to send it again; the
// client does, until it is taken, within the deadline. Without the promise, UNAVAILABLE is the
// answer.
TEST(ClientRouting, AWriteAtItsHandoverIsSentAgainAfterThePause) {
  FakeNode node;
  std::atomic<int> attempts{0};
  node.start([&](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(topology_of(0, {node.address()}));
    if (++attempts < 4) {
      wire::ErrorResponse error;
      error.set_message("this key is moving");
      error.set_retry_after_ms(5);
      FakeNode::Answer answer;
      answer.status = StatusCode::kUnavailable;
      answer.body = error.SerializeAsString();
      return answer;
    }
    return ok(wire::DestroyResponse());
  });
  Client client(options_for(node.address()));
  const Status status = client.destroy(session_id_from_bytes(std::string(32, 'h')));
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(attempts.load(), 4);

  FakeNode plain;
  plain.start([&](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(topology_of(0, {plain.address()}));
    wire::ErrorResponse error;
    error.set_message("disk full");
    FakeNode::Answer answer;
    answer.status = StatusCode::kUnavailable;
    answer.body = error.SerializeAsString();
    return answer;
  });
  Client other(options_for(plain.address()));
  EXPECT_EQ(other.destroy(session_id_from_bytes(std::string(32, 'h'))).code(),
            StatusCode::kUnavailable);
  EXPECT_EQ(plain.requests(Opcode::kDestroy).size(), 1u);
}

TEST(ClientRouting, NewerEpochFlagRefreshesTheTopologyOnce) {
  std::atomic<std::uint64_t> epoch{3};  // before the node, which reads it until it is gone
  FakeNode node;
  node.start([&](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(topology_of(epoch, {node.address()}));
    const auto get = parsed<wire::GetRequest>(request);
    return ok(session_with_id(get.id()), get.epoch() < epoch ? protocol::kFlagNewerEpoch : 0);
  });
  Client client(options_for(node.address()));
  ASSERT_EQ(client.topology()->epoch, 3u);
  epoch = 4;
  std::mt19937_64 rng(2);
  std::vector<std::string> ids;
  for (int i = 0; i < 100; ++i) ids.push_back(session_id_from_bytes(random_raw_id(rng)));
  for (const auto& result : client.get_many(ids)) ASSERT_TRUE(result.ok());

  const auto deadline = Clock::now() + 5s;
  while (client.topology()->epoch != 4 && Clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(client.topology()->epoch, 4u);
  // The first flagged answer started a refresh; the others came while it ran or were answers
  // to requests routed by epoch 3 once 4 was known: one refresh besides the first fetch.
  EXPECT_EQ(node.requests(Opcode::kTopology).size(), 2u);
  ASSERT_TRUE(client.get(ids[0]).ok());
  EXPECT_EQ(parsed<wire::GetRequest>(node.requests(Opcode::kGet).back()).epoch(), 4u);
}

// A node that drops the connection on the first CREATE and answers the second.
void drop_first_create(FakeNode& node, std::uint64_t epoch) {
  auto creates = std::make_shared<int>(0);
  node.start([&node, epoch, creates](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(topology_of(epoch, {node.address()}));
    if ((*creates)++ == 0) return dropped();
    return ok(created(std::string(32, 'r')));
  });
}

TEST(ClientRouting, CreateWhoseConnectionDroppedIsResentWithItsRequestIdInACluster) {
  FakeNode node;
  drop_first_create(node, 3);
  Client client(options_for(node.address()));
  ASSERT_EQ(client.topology()->epoch, 3u);
  auto meta = client.create(CreateOptions());
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  const auto creates = node.requests(Opcode::kCreate);
  ASSERT_EQ(creates.size(), 2u);
  EXPECT_EQ(creates[1].body, creates[0].body);  // same request id, same epoch
  EXPECT_EQ(parsed<wire::CreateRequest>(creates[0]).epoch(), 3u);
  EXPECT_EQ(node.requests(Opcode::kTopology).size(), 2u);  // refreshed before the resend
}

TEST(ClientRouting, CreateWhoseConnectionDroppedIsNotResentWithoutACluster) {
  FakeNode node;
  drop_first_create(node, 0);
  Client client(options_for(node.address()));
  ASSERT_EQ(client.topology()->epoch, 0u);
  auto meta = client.create(CreateOptions());
  EXPECT_EQ(meta.code(), StatusCode::kUnavailable);
  EXPECT_NE(meta.status().message().find("may or may not have been applied"), std::string::npos)
      << meta.status().ToString();
  EXPECT_EQ(node.requests(Opcode::kCreate).size(), 1u);
}

TEST(ClientRouting, AFailedOwnerIsReplacedByTheRefreshedTopology) {
  ClosedPort dead;
  std::atomic<int> fetches{0};
  FakeNode alive;
  const auto before = topology_of(1, {alive.address(), dead.address()});
  const auto after = topology_of(2, {alive.address()});
  alive.start([before, after, &fetches](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(fetches++ == 0 ? before : after);
    return ok(session_with_id(parsed<wire::GetRequest>(request).id()));
  });
  Client client(options_for(alive.address()));
  ASSERT_EQ(client.topology()->epoch, 1u);
  // A session the dead node owns by the first topology.
  const cluster::Ring ring = ring_of(before);
  std::mt19937_64 rng(3);
  std::string raw = random_raw_id(rng);
  while (ring.owner(cluster::ring_position(raw)) != 1) raw = random_raw_id(rng);

  auto session = client.get(session_id_from_bytes(raw));
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  const auto gets = alive.requests(Opcode::kGet);
  ASSERT_EQ(gets.size(), 1u);
  EXPECT_EQ(parsed<wire::GetRequest>(gets[0]).epoch(), 2u);
  EXPECT_EQ(client.topology()->epoch, 2u);
}

TEST(ClientRouting, SeedsAreAskedInOrderAndPingGoesToTheFirst) {
  ClosedPort first;
  FakeNode second;
  second.start([&](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(topology_of(0, {second.address()}));
    return ok(session_with_id(parsed<wire::GetRequest>(request).id()));
  });
  Client::Options options = options_for("ignored:1");
  options.seeds = {first.address(), second.address()};
  Client client(options);
  auto known = client.topology();
  ASSERT_TRUE(known.ok()) << known.status().ToString();
  EXPECT_EQ(known->source, second.address());
  EXPECT_TRUE(client.get(session_id_from_bytes(std::string(32, 'g'))).ok());
  EXPECT_EQ(second.requests(Opcode::kGet).size(), 1u);
  auto ping = client.ping();
  EXPECT_EQ(ping.code(), StatusCode::kUnavailable);
  EXPECT_NE(ping.status().message().find(first.address()), std::string::npos);
}

TEST(ClientRouting, NoSeedAnsweringTopologyNamesEachFailure) {
  ClosedPort a;
  ClosedPort b;
  Client client(options_for(a.address() + "," + b.address()));
  auto known = client.topology();
  EXPECT_EQ(known.code(), StatusCode::kUnavailable);
  EXPECT_NE(known.status().message().find(a.address()), std::string::npos);
  EXPECT_NE(known.status().message().find(b.address()), std::string::npos);
}

TEST(ClientRouting, TheDeadlineCoversTheRetry) {
  FakeNode node;
  const int silent = ::socket(AF_INET, SOCK_STREAM, 0);  // accepts, never answers
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(silent, 16), 0);
  socklen_t length = sizeof addr;
  ::getsockname(silent, reinterpret_cast<sockaddr*>(&addr), &length);
  const std::string silent_address = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  node.start([&node, silent_address](const FakeNode::Request& request) {
    if (request.opcode == Opcode::kTopology) return ok(topology_of(0, {node.address()}));
    return wrong_node(silent_address, 1);
  });
  Client client(options_for(node.address(), 300ms));
  const auto start = Clock::now();
  auto session = client.get(session_id_from_bytes(std::string(32, 't')));
  const auto elapsed = Clock::now() - start;
  ::close(silent);
  EXPECT_EQ(session.code(), StatusCode::kUnavailable) << session.status().ToString();
  EXPECT_NE(session.status().message().find("within 300 ms"), std::string::npos)
      << session.status().ToString();
  EXPECT_GE(elapsed, 290ms);
  EXPECT_LT(elapsed, 3s);
}

}  // namespace
}  // namespace sessiond
