// The invariants of a chaos run, checked over its whole history (docs/chaos.md):
//   1. no read that started after an acknowledged destroy, regenerate-away or revoke returned
//      the session: in its region at any time; in another region after that region had once
//      answered that it was gone (replication between regions is asynchronous); anywhere once
//      the faults healed
//   2. after the faults, every acknowledged create or update whose session was not ended (nor
//      possibly ended by an unacknowledged call) and has not expired is present in every region
//      with its latest acknowledged value
//   3. every node's bucket digests equal every peer region's
//   4. deadlines agree between regions within idle x touch fraction + 1 s
//   5. within a region, no two nodes acknowledged writes for one range at overlapping times:
//      no node wrote a range between two writes of another node less than a lease apart,
//      unless a graceful handover (restart, node added or removed) came in between
#pragma once

#include <cstddef>
#include <ostream>
#include <string>
#include <vector>

#include "history.h"

namespace sessiond::chaos {

struct Violation {
  std::string what;                // one line
  std::vector<std::size_t> lines;  // the history lines that show it (indices into lines)
};

struct Verdict {
  std::string name;
  std::size_t checked = 0;  // reads, sessions, digests, ... the invariant looked at
  std::vector<Violation> violations;
};

struct CheckOptions {
  std::int64_t lease_ttl_ms = 5000;  // invariant 5's window
};

std::vector<Verdict> check(const History& history, const CheckOptions& options = {});

// The verdicts with their first counter-examples, and the run's summary table (operations
// acknowledged by kind, faults, time to converge, violations per invariant).
void print_report(const History& history, const std::vector<Verdict>& verdicts, std::ostream& out);

}  // namespace sessiond::chaos
