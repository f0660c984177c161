#include "detail/wire_convert.h"

#include <string>

#include "sessiond/session_id.h"

namespace sessiond::client_detail {
namespace {

Status timeouts_to_wire(const Timeouts& in, wire::Timeouts* out) {
  if (in.idle_ms < 0 || in.absolute_ms < 0) {
    return Status::InvalidArgument("timeouts must not be negative (idle " +
                                   std::to_string(in.idle_ms) + " ms, absolute " +
                                   std::to_string(in.absolute_ms) + " ms)");
  }
  out->set_idle_ms(static_cast<std::uint64_t>(in.idle_ms));
  out->set_absolute_ms(static_cast<std::uint64_t>(in.absolute_ms));
  return {};
}

void context_to_wire(const ClientContext& in, wire::ClientContext* out) {
  out->set_ip(in.ip);
  out->set_user_agent_hash(in.user_agent_hash);
}

void access_to_wire(const AccessEntry& in, wire::AccessEntry* out) {
  out->set_time_ms(in.time_ms);
  out->set_ip(in.ip);
  out->set_user_agent_hash(in.user_agent_hash);
  out->set_has_location(in.has_location);
  out->set_latitude(in.latitude);
  out->set_longitude(in.longitude);
}

template <typename Repeated>
void fields_to_wire(const std::vector<FieldValue>& in, Repeated* out) {
  out->Reserve(static_cast<int>(in.size()));
  for (const auto& [name, value] : in) {
    auto* field = out->Add();
    field->set_name(name);
    field->set_value(value);
  }
}

Version version_from_wire(const wire::Version& in) { return {in.hlc(), in.region(), in.node()}; }

wire::Preset preset_to_wire(Preset preset) {
  switch (preset) {
    case Preset::kFinance:
      return wire::FINANCE;
    case Preset::kHealthcare:
      return wire::HEALTHCARE;
    case Preset::kEcommerce:
      return wire::ECOMMERCE;
    case Preset::kMedia:
      return wire::MEDIA;
    case Preset::kGaming:
      return wire::GAMING;
    case Preset::kNodeDefault:
      break;
  }
  return wire::PRESET_UNSPECIFIED;
}

}  // namespace

Status id_to_wire(std::string_view text, std::string_view what, std::string* out) {
  auto bytes = session_id_to_bytes(text);
  if (!bytes) {
    std::string shown(text.substr(0, 64));
    return Status::InvalidArgument(
        std::string(what) + " '" + shown +
        "' is not a session id (43 base64url characters, 64 when signed)");
  }
  *out = std::move(*bytes);
  return {};
}

Status to_wire(const CreateOptions& in, wire::CreateRequest* out) {
  out->set_user_id(in.user_id);
  fields_to_wire(in.fields, out->mutable_fields());
  if (in.timeouts) {
    if (auto status = timeouts_to_wire(*in.timeouts, out->mutable_timeouts()); !status.ok()) {
      return status;
    }
  } else if (in.preset != Preset::kNodeDefault) {
    out->set_preset(preset_to_wire(in.preset));
  }
  if (in.context) context_to_wire(*in.context, out->mutable_context());
  return {};
}

Status to_wire(std::string_view id, const GetOptions& in, wire::GetRequest* out) {
  if (auto status = id_to_wire(id, "id", out->mutable_id()); !status.ok()) return status;
  out->set_touch(in.touch);
  if (in.expect_context) context_to_wire(*in.expect_context, out->mutable_expect_context());
  if (in.record_access) access_to_wire(*in.record_access, out->mutable_record_access());
  if (in.min_version) {
    out->mutable_min_version()->set_hlc(in.min_version->hlc);
    out->mutable_min_version()->set_region(in.min_version->region);
    out->mutable_min_version()->set_node(in.min_version->node);
  }
  return {};
}

Status to_wire(std::string_view id, const UpdateOptions& in, wire::UpdateRequest* out) {
  if (auto status = id_to_wire(id, "id", out->mutable_id()); !status.ok()) return status;
  fields_to_wire(in.set, out->mutable_set());
  for (const auto& name : in.remove) out->add_remove(name);
  if (in.timeouts) {
    if (auto status = timeouts_to_wire(*in.timeouts, out->mutable_timeouts()); !status.ok()) {
      return status;
    }
  }
  if (in.expected_version) {
    out->mutable_expected_version()->set_hlc(in.expected_version->hlc);
    out->mutable_expected_version()->set_region(in.expected_version->region);
    out->mutable_expected_version()->set_node(in.expected_version->node);
  }
  return {};
}

Status to_wire(std::string_view id, const RegenerateOptions& in, wire::RegenerateRequest* out) {
  if (auto status = id_to_wire(id, "id", out->mutable_id()); !status.ok()) return status;
  if (in.replace_fields) {
    out->set_replace_fields(true);
    fields_to_wire(*in.replace_fields, out->mutable_fields());
  }
  if (in.user_id) out->set_user_id(*in.user_id);
  out->set_mark_authenticated(in.mark_authenticated);
  return {};
}

SessionMeta from_wire(const wire::SessionMeta& in) {
  SessionMeta out;
  out.id = session_id_from_bytes(in.id());
  out.version = version_from_wire(in.version());
  out.created_at_ms = in.created_at_ms();
  out.last_access_ms = in.last_access_ms();
  out.deadline_ms = in.deadline_ms();
  return out;
}

namespace {

AccessEntry from_wire_entry_without_ip(const wire::AccessEntry& in) {
  AccessEntry out;
  out.time_ms = in.time_ms();
  out.user_agent_hash = in.user_agent_hash();
  out.has_location = in.has_location();
  out.latitude = in.latitude();
  out.longitude = in.longitude();
  return out;
}

}  // namespace

AccessEntry from_wire(const wire::AccessEntry& in) {
  AccessEntry out = from_wire_entry_without_ip(in);
  out.ip = in.ip();
  return out;
}

namespace {

// The session of an answer, its strings moved out of `in` rather than copied.
Session take_session(wire::Session* in) {
  Session out;
  out.id = session_id_from_bytes(in->id());
  out.user_id = std::move(*in->mutable_user_id());
  out.fields.reserve(static_cast<std::size_t>(in->fields_size()));
  for (auto& field : *in->mutable_fields()) {
    out.fields.push_back({std::move(*field.mutable_name()), std::move(*field.mutable_value()),
                          version_from_wire(field.version())});
  }
  out.created_at_ms = in->created_at_ms();
  out.last_access_ms = in->last_access_ms();
  out.timeouts.idle_ms = static_cast<std::int64_t>(in->timeouts().idle_ms());
  out.timeouts.absolute_ms = static_cast<std::int64_t>(in->timeouts().absolute_ms());
  out.deadline_ms = in->deadline_ms();
  if (in->has_context()) {
    out.context = ClientContext{std::move(*in->mutable_context()->mutable_ip()),
                                in->context().user_agent_hash()};
  }
  out.access_log.reserve(static_cast<std::size_t>(in->access_log_size()));
  for (auto& entry : *in->mutable_access_log()) {
    AccessEntry e = from_wire_entry_without_ip(entry);
    e.ip = std::move(*entry.mutable_ip());
    out.access_log.push_back(std::move(e));
  }
  out.version = version_from_wire(in->version());
  return out;
}

}  // namespace

Session from_wire(wire::GetResponse&& in) {
  Session out = take_session(in.mutable_session());
  for (const auto& d : in.detections()) {
    HijackDetection h;
    h.kind = d.kind() == wire::HijackDetection::IMPOSSIBLE_TRAVEL
                 ? HijackDetection::Kind::kImpossibleTravel
             : d.kind() == wire::HijackDetection::MANY_IPS ? HijackDetection::Kind::kManyIps
                                                           : HijackDetection::Kind::kOther;
    h.message = d.message();
    h.distance_km = d.distance_km();
    h.speed_kmh = d.speed_kmh();
    h.interval_ms = d.interval_ms();
    h.distinct_ips = d.distinct_ips();
    out.detections.push_back(std::move(h));
  }
  return out;
}

PingResult from_wire(const wire::PingResponse& in) {
  return {in.payload(), in.protocol_version(), in.server()};
}

Stats from_wire(const wire::StatsResponse& in) {
  Stats out;
  out.sessions = in.sessions();
  out.users = in.users();
  out.memory_bytes = in.memory_bytes();
  out.creates = in.creates();
  out.updates = in.updates();
  out.destroys = in.destroys();
  out.regenerates = in.regenerates();
  out.expiries = in.expiries();
  out.read_hits = in.read_hits();
  out.read_misses = in.read_misses();
  out.touches_persisted = in.touches_persisted();
  out.touches_coalesced = in.touches_coalesced();
  out.connections = in.connections();
  out.protocol_errors = in.protocol_errors();
  out.disk_bytes = in.disk_bytes();
  out.forged_ids = in.forged_ids();
  out.hijack_impossible_travel = in.hijack_impossible_travel();
  out.hijack_many_ips = in.hijack_many_ips();
  out.context_mismatches = in.context_mismatches();
  out.tls_handshake_failures = in.tls_handshake_failures();
  out.connections_refused = in.connections_refused();
  out.connections_refused_per_ip = in.connections_refused_per_ip();
  out.connection_timeouts = in.connection_timeouts();
  out.slow_readers = in.slow_readers();
  out.auth_failures = in.auth_failures();
  out.clock_steps = in.clock_steps();
  out.touches_refused = in.touches_refused();
  out.tombstones = in.tombstones();
  out.merges_applied = in.merges_applied();
  out.merges_set_aside = in.merges_set_aside();
  out.replica_lag_entries = in.replica_lag_entries();
  out.replicas_in_sync = in.replicas_in_sync();
  out.replicas = in.replicas();
  out.anti_entropy_rounds = in.anti_entropy_rounds();
  out.anti_entropy_repaired = in.anti_entropy_repaired();
  for (const auto& r : in.regions()) {
    PeerRegionStats p;
    p.region = r.region();
    p.lag_entries = r.lag_entries();
    p.lag_ms = static_cast<std::int64_t>(r.lag_ms());
    p.entries_shipped = r.entries_shipped();
    p.bytes_shipped = r.bytes_shipped();
    p.conflicts_merged = r.conflicts_merged();
    p.set_aside = r.set_aside();
    p.entries_received = r.entries_received();
    p.retention_gaps = r.retention_gaps();
    p.repairs = r.repairs();
    p.repaired = r.repaired();
    p.last_repair_ms = r.last_repair_ms();
    p.error = r.error();
    p.lag_p50_ms = r.lag_p50_ms();
    p.lag_p99_ms = r.lag_p99_ms();
    p.lag_max_ms = r.lag_max_ms();
    out.regions.push_back(std::move(p));
  }
  return out;
}

}  // namespace sessiond::client_detail
