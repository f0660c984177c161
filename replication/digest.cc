#include "replication/digest.h"

#include <algorithm>
#include <cstring>

#include "protocol/sessiond.pb.h"

namespace sessiond::replication {
namespace {

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::uint64_t hash_bytes(std::uint64_t h, std::string_view bytes) {
  std::size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, bytes.data() + i, 8);
    h = mix(h ^ word);
  }
  std::uint64_t tail = bytes.size() - i;
  for (; i < bytes.size(); ++i) tail = (tail << 8) | static_cast<unsigned char>(bytes[i]);
  return mix(h ^ tail);
}

}  // namespace

std::uint64_t key_of_session(const storage::SessionId& id) {
  return hash_bytes(0x5e55, std::string_view(reinterpret_cast<const char*>(id.data()), id.size()));
}

std::uint64_t key_of_generation(std::string_view user) { return hash_bytes(0x9e4, user); }

std::uint64_t fingerprint_key(const storage::SessionTable::Fingerprint& f) {
  return f.kind == storage::Mutation::Kind::kGeneration ? key_of_generation(f.user)
                                                        : key_of_session(f.id);
}

std::uint64_t fingerprint_hash(const storage::SessionTable::Fingerprint& f) {
  std::uint64_t h = mix(static_cast<std::uint64_t>(f.kind) + 0x9e3779b97f4a7c15ULL);
  h = f.kind == storage::Mutation::Kind::kGeneration
          ? hash_bytes(h, f.user)
          : hash_bytes(h,
                       std::string_view(reinterpret_cast<const char*>(f.id.data()), f.id.size()));
  h = mix(h ^ f.hlc);
  return mix(h ^ f.origin);
}

Digest compute_digest(storage::SessionTable& table, const storage::IdGenerator& ids,
                      const std::function<bool(std::uint64_t position)>& wanted) {
  Digest d;
  const storage::SessionTable::Selection all{[](const storage::SessionId&) { return true; },
                                             [](std::string_view) { return true; }};
  table.fingerprints(all, [&](std::span<const storage::SessionTable::Fingerprint> batch) {
    for (const auto& f : batch) {
      const std::uint64_t position = f.kind == storage::Mutation::Kind::kGeneration
                                         ? ids.route_key_of_user(f.user)
                                         : storage::route_key_of(f.id);
      if (!wanted(position)) continue;
      const std::uint32_t b = digest_bucket(position);
      ++d.counts[b];
      d.sums[b] += fingerprint_hash(f);
      ++d.states;
    }
  });
  return d;
}

std::vector<std::uint32_t> differing_buckets(const Digest& a, const Digest& b) {
  std::vector<std::uint32_t> out;
  for (std::uint32_t i = 0; i < kDigestBuckets; ++i) {
    if (a.counts[i] != b.counts[i] || a.sums[i] != b.sums[i]) out.push_back(i);
  }
  return out;
}

storage::SessionTable::Selection bucket_selection(
    const storage::IdGenerator& ids, std::vector<std::uint32_t> buckets,
    std::function<bool(std::uint64_t position)> wanted) {
  auto in = [buckets = std::make_shared<const std::vector<std::uint32_t>>(std::move(buckets)),
             wanted = std::move(wanted)](std::uint64_t position) {
    return std::binary_search(buckets->begin(), buckets->end(), digest_bucket(position)) &&
           wanted(position);
  };
  return {[in](const storage::SessionId& id) { return in(storage::route_key_of(id)); },
          [in, &ids](std::string_view user) { return in(ids.route_key_of_user(user)); }};
}

bool in_ranges(const Ranges& ranges, std::uint64_t position) {
  // The first range whose end is at or after `position`.
  const auto it = std::lower_bound(ranges.begin(), ranges.end(), position,
                                   [](const auto& r, std::uint64_t p) { return r.second < p; });
  return it != ranges.end() && it->first <= position;
}

Ranges intersect(const Ranges& a, const Ranges& b) {
  Ranges out;
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const std::uint64_t first = std::max(a[i].first, b[j].first);
    const std::uint64_t last = std::min(a[i].second, b[j].second);
    if (first <= last) out.emplace_back(first, last);
    if (a[i].second < b[j].second) {
      ++i;
    } else {
      ++j;
    }
  }
  return out;
}

Ranges ring_ranges(const std::vector<std::uint64_t>& points,
                   const std::function<bool(std::size_t point)>& mine) {
  Ranges out;
  auto add = [&](std::uint64_t first, std::uint64_t last) {
    if (!out.empty() && out.back().second + 1 == first) {
      out.back().second = last;
    } else {
      out.emplace_back(first, last);
    }
  };
  if (points.empty()) return out;
  // The first point also closes the arc that wraps around: [0, p0] here, (p_last, max] last.
  if (mine(0)) add(0, points[0]);
  for (std::size_t i = 1; i < points.size(); ++i) {
    if (mine(i) && points[i] > points[i - 1]) add(points[i - 1] + 1, points[i]);
  }
  if (mine(0) && points.back() != UINT64_MAX) add(points.back() + 1, UINT64_MAX);
  return out;
}

void to_wire(const Digest& digest, wire::DigestRequest* out) {
  out->mutable_counts()->Assign(digest.counts.begin(), digest.counts.end());
  out->mutable_sums()->Assign(digest.sums.begin(), digest.sums.end());
}

Result<Digest> digest_from_wire(const wire::DigestRequest& request) {
  if (static_cast<std::size_t>(request.counts_size()) != kDigestBuckets ||
      static_cast<std::size_t>(request.sums_size()) != kDigestBuckets) {
    return Status::InvalidArgument("a digest has " + std::to_string(kDigestBuckets) +
                                   " buckets; this one has " +
                                   std::to_string(request.counts_size()) + " counts and " +
                                   std::to_string(request.sums_size()) + " sums");
  }
  Digest d;
  std::copy(request.counts().begin(), request.counts().end(), d.counts.begin());
  std::copy(request.sums().begin(), request.sums().end(), d.sums.begin());
  for (std::uint32_t c : d.counts) d.states += c;
  return d;
}

}  // namespace sessiond::replication
