#include "daemon/session_wire.h"

#include <bit>
#include <cstdint>

namespace sessiond::daemon {

namespace {

void to_wire(const storage::Version& v, wire::Version* out) {
  out->set_hlc(v.hlc);
  out->set_region(v.region);
  out->set_node(v.node);
}

// ---- the protobuf wire format, as protobuf writes it (proto3: fields in number order, scalars
// and strings left out when zero or empty, a message that was set written even when empty) ----

enum WireType : std::uint32_t { kVarint = 0, kFixed64 = 1, kLength = 2 };

std::size_t varint_size(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void put_varint(std::uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void put_tag(std::uint32_t field, WireType type, std::string* out) {
  put_varint(field << 3 | type, out);
}

// Field numbers here stay below 16: every tag is one byte.
std::size_t varint_field_size(std::uint64_t v) { return v == 0 ? 0 : 1 + varint_size(v); }
std::size_t bytes_field_size(std::string_view b) {
  return b.empty() ? 0 : 1 + varint_size(b.size()) + b.size();
}
std::size_t message_field_size(std::size_t size) { return 1 + varint_size(size) + size; }
std::size_t double_field_size(double d) { return std::bit_cast<std::uint64_t>(d) == 0 ? 0 : 9; }

void put_varint_field(std::uint32_t field, std::uint64_t v, std::string* out) {
  if (v == 0) return;
  put_tag(field, kVarint, out);
  put_varint(v, out);
}
void put_bytes_field(std::uint32_t field, std::string_view b, std::string* out) {
  if (b.empty()) return;
  put_tag(field, kLength, out);
  put_varint(b.size(), out);
  out->append(b);
}
void put_message_header(std::uint32_t field, std::size_t size, std::string* out) {
  put_tag(field, kLength, out);
  put_varint(size, out);
}
void put_double_field(std::uint32_t field, double d, std::string* out) {
  const auto bits = std::bit_cast<std::uint64_t>(d);
  if (bits == 0) return;
  put_tag(field, kFixed64, out);
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(bits >> (8 * i)));
}
// int64 goes on the wire as its two's complement (ten bytes when negative).
std::uint64_t int64_bits(std::int64_t v) { return static_cast<std::uint64_t>(v); }

// Sizes and writers of each message, in the order of sessiond.proto.

std::size_t version_size(const storage::Version& v) {
  return varint_field_size(v.hlc) + varint_field_size(v.region) + varint_field_size(v.node);
}
void put_version(std::uint32_t field, const storage::Version& v, std::string* out) {
  put_message_header(field, version_size(v), out);
  put_varint_field(1, v.hlc, out);
  put_varint_field(2, v.region, out);
  put_varint_field(3, v.node, out);
}

std::size_t field_size(const storage::Field& f) {
  return bytes_field_size(f.name) + bytes_field_size(f.value) +
         message_field_size(version_size(f.version));
}

std::size_t timeouts_size(const storage::Timeouts& t) {
  return varint_field_size(int64_bits(t.idle_ms)) + varint_field_size(int64_bits(t.absolute_ms));
}

std::size_t context_size(const storage::ClientContext& c) {
  return bytes_field_size(c.ip) + varint_field_size(c.user_agent_hash);
}

std::size_t entry_size(const storage::AccessEntry& e) {
  return varint_field_size(int64_bits(e.time_ms)) + bytes_field_size(e.ip) +
         varint_field_size(e.user_agent_hash) + varint_field_size(e.has_location ? 1 : 0) +
         double_field_size(e.latitude) + double_field_size(e.longitude);
}

std::size_t session_size(const storage::Session& s, std::string_view wire_id) {
  std::size_t n = bytes_field_size(wire_id) + bytes_field_size(s.user_id);
  for (const auto& f : s.fields) n += message_field_size(field_size(f));
  n += varint_field_size(int64_bits(s.created_at_ms)) +
       varint_field_size(int64_bits(s.last_access_ms)) +
       message_field_size(timeouts_size(s.timeouts)) +
       varint_field_size(int64_bits(s.deadline_ms()));
  if (s.context) n += message_field_size(context_size(*s.context));
  for (const auto& e : s.access_log) n += message_field_size(entry_size(e));
  n += message_field_size(version_size(s.version));
  return n;
}

}  // namespace

void to_wire(const storage::AccessEntry& e, wire::AccessEntry* out) {
  out->set_time_ms(e.time_ms);
  out->set_ip(e.ip);
  out->set_user_agent_hash(e.user_agent_hash);
  out->set_has_location(e.has_location);
  out->set_latitude(e.latitude);
  out->set_longitude(e.longitude);
}

void to_wire(const storage::Session& s, std::string wire_id, wire::Session* out) {
  out->set_id(std::move(wire_id));
  out->set_user_id(s.user_id);
  for (const auto& f : s.fields) {
    auto* wf = out->add_fields();
    wf->set_name(f.name);
    wf->set_value(f.value);
    to_wire(f.version, wf->mutable_version());
  }
  out->set_created_at_ms(s.created_at_ms);
  out->set_last_access_ms(s.last_access_ms);
  out->mutable_timeouts()->set_idle_ms(static_cast<std::uint64_t>(s.timeouts.idle_ms));
  out->mutable_timeouts()->set_absolute_ms(static_cast<std::uint64_t>(s.timeouts.absolute_ms));
  out->set_deadline_ms(s.deadline_ms());
  if (s.context) {
    out->mutable_context()->set_ip(s.context->ip);
    out->mutable_context()->set_user_agent_hash(s.context->user_agent_hash);
  }
  for (const auto& e : s.access_log) to_wire(e, out->add_access_log());
  to_wire(s.version, out->mutable_version());
}

void append_get_response(const storage::Session& s, std::string_view wire_id, std::string* out) {
  const std::size_t size = session_size(s, wire_id);
  out->reserve(out->size() + message_field_size(size));
  put_message_header(1, size, out);  // GetResponse.session
  put_bytes_field(1, wire_id, out);
  put_bytes_field(2, s.user_id, out);
  for (const auto& f : s.fields) {
    put_message_header(3, field_size(f), out);
    put_bytes_field(1, f.name, out);
    put_bytes_field(2, f.value, out);
    put_version(3, f.version, out);
  }
  put_varint_field(4, int64_bits(s.created_at_ms), out);
  put_varint_field(5, int64_bits(s.last_access_ms), out);
  put_message_header(6, timeouts_size(s.timeouts), out);
  put_varint_field(1, int64_bits(s.timeouts.idle_ms), out);
  put_varint_field(2, int64_bits(s.timeouts.absolute_ms), out);
  put_varint_field(7, int64_bits(s.deadline_ms()), out);
  if (s.context) {
    put_message_header(8, context_size(*s.context), out);
    put_bytes_field(1, s.context->ip, out);
    put_varint_field(2, s.context->user_agent_hash, out);
  }
  for (const auto& e : s.access_log) {
    put_message_header(9, entry_size(e), out);
    put_varint_field(1, int64_bits(e.time_ms), out);
    put_bytes_field(2, e.ip, out);
    put_varint_field(3, e.user_agent_hash, out);
    put_varint_field(4, e.has_location ? 1 : 0, out);
    put_double_field(5, e.latitude, out);
    put_double_field(6, e.longitude, out);
  }
  put_version(10, s.version, out);
}

}  // namespace sessiond::daemon
