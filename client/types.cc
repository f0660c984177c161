#include "sessiond/types.h"

#include <algorithm>
#include <array>

namespace sessiond {
namespace {

constexpr std::array<std::pair<Preset, std::string_view>, 6> kPresetNames{{
    {Preset::kNodeDefault, "default"},
    {Preset::kFinance, "finance"},
    {Preset::kHealthcare, "healthcare"},
    {Preset::kEcommerce, "ecommerce"},
    {Preset::kMedia, "media"},
    {Preset::kGaming, "gaming"},
}};

}  // namespace

std::string_view preset_name(Preset preset) {
  for (const auto& [value, name] : kPresetNames) {
    if (value == preset) return name;
  }
  return "default";
}

std::optional<Preset> preset_from_name(std::string_view name) {
  for (const auto& [value, preset_text] : kPresetNames) {
    if (preset_text == name) return value;
  }
  return std::nullopt;
}

const Field* Session::field(std::string_view name) const {
  // Sorted by name on the wire, but a linear scan keeps this correct whatever the order and
  // sessions hold few fields.
  auto it =
      std::find_if(fields.begin(), fields.end(), [name](const Field& f) { return f.name == name; });
  return it == fields.end() ? nullptr : &*it;
}

}  // namespace sessiond
