#include "storage/detail/merge.h"

#include <algorithm>
#include <iterator>

#include "storage/test_hooks.h"

namespace sessiond::storage::detail {
namespace {

auto access_key(const AccessEntry& e) {
  return std::tie(e.time_ms, e.ip, e.user_agent_hash, e.has_location, e.latitude, e.longitude);
}

// The winner between two writes of one field: the higher version; on a tie (only a forged or
// corrupt peer repeats a version) the tombstone, then the larger value, so the join stays
// deterministic.
const FieldRef& newer_field(const FieldRef& a, const FieldRef& b) {
  if (a.version != b.version) return a.version > b.version ? a : b;
  if (a.deleted != b.deleted) return a.deleted ? a : b;
  return a.value >= b.value ? a : b;
}

}  // namespace

void canonical_access_log(std::vector<AccessEntry>* log, std::size_t n) {
  std::sort(log->begin(), log->end(), [](const AccessEntry& a, const AccessEntry& b) {
    return access_key(a) < access_key(b);
  });
  log->erase(std::unique(log->begin(), log->end()), log->end());
  if (log->size() > n) log->erase(log->begin(), log->end() - static_cast<std::ptrdiff_t>(n));
}

RecordPtr copy_record(const Record& r, std::optional<std::string_view> blob) {
  RecordPtr out = Record::make(r.id, blob.value_or(r.blob()));
  out->created_at_ms = r.created_at_ms;
  out->last_access_ms = r.last_access_ms;
  out->idle_ms = r.idle_ms;
  out->absolute_ms = r.absolute_ms;
  out->cap_ms = r.cap_ms;
  out->version_hlc = r.version_hlc;
  out->version_origin = r.version_origin;
  out->preset_code = r.preset_code;
  out->signed_id = r.signed_id;
  if (r.extras) {
    out->extras = std::make_unique<Extras>(*r.extras);
    out->extras->unsaved_access = false;
  }
  return out;
}

RecordPtr merge_records(const Record& a, const Record& b, std::size_t access_log_length) {
  const auto ea = epoch_of(a);
  const auto eb = epoch_of(b);
  if (ea != eb) return copy_record(ea > eb ? a : b);
  const Record& hi = a.version() >= b.version() ? a : b;  // birth attributes come from here
  const BlobMeta ma = blob_meta(a.blob(), a.version());
  const BlobMeta mb = blob_meta(b.blob(), b.version());

  thread_local std::vector<FieldRef> fa, fb, merged;
  blob_fields(a.blob(), a.version(), &fa);
  blob_fields(b.blob(), b.version(), &fb);
  merged.clear();
  std::size_t i = 0, j = 0;
  while (i < fa.size() || j < fb.size()) {
    if (j == fb.size() || (i < fa.size() && fa[i].name < fb[j].name)) {
      merged.push_back(fa[i++]);
    } else if (i == fa.size() || fb[j].name < fa[i].name) {
      merged.push_back(fb[j++]);
    } else {
      merged.push_back(newer_field(fa[i++], fb[j++]));
    }
  }
  const Version version = std::max(a.version(), b.version());
  BlobMeta meta = hi.version() == a.version() ? ma : mb;
  const bool a_policy = ma.timeouts_version >= mb.timeouts_version;
  meta.timeouts_version = std::max(ma.timeouts_version, mb.timeouts_version);
  meta.stamp = std::min(ma.stamp, mb.stamp);
  std::string blob;
  encode_blob(meta, merged, version, &blob);

  RecordPtr out = Record::make(a.id, blob);
  out->created_at_ms = hi.created_at_ms;
  out->last_access_ms = sabotaged(Sabotage::kKeepOlderAccess)
                            ? std::min(a.last_access_ms, b.last_access_ms)
                            : std::max(a.last_access_ms, b.last_access_ms);
  out->idle_ms = a_policy ? a.idle_ms : b.idle_ms;
  out->absolute_ms = a_policy ? a.absolute_ms : b.absolute_ms;
  out->cap_ms = std::min(a.cap_ms, b.cap_ms);
  out->set_version(version);
  out->preset_code = hi.preset_code;
  out->signed_id = hi.signed_id;
  const bool any_log =
      (a.extras && !a.extras->access_log.empty()) || (b.extras && !b.extras->access_log.empty());
  if ((hi.extras && hi.extras->context) || any_log) {
    out->extras = std::make_unique<Extras>();
    if (hi.extras) out->extras->context = hi.extras->context;
    if (a.extras) out->extras->access_log = a.extras->access_log;
    if (b.extras) {
      out->extras->access_log.insert(out->extras->access_log.end(), b.extras->access_log.begin(),
                                     b.extras->access_log.end());
    }
    canonical_access_log(&out->extras->access_log, access_log_length);
  }
  return out;
}

bool same_state(const Record& a, const Record& b) {
  const auto log_of = [](const Record& r) -> const std::vector<AccessEntry>* {
    return r.extras ? &r.extras->access_log : nullptr;
  };
  const auto context_of = [](const Record& r) -> std::optional<ClientContext> {
    return r.extras ? r.extras->context : std::nullopt;
  };
  const auto* la = log_of(a);
  const auto* lb = log_of(b);
  const bool logs_equal = (la == nullptr || la->empty()) ? (lb == nullptr || lb->empty())
                                                         : (lb != nullptr && *la == *lb);
  return a.id == b.id && a.blob() == b.blob() && a.created_at_ms == b.created_at_ms &&
         a.last_access_ms == b.last_access_ms && a.idle_ms == b.idle_ms &&
         a.absolute_ms == b.absolute_ms && a.cap_ms == b.cap_ms && a.version() == b.version() &&
         a.preset_code == b.preset_code && a.signed_id == b.signed_id &&
         context_of(a) == context_of(b) && logs_equal;
}

Tombstone merge_tombstones(const Tombstone& a, const Tombstone& b) {
  return {std::max(a.version, b.version), std::max(a.keep_until_ms, b.keep_until_ms),
          std::max(a.incarnation, b.incarnation)};
}

Generation merge_generations(const Generation& a, const Generation& b) {
  if (a.generation != b.generation) return a.generation > b.generation ? a : b;
  Generation out{a.generation, {}};
  std::set_intersection(a.keep.begin(), a.keep.end(), b.keep.begin(), b.keep.end(),
                        std::back_inserter(out.keep));
  return out;
}

}  // namespace sessiond::storage::detail
