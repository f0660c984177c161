// Internal to storage: the compact in-memory record and the byte encodings of sessions,
// tombstones and revocation generations.
//
// A Record is one allocation: a fixed header (times, timeouts, cap, version, expiry-heap
// position) followed by a blob holding the user id, the merge metadata and the fields. Fields,
// timeouts and the birth whose version equals the record's version (the common case: everything
// written by one create) store nothing instead of a version. The on-disk value is the header,
// the context and access log, then the same blob verbatim, so persisting copies bytes instead of
// re-encoding fields.
//
// Blob:   varint user_len, user_id, varint meta (1: timeouts version, 2: generation stamp,
//         4: incarnation, 8: birth version), [fixed64 hlc, varint origin] if 1, [varint stamp] if
//         2, [varint incarnation] if 4, [fixed64 hlc, varint origin] if 8, varint n,
//         n x { varint (name_len << 2 | deleted << 1 | has_version), name, [bytes value] unless
//         deleted, [fixed64 hlc, varint origin] if has_version }
// Value:  u8 format (2), fixed64 deadline, varint created, last_access, idle, absolute, cap,
//         fixed64 hlc, varint origin, u8 flags (1: context, 2: signed id, bits 2-4: preset + 1
//         or 0), [varint ip_len, ip, fixed64 ua], varint log_n, log_n x access entry, blob.
// Tombstone value: u8 format (3), fixed64 keep_until, fixed64 hlc, varint origin, varint
//         incarnation.
// Format 1 (before issue 11: no cap, no node, no merge metadata) is still read, and rewritten as
// format 2 by the upgrade at the first start. An origin is region << 16 | node.
// The deadline (keep_until for tombstones) sits at a fixed offset so the compaction filter reads
// it without decoding.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/status.h"
#include "storage/session.h"

namespace sessiond::storage::detail {

inline constexpr std::uint8_t kValueFormatV1 = 1;  // read only
inline constexpr std::uint8_t kValueFormat = 2;
inline constexpr std::uint8_t kTombstoneFormat = 3;
inline constexpr std::size_t kValueDeadlineOffset = 1;
inline constexpr std::size_t kValueHeaderSize = 9;
// Largest blob a record can hold (Record::blob_size has 28 bits).
inline constexpr std::size_t kMaxBlobBytes = (std::size_t{1} << 28) - 1;

// Context and access history: absent for most sessions until they are read with access
// recording, so they live behind one pointer.
struct Extras {
  std::optional<ClientContext> context;
  std::vector<AccessEntry> access_log;  // oldest first
  bool unsaved_access = false;          // the log holds accesses not yet persisted
};

struct Record;
struct RecordDeleter {
  void operator()(Record* r) const;
};
using RecordPtr = std::unique_ptr<Record, RecordDeleter>;

inline std::uint32_t origin_of(const Version& v) { return v.region << 16 | (v.node & 0xffff); }
inline Version version_at(std::uint64_t hlc, std::uint32_t origin) {
  return {hlc, origin >> 16, origin & 0xffff};
}

struct Record {
  SessionId id;
  std::int64_t created_at_ms = 0;
  std::int64_t last_access_ms = 0;
  std::int64_t idle_ms = 0;
  std::int64_t absolute_ms = 0;
  std::int64_t cap_ms = kNoDeadline;  // lifetime cap (DESIGN §7)
  std::uint64_t version_hlc = 0;
  std::unique_ptr<Extras> extras;
  std::uint32_t version_origin = 0;  // region << 16 | node of the version
  std::uint32_t heap_index = 0;      // position in the shard's expiry heap
  // How far last_access_ms has moved since the last persisted write (touch coalescing). The
  // on-disk deadline derives from last_access_ms - unpersisted_ms.
  std::uint32_t unpersisted_ms = 0;
  std::uint32_t blob_size : 28 = 0;   // sessions are far smaller (TableOptions::max_session_bytes)
  std::uint32_t preset_code : 3 = 0;  // 0: created with explicit timeouts; else Preset + 1
  std::uint32_t signed_id : 1 = 0;    // handed out with an HMAC tag (DESIGN §9)

  // A record with room for `blob` copied after the header; other members zeroed.
  static RecordPtr make(const SessionId& id, std::string_view blob);

  std::string_view blob() const { return {reinterpret_cast<const char*>(this + 1), blob_size}; }
  Timeouts timeouts() const { return {idle_ms, absolute_ms}; }
  std::optional<Preset> preset() const {
    return preset_code == 0 ? std::nullopt
                            : std::optional<Preset>(static_cast<Preset>(preset_code - 1));
  }
  void set_preset(std::optional<Preset> p) {
    preset_code = p ? static_cast<std::uint32_t>(*p) + 1 : 0;
  }
  Version version() const { return version_at(version_hlc, version_origin); }
  void set_version(const Version& v) {
    version_hlc = v.hlc;
    version_origin = origin_of(v);
  }
  std::int64_t deadline_ms() const {
    return std::min(compute_deadline(created_at_ms, last_access_ms, timeouts()), cap_ms);
  }
  std::int64_t persisted_access_ms() const { return last_access_ms - unpersisted_ms; }
  // The deadline as last persisted; never later than deadline_ms().
  std::int64_t persisted_deadline_ms() const {
    return std::min(compute_deadline(created_at_ms, persisted_access_ms(), timeouts()), cap_ms);
  }
  // Heap bytes this record holds (header, blob, extras); used for the memory budget and stats.
  std::size_t footprint() const;
};

// Byte-level helpers.
void put_varint(std::string* out, std::uint64_t v);
void put_fixed64(std::string* out, std::uint64_t v);
bool get_varint(std::string_view* in, std::uint64_t* v);
bool get_fixed64(std::string_view* in, std::uint64_t* v);
bool get_bytes(std::string_view* in, std::string_view* out);  // varint length + bytes

// One access entry: varint time, bytes ip, fixed64 user agent, u8 has_location, [lat, lon].
void put_access_entry(std::string* out, const AccessEntry& e);
bool get_access_entry(std::string_view* in, AccessEntry* e);

// A field by reference: views into a request or into a record's blob. A deleted field is a
// field tombstone: it has no value and wins over older writes of the name (DESIGN §7).
struct FieldRef {
  std::string_view name;
  std::string_view value;
  Version version;
  bool deleted = false;
};

// What the blob holds besides fields, for the merge: the version of the timeouts (the newest
// policy write wins), the user's revocation generation the session was stamped with at birth,
// the incarnation of a keyed record (a keyed delete ends incarnations up to its own), and the
// version of the write that began this incarnation (its birth).
struct BlobMeta {
  std::string_view user_id;
  Version timeouts_version;
  std::uint64_t stamp = 0;
  std::uint32_t incarnation = 0;
  Version birth;
};

// Encodes the meta and the fields as a blob; fields must be sorted by name and unique.
void encode_blob(const BlobMeta& meta, std::span<const FieldRef> fields,
                 const Version& record_version, std::string* out);
// A blob whose meta versions are all the record's (a fresh write): user and fields only.
void encode_blob(std::string_view user_id, std::span<const FieldRef> fields,
                 const Version& record_version, std::string* out);
// The meta of a blob this process encoded (or that decode_value checked).
BlobMeta blob_meta(std::string_view blob, const Version& record_version);
// The fields of a valid blob, field tombstones included, as views into it.
void blob_fields(std::string_view blob, const Version& record_version, std::vector<FieldRef>* out);
// The user id at the start of a valid blob.
std::string_view blob_user_id(std::string_view blob);

// Fills `out` (reusing its buffers) from a record.
void record_to_session(const Record& record, Session* out);

// The on-disk value of a record, with its persisted last access and deadline; callers that
// persist the current state set unpersisted_ms = 0 first.
void encode_value(const Record& record, std::string* out);
// Rebuilds a record from a stored key and value (format 1 or 2), checking every length against
// the input. A format-1 record comes back with cap_ms = kNoDeadline (the table sets it).
Result<RecordPtr> decode_value(std::string_view id, std::string_view value);
// The deadline stored in a value (a tombstone's keep_until), or nullopt when it is not ours.
std::optional<std::int64_t> value_deadline(std::string_view value);
// The format byte of a stored value (0 when empty).
inline std::uint8_t value_format(std::string_view value) {
  return value.empty() ? 0 : static_cast<std::uint8_t>(value.front());
}

// A destroyed session: it beats every state of incarnations up to its own, of any version, and
// is kept (in memory and on disk) until keep_until, its cap plus the skew bound (DESIGN §7).
struct Tombstone {
  Version version;
  std::int64_t keep_until_ms = 0;
  std::uint32_t incarnation = 0;
  friend bool operator==(const Tombstone&, const Tombstone&) = default;
};
void encode_tombstone(const Tombstone& t, std::string* out);
std::optional<Tombstone> decode_tombstone(std::string_view value);

// A user's revocation generation (DESIGN §7): sessions stamped below it are ended, except the
// ids its latest raise kept. Merged by max generation; on equal generations the kept ids are
// intersected, so that the merge is a join whatever the order.
struct Generation {
  std::uint64_t generation = 0;
  std::vector<SessionId> keep;  // sorted, unique
  friend bool operator==(const Generation&, const Generation&) = default;
};
void encode_generation(const Generation& g, std::string* out);
std::optional<Generation> decode_generation(std::string_view value);

}  // namespace sessiond::storage::detail
