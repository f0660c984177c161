#include "replication/region_repair.h"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "protocol/sessiond.pb.h"
#include "replication/applier.h"
#include "replication/codec.h"
#include "replication/peer_link.h"

namespace sessiond::replication {
namespace {

using Steady = std::chrono::steady_clock;

// Fingerprints per DIGEST answer (16 bytes each on the wire, packed): 480 KB, within the
// 512 KiB frames every node with peer regions takes. Each answer costs both sides a walk of
// their tables, so fewer, larger answers make a round over a large table faster.
constexpr std::size_t kMaxFingerprints = 30'000;
// Keys per request for states.
constexpr std::size_t kMaxWant = 16384;
// Rounds of one peer node within one repair (each answers up to kMaxFingerprints).
constexpr int kMaxPasses = 256;

std::uint64_t key_of(const storage::Mutation& m) {
  return m.kind == storage::Mutation::Kind::kGeneration ? key_of_generation(m.user)
                                                        : key_of_session(m.id);
}

storage::SessionTable::Selection key_selection(const storage::IdGenerator& ids,
                                               const Ranges& ranges,
                                               const std::unordered_set<std::uint64_t>& keys) {
  return {[&](const storage::SessionId& id) {
            return in_ranges(ranges, storage::route_key_of(id)) &&
                   keys.contains(key_of_session(id));
          },
          [&](std::string_view user) {
            return in_ranges(ranges, ids.route_key_of_user(user)) &&
                   keys.contains(key_of_generation(user));
          }};
}

void set_ranges(const Ranges& ranges, wire::DigestRequest* out) {
  for (const auto& [first, last] : ranges) {
    out->add_ranges(first);
    out->add_ranges(last);
  }
}

}  // namespace

Result<Ranges> ranges_from_wire(const wire::DigestRequest& request, std::size_t max_ranges) {
  if (request.ranges_size() % 2 != 0 ||
      static_cast<std::size_t>(request.ranges_size()) > 2 * max_ranges) {
    return Status::InvalidArgument("a digest's ranges must be at most " +
                                   std::to_string(max_ranges) + " [first, last] pairs");
  }
  Ranges out;
  for (int i = 0; i < request.ranges_size(); i += 2) {
    const std::uint64_t first = request.ranges(i), last = request.ranges(i + 1);
    if (first > last || (!out.empty() && first <= out.back().second)) {
      return Status::InvalidArgument("a digest's ranges must be sorted, disjoint, first <= last");
    }
    out.emplace_back(first, last);
  }
  return out;
}

Status answer_region_digest(storage::SessionTable& table, const storage::IdGenerator& ids,
                            const Ranges& ranges, const wire::DigestRequest& request,
                            wire::DigestResponse* response) {
  const auto wanted = [&ranges](std::uint64_t position) { return in_ranges(ranges, position); };
  if (request.want_size() > 0) {
    if (static_cast<std::size_t>(request.want_size()) > kMaxWant) {
      return Status::InvalidArgument("at most " + std::to_string(kMaxWant) +
                                     " keys per request for states");
    }
    const std::unordered_set<std::uint64_t> keys(request.want().begin(), request.want().end());
    std::size_t bytes = 0;
    table.export_states(key_selection(ids, ranges, keys),
                        [&](std::span<const storage::Mutation> batch) {
                          for (const storage::Mutation& m : batch) {
                            if (bytes >= kMaxBatchBytes) {
                              response->set_truncated(true);
                              return;
                            }
                            auto* e = response->add_entries();
                            to_wire(m, e);
                            bytes += e->ByteSizeLong();
                          }
                        });
    return {};
  }
  auto theirs = digest_from_wire(request);
  if (!theirs.ok()) return theirs.status();
  const Digest mine = compute_digest(table, ids, wanted);
  std::vector<std::uint32_t> differing = differing_buckets(*theirs, mine);
  if (differing.empty()) return {};
  if (!request.fingerprints()) {
    response->mutable_differing()->Assign(differing.begin(), differing.end());
    return {};
  }
  // The fingerprints of the differing buckets, whole buckets up to the bound.
  std::map<std::uint32_t, std::vector<std::pair<std::uint64_t, std::uint64_t>>> by_bucket;
  table.fingerprints(
      bucket_selection(ids, differing, wanted),
      [&](std::span<const storage::SessionTable::Fingerprint> batch) {
        for (const auto& f : batch) {
          const std::uint64_t position = f.kind == storage::Mutation::Kind::kGeneration
                                             ? ids.route_key_of_user(f.user)
                                             : storage::route_key_of(f.id);
          by_bucket[digest_bucket(position)].emplace_back(fingerprint_key(f), fingerprint_hash(f));
        }
      });
  std::size_t count = 0;
  for (std::uint32_t b : differing) {
    const auto it = by_bucket.find(b);
    const std::size_t n = it == by_bucket.end() ? 0 : it->second.size();
    if (count > 0 && count + n > kMaxFingerprints) {
      response->set_truncated(true);
      break;
    }
    response->add_differing(b);
    if (it == by_bucket.end()) continue;
    for (const auto& [key, hash] : it->second) {
      response->add_keys(key);
      response->add_hashes(hash);
    }
    count += n;
  }
  return {};
}

Result<RepairReport> repair_with_region(storage::SessionTable& table, const RepairOptions& options,
                                        const PeerRegionView& view, const Ranges& owned,
                                        bool check_only) {
  const auto start = Steady::now();
  RepairReport report;
  const storage::IdGenerator& ids = *options.ids;
  std::vector<std::uint64_t> points;
  for (const auto& p : view.ring.points()) points.push_back(p.position);
  auto base = [&] {
    wire::DigestRequest r;
    r.set_from_node(options.self);
    r.set_from_region(options.region);
    r.set_region_number(options.region_number);
    r.set_epoch(view.topology.epoch);
    return r;
  };
  for (std::size_t n = 0; n < view.topology.nodes.size(); ++n) {
    const Ranges share = intersect(
        owned, ring_ranges(points, [&](std::size_t i) { return view.owner(points[i]) == n; }));
    if (share.empty()) continue;
    const auto wanted = [&share](std::uint64_t position) { return in_ranges(share, position); };
    PeerLink link(view.topology.nodes[n].address, options.peer_secret);
    for (int pass = 0; pass < kMaxPasses; ++pass) {
      if (options.stop != nullptr && options.stop->load()) return Status::Unavailable("stopping");
      wire::DigestRequest request = base();
      set_ranges(share, &request);
      request.set_fingerprints(!check_only);
      to_wire(compute_digest(table, ids, wanted), &request);
      wire::DigestResponse response;
      if (Status s = link.call(protocol::Opcode::kDigest, request, &response); !s.ok()) return s;
      report.bytes += request.ByteSizeLong() + response.ByteSizeLong();
      if (response.differing_size() == 0) break;
      if (response.keys_size() != response.hashes_size()) {
        return Status::InvalidArgument("region " + options.peer_region +
                                       " answered a digest with keys and hashes that differ in "
                                       "number");
      }
      report.buckets_differing += static_cast<std::uint64_t>(response.differing_size());
      if (check_only) break;
      std::vector<std::uint32_t> buckets;
      for (std::uint32_t b : response.differing()) {
        if (b < kDigestBuckets) buckets.push_back(b);
      }
      std::sort(buckets.begin(), buckets.end());
      buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
      std::unordered_map<std::uint64_t, std::uint64_t> theirs;
      for (int i = 0; i < response.keys_size(); ++i) theirs[response.keys(i)] = response.hashes(i);
      std::unordered_map<std::uint64_t, std::uint64_t> mine;
      table.fingerprints(bucket_selection(ids, buckets, wanted),
                         [&](std::span<const storage::SessionTable::Fingerprint> batch) {
                           for (const auto& f : batch)
                             mine[fingerprint_key(f)] = fingerprint_hash(f);
                         });
      std::unordered_set<std::uint64_t> pull, push;
      for (const auto& [key, hash] : theirs) {
        const auto it = mine.find(key);
        if (it == mine.end() || it->second != hash) pull.insert(key);
      }
      for (const auto& [key, hash] : mine) {
        const auto it = theirs.find(key);
        if (it == theirs.end() || it->second != hash) push.insert(key);
      }
      // Theirs first, merged here; then ours of every key that differed, which include them.
      while (!pull.empty()) {
        if (options.stop != nullptr && options.stop->load()) return Status::Unavailable("stopping");
        wire::DigestRequest ask = base();
        set_ranges(share, &ask);
        for (std::uint64_t key : pull) {
          if (static_cast<std::size_t>(ask.want_size()) >= kMaxWant) break;
          ask.add_want(key);
        }
        wire::DigestResponse states;
        if (Status s = link.call(protocol::Opcode::kDigest, ask, &states); !s.ok()) return s;
        report.bytes += ask.ByteSizeLong() + states.ByteSizeLong();
        std::vector<OwnedMutation> got;
        for (const auto& e : states.entries()) {
          auto m = from_wire(e);
          if (!m.ok()) return m.status();
          if (!wanted(position_of(m->m, ids)) || !pull.contains(key_of(m->m))) continue;
          got.push_back(std::move(m).value());
        }
        auto applied = apply_entries(table, got);
        if (!applied.ok()) return applied.status();
        report.pulled += got.size();
        if (states.truncated()) {
          // The answer had no room for all: what came is done, the rest is asked again.
          if (got.empty()) break;
          for (const auto& m : got) pull.erase(key_of(m.m));
        } else {
          // Every key asked was answered, or is gone there meanwhile.
          for (std::uint64_t key : ask.want()) pull.erase(key);
        }
      }
      if (!push.empty()) {
        Status failed;
        wire::ReplicateRequest batch;
        std::size_t bytes = 0;
        auto flush = [&] {
          if (!failed.ok() || batch.entries_size() == 0) return;
          batch.set_from_node(options.self);
          batch.set_from_region(options.region);
          batch.set_region_number(options.region_number);
          batch.set_epoch(view.topology.epoch);
          batch.set_snapshot(true);
          wire::ReplicateResponse answer;
          failed = link.call(protocol::Opcode::kReplicate, batch, &answer);
          report.bytes += batch.ByteSizeLong() + answer.ByteSizeLong();
          report.pushed += static_cast<std::uint64_t>(batch.entries_size());
          batch.Clear();
          bytes = 0;
        };
        table.export_states(key_selection(ids, share, push),
                            [&](std::span<const storage::Mutation> states) {
                              for (const storage::Mutation& m : states) {
                                if (!failed.ok()) return;
                                if (options.stop != nullptr && options.stop->load()) {
                                  failed = Status::Unavailable("stopping");
                                  return;
                                }
                                auto* e = batch.add_entries();
                                to_wire(m, e);
                                bytes += e->ByteSizeLong();
                                if (bytes >= kMaxBatchBytes || batch.entries_size() >= 512) flush();
                              }
                            });
        flush();
        if (!failed.ok()) return failed;
      }
      if (!response.truncated()) break;
    }
  }
  report.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - start);
  return report;
}

}  // namespace sessiond::replication
