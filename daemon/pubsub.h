// PubSub: the channels and patterns of the RESP listener's subscribers (Redis's PUBLISH,
// SUBSCRIBE, PSUBSCRIBE), node-wide. Messages reach the subscribers of this node only, as in
// Redis Cluster before 7.0's sharded channels; keyspace notifications are published here by
// the node that holds the key (docs/resp.md, "Pub/sub and keyspace notifications").
//
// Thread-safe. A subscriber's messages arrive through its Deliver, called under the broker's
// lock on the publishing thread with the whole encoded RESP message: it must be quick (copy and
// post to the connection's thread) and must not call the broker.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace sessiond::daemon::resp {

class PubSub {
 public:
  using Deliver = std::function<void(std::string_view encoded)>;

  // One connection's subscriptions; they end with it.
  class Subscriber {
   public:
    ~Subscriber();
    Subscriber(const Subscriber&) = delete;
    Subscriber& operator=(const Subscriber&) = delete;

    // Each answers whether the subscription set changed (false: already there / not there).
    bool subscribe(std::string_view channel);
    bool unsubscribe(std::string_view channel);
    bool psubscribe(std::string_view pattern);
    bool punsubscribe(std::string_view pattern);
    // Channels (patterns) held now, in the order they were subscribed.
    std::vector<std::string> channels() const;
    std::vector<std::string> patterns() const;
    // Channels and patterns together (the count Redis replies with).
    std::size_t count() const;

   private:
    friend class PubSub;
    Subscriber(PubSub& broker, Deliver deliver) : broker_(broker), deliver_(std::move(deliver)) {}
    PubSub& broker_;
    Deliver deliver_;
    std::vector<std::string> channels_, patterns_;  // guarded by the broker's lock
  };

  PubSub() = default;
  PubSub(const PubSub&) = delete;
  PubSub& operator=(const PubSub&) = delete;

  // A subscriber for one connection, with no subscription yet.
  std::unique_ptr<Subscriber> subscriber(Deliver deliver);
  // Sends `message` to every subscriber of `channel` and of a pattern matching it; answers how
  // many received it (a subscriber matching by several patterns counts once per pattern, as in
  // Redis).
  std::int64_t publish(std::string_view channel, std::string_view message);
  // Whether anyone subscribes to anything: publishers of notifications skip their work when not.
  bool has_subscribers() const { return subscriptions_.load(std::memory_order_relaxed) > 0; }

 private:
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::vector<Subscriber*>> channels_;
  std::vector<std::pair<std::string, Subscriber*>> patterns_;  // in subscription order
  std::atomic<std::int64_t> subscriptions_{0};
};

}  // namespace sessiond::daemon::resp
