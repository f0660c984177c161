// The user index (user id -> the user's sessions, in memory and in the `users` family),
// LIST_USER, REVOKE_USER and the per-user session limit. In memory a session is entered by its
// id's hash word (detail::UserSessions, 8 bytes), which finds it in its shard together with the
// user id; on disk by its whole id.
//
// The index is sharded like the sessions, by a hash of the user id, and its locks come after the
// session shard locks (detail/shard.h). A session's index entry is written in the same batch as
// the session (Mutation::user), with the session's deadline, so the compaction filter drops both
// together.
#include <absl/hash/hash.h>

#include <algorithm>
#include <deque>
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
    us.users[std::string(user)].insert(detail::hash_word(id));
    return;
  }
  auto it = us.users.find(absl::string_view(user.data(), user.size()));
  if (it == us.users.end()) return;
  it->second.erase(detail::hash_word(id));
  if (it->second.empty()) us.users.erase(it);
}

void SessionTable::Impl::user_words(std::string_view user, std::vector<std::uint64_t>* out) {
  UserShard& us = user_shard_of(user);
  std::lock_guard lock(us.mu);
  auto it = us.users.find(absl::string_view(user.data(), user.size()));
  if (it != us.users.end()) it->second.append_to(out);
}

std::vector<SessionMeta> SessionTable::Impl::list_user(std::string_view user_id) {
  std::vector<std::uint64_t> words;
  user_words(user_id, &words);
  std::vector<SessionMeta> out;
  for (const std::uint64_t word : words) {
    Shard& shard = shards_[shard_of_word(word)];
    std::lock_guard lock(shard.mu);
    const Record* r = detail::find_of_user(shard, word, user_id);
    if (r == nullptr || r->deadline_ms() <= clock_.now_ms()) continue;
    out.push_back(meta_of(*r));
  }
  std::sort(out.begin(), out.end(), [](const SessionMeta& a, const SessionMeta& b) {
    return std::tie(a.created_at_ms, a.id) < std::tie(b.created_at_ms, b.id);
  });
  return out;
}

std::size_t SessionTable::Impl::count_off_user_key() const {
  // Each user's route key (an HMAC) once, under the user-shard lock; then the user's sessions,
  // shard by shard, each shard's lock held only for its own lookups.
  struct Entry {
    std::uint64_t word;
    std::size_t user;  // into users and keys
  };
  std::vector<std::string> users;
  std::vector<RouteKey> keys;
  std::vector<std::vector<Entry>> by_shard(shards_.size());
  std::vector<std::uint64_t> words;
  for (const UserShard& us : user_shards_) {
    std::lock_guard lock(us.mu);
    for (const auto& [user, sessions] : us.users) {
      words.clear();
      sessions.append_to(&words);
      for (const std::uint64_t word : words)
        by_shard[shard_of_word(word)].push_back({word, users.size()});
      users.push_back(user);
      keys.push_back(ids_->route_key_of_user(user));
    }
  }
  std::size_t n = 0;
  for (std::size_t i = 0; i < shards_.size(); ++i) {
    const Shard& shard = shards_[i];
    std::lock_guard lock(shard.mu);
    for (const Entry& e : by_shard[i]) {
      const Record* r = detail::find_of_user(shard, e.word, users[e.user]);
      if (r != nullptr) n += route_key_of(r->id) != keys[e.user];
    }
  }
  return n;
}

Status SessionTable::Impl::admit(std::string_view user, const SessionId& id, bool new_birth,
                                 std::uint64_t* stamp, const SessionId* lineage) {
  if (user.empty()) return {};
  UserShard& us = user_shard_of(user);
  std::lock_guard lock(us.mu);
  auto g = us.generations.find(absl::string_view(user.data(), user.size()));
  if (g != us.generations.end()) {
    if (new_birth) {
      *stamp = g->second.generation;
    } else if (*stamp < g->second.generation) {
      const SessionId& kept_as = lineage ? *lineage : id;
      if (!std::binary_search(g->second.keep.begin(), g->second.keep.end(), kept_as)) {
        return Status::NotFound("the session was revoked (REVOKE_USER)");
      }
      // The session a revoke kept, under a new id (REGENERATE): stamped past the revoke.
      if (lineage) *stamp = g->second.generation;
    }
  } else if (new_birth) {
    *stamp = 0;
  }
  us.users[std::string(user)].insert(detail::hash_word(id));
  return {};
}

void SessionTable::Impl::plan_end(Record* r, std::int64_t now, std::vector<Mutation>* ends,
                                  std::deque<std::string>* values,
                                  std::vector<std::pair<Record*, detail::Tombstone>>* ending,
                                  const Version* version) {
  const detail::Tombstone t = tombstone_of(*r, now, version);
  ends->push_back(end_of(*r, t, &values->emplace_back()));
  ending->emplace_back(r, t);
}

void SessionTable::Impl::revoked_by(std::span<const std::uint64_t> words, std::string_view user,
                                    const detail::Generation& g, std::int64_t now,
                                    std::vector<Mutation>* ends, std::deque<std::string>* values,
                                    std::vector<std::pair<Record*, detail::Tombstone>>* ending) {
  // The ends a raise makes are versioned by the raise (its generation), not by the clock of the
  // node that applies it: its origin, each replica and each peer region then hold equal
  // tombstones, and their digests agree without anti-entropy (found by the chaos suite). A
  // destroy's tombstone, with a clock version, wins a merge with one of these.
  const Version by_raise{g.generation, 0, 0};
  for (const std::uint64_t word : words) {
    Record* r = detail::find_of_user(shards_[shard_of_word(word)], word, user);
    if (r == nullptr || std::binary_search(g.keep.begin(), g.keep.end(), r->id)) continue;
    const detail::BlobMeta meta = detail::blob_meta(r->blob(), r->version());
    if (meta.stamp >= g.generation || r->deadline_ms() <= now) continue;
    plan_end(r, now, ends, values, ending, &by_raise);
  }
}

void SessionTable::Impl::bury_all(std::span<const std::pair<Record*, detail::Tombstone>> ending) {
  const std::int64_t now = clock_.now_ms();
  for (const auto& [r, t] : ending) {
    Shard& shard = shard_of(r->id);
    count_end(shard, *r, /*expired=*/false, now);
    bury(shard, r, t);
  }
}

// Raises the generation first (under the user-shard lock, with a snapshot of the user's ids):
// from then on admit() refuses sessions stamped below it, so none can join after the snapshot.
// Then, holding the shards of the snapshot, one write holds the raise and the end of every
// session it catches. A failed write puts the generation back, unless another raise came since.
Result<std::size_t> SessionTable::Impl::revoke_user(std::string_view user_id,
                                                    const SessionId* keep) {
  if (user_id.empty()) return std::size_t{0};
  detail::Generation before, raised;
  std::vector<std::uint64_t> words;
  {
    UserShard& us = user_shard_of(user_id);
    std::lock_guard lock(us.mu);
    detail::Generation& g = us.generations[std::string(user_id)];
    before = g;
    raised.generation = g.generation + 1;
    if (keep) raised.keep.push_back(*keep);
    g = raised;
    auto it = us.users.find(absl::string_view(user_id.data(), user_id.size()));
    if (it != us.users.end()) it->second.append_to(&words);
  }
  auto ended = write_raise(user_id, raised, words, local_origin());
  if (!ended.ok()) {
    UserShard& us = user_shard_of(user_id);
    std::lock_guard lock(us.mu);
    detail::Generation& g = us.generations[std::string(user_id)];
    if (g == raised) g = before;
    return Status(ended.status().code(),
                  "no session of the user was revoked: " + ended.status().message());
  }
  return ended;
}

Result<std::size_t> SessionTable::Impl::write_raise(std::string_view user,
                                                    const detail::Generation& g,
                                                    std::span<const std::uint64_t> words,
                                                    const Origin& origin) {
  std::vector<std::size_t> indexes;
  for (const std::uint64_t word : words) indexes.push_back(shard_of_word(word));
  const auto locks = lock_shards(std::move(indexes));
  const std::int64_t now = clock_.now_ms();
  std::deque<std::string> values;
  std::vector<Mutation> mutations(1);
  std::vector<std::pair<Record*, detail::Tombstone>> ending;
  detail::encode_generation(g, &values.emplace_back());
  mutations[0].kind = Mutation::Kind::kGeneration;
  mutations[0].user = user;
  mutations[0].value = values.back();
  mutations[0].deadline_ms = kNoDeadline;
  revoked_by(words, user, g, now, &mutations, &values, &ending);
  for (Mutation& m : mutations) m.origin = origin;
  if (Status s = commit(mutations); !s.ok()) return s;
  bury_all(ending);
  return ending.size();
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

void SessionTable::Impl::retire_evicted(
    std::span<const SessionId> ids, std::string_view user, std::int64_t now,
    std::vector<Mutation>* ends, std::deque<std::string>* values,
    std::vector<std::pair<Record*, detail::Tombstone>>* ending) {
  for (const SessionId& id : ids) {
    Shard& shard = shard_of(id);
    auto it = shard.records.find(id);
    if (it == shard.records.end()) continue;  // ended meanwhile
    Record* r = it->get();
    if (r->deadline_ms() <= now || detail::blob_user_id(r->blob()) != user) continue;
    plan_end(r, now, ends, values, ending);
  }
}

}  // namespace sessiond::storage
