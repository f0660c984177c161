#include "history.h"

#include <fstream>
#include <nlohmann/json.hpp>

namespace sessiond::chaos {

bool read_history(const std::vector<std::string>& files, History& out, std::string& error) {
  using json = nlohmann::json;
  for (const auto& file : files) {
    std::ifstream in(file);
    if (!in) {
      error = "cannot read " + file;
      return false;
    }
    std::string line;
    std::size_t number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (line.empty()) continue;
      auto record = json::parse(line, nullptr, false);
      if (record.is_discarded() || !record.is_object()) {
        error = file + ":" + std::to_string(number) + ": not a JSON object";
        return false;
      }
      auto type = record.value("type", "");
      auto index = out.lines.size();
      out.lines.push_back(line);
      try {
        if (type == "op") {
          Op op;
          op.op = record.value("op", "");
          op.region = record.value("region", "");
          op.id = record.value("id", "");
          op.new_id = record.value("new_id", "");
          op.user = record.value("user", "");
          op.w = record.value("w", "");
          op.status = record.value("status", "");
          op.phase = record.value("phase", "run");
          op.t0 = record.value("t0", std::int64_t{0});
          op.t1 = record.value("t1", std::int64_t{0});
          op.deadline_ms = record.value("deadline", std::int64_t{0});
          op.count = record.value("count", std::uint64_t{0});
          op.stale = record.value("stale", false);
          if (record.contains("ver")) {
            const auto& v = record["ver"];
            op.hlc = v.at(0).get<std::uint64_t>();
            op.ver_region = v.at(1).get<std::uint32_t>();
            op.ver_node = v.at(2).get<std::uint32_t>();
          }
          op.line = index;
          out.ops.push_back(std::move(op));
        } else if (type == "fault") {
          out.faults.push_back(Fault{record.value("t", std::int64_t{0}), record.value("fault", ""),
                                     record.value("target", ""), record.value("detail", "")});
        } else if (type == "topology") {
          TopologyRecord topology;
          topology.region = record.value("region", "");
          topology.t = record.value("t", std::int64_t{0});
          topology.epoch = record.value("epoch", std::uint64_t{0});
          for (const auto& node : record.value("nodes", json::array())) {
            topology.nodes.emplace_back(node.value("id", ""), node.value("number", 0u));
          }
          out.topologies.push_back(std::move(topology));
        } else if (type == "digest") {
          out.digests.push_back(DigestRecord{record.value("region", ""), record.value("node", ""),
                                             record.value("peer", ""), record.value("error", ""),
                                             record.value("t", std::int64_t{0}),
                                             record.value("differing", std::uint64_t{0})});
        } else if (type == "converged") {
          out.converged = record.value("ok", false);
          out.converge_ms = record.value("ms", std::int64_t{-1});
          out.converged_at = record.value("t", std::int64_t{0});
        } else if (type == "config") {
          out.idle_ms = record.value("idle_ms", std::int64_t{0});
          out.touch_fraction = record.value("touch_fraction", 0.1);
          out.regions = record.value("regions", std::vector<std::string>{});
        }
      } catch (const json::exception& e) {
        error = file + ":" + std::to_string(number) + ": " + e.what();
        return false;
      }
    }
  }
  return true;
}

}  // namespace sessiond::chaos
