// The history of a chaos run (docs/chaos.md): one JSON object per line, written by
// chaos-workload (operations, topologies, digest checks) and by scripts/chaos/run (faults), and
// read by chaos-check. Times are microseconds of the machine's real-time clock, which every
// process of a run shares.
//
//   {"type":"op","op":"create","region":"r1","id":"...","user":"u1-3","w":"c1-17","t0":..,
//    "t1":..,"status":"OK","ver":[hlc,region,node],"deadline":ms,"phase":"run"}
//   op: create | get | update | touch | destroy | regenerate (id -> new_id) | revoke (user,
//   count). "w" is the value of the one field a write sets (and a get read); "phase" is "run"
//   or "final" (the reads after the faults healed). UNAVAILABLE after a call was sent: it may or
//   may not have been applied.
//   {"type":"topology","region":"r1","t":..,"epoch":3,"nodes":[{"id":"n1","number":1}]}
//   {"type":"digest","region":"r1","node":"198.18.1.11:7400","peer":"r2","t":..,"differing":0,
//    "error":""}
//   {"type":"converged","t":..,"ok":true,"ms":1234}  (from the end of the load)
//   {"type":"fault","t":..,"fault":"kill","target":"r1/n1","detail":"..."}
//   {"type":"config","idle_ms":..,"touch_fraction":0.1,"lease_ttl_ms":5000,"regions":[..]}
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sessiond::chaos {

struct Op {
  std::string op, region, id, new_id, user, w, status, phase;
  std::int64_t t0 = 0, t1 = 0;  // microseconds, real time: the call's start and its answer
  std::uint64_t hlc = 0;
  std::uint32_t ver_region = 0, ver_node = 0;  // the version's region and node (0: none)
  std::int64_t deadline_ms = 0;
  std::uint64_t count = 0;  // revoke: sessions ended
  bool stale = false;       // get: read from a replica while the owner was down
  std::size_t line = 0;     // where in the history (for counter-examples)

  bool ok() const { return status == "OK"; }
  // The call may have been applied though it was not acknowledged.
  bool indeterminate() const { return status == "UNAVAILABLE" || status == "INTERNAL"; }
};

struct Fault {
  std::int64_t t = 0;
  std::string fault, target, detail;
};

struct TopologyRecord {
  std::string region;
  std::int64_t t = 0;
  std::uint64_t epoch = 0;
  std::vector<std::pair<std::string, std::uint32_t>> nodes;  // id, number
};

struct DigestRecord {
  std::string region, node, peer, error;
  std::int64_t t = 0;
  std::uint64_t differing = 0;
};

struct History {
  std::vector<Op> ops;  // in the order of their answers within a worker, merged by t1
  std::vector<Fault> faults;
  std::vector<TopologyRecord> topologies;
  std::vector<DigestRecord> digests;  // the last round of checks of each node and peer
  bool converged = false;
  std::int64_t converge_ms = -1;  // from the load's end to equal digests
  std::int64_t converged_at = 0;  // when the digests were found equal (µs)
  std::int64_t idle_ms = 0;
  double touch_fraction = 0.1;
  std::vector<std::string> regions;
  std::vector<std::string> lines;  // raw, for printing counter-examples
};

// Reads every line of every file; a line that is not a history record is an error naming it.
bool read_history(const std::vector<std::string>& files, History& out, std::string& error);

}  // namespace sessiond::chaos
