// Internal to storage: the compact in-memory record and the byte encodings of sessions.
//
// A Record is one allocation: a fixed header (times, timeouts, version, expiry-heap position)
// followed by a blob holding the user id and the fields. Fields whose version equals the
// record's version (the common case: everything written by one create) store a flag instead of
// a 12-byte version. The on-disk value is the header, the context and access log, then the same
// blob verbatim, so persisting copies bytes instead of re-encoding fields.
//
// Blob:   varint user_len, user_id, varint n, n x { varint (name_len << 1 | has_version), name,
//         varint value_len, value, [fixed64 hlc, varint region] if has_version }
// Value:  u8 format (1), fixed64 deadline, varint created, last_access, idle, absolute,
//         fixed64 hlc, varint region, u8 flags (1: context, 2: signed id, bits 2-4: preset + 1
//         or 0), [varint ip_len, ip, fixed64 ua],
//         varint log_n, log_n x { varint time, varint ip_len, ip, fixed64 ua, u8 has_loc,
//         [fixed64 lat, fixed64 lon] }, blob (the rest).
// The deadline sits at a fixed offset so the compaction filter reads it without decoding.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/status.h"
#include "storage/session.h"

namespace sessiond::storage::detail {

inline constexpr std::uint8_t kValueFormat = 1;
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

struct Record {
  SessionId id;
  std::int64_t created_at_ms = 0;
  std::int64_t last_access_ms = 0;
  std::int64_t idle_ms = 0;
  std::int64_t absolute_ms = 0;
  std::uint64_t version_hlc = 0;
  std::unique_ptr<Extras> extras;
  std::uint32_t version_region = 0;
  std::uint32_t heap_index = 0;  // position in the shard's expiry heap
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
  Version version() const { return {version_hlc, version_region}; }
  std::int64_t deadline_ms() const {
    return compute_deadline(created_at_ms, last_access_ms, timeouts());
  }
  std::int64_t persisted_access_ms() const { return last_access_ms - unpersisted_ms; }
  // The deadline as last persisted; never later than deadline_ms().
  std::int64_t persisted_deadline_ms() const {
    return compute_deadline(created_at_ms, persisted_access_ms(), timeouts());
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

// A field by reference: views into a request or into a record's blob.
struct FieldRef {
  std::string_view name;
  std::string_view value;
  Version version;
};

// Encodes user id and fields as a blob; fields must be sorted by name and unique.
void encode_blob(std::string_view user_id, std::span<const FieldRef> fields,
                 const Version& record_version, std::string* out);
// The fields of a blob this process encoded (or that decode_value checked), as views into it.
void blob_fields(std::string_view blob, const Version& record_version, std::vector<FieldRef>* out);
// The user id at the start of a valid blob.
std::string_view blob_user_id(std::string_view blob);

// Fills `out` (reusing its buffers) from a record.
void record_to_session(const Record& record, Session* out);

// The on-disk value of a record, with its persisted last access and deadline; callers that
// persist the current state set unpersisted_ms = 0 first.
void encode_value(const Record& record, std::string* out);
// Rebuilds a record from a stored key and value, checking every length against the input.
Result<RecordPtr> decode_value(std::string_view id, std::string_view value);
// The deadline stored in a value, or nullopt when the value is not ours.
std::optional<std::int64_t> value_deadline(std::string_view value);

}  // namespace sessiond::storage::detail
