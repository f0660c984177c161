// The checker walks the history once per invariant (checker.h). Every call has a real-time
// interval [t0, t1]: it took effect somewhere inside it, so "after" always means "started after
// the other one was answered" (t0 > t1'), and calls whose intervals overlap are concurrent.
// Unacknowledged calls (UNAVAILABLE, INTERNAL) may or may not have taken effect: a session one
// of them may have ended is not required anywhere, and a value one of them may have written is
// accepted.
#include "checker.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include "protocol/base64url.h"

namespace sessiond::chaos {
namespace {

bool is_read(const Op& op) { return op.op == "get" || op.op == "get-touch"; }
bool is_write(const Op& op) {
  return op.op == "create" || op.op == "update" || op.op == "touch" || op.op == "regenerate";
}

// Versions order by (hlc, region, node), the merge's last-writer-wins order.
bool version_less(const Op& a, const Op& b) {
  return std::tie(a.hlc, a.ver_region, a.ver_node) < std::tie(b.hlc, b.ver_region, b.ver_node);
}

// An acknowledged end of a session: from this op's answer on, it must never be read again.
struct End {
  const Op* op;
  std::string region;
  std::int64_t t1;
};

struct Index {
  std::unordered_map<std::string, std::string> user_of;              // session id -> user
  std::unordered_map<std::string, std::vector<const Op*>> by_id;     // ops naming the id, in order
  std::unordered_map<std::string, std::vector<const Op*>> by_user;   // revokes
  std::unordered_map<std::string, std::vector<End>> ends;            // acknowledged ends
  std::unordered_map<std::string, std::int64_t> born;                // id -> t1 of its creation
  std::unordered_map<std::string, std::int64_t> born_start;          // id -> t0 of its creation
  std::unordered_map<std::string, std::uint32_t> region_number;      // region -> its version part
  std::int64_t load_end = std::numeric_limits<std::int64_t>::max();  // first final-phase t0
};

Index build_index(const History& history) {
  Index index;
  for (const auto& op : history.ops) {
    if (op.phase == "final") index.load_end = std::min(index.load_end, op.t0);
    if (!op.id.empty()) index.by_id[op.id].push_back(&op);
    if (!op.new_id.empty()) index.by_id[op.new_id].push_back(&op);
    if (op.op == "create" && op.ok()) {
      index.user_of[op.id] = op.user;
      index.born[op.id] = op.t1;
      index.born_start[op.id] = op.t0;
      // A create mints its version in the region that answered it.
      index.region_number.emplace(op.region, op.ver_region);
    }
    if (op.op == "revoke") index.by_user[op.user].push_back(&op);
  }
  // Regenerated ids keep their user (ops are in answer order per worker, not globally: iterate
  // until nothing changes; chains are short).
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& op : history.ops) {
      if (op.op != "regenerate" || !op.ok() || op.new_id.empty()) continue;
      auto user = index.user_of.find(op.id);
      if (user != index.user_of.end() && !index.user_of.count(op.new_id)) {
        index.user_of[op.new_id] = user->second;
        index.born[op.new_id] = op.t1;
        index.born_start[op.new_id] = op.t0;
        changed = true;
      }
    }
  }
  for (const auto& op : history.ops) {
    if (!op.ok()) continue;
    if (op.op == "destroy" || op.op == "regenerate") {
      index.ends[op.id].push_back(End{&op, op.region, op.t1});
    }
  }
  // A revoke ends every session of its user that was born before the revoke started.
  for (const auto& [id, user] : index.user_of) {
    auto revokes = index.by_user.find(user);
    if (revokes == index.by_user.end()) continue;
    for (const Op* revoke : revokes->second) {
      if (revoke->ok() && index.born[id] < revoke->t0) {
        index.ends[id].push_back(End{revoke, revoke->region, revoke->t1});
      }
    }
  }
  return index;
}

std::vector<std::size_t> context_lines(const Index& index, const std::string& id,
                                       std::initializer_list<const Op*> focus) {
  std::vector<std::size_t> lines;
  for (const Op* op : focus) lines.push_back(op->line);
  auto found = index.by_id.find(id);
  if (found != index.by_id.end()) {
    std::vector<const Op*> ops = found->second;
    std::sort(ops.begin(), ops.end(), [](const Op* a, const Op* b) { return a->t0 < b->t0; });
    // The ops around the first focus op.
    auto at = std::find(ops.begin(), ops.end(), *focus.begin());
    auto from = at - std::min<std::ptrdiff_t>(at - ops.begin(), 4);
    for (auto it = from; it != ops.end() && it < at + 4; ++it) lines.push_back((*it)->line);
  }
  std::sort(lines.begin(), lines.end());
  lines.erase(std::unique(lines.begin(), lines.end()), lines.end());
  return lines;
}

std::string ms(std::int64_t us) { return std::to_string(us / 1000) + " ms"; }

Verdict check_ended_stay_ended(const Index& index) {
  Verdict verdict{"1 ended sessions never come back", 0, {}};
  for (const auto& [id, ends] : index.ends) {
    auto ops = index.by_id.find(id);
    if (ops == index.by_id.end()) continue;
    const End* first = &*std::min_element(ends.begin(), ends.end(),
                                          [](const End& a, const End& b) { return a.t1 < b.t1; });
    // Per region: when a read there started after an end and found the session gone.
    std::map<std::string, std::int64_t> seen_gone;
    std::vector<const Op*> sorted = ops->second;
    std::sort(sorted.begin(), sorted.end(), [](const Op* a, const Op* b) { return a->t0 < b->t0; });
    for (const Op* op : sorted) {
      bool read = is_read(*op);
      if (!read && !(is_write(*op) && op->op != "create")) continue;
      if (op->op == "regenerate" && op->id != id) continue;  // a regenerate that made this id
      if (op->t0 <= first->t1) continue;
      ++verdict.checked;
      if (!op->ok()) {
        if (read && (op->status == "NOT_FOUND" || op->status == "EXPIRED")) {
          seen_gone.emplace(op->region, op->t1);
        }
        continue;
      }
      // Which end binds this read: one in its region, or one its region had already shown.
      const End* binding = nullptr;
      for (const auto& end : ends) {
        if (op->t0 <= end.t1) continue;
        auto gone = seen_gone.find(op->region);
        bool shown_here = gone != seen_gone.end() && op->t0 > gone->second;
        if (end.region == op->region || shown_here || op->phase == "final") {
          binding = &end;
          break;
        }
      }
      if (binding == nullptr) continue;
      verdict.violations.push_back(
          Violation{op->op + " of " + id + " in " + op->region + " answered OK (w=" + op->w + ") " +
                        ms(op->t0 - binding->t1) + " after " + binding->op->op + " in " +
                        binding->region + " was acknowledged",
                    context_lines(index, id, {binding->op, op})});
      break;  // one counter-example per session
    }
  }
  return verdict;
}

Verdict check_acknowledged_present(const Index& index) {
  Verdict verdict{"2 acknowledged writes present everywhere", 0, {}};
  for (const auto& [id, user] : index.user_of) {
    auto ops_it = index.by_id.find(id);
    if (ops_it == index.by_id.end()) continue;
    const auto& ops = ops_it->second;
    // Possibly ended: any end call (acknowledged or not), or a revoke of its user that did not
    // certainly start before it was born.
    bool maybe_ended = false;
    const Op* latest = nullptr;  // the acknowledged write with the highest version
    std::set<std::string> accepted;
    std::int64_t deadline = 0;
    for (const Op* op : ops) {
      if (op->phase == "final") continue;
      bool ends = (op->op == "destroy" || (op->op == "regenerate" && op->id == id));
      if (ends && (op->ok() || op->indeterminate() || op->status == "NOT_FOUND")) {
        maybe_ended = true;
      }
      if (op->ok() || (is_read(*op) && op->ok())) deadline = std::max(deadline, op->deadline_ms);
      bool writes_w =
          op->op == "create" || op->op == "update" || (op->op == "regenerate" && op->new_id == id);
      if (!writes_w) continue;
      if (op->ok()) {
        if (latest == nullptr || version_less(*latest, *op)) latest = op;
      } else if (op->indeterminate()) {
        accepted.insert(op->w);
      }
    }
    auto revokes = index.by_user.find(user);
    if (revokes != index.by_user.end()) {
      // A revoke answered before the session's creation started cannot have ended it.
      auto born = index.born_start.at(id);
      for (const Op* revoke : revokes->second) {
        if ((revoke->ok() || revoke->indeterminate()) && revoke->t1 >= born) maybe_ended = true;
      }
    }
    if (maybe_ended || latest == nullptr) continue;
    accepted.insert(latest->w);
    for (const Op* op : ops) {
      if (op->phase != "final" || !is_read(*op)) continue;
      ++verdict.checked;
      if (op->ok() && accepted.count(op->w)) continue;
      if (op->status == "EXPIRED" ||
          (op->status == "NOT_FOUND" && deadline < op->t0 / 1000 + 2000)) {
        continue;  // it may have expired
      }
      verdict.violations.push_back(Violation{"final read of " + id + " in " + op->region + ": " +
                                                 op->status + (op->ok() ? " w=" + op->w : "") +
                                                 ", expected w=" + latest->w + " (acknowledged " +
                                                 latest->op + " in " + latest->region + ")",
                                             context_lines(index, id, {latest, op})});
    }
  }
  return verdict;
}

Verdict check_digests(const History& history) {
  Verdict verdict{"3 bucket digests equal", 0, {}};
  for (const auto& digest : history.digests) {
    ++verdict.checked;
    if (digest.differing == 0 && digest.error.empty()) continue;
    verdict.violations.push_back(
        Violation{"node " + digest.node + " of " + digest.region + " against " + digest.peer +
                      ": " + std::to_string(digest.differing) + " buckets differ" +
                      (digest.error.empty() ? "" : " (" + digest.error + ")"),
                  {}});
  }
  if (history.regions.size() > 1 && history.digests.empty()) {
    verdict.violations.push_back(Violation{"no digest was compared", {}});
  }
  return verdict;
}

Verdict check_deadlines(const History& history, const Index& index) {
  Verdict verdict{"4 deadlines agree between regions", 0, {}};
  std::int64_t allowed =
      static_cast<std::int64_t>(static_cast<double>(history.idle_ms) * history.touch_fraction) +
      1000;
  std::map<std::string, std::vector<const Op*>> finals;
  for (const auto& op : history.ops) {
    if (op.phase == "final" && is_read(op) && op.ok()) finals[op.id].push_back(&op);
  }
  for (const auto& [id, reads] : finals) {
    if (reads.size() < 2) continue;
    ++verdict.checked;
    auto [low, high] = std::minmax_element(
        reads.begin(), reads.end(),
        [](const Op* a, const Op* b) { return a->deadline_ms < b->deadline_ms; });
    if ((*high)->deadline_ms - (*low)->deadline_ms <= allowed) continue;
    verdict.violations.push_back(Violation{
        id + ": deadline " + std::to_string((*high)->deadline_ms) + " in " + (*high)->region +
            ", " + std::to_string((*low)->deadline_ms) + " in " + (*low)->region + " (" +
            std::to_string((*high)->deadline_ms - (*low)->deadline_ms) + " ms apart, at most " +
            std::to_string(allowed) + ")",
        context_lines(index, id, {*low, *high})});
  }
  return verdict;
}

std::uint64_t position_of(const std::string& id) {
  auto bytes = base64url_decode(id);
  if (!bytes.ok() || bytes->size() < 8) return 0;
  std::uint64_t position = 0;
  for (int i = 0; i < 8; ++i) {
    position = (position << 8) | static_cast<unsigned char>((*bytes)[static_cast<std::size_t>(i)]);
  }
  return position;
}

Verdict check_single_writer(const History& history, const Index& index,
                            const CheckOptions& options) {
  Verdict verdict{"5 one writer per range at a time", 0, {}};
  std::vector<std::int64_t> handovers;  // graceful ownership changes
  for (const auto& fault : history.faults) {
    if (fault.fault == "restart" || fault.fault == "add-node" || fault.fault == "remove-node") {
      handovers.push_back(fault.t);
    }
  }
  std::sort(handovers.begin(), handovers.end());
  std::map<std::pair<std::string, std::uint64_t>, std::vector<const Op*>> ranges;
  for (const auto& op : history.ops) {
    // Writes that mint a version in the region that answered them (a touch answers the version
    // the session already had, which another region may have written).
    if (op.phase == "final" || !op.ok() || op.ver_node == 0 || op.op == "touch" || !is_write(op)) {
      continue;
    }
    auto local = index.region_number.find(op.region);
    if (local == index.region_number.end() || local->second != op.ver_region) continue;
    const std::string& id = op.op == "regenerate" ? op.new_id : op.id;
    ranges[{op.region, position_of(id)}].push_back(&op);
  }
  std::int64_t window = options.lease_ttl_ms * 1000;
  for (auto& [range, writes] : ranges) {
    std::sort(writes.begin(), writes.end(), [](const Op* a, const Op* b) { return a->t0 < b->t0; });
    bool found = false;
    for (std::size_t i = 0; i < writes.size() && !found; ++i) {
      const Op* a = writes[i];
      ++verdict.checked;
      // b1: the last write of another node B answered before a started; b2: a write of B that
      // started after a was answered, within the window of b1.
      for (std::size_t j = 0; j < writes.size() && !found; ++j) {
        const Op* b1 = writes[j];
        if (b1->ver_node == a->ver_node || b1->t1 >= a->t0) continue;
        for (std::size_t k = i + 1; k < writes.size(); ++k) {
          const Op* b2 = writes[k];
          if (b2->t0 - b1->t1 >= window) break;
          if (b2->ver_node != b1->ver_node || b2->t0 <= a->t1) continue;
          auto handover = std::lower_bound(handovers.begin(), handovers.end(), b1->t1);
          if (handover != handovers.end() && *handover < b2->t0) continue;
          verdict.violations.push_back(Violation{
              "range at " + std::to_string(range.second) + " in " + range.first + ": node " +
                  std::to_string(a->ver_node) + " acknowledged " + a->op + " between two of node " +
                  std::to_string(b1->ver_node) + "'s writes " + ms(b2->t0 - b1->t1) + " apart",
              {b1->line, a->line, b2->line}});
          found = true;
          break;
        }
      }
    }
  }
  return verdict;
}

// The fault records that inject a fault (the others record its end, or the final healing).
bool injected(const std::string& kind) {
  return kind != "heal" && kind != "heal-all" && kind != "thaw" && kind != "reconnect" &&
         kind != "etcd-start" && kind != "restart-killed" && kind != "heal-etcd";
}

}  // namespace

std::vector<Verdict> check(const History& history, const CheckOptions& options) {
  Index index = build_index(history);
  return {check_ended_stay_ended(index), check_acknowledged_present(index), check_digests(history),
          check_deadlines(history, index), check_single_writer(history, index, options)};
}

void print_report(const History& history, const std::vector<Verdict>& verdicts, std::ostream& out) {
  for (const auto& verdict : verdicts) {
    out << (verdict.violations.empty() ? "PASS " : "FAIL ") << verdict.name << ": "
        << verdict.checked << " checked, " << verdict.violations.size() << " violations\n";
    for (std::size_t i = 0; i < verdict.violations.size() && i < 3; ++i) {
      out << "  - " << verdict.violations[i].what << "\n";
      for (auto line : verdict.violations[i].lines) out << "      " << history.lines[line] << "\n";
    }
  }
  // The summary table.
  std::map<std::string, std::pair<std::size_t, std::size_t>> ops;  // kind -> acknowledged, all
  for (const auto& op : history.ops) {
    if (op.phase == "final") continue;
    auto& count = ops[op.op];
    ++count.second;
    if (op.ok()) ++count.first;
  }
  std::map<std::string, std::size_t> faults;
  for (const auto& fault : history.faults) {
    if (injected(fault.fault)) ++faults[fault.fault];
  }
  out << "\n| operation | acknowledged | calls |\n|---|---:|---:|\n";
  for (const auto& [kind, count] : ops) {
    out << "| " << kind << " | " << count.first << " | " << count.second << " |\n";
  }
  out << "\n| fault | injected |\n|---|---:|\n";
  for (const auto& [kind, count] : faults) out << "| " << kind << " | " << count << " |\n";
  out << "\n| invariant | checked | violations |\n|---|---:|---:|\n";
  for (const auto& verdict : verdicts) {
    out << "| " << verdict.name << " | " << verdict.checked << " | " << verdict.violations.size()
        << " |\n";
  }
  // From the moment the runner healed everything (links, processes, etcd) to equal digests
  // everywhere: restarts, rejoins and catching up included.
  std::int64_t healed = 0;
  for (const auto& fault : history.faults) {
    if (fault.fault == "heal-all") healed = fault.t;
  }
  out << "\ntime to converge after the faults: ";
  if (!history.converged) {
    out << "did not converge\n";
  } else if (healed != 0 && history.converged_at > healed) {
    out << (history.converged_at - healed) / 1000 << " ms from the heal to equal digests ("
        << history.converge_ms << " ms after the load stopped)\n";
  } else {
    out << history.converge_ms << " ms after the load stopped\n";
  }
}

}  // namespace sessiond::chaos
