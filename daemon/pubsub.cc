#include "daemon/pubsub.h"

#include <algorithm>

#include "daemon/resp.h"
#include "daemon/resp_commands.h"

namespace sessiond::daemon::resp {

namespace {

// Removes the first `value` from `v`, keeping the order; false when absent.
template <typename T, typename U>
bool erase_one(std::vector<T>& v, const U& value) {
  auto it = std::find(v.begin(), v.end(), value);
  if (it == v.end()) return false;
  v.erase(it);
  return true;
}

}  // namespace

std::unique_ptr<PubSub::Subscriber> PubSub::subscriber(Deliver deliver) {
  return std::unique_ptr<Subscriber>(new Subscriber(*this, std::move(deliver)));
}

PubSub::Subscriber::~Subscriber() {
  std::lock_guard lock(broker_.mu_);
  for (const std::string& channel : channels_) {
    auto it = broker_.channels_.find(channel);
    erase_one(it->second, this);
    if (it->second.empty()) broker_.channels_.erase(it);
  }
  std::erase_if(broker_.patterns_, [&](const auto& entry) { return entry.second == this; });
  broker_.subscriptions_.fetch_sub(static_cast<std::int64_t>(channels_.size() + patterns_.size()),
                                   std::memory_order_relaxed);
}

bool PubSub::Subscriber::subscribe(std::string_view channel) {
  std::lock_guard lock(broker_.mu_);
  if (std::find(channels_.begin(), channels_.end(), channel) != channels_.end()) return false;
  channels_.emplace_back(channel);
  broker_.channels_[std::string(channel)].push_back(this);
  broker_.subscriptions_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool PubSub::Subscriber::unsubscribe(std::string_view channel) {
  std::lock_guard lock(broker_.mu_);
  if (!erase_one(channels_, channel)) return false;
  auto it = broker_.channels_.find(std::string(channel));
  erase_one(it->second, this);
  if (it->second.empty()) broker_.channels_.erase(it);
  broker_.subscriptions_.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

bool PubSub::Subscriber::psubscribe(std::string_view pattern) {
  std::lock_guard lock(broker_.mu_);
  if (std::find(patterns_.begin(), patterns_.end(), pattern) != patterns_.end()) return false;
  patterns_.emplace_back(pattern);
  broker_.patterns_.emplace_back(std::string(pattern), this);
  broker_.subscriptions_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool PubSub::Subscriber::punsubscribe(std::string_view pattern) {
  std::lock_guard lock(broker_.mu_);
  if (!erase_one(patterns_, pattern)) return false;
  std::erase_if(broker_.patterns_,
                [&](const auto& entry) { return entry.second == this && entry.first == pattern; });
  broker_.subscriptions_.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

std::vector<std::string> PubSub::Subscriber::channels() const {
  std::lock_guard lock(broker_.mu_);
  return channels_;
}

std::vector<std::string> PubSub::Subscriber::patterns() const {
  std::lock_guard lock(broker_.mu_);
  return patterns_;
}

std::size_t PubSub::Subscriber::count() const {
  std::lock_guard lock(broker_.mu_);
  return channels_.size() + patterns_.size();
}

std::int64_t PubSub::publish(std::string_view channel, std::string_view message) {
  if (!has_subscribers()) return 0;
  std::int64_t receivers = 0;
  std::string encoded;
  std::lock_guard lock(mu_);
  if (auto it = channels_.find(std::string(channel)); it != channels_.end()) {
    append_array_header(&encoded, 3);
    append_bulk(&encoded, "message");
    append_bulk(&encoded, channel);
    append_bulk(&encoded, message);
    for (Subscriber* s : it->second) s->deliver_(encoded);
    receivers += static_cast<std::int64_t>(it->second.size());
  }
  for (const auto& [pattern, s] : patterns_) {
    if (!glob_match(pattern, channel)) continue;
    encoded.clear();
    append_array_header(&encoded, 4);
    append_bulk(&encoded, "pmessage");
    append_bulk(&encoded, pattern);
    append_bulk(&encoded, channel);
    append_bulk(&encoded, message);
    s->deliver_(encoded);
    ++receivers;
  }
  return receivers;
}

}  // namespace sessiond::daemon::resp
