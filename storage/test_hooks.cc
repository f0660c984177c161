#include "storage/test_hooks.h"

#ifdef SESSIOND_TEST_HOOKS
#include <array>
#include <string>
#include <utility>

namespace sessiond::storage {
namespace {

Sabotage current = Sabotage::kNone;  // written once at start, before the threads

constexpr std::array<std::pair<std::string_view, Sabotage>, 5> kNames{{
    {"ack-unreplicated", Sabotage::kAckUnreplicated},
    {"resurrect", Sabotage::kResurrect},
    {"skip-region-cursor", Sabotage::kSkipRegionCursor},
    {"no-fencing", Sabotage::kNoFencing},
    {"keep-older-access", Sabotage::kKeepOlderAccess},
}};

}  // namespace

Status set_sabotage(std::string_view name) {
  if (name.empty()) {
    current = Sabotage::kNone;
    return Status::Ok();
  }
  std::string known;
  for (const auto& [known_name, which] : kNames) {
    if (name == known_name) {
      current = which;
      return Status::Ok();
    }
    known += (known.empty() ? "" : ", ") + std::string(known_name);
  }
  return Status::InvalidArgument("--test-sabotage " + std::string(name) + ": unknown (" + known +
                                 ")");
}

bool sabotaged(Sabotage which) { return current == which; }

}  // namespace sessiond::storage
#endif
