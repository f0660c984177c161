#include "storage/detail/record.h"

#include <bit>
#include <cstring>
#include <new>

namespace sessiond::storage::detail {

void RecordDeleter::operator()(Record* r) const {
  r->~Record();
  ::operator delete(r);
}

RecordPtr Record::make(const SessionId& id, std::string_view blob) {
  void* mem = ::operator new(sizeof(Record) + blob.size());
  auto* r = new (mem) Record();
  r->id = id;
  // Callers check max_session_bytes, which the table caps below kMaxBlobBytes.
  r->blob_size = static_cast<std::uint32_t>(blob.size());
  if (!blob.empty())
    std::memcpy(reinterpret_cast<char*>(r) + sizeof(Record), blob.data(), blob.size());
  return RecordPtr(r);
}

std::size_t Record::footprint() const {
  std::size_t bytes = sizeof(Record) + blob_size;
  if (extras) {
    bytes += sizeof(Extras);
    if (extras->context) bytes += extras->context->ip.capacity();
    bytes += extras->access_log.capacity() * sizeof(AccessEntry);
  }
  return bytes;
}

void put_varint(std::string* out, std::uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void put_fixed64(std::string* out, std::uint64_t v) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(v >> (8 * i));
  out->append(buf, 8);
}

bool get_varint(std::string_view* in, std::uint64_t* v) {
  std::uint64_t result = 0;
  for (int shift = 0; shift <= 63 && !in->empty(); shift += 7) {
    const auto byte = static_cast<std::uint8_t>(in->front());
    in->remove_prefix(1);
    result |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

bool get_fixed64(std::string_view* in, std::uint64_t* v) {
  if (in->size() < 8) return false;
  std::uint64_t result = 0;
  for (int i = 0; i < 8; ++i) {
    result |= static_cast<std::uint64_t>(static_cast<std::uint8_t>((*in)[i])) << (8 * i);
  }
  in->remove_prefix(8);
  *v = result;
  return true;
}

bool get_bytes(std::string_view* in, std::string_view* out) {
  std::uint64_t len = 0;
  if (!get_varint(in, &len) || len > in->size()) return false;
  *out = in->substr(0, len);
  in->remove_prefix(len);
  return true;
}

void put_access_entry(std::string* out, const AccessEntry& e) {
  put_varint(out, static_cast<std::uint64_t>(e.time_ms));
  put_varint(out, e.ip.size());
  out->append(e.ip);
  put_fixed64(out, e.user_agent_hash);
  out->push_back(e.has_location ? 1 : 0);
  if (e.has_location) {
    put_fixed64(out, std::bit_cast<std::uint64_t>(e.latitude));
    put_fixed64(out, std::bit_cast<std::uint64_t>(e.longitude));
  }
}

bool get_access_entry(std::string_view* in, AccessEntry* e) {
  std::uint64_t time = 0, lat = 0, lon = 0;
  std::string_view ip;
  if (!get_varint(in, &time) || !get_bytes(in, &ip) || !get_fixed64(in, &e->user_agent_hash) ||
      in->empty() || ip.size() > kMaxIpBytes) {
    return false;
  }
  e->time_ms = static_cast<std::int64_t>(time);
  e->ip.assign(ip);
  e->has_location = in->front() != 0;
  in->remove_prefix(1);
  e->latitude = e->longitude = 0;
  if (e->has_location) {
    if (!get_fixed64(in, &lat) || !get_fixed64(in, &lon)) return false;
    e->latitude = std::bit_cast<double>(lat);
    e->longitude = std::bit_cast<double>(lon);
  }
  return true;
}

namespace {

void put_bytes(std::string* out, std::string_view bytes) {
  put_varint(out, bytes.size());
  out->append(bytes);
}

void put_version(std::string* out, const Version& v) {
  put_fixed64(out, v.hlc);
  put_varint(out, origin_of(v));
}

bool get_version(std::string_view* in, Version* v) {
  std::uint64_t hlc = 0, origin = 0;
  if (!get_fixed64(in, &hlc) || !get_varint(in, &origin) || origin > 0xffffffffu) return false;
  *v = version_at(hlc, static_cast<std::uint32_t>(origin));
  return true;
}

enum MetaFlags : std::uint64_t {
  kTimeoutsVersion = 1,
  kStamp = 2,
  kIncarnation = 4,
  kBirth = 8,
};

// Reads the meta after the user id; false when malformed.
bool read_meta(std::string_view* blob, const Version& record_version, BlobMeta* meta) {
  std::uint64_t flags = 0, v = 0;
  if (!get_bytes(blob, &meta->user_id) || !get_varint(blob, &flags) || flags >= 16) return false;
  meta->timeouts_version = meta->birth = record_version;
  meta->stamp = 0;
  meta->incarnation = 0;
  if ((flags & kTimeoutsVersion) && !get_version(blob, &meta->timeouts_version)) return false;
  if (flags & kStamp) {
    if (!get_varint(blob, &meta->stamp)) return false;
  }
  if (flags & kIncarnation) {
    if (!get_varint(blob, &v) || v > 0xffffffffu) return false;
    meta->incarnation = static_cast<std::uint32_t>(v);
  }
  if ((flags & kBirth) && !get_version(blob, &meta->birth)) return false;
  return true;
}

// Reads one field; false when malformed.
bool read_field(std::string_view* blob, const Version& record_version, FieldRef* f) {
  std::uint64_t head = 0;
  if (!get_varint(blob, &head) || (head >> 2) > blob->size()) return false;
  f->name = blob->substr(0, head >> 2);
  blob->remove_prefix(head >> 2);
  f->deleted = (head & 2) != 0;
  f->value = {};
  if (!f->deleted && !get_bytes(blob, &f->value)) return false;
  f->version = record_version;
  return !(head & 1) || get_version(blob, &f->version);
}

// Checks a blob's structure without building anything (for values read from disk).
bool validate_blob(std::string_view blob) {
  BlobMeta meta;
  const Version any{};
  std::uint64_t n = 0;
  if (!read_meta(&blob, any, &meta) || !get_varint(&blob, &n)) return false;
  if (n > blob.size()) return false;  // every field takes at least 1 byte
  FieldRef prev, f;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (!read_field(&blob, any, &f)) return false;
    if (i > 0 && !(prev.name < f.name)) return false;
    prev = f;
  }
  return blob.empty();
}

// The fields of a format-1 blob (varint user, varint n, n x {varint name_len << 1 | has_version,
// name, bytes value, [fixed64 hlc, varint region]}); false when malformed.
bool read_v1_blob(std::string_view blob, std::uint32_t record_origin, std::string_view* user,
                  std::vector<FieldRef>* fields, std::uint64_t record_hlc) {
  std::uint64_t n = 0;
  if (!get_bytes(&blob, user) || !get_varint(&blob, &n) || n > blob.size()) return false;
  fields->resize(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    FieldRef& f = (*fields)[i];
    std::uint64_t head = 0;
    if (!get_varint(&blob, &head) || (head >> 1) > blob.size()) return false;
    f.name = blob.substr(0, head >> 1);
    blob.remove_prefix(head >> 1);
    if (!get_bytes(&blob, &f.value)) return false;
    if (i > 0 && !((*fields)[i - 1].name < f.name)) return false;
    f.version = version_at(record_hlc, record_origin);
    if (head & 1) {
      std::uint64_t region = 0;
      if (!get_fixed64(&blob, &f.version.hlc) || !get_varint(&blob, &region) ||
          region >= kMaxOrigin) {
        return false;
      }
      f.version.region = static_cast<std::uint32_t>(region);
      f.version.node = 0;
    }
  }
  return blob.empty();
}

}  // namespace

void encode_blob(const BlobMeta& meta, std::span<const FieldRef> fields,
                 const Version& record_version, std::string* out) {
  out->clear();
  put_bytes(out, meta.user_id);
  std::uint64_t flags = 0;
  if (meta.timeouts_version != record_version) flags |= kTimeoutsVersion;
  if (meta.stamp != 0) flags |= kStamp;
  if (meta.incarnation != 0) flags |= kIncarnation;
  if (meta.birth != record_version) flags |= kBirth;
  put_varint(out, flags);
  if (flags & kTimeoutsVersion) put_version(out, meta.timeouts_version);
  if (flags & kStamp) put_varint(out, meta.stamp);
  if (flags & kIncarnation) put_varint(out, meta.incarnation);
  if (flags & kBirth) put_version(out, meta.birth);
  put_varint(out, fields.size());
  for (const FieldRef& f : fields) {
    const bool explicit_version = f.version != record_version;
    put_varint(out, (f.name.size() << 2) | (f.deleted ? 2 : 0) | (explicit_version ? 1 : 0));
    out->append(f.name);
    if (!f.deleted) put_bytes(out, f.value);
    if (explicit_version) put_version(out, f.version);
  }
}

void encode_blob(std::string_view user_id, std::span<const FieldRef> fields,
                 const Version& record_version, std::string* out) {
  BlobMeta meta;
  meta.user_id = user_id;
  meta.timeouts_version = meta.birth = record_version;
  encode_blob(meta, fields, record_version, out);
}

std::string_view blob_user_id(std::string_view blob) {
  std::string_view user;
  get_bytes(&blob, &user);
  return user;
}

BlobMeta blob_meta(std::string_view blob, const Version& record_version) {
  BlobMeta meta;
  read_meta(&blob, record_version, &meta);
  return meta;
}

void blob_fields(std::string_view blob, const Version& record_version, std::vector<FieldRef>* out) {
  std::uint64_t n = 0;
  std::string_view user;
  get_bytes(&blob, &user);
  if (!blob.empty() && blob.front() == 0) {
    blob.remove_prefix(1);  // no meta: the common case, read without decoding it
  } else {
    std::uint64_t flags = 0;
    get_varint(&blob, &flags);
    Version ignored;
    std::uint64_t v = 0;
    if (flags & kTimeoutsVersion) get_version(&blob, &ignored);
    if (flags & kStamp) get_varint(&blob, &v);
    if (flags & kIncarnation) get_varint(&blob, &v);
    if (flags & kBirth) get_version(&blob, &ignored);
  }
  get_varint(&blob, &n);
  out->resize(n);
  for (FieldRef& f : *out) read_field(&blob, record_version, &f);
}

void record_to_session(const Record& r, Session* out) {
  thread_local std::vector<FieldRef> refs;
  out->id = r.id;
  out->user_id.assign(blob_user_id(r.blob()));
  blob_fields(r.blob(), r.version(), &refs);
  out->fields.resize(refs.size());
  std::size_t i = 0;
  for (const FieldRef& f : refs) {
    if (f.deleted) continue;  // field tombstones are for the merge, not for readers
    Field& field = out->fields[i++];
    field.name.assign(f.name);
    field.value.assign(f.value);
    field.version = f.version;
  }
  out->fields.resize(i);
  out->created_at_ms = r.created_at_ms;
  out->last_access_ms = r.last_access_ms;
  out->timeouts = r.timeouts();
  out->cap_ms = r.cap_ms;
  out->version = r.version();
  out->preset = r.preset();
  out->signed_id = r.signed_id != 0;
  if (r.extras) {
    out->context = r.extras->context;
    out->access_log = r.extras->access_log;
  } else {
    out->context.reset();
    out->access_log.clear();
  }
}

void encode_value(const Record& r, std::string* out) {
  out->clear();
  out->push_back(static_cast<char>(kValueFormat));
  put_fixed64(out, static_cast<std::uint64_t>(r.persisted_deadline_ms()));
  put_varint(out, static_cast<std::uint64_t>(r.created_at_ms));
  put_varint(out, static_cast<std::uint64_t>(r.persisted_access_ms()));
  put_varint(out, static_cast<std::uint64_t>(r.idle_ms));
  put_varint(out, static_cast<std::uint64_t>(r.absolute_ms));
  put_varint(out, static_cast<std::uint64_t>(r.cap_ms));
  put_fixed64(out, r.version_hlc);
  put_varint(out, r.version_origin);
  const bool has_context = r.extras && r.extras->context;
  out->push_back(
      static_cast<char>((has_context ? 1 : 0) | (r.signed_id ? 2 : 0) | (r.preset_code << 2)));
  if (has_context) {
    put_bytes(out, r.extras->context->ip);
    put_fixed64(out, r.extras->context->user_agent_hash);
  }
  const std::size_t log_n = r.extras ? r.extras->access_log.size() : 0;
  put_varint(out, log_n);
  for (std::size_t i = 0; i < log_n; ++i) put_access_entry(out, r.extras->access_log[i]);
  out->append(r.blob());
}

std::optional<std::int64_t> value_deadline(std::string_view value) {
  const std::uint8_t format = value_format(value);
  if (value.size() < kValueHeaderSize ||
      (format != kValueFormatV1 && format != kValueFormat && format != kTombstoneFormat)) {
    return std::nullopt;
  }
  value.remove_prefix(kValueDeadlineOffset);
  std::uint64_t deadline = 0;
  get_fixed64(&value, &deadline);
  return static_cast<std::int64_t>(deadline);
}

Result<RecordPtr> decode_value(std::string_view id, std::string_view value) {
  const auto corrupt = [&](std::string_view what) {
    return Status::Internal("corrupt session record (" + std::string(what) + ", " +
                            std::to_string(value.size()) + " bytes)");
  };
  if (id.size() != sizeof(SessionId)) return corrupt("key is not a 32-byte id");
  const std::uint8_t format = value_format(value);
  if (format != kValueFormat && format != kValueFormatV1) return corrupt("unknown record format");
  const bool v1 = format == kValueFormatV1;
  std::string_view in = value.substr(1);
  std::uint64_t deadline = 0, created = 0, access = 0, idle = 0, absolute = 0, hlc = 0, origin = 0;
  std::uint64_t cap = static_cast<std::uint64_t>(kNoDeadline);
  if (!get_fixed64(&in, &deadline) || !get_varint(&in, &created) || !get_varint(&in, &access) ||
      !get_varint(&in, &idle) || !get_varint(&in, &absolute) || (!v1 && !get_varint(&in, &cap)) ||
      !get_fixed64(&in, &hlc) || !get_varint(&in, &origin) || in.empty()) {
    return corrupt("truncated header");
  }
  if (v1) {
    if (origin >= kMaxOrigin) return corrupt("region out of range");
    origin <<= 16;  // a format-1 version holds the region only
  }
  if (origin > 0xffffffffu || cap > static_cast<std::uint64_t>(kNoDeadline)) {
    return corrupt("bad version or cap");
  }
  const auto flags = static_cast<std::uint8_t>(in.front());
  in.remove_prefix(1);
  auto extras = std::make_unique<Extras>();
  if (flags >= 32) return corrupt("unknown flags");
  if (flags & 1) {
    std::string_view ip;
    std::uint64_t ua = 0;
    if (!get_bytes(&in, &ip) || !get_fixed64(&in, &ua)) return corrupt("truncated context");
    extras->context = ClientContext{std::string(ip), ua};
  }
  std::uint64_t log_n = 0;
  if (!get_varint(&in, &log_n) || log_n > in.size()) return corrupt("bad access log length");
  extras->access_log.resize(log_n);
  for (AccessEntry& e : extras->access_log) {
    if (!get_access_entry(&in, &e)) return corrupt("truncated access log");
  }
  std::string upgraded;
  if (v1) {
    std::string_view user;
    std::vector<FieldRef> fields;
    if (!read_v1_blob(in, static_cast<std::uint32_t>(origin), &user, &fields, hlc)) {
      return corrupt("bad fields");
    }
    encode_blob(user, fields, version_at(hlc, static_cast<std::uint32_t>(origin)), &upgraded);
    in = upgraded;
  } else if (!validate_blob(in)) {
    return corrupt("bad fields");
  }

  SessionId sid;
  std::memcpy(sid.data(), id.data(), sid.size());
  RecordPtr r = Record::make(sid, in);
  r->created_at_ms = static_cast<std::int64_t>(created);
  r->last_access_ms = static_cast<std::int64_t>(access);
  r->idle_ms = static_cast<std::int64_t>(idle);
  r->absolute_ms = static_cast<std::int64_t>(absolute);
  r->cap_ms = static_cast<std::int64_t>(cap);
  r->version_hlc = hlc;
  r->version_origin = static_cast<std::uint32_t>(origin);
  r->signed_id = (flags & 2) ? 1 : 0;
  if (((flags >> 2) & 7) > 5) return corrupt("unknown preset");
  r->preset_code = (flags >> 2) & 7u;
  if (extras->context || !extras->access_log.empty()) r->extras = std::move(extras);
  if (static_cast<std::int64_t>(deadline) != r->persisted_deadline_ms()) {
    return corrupt("deadline does not match timeouts");
  }
  return r;
}

void encode_tombstone(const Tombstone& t, std::string* out) {
  out->clear();
  out->push_back(static_cast<char>(kTombstoneFormat));
  put_fixed64(out, static_cast<std::uint64_t>(t.keep_until_ms));
  put_version(out, t.version);
  put_varint(out, t.incarnation);
}

std::optional<Tombstone> decode_tombstone(std::string_view value) {
  if (value_format(value) != kTombstoneFormat) return std::nullopt;
  value.remove_prefix(1);
  Tombstone t;
  std::uint64_t keep = 0, incarnation = 0;
  if (!get_fixed64(&value, &keep) || !get_version(&value, &t.version) ||
      !get_varint(&value, &incarnation) || incarnation > 0xffffffffu || !value.empty()) {
    return std::nullopt;
  }
  t.keep_until_ms = static_cast<std::int64_t>(keep);
  t.incarnation = static_cast<std::uint32_t>(incarnation);
  return t;
}

void encode_generation(const Generation& g, std::string* out) {
  out->clear();
  put_varint(out, g.generation);
  put_varint(out, g.keep.size());
  for (const SessionId& id : g.keep)
    out->append(reinterpret_cast<const char*>(id.data()), id.size());
}

std::optional<Generation> decode_generation(std::string_view value) {
  Generation g;
  std::uint64_t n = 0;
  if (!get_varint(&value, &g.generation) || !get_varint(&value, &n) ||
      n * sizeof(SessionId) != value.size()) {
    return std::nullopt;
  }
  g.keep.resize(n);
  for (SessionId& id : g.keep) {
    std::memcpy(id.data(), value.data(), id.size());
    value.remove_prefix(id.size());
  }
  if (!std::is_sorted(g.keep.begin(), g.keep.end())) return std::nullopt;
  return g;
}

}  // namespace sessiond::storage::detail
