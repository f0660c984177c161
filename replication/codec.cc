#include "replication/codec.h"

#include <cstring>

#include "protocol/sessiond.pb.h"

namespace sessiond::replication {

OwnedMutation::OwnedMutation(const storage::Mutation& from)
    : m(from),
      user(from.user),
      value(from.value),
      access_log(from.access_log.begin(), from.access_log.end()) {
  m.user = user;
  m.value = value;
  m.access_log = access_log;
}

void to_wire(const storage::Mutation& m, wire::MutationEntry* out) {
  out->set_kind(static_cast<std::uint32_t>(m.kind));
  if (m.kind != storage::Mutation::Kind::kGeneration) {
    out->set_id(reinterpret_cast<const char*>(m.id.data()), m.id.size());
  }
  out->set_user(m.user.data(), m.user.size());
  out->set_value(m.value.data(), m.value.size());
  out->set_deadline_ms(m.deadline_ms);
  out->set_last_access_ms(m.last_access_ms);
  for (const storage::AccessEntry& e : m.access_log) {
    auto* w = out->add_access_log();
    w->set_time_ms(e.time_ms);
    w->set_ip(e.ip);
    w->set_user_agent_hash(e.user_agent_hash);
    w->set_has_location(e.has_location);
    w->set_latitude(e.latitude);
    w->set_longitude(e.longitude);
  }
  out->set_origin_region(m.origin.region);
  out->set_origin_node(m.origin.node);
}

Result<OwnedMutation> from_wire(const wire::MutationEntry& entry) {
  OwnedMutation out;
  if (entry.kind() < 1 || entry.kind() > 4) {
    return Status::InvalidArgument("unknown mutation kind " + std::to_string(entry.kind()));
  }
  out.m.kind = static_cast<storage::Mutation::Kind>(entry.kind());
  if (out.m.kind != storage::Mutation::Kind::kGeneration) {
    if (entry.id().size() != out.m.id.size()) {
      return Status::InvalidArgument("a mutation's id must be 32 bytes, not " +
                                     std::to_string(entry.id().size()));
    }
    std::memcpy(out.m.id.data(), entry.id().data(), out.m.id.size());
  } else if (entry.user().empty()) {
    return Status::InvalidArgument("a generation without a user");
  }
  out.user = entry.user();
  out.value = entry.value();
  out.m.deadline_ms = entry.deadline_ms();
  out.m.last_access_ms = entry.last_access_ms();
  for (const auto& e : entry.access_log()) {
    out.access_log.push_back(
        {e.time_ms(), e.ip(), e.user_agent_hash(), e.has_location(), e.latitude(), e.longitude()});
  }
  out.m.origin = {entry.origin_region(), entry.origin_node(), false};
  out.m.user = out.user;
  out.m.value = out.value;
  out.m.access_log = out.access_log;
  return out;
}

}  // namespace sessiond::replication
