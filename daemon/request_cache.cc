#include "daemon/request_cache.h"

namespace sessiond::daemon {

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
  std::lock_guard lock(mu_);
  evict(now_ms);
  auto [it, inserted] = entries_.try_emplace(std::string(request_id));
  if (inserted) {
    it->second = {fingerprint, false, {}, now_ms};
    order_.emplace_back(it->first, now_ms);
    return Lookup::kNew;
  }
  if (it->second.fingerprint != fingerprint) return Lookup::kReused;
  if (!it->second.done) return Lookup::kRunning;
  *answer = it->second.answer;
  return Lookup::kAnswered;
}

void RequestCache::finish(std::string_view request_id, std::string answer) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(std::string(request_id));
  if (it == entries_.end()) return;
  if (answer.empty()) {
    entries_.erase(it);  // failed: a retry runs it again (its order_ entry expires unmatched)
    return;
  }
  it->second.done = true;
  it->second.answer = std::move(answer);
}

}  // namespace sessiond::daemon
