#include "sessctl_support.h"

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <limits>
#include <nlohmann/json.hpp>

namespace sessiond::sessctl {
namespace {

// Members in the order they are set: the output reads as it always has (id first).
using Json = nlohmann::ordered_json;

// Length of the valid UTF-8 sequence at the start of `s`, or 0.
std::size_t utf8_sequence_length(std::string_view s) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  std::uint32_t min = 0;
  std::uint32_t code = 0;
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) {
    length = 2, min = 0x80, code = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, min = 0x800, code = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, min = 0x10000, code = lead & 0x07;
  } else {
    return 0;
  }
  if (s.size() < length) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return 0;
    code = (code << 6) | (byte(i) & 0x3F);
  }
  if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
  return length;
}

Json json_version(const Version& version) {
  return {{"hlc", version.hlc}, {"region", version.region}, {"node", version.node}};
}

Json json_access(const AccessEntry& entry) {
  Json out = {{"time_ms", entry.time_ms},
              {"ip", readable_utf8(entry.ip)},
              {"user_agent_hash", entry.user_agent_hash}};
  if (entry.has_location) {
    out["latitude"] = entry.latitude;
    out["longitude"] = entry.longitude;
  }
  return out;
}

Json json_meta(const SessionMeta& meta) {
  return {{"id", readable_utf8(meta.id)},
          {"version", json_version(meta.version)},
          {"created_at_ms", meta.created_at_ms},
          {"last_access_ms", meta.last_access_ms},
          {"deadline_ms", meta.deadline_ms}};
}

Json json_peer_region(const PeerRegionStats& r) {
  return {{"region", readable_utf8(r.region)},
          {"lag_entries", r.lag_entries},
          {"lag_ms", r.lag_ms},
          {"entries_shipped", r.entries_shipped},
          {"bytes_shipped", r.bytes_shipped},
          {"conflicts_merged", r.conflicts_merged},
          {"set_aside", r.set_aside},
          {"entries_received", r.entries_received},
          {"retention_gaps", r.retention_gaps},
          {"repairs", r.repairs},
          {"repaired", r.repaired},
          {"last_repair_ms", r.last_repair_ms},
          {"lag_p50_ms", r.lag_p50_ms},
          {"lag_p99_ms", r.lag_p99_ms},
          {"lag_max_ms", r.lag_max_ms},
          {"error", readable_utf8(r.error)}};
}

// Every string above went through readable_utf8, so dump() never meets a byte that is not
// UTF-8 (where it would throw).
std::string text_of(const Json& json) { return json.dump(); }

std::string text_duration_ms(std::int64_t ms) {
  if (ms == 0) return "none";
  return std::to_string(ms) + " ms";
}

}  // namespace

int exit_code_for(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return kExitOk;
    case StatusCode::kNotFound:
    case StatusCode::kExpired:
      return kExitNotFound;
    case StatusCode::kInvalidArgument:
      return kExitUsage;
    case StatusCode::kUnavailable:
    case StatusCode::kOverloaded:
      return kExitUnreachable;
    default:
      return kExitRefused;
  }
}

Result<FieldValue> parse_key_value(std::string_view text) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos) {
    return Status::InvalidArgument("'" + std::string(text) + "' is not NAME=VALUE");
  }
  if (eq == 0) return Status::InvalidArgument("'" + std::string(text) + "' has an empty name");
  return FieldValue{std::string(text.substr(0, eq)), std::string(text.substr(eq + 1))};
}

std::string readable_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  std::size_t i = 0;
  while (i < bytes.size()) {
    const std::size_t length = utf8_sequence_length(bytes.substr(i));
    if (length > 0) {
      out.append(bytes.substr(i, length));
      i += length;
      continue;
    }
    const auto byte = static_cast<unsigned char>(bytes[i++]);  // U+0080..U+00FF in UTF-8
    out.push_back(static_cast<char>(0xC0 | (byte >> 6)));
    out.push_back(static_cast<char>(0x80 | (byte & 0x3F)));
  }
  return out;
}

std::string json_string(std::string_view bytes) { return text_of(Json(readable_utf8(bytes))); }

std::string format_time_ms(std::int64_t ms) {
  if (ms == std::numeric_limits<std::int64_t>::max()) return "never";
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[48];
  const std::size_t length = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  char millis[8];
  std::snprintf(millis, sizeof millis, ".%03dZ", static_cast<int>(((ms % 1000) + 1000) % 1000));
  return std::string(text, length) + millis;
}

std::string to_json(const SessionMeta& meta) { return text_of(json_meta(meta)); }

std::string to_json(const Session& session) {
  Json fields = Json::object();
  for (const auto& field : session.fields) {
    fields[readable_utf8(field.name)] = readable_utf8(field.value);
  }
  Json out = {{"id", readable_utf8(session.id)},
              {"user_id", readable_utf8(session.user_id)},
              {"fields", std::move(fields)},
              {"created_at_ms", session.created_at_ms},
              {"last_access_ms", session.last_access_ms},
              {"idle_timeout_ms", session.timeouts.idle_ms},
              {"absolute_timeout_ms", session.timeouts.absolute_ms},
              {"deadline_ms", session.deadline_ms}};
  if (session.context) {
    out["context"] = {{"ip", readable_utf8(session.context->ip)},
                      {"user_agent_hash", session.context->user_agent_hash}};
  }
  Json log = Json::array();
  for (const auto& entry : session.access_log) log.push_back(json_access(entry));
  out["access_log"] = std::move(log);
  out["version"] = json_version(session.version);
  if (!session.detections.empty()) {
    Json detections = Json::array();
    for (const auto& d : session.detections) detections.push_back(readable_utf8(d.message));
    out["detections"] = std::move(detections);
  }
  return text_of(out);
}

std::string to_json(const std::vector<SessionMeta>& sessions) {
  Json list = Json::array();
  for (const auto& meta : sessions) list.push_back(json_meta(meta));
  return text_of(Json{{"sessions", std::move(list)}});
}

std::string to_json(const std::vector<AccessEntry>& entries) {
  Json list = Json::array();
  for (const auto& entry : entries) list.push_back(json_access(entry));
  return text_of(Json{{"entries", std::move(list)}});
}

std::string to_json(const Stats& s) {
  const std::pair<const char*, std::uint64_t> counters[] = {
      {"sessions", s.sessions},
      {"users", s.users},
      {"memory_bytes", s.memory_bytes},
      {"disk_bytes", s.disk_bytes},
      {"creates", s.creates},
      {"updates", s.updates},
      {"destroys", s.destroys},
      {"regenerates", s.regenerates},
      {"expiries", s.expiries},
      {"read_hits", s.read_hits},
      {"read_misses", s.read_misses},
      {"touches_persisted", s.touches_persisted},
      {"touches_coalesced", s.touches_coalesced},
      {"connections", s.connections},
      {"protocol_errors", s.protocol_errors},
      {"forged_ids", s.forged_ids},
      {"hijack_impossible_travel", s.hijack_impossible_travel},
      {"hijack_many_ips", s.hijack_many_ips},
      {"context_mismatches", s.context_mismatches},
      {"tls_handshake_failures", s.tls_handshake_failures},
      {"connections_refused", s.connections_refused},
      {"connections_refused_per_ip", s.connections_refused_per_ip},
      {"connection_timeouts", s.connection_timeouts},
      {"slow_readers", s.slow_readers},
      {"auth_failures", s.auth_failures},
      {"clock_steps", s.clock_steps},
      {"touches_refused", s.touches_refused},
      {"tombstones", s.tombstones},
      {"merges_applied", s.merges_applied},
      {"merges_set_aside", s.merges_set_aside},
      {"replica_lag_entries", s.replica_lag_entries},
      {"replicas_in_sync", s.replicas_in_sync},
      {"replicas", s.replicas},
      {"anti_entropy_rounds", s.anti_entropy_rounds},
      {"anti_entropy_repaired", s.anti_entropy_repaired},
  };
  Json out = Json::object();
  for (const auto& [name, value] : counters) out[name] = value;
  Json regions = Json::array();
  for (const PeerRegionStats& r : s.regions) regions.push_back(json_peer_region(r));
  out["regions"] = std::move(regions);
  return text_of(out);
}

std::string to_json(const PeerRegionStats& region) { return text_of(json_peer_region(region)); }

std::string to_text(const PeerRegionStats& r) {
  std::string last = "never";
  if (r.last_repair_ms > 0) {
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    last = std::to_string(std::max<std::int64_t>(0, (now_ms - r.last_repair_ms) / 1000)) + " s ago";
  }
  std::string out = "region " + r.region + ": lag " + std::to_string(r.lag_entries) +
                    " entries / " + std::to_string(r.lag_ms) + " ms, shipped " +
                    std::to_string(r.entries_shipped) + " (" + std::to_string(r.bytes_shipped) +
                    " bytes), received " + std::to_string(r.entries_received) + ", conflicts " +
                    std::to_string(r.conflicts_merged) + ", set aside " +
                    std::to_string(r.set_aside) + ", repairs " + std::to_string(r.repairs) +
                    " (last " + last + ", " + std::to_string(r.repaired) + " states moved)";
  if (r.retention_gaps > 0) {
    out += ", fell behind the log's retention " + std::to_string(r.retention_gaps) + " times";
  }
  if (!r.error.empty()) out += "; error: " + r.error;
  return out + "\n";
}

std::string to_json(const PingResult& ping) {
  return text_of({{"payload", readable_utf8(ping.payload)},
                  {"protocol_version", ping.protocol_version},
                  {"server", readable_utf8(ping.server)}});
}

std::string to_json(const Topology& topology) {
  Json nodes = Json::array();
  for (const TopologyNode& node : topology.nodes) {
    nodes.push_back({{"id", readable_utf8(node.id)},
                     {"address", readable_utf8(node.address)},
                     {"number", node.number},
                     {"weight", node.weight},
                     {"region", readable_utf8(node.region)},
                     {"resp_address", readable_utf8(node.resp_address)}});
  }
  return text_of({{"epoch", topology.epoch},
                  {"region", readable_utf8(topology.region)},
                  {"migrating", topology.migrating},
                  {"source", readable_utf8(topology.source)},
                  {"nodes", std::move(nodes)}});
}

std::string json_error(const Status& status) {
  return text_of({{"error",
                   {{"code", std::string(status_code_name(status.code()))},
                    {"message", readable_utf8(status.message())}}}});
}

std::string to_text(const SessionMeta& meta) {
  return "id:          " + meta.id + "\ncreated:     " + format_time_ms(meta.created_at_ms) +
         "\nlast access: " + format_time_ms(meta.last_access_ms) +
         "\ndeadline:    " + format_time_ms(meta.deadline_ms) + "\n";
}

std::string to_text(const Session& session) {
  std::string out = "id:          " + session.id +
                    "\nuser:        " + (session.user_id.empty() ? "(none)" : session.user_id) +
                    "\ncreated:     " + format_time_ms(session.created_at_ms) +
                    "\nlast access: " + format_time_ms(session.last_access_ms) +
                    "\ndeadline:    " + format_time_ms(session.deadline_ms) +
                    "\ntimeouts:    idle " + text_duration_ms(session.timeouts.idle_ms) +
                    ", absolute " + text_duration_ms(session.timeouts.absolute_ms) + "\n";
  if (session.context) {
    out += "bound to:    ip " + session.context->ip + ", user agent hash " +
           std::to_string(session.context->user_agent_hash) + "\n";
  }
  out += "fields:      " + std::to_string(session.fields.size()) + "\n";
  for (const auto& field : session.fields) {
    out += "  " + field.name + " = " + field.value + "\n";
  }
  for (const auto& d : session.detections) out += "SUSPICIOUS:  " + d.message + "\n";
  return out;
}

std::string to_text(const std::vector<SessionMeta>& sessions) {
  std::string out;
  for (const auto& meta : sessions) {
    out += meta.id + "  created " + format_time_ms(meta.created_at_ms) + "  deadline " +
           format_time_ms(meta.deadline_ms) + "\n";
  }
  out += std::to_string(sessions.size()) + (sessions.size() == 1 ? " session\n" : " sessions\n");
  return out;
}

std::string to_text(const std::vector<AccessEntry>& entries) {
  std::string out;
  for (const auto& entry : entries) {
    out += format_time_ms(entry.time_ms) + "  ip " + (entry.ip.empty() ? "-" : entry.ip) + "  ua " +
           std::to_string(entry.user_agent_hash);
    if (entry.has_location) {
      char location[64];
      std::snprintf(location, sizeof location, "  at %.4f,%.4f", entry.latitude, entry.longitude);
      out += location;
    }
    out += "\n";
  }
  out += std::to_string(entries.size()) + (entries.size() == 1 ? " access\n" : " accesses\n");
  return out;
}

std::string to_text(const Stats& s) {
  const std::pair<const char*, std::uint64_t> counters[] = {
      {"sessions", s.sessions},
      {"users", s.users},
      {"memory bytes", s.memory_bytes},
      {"disk bytes", s.disk_bytes},
      {"creates", s.creates},
      {"updates", s.updates},
      {"destroys", s.destroys},
      {"regenerates", s.regenerates},
      {"expiries", s.expiries},
      {"read hits", s.read_hits},
      {"read misses", s.read_misses},
      {"touches persisted", s.touches_persisted},
      {"touches coalesced", s.touches_coalesced},
      {"connections", s.connections},
      {"protocol errors", s.protocol_errors},
      {"forged ids", s.forged_ids},
      {"hijack: travel", s.hijack_impossible_travel},
      {"hijack: many IPs", s.hijack_many_ips},
      {"context mismatches", s.context_mismatches},
      {"TLS handshakes failed", s.tls_handshake_failures},
      {"connections refused", s.connections_refused},
      {"refused per address", s.connections_refused_per_ip},
      {"connection timeouts", s.connection_timeouts},
      {"slow readers closed", s.slow_readers},
      {"AUTH failures", s.auth_failures},
      {"clock steps", s.clock_steps},
      {"touches refused (disk)", s.touches_refused},
      {"tombstones", s.tombstones},
      {"merges applied", s.merges_applied},
      {"merges set aside", s.merges_set_aside},
      {"replica lag entries", s.replica_lag_entries},
      {"replicas in sync", s.replicas_in_sync},
      {"replicas", s.replicas},
      {"anti-entropy rounds", s.anti_entropy_rounds},
      {"anti-entropy repaired", s.anti_entropy_repaired},
  };
  std::string out;
  for (const auto& [name, value] : counters) {
    char line[96];
    std::snprintf(line, sizeof line, "%-22s %" PRIu64 "\n", name, value);
    out += line;
  }
  for (const PeerRegionStats& r : s.regions) out += to_text(r);
  return out;
}

std::string to_text(const Topology& topology) {
  std::string out = "epoch " + std::to_string(topology.epoch);
  if (topology.epoch == 0) out += " (no cluster)";
  if (!topology.region.empty()) out += ", region " + topology.region;
  if (topology.migrating) out += ", migrating";
  if (!topology.source.empty()) out += ", from " + topology.source;
  out += "\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-20s %-24s %6s %6s\n", "id", "address", "number", "weight");
  out += line;
  for (const TopologyNode& node : topology.nodes) {
    std::snprintf(line, sizeof line, "%-20s %-24s %6u %6u\n", node.id.c_str(), node.address.c_str(),
                  node.number, node.weight);
    out += line;
  }
  return out;
}

std::string to_text(const PingResult& ping) {
  return "pong from " + ping.server + " (protocol " + std::to_string(ping.protocol_version) + ")\n";
}

}  // namespace sessiond::sessctl
