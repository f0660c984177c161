// Moving sessions between nodes (DESIGN §6): export_states() reads what a moving range holds
// from memory (coalesced touches, access history, tombstones, generations included), and
// forget() drops it once the new owner holds it.
#include <absl/container/flat_hash_map.h>

#include "storage/detail/table_impl.h"

namespace sessiond::storage {

using detail::Record;

void SessionTable::Impl::export_states(const Selection& select,
                                       const std::function<void(std::span<const Mutation>)>& emit) {
  std::vector<std::string> values, users;
  std::vector<Mutation> batch;
  for (Shard& shard : shards_) {
    values.clear();
    users.clear();
    batch.clear();
    {
      std::lock_guard lock(shard.mu);
      const std::int64_t now = clock_.now_ms();
      // Reserved up front: the mutations point into these strings.
      values.reserve(shard.records.size() + shard.tombstones.size());
      users.reserve(shard.records.size());
      for (const RecordPtr& owned : shard.records) {
        Record& r = *owned;
        if (r.deadline_ms() <= now || !select.id(r.id)) continue;
        // As persisted now (coalesced touch included), without changing what is on disk.
        const std::uint32_t lag = r.unpersisted_ms;
        r.unpersisted_ms = 0;
        detail::encode_value(r, &values.emplace_back());
        r.unpersisted_ms = lag;
        Mutation m;
        m.kind = Mutation::Kind::kPut;
        m.id = r.id;
        m.user = users.emplace_back(detail::blob_user_id(r.blob()));
        m.value = values.back();
        m.deadline_ms = r.deadline_ms();
        m.origin = local_origin();
        batch.push_back(m);
      }
      for (const auto& [id, tombstone] : shard.tombstones) {
        if (!select.id(id)) continue;
        detail::encode_tombstone(tombstone, &values.emplace_back());
        Mutation m;
        m.kind = Mutation::Kind::kEnd;
        m.id = id;
        m.value = values.back();
        m.deadline_ms = tombstone.keep_until_ms;
        m.origin = local_origin();
        batch.push_back(m);
      }
    }
    if (!batch.empty()) emit(batch);
  }
  for (UserShard& us : user_shards_) {
    values.clear();
    users.clear();
    batch.clear();
    {
      std::lock_guard lock(us.mu);
      values.reserve(us.generations.size());
      users.reserve(us.generations.size());
      for (const auto& [user, generation] : us.generations) {
        if (!select.user(user)) continue;
        detail::encode_generation(generation, &values.emplace_back());
        Mutation m;
        m.kind = Mutation::Kind::kGeneration;
        m.user = users.emplace_back(user);
        m.value = values.back();
        m.origin = local_origin();
        batch.push_back(m);
      }
    }
    if (!batch.empty()) emit(batch);
  }
}

void SessionTable::Impl::fingerprints(
    const Selection& select, const std::function<void(std::span<const Fingerprint>)>& emit) {
  std::vector<Fingerprint> batch;
  std::vector<std::string> users;
  for (Shard& shard : shards_) {
    batch.clear();
    {
      std::lock_guard lock(shard.mu);
      const std::int64_t now = clock_.now_ms();
      for (const RecordPtr& owned : shard.records) {
        const Record& r = *owned;
        if (r.deadline_ms() <= now || !select.id(r.id)) continue;
        const Version v = r.version();
        batch.push_back(
            {Mutation::Kind::kPut, r.id, {}, v.hlc, (std::uint64_t{v.region} << 32) | v.node});
      }
      for (const auto& [id, tombstone] : shard.tombstones) {
        if (!select.id(id)) continue;
        const Version& v = tombstone.version;
        batch.push_back(
            {Mutation::Kind::kEnd, id, {}, v.hlc, (std::uint64_t{v.region} << 32) | v.node});
      }
    }
    if (!batch.empty()) emit(batch);
  }
  for (UserShard& us : user_shards_) {
    batch.clear();
    users.clear();
    {
      std::lock_guard lock(us.mu);
      users.reserve(us.generations.size());  // the fingerprints point into these strings
      for (const auto& [user, generation] : us.generations) {
        if (!select.user(user)) continue;
        batch.push_back({Mutation::Kind::kGeneration, SessionId{}, users.emplace_back(user),
                         generation.generation, generation.keep.size()});
      }
    }
    if (!batch.empty()) emit(batch);
  }
}

Result<std::size_t> SessionTable::Impl::forget(const Selection& select) {
  std::size_t forgotten = 0;
  std::vector<Store::Forget> entries;
  std::vector<std::string> users;
  for (Shard& shard : shards_) {
    std::lock_guard lock(shard.mu);
    std::vector<Record*> records;
    entries.clear();
    users.clear();
    users.reserve(shard.records.size());
    for (const RecordPtr& owned : shard.records) {
      if (!select.id(owned->id)) continue;
      records.push_back(owned.get());
      entries.push_back(
          {owned->id, users.emplace_back(detail::blob_user_id(owned->blob())), false});
    }
    std::vector<SessionId> tombstones;
    for (const auto& [id, tombstone] : shard.tombstones) {
      if (!select.id(id)) continue;
      tombstones.push_back(id);
      entries.push_back({id, {}, false});
    }
    if (entries.empty()) continue;
    if (store_) {
      if (Status s = store_->forget(entries); !s.ok()) return s;
    }
    for (Record* r : records) unlink(shard, r);
    for (const SessionId& id : tombstones) shard.tombstones.erase(id);
    absl::erase_if(shard.pending_touches,
                   [&](const auto& entry) { return select.id(entry.first); });
    forgotten += records.size();
  }
  for (UserShard& us : user_shards_) {
    std::lock_guard lock(us.mu);
    entries.clear();
    std::vector<std::string> gone;
    for (const auto& [user, generation] : us.generations) {
      if (select.user(user)) gone.push_back(user);
    }
    if (gone.empty()) continue;
    for (const std::string& user : gone) entries.push_back({SessionId{}, user, true});
    if (store_) {
      if (Status s = store_->forget(entries); !s.ok()) return s;
    }
    for (const std::string& user : gone) us.generations.erase(user);
  }
  return forgotten;
}

void SessionTable::fingerprints(const Selection& select,
                                const std::function<void(std::span<const Fingerprint>)>& emit) {
  impl_->fingerprints(select, emit);
}

void SessionTable::export_states(const Selection& select,
                                 const std::function<void(std::span<const Mutation>)>& emit) {
  impl_->export_states(select, emit);
}

Result<std::size_t> SessionTable::forget(const Selection& select) { return impl_->forget(select); }

}  // namespace sessiond::storage
