// `sessctl top` and `sessctl backup`: commands that talk to a node's admin HTTP listener
// (docs/operations.md, "The admin listener"), not to its native port.
//
//   sessctl top [--admin HOST:PORT] [--iterations N]   a live view of the node's region: per node
//                                                     ops/s, p99, sessions, memory, state; peer
//                                                     regions' lag; active alerts. Refreshes
//                                                     every second; q quits. Fits 80x24.
//   sessctl backup DIR [--admin HOST:PORT]            an online backup of the node into DIR (a
//                                                     new directory on the node's machine)
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace sessiond::sessctl {

// Adds `top` and `backup` to `app`; once the line has parsed, `run` holds what to do (it
// returns the exit code). `secret` is sent as the admin secret when not empty.
void add_admin_commands(CLI::App& app, std::function<int()>& run, const bool& json,
                        const std::string& secret);

}  // namespace sessiond::sessctl
