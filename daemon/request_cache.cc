#include "daemon/request_cache.h"

#include <algorithm>

namespace sessiond::daemon {

RequestCache::Key::Key(std::string_view id) : size(static_cast<std::uint8_t>(id.size())) {
  std::copy(id.begin(), id.end(), bytes.begin());
}

void RequestCache::evict(std::int64_t now_ms) {
  while (!order_.empty() &&
         (order_.size() > capacity_ || order_.front().second + keep_ms_ <= now_ms)) {
    auto it = entries_.find(order_.front().first);
    if (it != entries_.end() && it->second.at_ms == order_.front().second) entries_.erase(it);
    order_.pop_front();
  }
}

RequestCache::Lookup RequestCache::begin(std::string_view request_id, std::uint64_t fingerprint,
                                         std::int64_t now_ms, std::string* answer) {
  if (request_id.size() > kMaxIdBytes) return Lookup::kReused;
  const Key key(request_id);
  std::lock_guard lock(mu_);
  evict(now_ms);
  auto [it, inserted] = entries_.try_emplace(key);
  if (inserted) {
    it->second = {fingerprint, false, {}, now_ms};
    order_.emplace_back(key, now_ms);
    return Lookup::kNew;
  }
  if (it->second.fingerprint != fingerprint) return Lookup::kReused;
  if (!it->second.done) return Lookup::kRunning;
  *answer = it->second.answer;
  return Lookup::kAnswered;
}

void RequestCache::finish(std::string_view request_id, std::string answer) {
  if (request_id.size() > kMaxIdBytes) return;
  const Key key(request_id);
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  if (answer.empty()) {
    entries_.erase(it);  // failed: a retry runs it again (its order_ entry expires unmatched)
    return;
  }
  it->second.done = true;
  it->second.answer = std::move(answer);
}

std::size_t RequestCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace sessiond::daemon
