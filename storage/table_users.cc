// The user index (user id -> ids of the user's sessions, in memory and in the `users` family),
// LIST_USER, REVOKE_USER and the per-user session limit.
//
// The index is sharded like the sessions, by a hash of the user id, and its locks come after the
// session shard locks (detail/shard.h). A session's index entry is written in the same batch as
// the session (Mutation::user), with the session's deadline, so the compaction filter drops both
// together.
#include <absl/hash/hash.h>

#include <algorithm>
#include <tuple>

#include "storage/detail/table_impl.h"

namespace sessiond::storage {

using detail::meta_of;
using detail::Record;

detail::UserShard& SessionTable::Impl::user_shard_of(std::string_view user) {
  return user_shards_[absl::Hash<std::string_view>{}(user)&mask_];
}

void SessionTable::Impl::index_user(std::string_view user, const SessionId& id, bool add) {
  if (user.empty()) return;
  UserShard& us = user_shard_of(user);
  std::lock_guard lock(us.mu);
  if (add) {
    us.users[std::string(user)].insert(id);
    return;
  }
  auto it = us.users.find(absl::string_view(user.data(), user.size()));
  if (it == us.users.end()) return;
  it->second.erase(id);
  if (it->second.empty()) us.users.erase(it);
}

std::vector<SessionMeta> SessionTable::Impl::list_user(std::string_view user_id) {
  std::vector<SessionId> ids;
  {
    UserShard& us = user_shard_of(user_id);
    std::lock_guard lock(us.mu);
    auto it = us.users.find(absl::string_view(user_id.data(), user_id.size()));
    if (it != us.users.end()) ids.assign(it->second.begin(), it->second.end());
  }
  std::vector<SessionMeta> out;
  for (const SessionId& id : ids) {
    Shard& shard = shard_of(id);
    std::lock_guard lock(shard.mu);
    auto it = shard.records.find(id);
    if (it == shard.records.end()) continue;
    const Record& r = **it;
    if (r.deadline_ms() <= clock_.now_ms() || detail::blob_user_id(r.blob()) != user_id) continue;
    out.push_back(meta_of(r));
  }
  std::sort(out.begin(), out.end(), [](const SessionMeta& a, const SessionMeta& b) {
    return std::tie(a.created_at_ms, a.id) < std::tie(b.created_at_ms, b.id);
  });
  return out;
}

Result<std::size_t> SessionTable::Impl::revoke_user(std::string_view user_id,
                                                    const SessionId* keep) {
  std::vector<SessionId> ids;
  {
    UserShard& us = user_shard_of(user_id);
    std::lock_guard lock(us.mu);
    auto it = us.users.find(absl::string_view(user_id.data(), user_id.size()));
    if (it != us.users.end()) ids.assign(it->second.begin(), it->second.end());
  }
  std::size_t revoked = 0;
  for (const SessionId& id : ids) {
    if (keep && id == *keep) continue;
    Shard& shard = shard_of(id);
    std::lock_guard lock(shard.mu);
    auto it = shard.records.find(id);
    if (it == shard.records.end() || detail::blob_user_id((*it)->blob()) != user_id) continue;
    Record* r = it->get();
    if (r->deadline_ms() <= clock_.now_ms()) {
      ++shard.counters.expiries;
      unlink(shard, r);
      continue;
    }
    if (Status s = remove(shard, r); !s.ok()) {
      return Status(s.code(), "revoked " + std::to_string(revoked) + " of " +
                                  std::to_string(ids.size()) + " sessions, then: " + s.message());
    }
    ++revoked;
  }
  return revoked;
}

Result<std::vector<SessionId>> SessionTable::Impl::sessions_to_evict(std::string_view user) {
  const std::size_t limit = options_.max_sessions_per_user;
  std::vector<SessionId> out;
  if (limit == 0 || user.empty()) return out;
  std::vector<SessionMeta> sessions = list_user(user);  // oldest first
  if (sessions.size() < limit) return out;
  if (options_.user_limit_policy == TableOptions::UserLimitPolicy::kRefuse) {
    return Status(StatusCode::kForbidden, "user '" + std::string(user) + "' has " +
                                              std::to_string(sessions.size()) +
                                              " sessions; the limit is " + std::to_string(limit));
  }
  for (std::size_t i = 0; i + limit <= sessions.size(); ++i) out.push_back(sessions[i].id);
  return out;
}

void SessionTable::Impl::retire_evicted(std::span<const SessionId> ids, std::string_view user,
                                        std::int64_t now, std::vector<Mutation>* ends,
                                        std::vector<std::pair<Shard*, Record*>>* ending) {
  for (const SessionId& id : ids) {
    Shard& shard = shard_of(id);
    auto it = shard.records.find(id);
    if (it == shard.records.end()) continue;  // ended meanwhile
    Record* r = it->get();
    if (r->deadline_ms() <= now || detail::blob_user_id(r->blob()) != user) continue;
    ends->push_back(end_of(*r));
    ending->emplace_back(&shard, r);
  }
}

void SessionTable::Impl::unlink_evicted(std::span<const std::pair<Shard*, Record*>> ending) {
  for (const auto& [shard, r] : ending) {
    unlink(*shard, r);
    ++shard->counters.destroys;
  }
}

}  // namespace sessiond::storage
