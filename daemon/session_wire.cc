#include "daemon/session_wire.h"

#include <bit>
#include <cassert>
#include <cstdint>
#include <cstring>

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

// Field numbers here stay below 16: every tag is one byte.
std::size_t varint_field_size(std::uint64_t v) { return v == 0 ? 0 : 1 + varint_size(v); }
std::size_t bytes_field_size(std::string_view b) {
  return b.empty() ? 0 : 1 + varint_size(b.size()) + b.size();
}
std::size_t message_field_size(std::size_t size) { return 1 + varint_size(size) + size; }
std::size_t double_field_size(double d) { return std::bit_cast<std::uint64_t>(d) == 0 ? 0 : 9; }

// Writes into room the caller sized exactly beforehand (no capacity check per byte).
class Writer {
 public:
  explicit Writer(char* at) : p_(at) {}
  char* position() const { return p_; }

  void varint(std::uint64_t v) {
    while (v >= 0x80) {
      *p_++ = static_cast<char>((v & 0x7F) | 0x80);
      v >>= 7;
    }
    *p_++ = static_cast<char>(v);
  }
  void tag(std::uint32_t field, WireType type) { *p_++ = static_cast<char>(field << 3 | type); }
  void varint_field(std::uint32_t field, std::uint64_t v) {
    if (v == 0) return;
    tag(field, kVarint);
    varint(v);
  }
  void bytes_field(std::uint32_t field, std::string_view b) {
    if (b.empty()) return;
    tag(field, kLength);
    varint(b.size());
    std::memcpy(p_, b.data(), b.size());
    p_ += b.size();
  }
  void message_header(std::uint32_t field, std::size_t size) {
    tag(field, kLength);
    varint(size);
  }
  void double_field(std::uint32_t field, double d) {
    const auto bits = std::bit_cast<std::uint64_t>(d);
    if (bits == 0) return;
    tag(field, kFixed64);
    for (int i = 0; i < 8; ++i) *p_++ = static_cast<char>(bits >> (8 * i));
  }

 private:
  char* p_;
};

// Grows `out` by `size` bytes and returns a writer at the start of them.
Writer grow(std::string* out, std::size_t size) {
  const std::size_t at = out->size();
  out->resize(at + size);
  return Writer(out->data() + at);
}

// int64 goes on the wire as its two's complement (ten bytes when negative).
std::uint64_t int64_bits(std::int64_t v) { return static_cast<std::uint64_t>(v); }

// Sizes and writers of each message, in the order of sessiond.proto.

std::size_t version_size(const storage::Version& v) {
  return varint_field_size(v.hlc) + varint_field_size(v.region) + varint_field_size(v.node);
}
void put_version(std::uint32_t field, const storage::Version& v, Writer& w) {
  w.message_header(field, version_size(v));
  w.varint_field(1, v.hlc);
  w.varint_field(2, v.region);
  w.varint_field(3, v.node);
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

std::size_t append_get_response(const storage::Session& s, std::string_view wire_id,
                                std::string* out) {
  const std::size_t size = session_size(s, wire_id);
  const std::size_t total = message_field_size(size);
  Writer w = grow(out, total);
  [[maybe_unused]] const char* end = w.position() + total;
  w.message_header(1, size);  // GetResponse.session
  w.bytes_field(1, wire_id);
  w.bytes_field(2, s.user_id);
  for (const auto& f : s.fields) {
    w.message_header(3, field_size(f));
    w.bytes_field(1, f.name);
    w.bytes_field(2, f.value);
    put_version(3, f.version, w);
  }
  w.varint_field(4, int64_bits(s.created_at_ms));
  w.varint_field(5, int64_bits(s.last_access_ms));
  w.message_header(6, timeouts_size(s.timeouts));
  w.varint_field(1, int64_bits(s.timeouts.idle_ms));
  w.varint_field(2, int64_bits(s.timeouts.absolute_ms));
  w.varint_field(7, int64_bits(s.deadline_ms()));
  if (s.context) {
    w.message_header(8, context_size(*s.context));
    w.bytes_field(1, s.context->ip);
    w.varint_field(2, s.context->user_agent_hash);
  }
  for (const auto& e : s.access_log) {
    w.message_header(9, entry_size(e));
    w.varint_field(1, int64_bits(e.time_ms));
    w.bytes_field(2, e.ip);
    w.varint_field(3, e.user_agent_hash);
    w.varint_field(4, e.has_location ? 1 : 0);
    w.double_field(5, e.latitude);
    w.double_field(6, e.longitude);
  }
  put_version(10, s.version, w);
  assert(w.position() == end);
  return total;
}

void to_wire(const storage::SessionMeta& m, std::string wire_id, wire::SessionMeta* out) {
  out->set_id(std::move(wire_id));
  to_wire(m.version, out->mutable_version());
  out->set_created_at_ms(m.created_at_ms);
  out->set_last_access_ms(m.last_access_ms);
  out->set_deadline_ms(m.deadline_ms);
}

std::size_t append_meta_response(const storage::SessionMeta& m, std::string_view wire_id,
                                 std::string* out) {
  // The message to_wire builds: a version always, the rest when not zero or empty.
  const std::size_t size = bytes_field_size(wire_id) + message_field_size(version_size(m.version)) +
                           varint_field_size(int64_bits(m.created_at_ms)) +
                           varint_field_size(int64_bits(m.last_access_ms)) +
                           varint_field_size(int64_bits(m.deadline_ms));
  const std::size_t total = message_field_size(size);
  Writer w = grow(out, total);
  [[maybe_unused]] const char* end = w.position() + total;
  w.message_header(1, size);  // {Create,Update,Touch,Regenerate}Response.session
  w.bytes_field(1, wire_id);
  put_version(2, m.version, w);
  w.varint_field(3, int64_bits(m.created_at_ms));
  w.varint_field(4, int64_bits(m.last_access_ms));
  w.varint_field(5, int64_bits(m.deadline_ms));
  assert(w.position() == end);
  return total;
}

}  // namespace sessiond::daemon
