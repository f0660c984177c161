// chaos-check: the verdict on a chaos run's history (checker.h, docs/chaos.md).
//
//   chaos-check [--lease-ttl-ms 5000] HISTORY.jsonl [MORE.jsonl ...]
//
// Prints a verdict per invariant with its first counter-examples and the run's summary; exits 0
// when every invariant holds, 1 on a violation, 2 on a history it cannot read.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "checker.h"
#include "history.h"

int main(int argc, char** argv) {
  sessiond::chaos::CheckOptions options;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--lease-ttl-ms" && i + 1 < argc) {
      options.lease_ttl_ms = std::atoll(argv[++i]);
    } else if (!arg.empty() && arg[0] == '-') {
      std::cerr << "usage: chaos-check [--lease-ttl-ms N] HISTORY.jsonl...\n";
      return 2;
    } else {
      files.push_back(arg);
    }
  }
  if (files.empty()) {
    std::cerr << "usage: chaos-check [--lease-ttl-ms N] HISTORY.jsonl...\n";
    return 2;
  }
  sessiond::chaos::History history;
  std::string error;
  if (!sessiond::chaos::read_history(files, history, error)) {
    std::cerr << "chaos-check: " << error << "\n";
    return 2;
  }
  auto verdicts = sessiond::chaos::check(history, options);
  sessiond::chaos::print_report(history, verdicts, std::cout);
  for (const auto& verdict : verdicts) {
    if (!verdict.violations.empty()) return 1;
  }
  return 0;
}
