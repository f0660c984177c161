// `sessctl cluster ...`: a region's membership, through its etcd (docs/cluster.md): status (with
// a migration's progress), add-node, remove-node, drain. Every change is a compare-and-swap of
// the topology with a migration record; the nodes move the sessions.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace sessiond::sessctl {

// Adds the `cluster` subcommand to `app`; once the line has parsed, `run` holds what to do
// (it returns the exit code).
void add_cluster_commands(CLI::App& app, std::function<int()>& run, const bool& json);

}  // namespace sessiond::sessctl
