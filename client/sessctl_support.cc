#include "sessctl_support.h"

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <limits>

namespace sessiond::sessctl {
namespace {

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

std::string json_version(const Version& version) {
  return "{\"hlc\":" + std::to_string(version.hlc) +
         ",\"region\":" + std::to_string(version.region) +
         ",\"node\":" + std::to_string(version.node) + "}";
}

std::string json_access(const AccessEntry& entry) {
  std::string out = "{\"time_ms\":" + std::to_string(entry.time_ms) +
                    ",\"ip\":" + json_string(entry.ip) +
                    ",\"user_agent_hash\":" + std::to_string(entry.user_agent_hash);
  if (entry.has_location) {
    char location[96];
    std::snprintf(location, sizeof location, ",\"latitude\":%.6f,\"longitude\":%.6f",
                  entry.latitude, entry.longitude);
    out += location;
  }
  return out + "}";
}

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

std::string json_string(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() + 2);
  out.push_back('"');
  std::size_t i = 0;
  while (i < bytes.size()) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    char escape[8];
    switch (c) {
      case '"':
        out += "\\\"";
        ++i;
        continue;
      case '\\':
        out += "\\\\";
        ++i;
        continue;
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      default:
        break;
    }
    if (c < 0x20 || c == 0x7F) {
      std::snprintf(escape, sizeof escape, "\\u%04x", c);
      out += escape;
      ++i;
      continue;
    }
    const std::size_t length = utf8_sequence_length(bytes.substr(i));
    if (length == 0) {
      std::snprintf(escape, sizeof escape, "\\u%04x", c);
      out += escape;
      ++i;
      continue;
    }
    out.append(bytes.substr(i, length));
    i += length;
  }
  out.push_back('"');
  return out;
}

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

std::string to_json(const SessionMeta& meta) {
  return "{\"id\":" + json_string(meta.id) + ",\"version\":" + json_version(meta.version) +
         ",\"created_at_ms\":" + std::to_string(meta.created_at_ms) +
         ",\"last_access_ms\":" + std::to_string(meta.last_access_ms) +
         ",\"deadline_ms\":" + std::to_string(meta.deadline_ms) + "}";
}

std::string to_json(const Session& session) {
  std::string out = "{\"id\":" + json_string(session.id) +
                    ",\"user_id\":" + json_string(session.user_id) + ",\"fields\":{";
  for (std::size_t i = 0; i < session.fields.size(); ++i) {
    if (i > 0) out += ",";
    out += json_string(session.fields[i].name) + ":" + json_string(session.fields[i].value);
  }
  out += "},\"created_at_ms\":" + std::to_string(session.created_at_ms) +
         ",\"last_access_ms\":" + std::to_string(session.last_access_ms) +
         ",\"idle_timeout_ms\":" + std::to_string(session.timeouts.idle_ms) +
         ",\"absolute_timeout_ms\":" + std::to_string(session.timeouts.absolute_ms) +
         ",\"deadline_ms\":" + std::to_string(session.deadline_ms);
  if (session.context) {
    out += ",\"context\":{\"ip\":" + json_string(session.context->ip) +
           ",\"user_agent_hash\":" + std::to_string(session.context->user_agent_hash) + "}";
  }
  out += ",\"access_log\":[";
  for (std::size_t i = 0; i < session.access_log.size(); ++i) {
    if (i > 0) out += ",";
    out += json_access(session.access_log[i]);
  }
  out += "],\"version\":" + json_version(session.version);
  if (!session.detections.empty()) {
    out += ",\"detections\":[";
    for (std::size_t i = 0; i < session.detections.size(); ++i) {
      if (i > 0) out += ",";
      out += json_string(session.detections[i].message);
    }
    out += "]";
  }
  return out + "}";
}

std::string to_json(const std::vector<SessionMeta>& sessions) {
  std::string out = "{\"sessions\":[";
  for (std::size_t i = 0; i < sessions.size(); ++i) {
    if (i > 0) out += ",";
    out += to_json(sessions[i]);
  }
  return out + "]}";
}

std::string to_json(const std::vector<AccessEntry>& entries) {
  std::string out = "{\"entries\":[";
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) out += ",";
    out += json_access(entries[i]);
  }
  return out + "]}";
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
  std::string out = "{";
  bool first = true;
  for (const auto& [name, value] : counters) {
    if (!first) out += ",";
    first = false;
    out += "\"" + std::string(name) + "\":" + std::to_string(value);
  }
  out += ",\"regions\":[";
  for (std::size_t i = 0; i < s.regions.size(); ++i) {
    const PeerRegionStats& r = s.regions[i];
    out += std::string(i ? "," : "") + "{\"region\":" + json_string(r.region) +
           ",\"lag_entries\":" + std::to_string(r.lag_entries) +
           ",\"lag_ms\":" + std::to_string(r.lag_ms) +
           ",\"entries_shipped\":" + std::to_string(r.entries_shipped) +
           ",\"bytes_shipped\":" + std::to_string(r.bytes_shipped) +
           ",\"conflicts_merged\":" + std::to_string(r.conflicts_merged) +
           ",\"set_aside\":" + std::to_string(r.set_aside) +
           ",\"entries_received\":" + std::to_string(r.entries_received) +
           ",\"retention_gaps\":" + std::to_string(r.retention_gaps) +
           ",\"repairs\":" + std::to_string(r.repairs) +
           ",\"repaired\":" + std::to_string(r.repaired) +
           ",\"last_repair_ms\":" + std::to_string(r.last_repair_ms) +
           ",\"lag_p50_ms\":" + std::to_string(r.lag_p50_ms) +
           ",\"lag_p99_ms\":" + std::to_string(r.lag_p99_ms) +
           ",\"lag_max_ms\":" + std::to_string(r.lag_max_ms) +
           ",\"error\":" + json_string(r.error) + "}";
  }
  return out + "]}";
}

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
  return "{\"payload\":" + json_string(ping.payload) +
         ",\"protocol_version\":" + std::to_string(ping.protocol_version) +
         ",\"server\":" + json_string(ping.server) + "}";
}

std::string to_json(const Topology& topology) {
  std::string out = "{\"epoch\":" + std::to_string(topology.epoch) +
                    ",\"region\":" + json_string(topology.region) +
                    ",\"migrating\":" + (topology.migrating ? "true" : "false") +
                    ",\"source\":" + json_string(topology.source) + ",\"nodes\":[";
  for (std::size_t i = 0; i < topology.nodes.size(); ++i) {
    const TopologyNode& node = topology.nodes[i];
    if (i > 0) out += ",";
    out += "{\"id\":" + json_string(node.id) + ",\"address\":" + json_string(node.address) +
           ",\"number\":" + std::to_string(node.number) +
           ",\"weight\":" + std::to_string(node.weight) +
           ",\"region\":" + json_string(node.region) +
           ",\"resp_address\":" + json_string(node.resp_address) + "}";
  }
  return out + "]}";
}

std::string json_error(const Status& status) {
  return "{\"error\":{\"code\":" + json_string(status_code_name(status.code())) +
         ",\"message\":" + json_string(status.message()) + "}}";
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
