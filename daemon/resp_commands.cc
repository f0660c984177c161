// Each command follows Redis 7.0's implementation of it: the order of its checks (arity, then
// options, then numbers, then the key's type), its replies and its error texts, so that clients
// and scripts written against Redis see the same answers. Writes are one SessionTable::rewrite()
// (or move()) each: the decision runs under the key's shard lock and is persisted before the
// reply is sent; a reply computed inside a decision is kept aside and sent only if the write
// succeeded.
#include "daemon/resp_commands.h"

#include <absl/container/flat_hash_map.h>
#include <absl/synchronization/mutex.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "daemon/resp.h"
#include "protocol/version.h"

namespace sessiond::daemon::resp {

using storage::Field;
using storage::Rewrite;
using storage::Session;
using storage::SessionId;

storage::SessionId key_id(std::string_view key, int db) {
  // The domain and its NUL come first, so no key hashes like a key of another namespace (or
  // database: "sessiond-resp\0" and "sessiond-resp-dbN\0" differ before either ends). The
  // digest is fetched once and each thread keeps a context: OpenSSL's one-shot SHA256() looks
  // the algorithm up under a lock on every call.
  static const std::array<std::string, kDatabases> kDomains = [] {
    std::array<std::string, kDatabases> d;
    d[0] = std::string("sessiond-resp\0", 14);
    for (int i = 1; i < kDatabases; ++i) d[i] = "sessiond-resp-db" + std::to_string(i) + '\0';
    return d;
  }();
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                                 EVP_MD_CTX_free);
  const std::string& domain = kDomains[static_cast<std::size_t>(db) % kDatabases];
  SessionId id;
  unsigned int size = 0;
  if (sha256 == nullptr || ctx == nullptr || EVP_DigestInit_ex2(ctx.get(), sha256, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), domain.data(), domain.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), key.data(), key.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), id.data(), &size) != 1 || size != id.size()) {
    std::abort();  // only when OpenSSL itself is broken: no key could be found again
  }
  return id;
}

namespace {

// Matches one pattern element at p[*pi] (a literal, \x, ? or a [class]) against `ch`, and
// moves *pi past it. An unterminated class runs to the end of the pattern, as in Redis.
bool match_one(std::string_view p, std::size_t* pi, char ch) {
  const char c = p[*pi];
  if (c == '?') {
    ++*pi;
    return true;
  }
  if (c == '[') {
    std::size_t j = *pi + 1;
    const bool negate = j < p.size() && p[j] == '^';
    if (negate) ++j;
    bool match = false;
    while (j < p.size() && p[j] != ']') {
      if (p[j] == '\\' && j + 1 < p.size()) {
        ++j;
        if (p[j] == ch) match = true;
      } else if (j + 2 < p.size() && p[j + 1] == '-') {
        char lo = p[j], hi = p[j + 2];
        if (lo > hi) std::swap(lo, hi);
        if (ch >= lo && ch <= hi) match = true;
        j += 2;
      } else if (p[j] == ch) {
        match = true;
      }
      ++j;
    }
    *pi = j < p.size() ? j + 1 : j;
    return match != negate;
  }
  if (c == '\\' && *pi + 1 < p.size()) ++*pi;
  return p[(*pi)++] == ch;
}

}  // namespace

// Iterative, with backtracking to the last '*' only: O(pattern x text) for any input (a
// recursive matcher is exponential on patterns like *a*a*a*...b).
bool glob_match(std::string_view p, std::string_view s) {
  constexpr std::size_t kNone = std::string_view::npos;
  std::size_t pi = 0, si = 0, star = kNone, star_si = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      while (pi < p.size() && p[pi] == '*') ++pi;
      star = pi;
      star_si = si;
      continue;
    }
    std::size_t next = pi;
    if (pi < p.size() && match_one(p, &next, s[si])) {
      pi = next;
      ++si;
      continue;
    }
    if (star == kNone) return false;
    pi = star;  // let the last '*' take one more character
    si = ++star_si;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

// Keyspace notification classes (Redis's notify-keyspace-events characters).
enum Notify : int {
  kNotifyKeyspace = 1 << 0,  // K
  kNotifyKeyevent = 1 << 1,  // E
  kNotifyGeneric = 1 << 2,   // g
  kNotifyString = 1 << 3,    // $
  kNotifyList = 1 << 4,      // l
  kNotifySet = 1 << 5,       // s
  kNotifyHash = 1 << 6,      // h
  kNotifyZset = 1 << 7,      // z
  kNotifyExpired = 1 << 8,   // x
  kNotifyEvicted = 1 << 9,   // e
  kNotifyStream = 1 << 10,   // t
  kNotifyKeyMiss = 1 << 11,  // m
  kNotifyModule = 1 << 12,   // d
  kNotifyNew = 1 << 13,      // n
  kNotifyAll = kNotifyGeneric | kNotifyString | kNotifyList | kNotifySet | kNotifyHash |
               kNotifyZset | kNotifyExpired | kNotifyEvicted | kNotifyStream | kNotifyModule,
};

// What every connection shares: the lock that makes EXEC atomic (EXEC holds it exclusively,
// every other command shared), the WATCH registry (fed by the table's mutation and expiry
// observers), the channels, and the notification classes (CONFIG SET notify-keyspace-events).
struct Commands::Shared {
  absl::Mutex tx;
  PubSub pubsub;
  std::atomic<int> notify{0};
  std::mutex watch_mu;
  absl::flat_hash_map<SessionId, std::vector<Watching*>> watched;  // guarded by watch_mu
  std::atomic<std::size_t> watches{0};  // entries in `watched`: observers skip when 0
  std::uint64_t observer = 0;

  // A watched key changed or went: its watchers' EXEC will fail.
  void touched(const SessionId& id);
  // Publishes `event` for `key` of database `db` when its class is on (keyspace and keyevent
  // channels, as Redis's notifyKeyspaceEvent).
  void notify_event(int type, std::string_view event, std::string_view key, int db);
};

struct Watching {
  Commands::Shared* shared = nullptr;
  std::vector<SessionId> ids;
  std::atomic<bool> dirty{false};
};

void WatchingDeleter::operator()(Watching* w) const {
  {
    std::lock_guard lock(w->shared->watch_mu);
    for (const SessionId& id : w->ids) {
      auto it = w->shared->watched.find(id);
      if (it == w->shared->watched.end()) continue;
      std::erase(it->second, w);
      if (it->second.empty()) {
        w->shared->watched.erase(it);
        w->shared->watches.fetch_sub(1, std::memory_order_relaxed);
      }
    }
  }
  delete w;
}

void Commands::Shared::touched(const SessionId& id) {
  if (watches.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard lock(watch_mu);
  auto it = watched.find(id);
  if (it == watched.end()) return;
  for (Watching* w : it->second) w->dirty.store(true, std::memory_order_relaxed);
}

void Commands::Shared::notify_event(int type, std::string_view event, std::string_view key,
                                    int db) {
  const int flags = notify.load(std::memory_order_relaxed);
  if ((flags & type) == 0 || (flags & (kNotifyKeyspace | kNotifyKeyevent)) == 0 ||
      !pubsub.has_subscribers()) {
    return;
  }
  const std::string at = "@" + std::to_string(db) + "__:";
  if (flags & kNotifyKeyspace) {
    pubsub.publish("__keyspace" + at + std::string(key), event);
  }
  if (flags & kNotifyKeyevent) {
    pubsub.publish("__keyevent" + at + std::string(event), key);
  }
}

namespace {

// Field names: the key, a string's value, and prefixes for hash fields, set members and sorted
// set members.
constexpr std::string_view kKeyField = "K";
constexpr std::string_view kValueField = "V";
constexpr char kHashPrefix = 'H';
constexpr char kSetPrefix = 'S';
constexpr char kZsetPrefix = 'Z';
// The engine accepts timeouts up to 100 years; a longer TTL is an invalid expire time.
constexpr std::int64_t kMaxTtlMs = 100LL * 365 * 24 * 3600 * 1000;

enum class Type { kNone, kString, kHash, kSet, kZset };

// The type of the key's value in `s` (fields are sorted: "H..." < "K" < "S..." < "V" < "Z...").
Type type_of(const Session* s, std::string_view key) {
  if (s == nullptr || s->fields.empty()) return Type::kNone;
  const Field* k = s->field(kKeyField);
  if (k == nullptr || k->value != key) return Type::kNone;
  if (s->fields.front().name[0] == kHashPrefix) return Type::kHash;
  const std::string& last = s->fields.back().name;
  if (last == kValueField) return Type::kString;
  if (last[0] == kSetPrefix) return Type::kSet;
  if (last[0] == kZsetPrefix) return Type::kZset;
  return Type::kNone;
}

std::string_view type_name(Type t) {
  switch (t) {
    case Type::kString:
      return "string";
    case Type::kHash:
      return "hash";
    case Type::kSet:
      return "set";
    case Type::kZset:
      return "zset";
    case Type::kNone:
      break;
  }
  return "none";
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// Redis's string2ll: an optional '-', then digits without a leading zero (or just "0").
bool parse_ll(std::string_view s, std::int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  std::size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  if (s[i] == '0' && s.size() > i + 1) return false;
  if (s[i] == '0' && i == 1) return false;  // "-0"
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// ---- replies -----------------------------------------------------------------------------

void err_syntax(std::string* out) { append_error(out, "ERR syntax error"); }
void err_not_integer(std::string* out) {
  append_error(out, "ERR value is not an integer or out of range");
}
void err_wrong_type(std::string* out) {
  append_error(out, "WRONGTYPE Operation against a key holding the wrong kind of value");
}
void err_arity(std::string* out, std::string_view command) {
  append_error(out, "ERR wrong number of arguments for '" + std::string(command) + "' command");
}
void err_expire(std::string* out, std::string_view command) {
  append_error(out, "ERR invalid expire time in '" + std::string(command) + "' command");
}
void err_status(std::string* out, const Status& s) {
  switch (s.code()) {
    case StatusCode::kOverloaded:
      append_error(out, "OOM command not allowed: " + s.message());
      return;
    default:
      append_error(out, "ERR " + s.message());
  }
}

// ---- the command context -------------------------------------------------------------------

struct Ctx {
  storage::SessionTable& table;
  const storage::Clock& clock;
  const NodeInfo& info;
  ClientState& client;
  std::span<const std::string_view> args;
  std::string* out;
  std::string_view name;  // lower case, as in Redis's error texts
  Commands::Shared& shared;
};

// The id of `key` in the connection's database.
SessionId id_of(const Ctx& c, std::string_view key) { return key_id(key, c.client.db); }

// A keyspace notification for `key` of the connection's database.
void notify(const Ctx& c, int type, std::string_view event, std::string_view key) {
  c.shared.notify_event(type, event, key, c.client.db);
}

// The alive value of `key`, read into a per-thread session (valid until the next lookup).
Type lookup(Ctx& c, std::string_view key, const Session** found) {
  thread_local Session session;
  *found = nullptr;
  if (!c.table.get(id_of(c, key), {}, &session).ok()) return Type::kNone;
  *found = &session;
  return type_of(&session, key);
}

bool key_too_long(Ctx& c, std::string_view key) {
  if (key.size() <= kMaxKeyBytes) return false;
  append_error(c.out, "ERR key is " + std::to_string(key.size()) + " bytes; the limit is " +
                          std::to_string(kMaxKeyBytes));
  return true;
}

// True, after replacing what the command appended since `start` with an error, when its reply
// has passed NodeInfo::max_reply_bytes: commands whose reply grows with their arguments or the
// data call it as they go, so that no reply is ever built whole past the limit.
bool reply_too_large(Ctx& c, std::size_t start) {
  const std::size_t limit = c.info.max_reply_bytes;
  if (limit == 0 || c.out->size() - start <= limit) return false;
  c.out->resize(start);
  append_error(c.out, "ERR the reply would be larger than " + std::to_string(limit) +
                          " bytes (--max-output-bytes): ask for less at a time");
  return true;
}

// Timeouts that put the deadline at `deadline_ms` for a session created at `created_ms`.
storage::Timeouts timeouts_for(std::int64_t deadline_ms, std::int64_t created_ms) {
  if (deadline_ms == storage::kNoDeadline) return {};
  return {0, deadline_ms - created_ms};
}

std::int64_t deadline_of(const Session& s) { return s.deadline_ms(); }

std::vector<std::pair<std::string, std::string>> string_fields(std::string_view key,
                                                               std::string_view value) {
  std::vector<std::pair<std::string, std::string>> f;
  f.reserve(2);
  f.emplace_back(kKeyField, key);
  f.emplace_back(kValueField, value);
  return f;
}

// The names that come after a one-byte prefix ('H' or 'S') in a session's fields.
std::vector<const Field*> prefixed(const Session& s, char prefix) {
  std::vector<const Field*> out;
  for (const Field& f : s.fields) {
    if (!f.name.empty() && f.name[0] == prefix) out.push_back(&f);
  }
  return out;
}

std::string with_prefix(char prefix, std::string_view name) {
  std::string out;
  out.reserve(name.size() + 1);
  out.push_back(prefix);
  out.append(name);
  return out;
}

// Runs a write; on success appends `reply`, else the error.
void finish(Ctx& c, const Status& s, const std::string& reply) {
  if (s.ok()) {
    c.out->append(reply);
  } else {
    err_status(c.out, s);
  }
}

// ---- expiry arguments (SET, GETEX) ---------------------------------------------------------

enum class ExpireKind { kNone, kEx, kPx, kExAt, kPxAt, kKeepTtl, kPersist };

// Redis's getExpireMillisecondsOrReply: the absolute deadline in ms, or false after replying.
bool expire_deadline(Ctx& c, ExpireKind kind, std::string_view value, std::int64_t now,
                     std::int64_t* deadline, std::string* out = nullptr) {
  if (out == nullptr) out = c.out;
  std::int64_t v = 0;
  if (!parse_ll(value, &v)) {
    err_not_integer(out);
    return false;
  }
  const bool seconds = kind == ExpireKind::kEx || kind == ExpireKind::kExAt;
  if (v <= 0 || (seconds && v > LLONG_MAX / 1000)) {
    err_expire(out, c.name);
    return false;
  }
  if (seconds) v *= 1000;
  if (kind == ExpireKind::kEx || kind == ExpireKind::kPx) {
    if (v > LLONG_MAX - now) {
      err_expire(out, c.name);
      return false;
    }
    v += now;
  }
  if (v - now > kMaxTtlMs) {  // sessiond's limit, not Redis's
    err_expire(out, c.name);
    return false;
  }
  *deadline = v;
  return true;
}

// Moves the key's deadline to `deadline` (kNoDeadline: none; must be after `at`). The engine
// measures an absolute timeout from the session's creation; when that is out of its range (an
// old key given a long TTL, or a wall clock that stepped back) the key is written anew,
// created now, with the same contents.
void set_deadline(const Session& cur, std::int64_t deadline, std::int64_t at, Rewrite* w) {
  const std::int64_t absolute = deadline - cur.created_at_ms;
  if (deadline == storage::kNoDeadline || (absolute > 0 && absolute <= kMaxTtlMs)) {
    w->kind = Rewrite::Kind::kChange;
    w->changes.timeouts = timeouts_for(deadline, cur.created_at_ms);
    return;
  }
  w->kind = Rewrite::Kind::kPut;
  w->fields.clear();
  for (const Field& f : cur.fields) w->fields.emplace_back(f.name, f.value);
  w->timeouts = timeouts_for(deadline, at);
}

struct StringOptions {
  bool nx = false, xx = false, get = false;
  ExpireKind expire = ExpireKind::kNone;
  std::string_view expire_value;
};

// Redis's parseExtendedStringArgumentsOrReply, for SET (is_set) and GETEX.
bool parse_string_options(Ctx& c, std::size_t first, bool is_set, StringOptions* o) {
  auto timed = [&] {
    return o->expire == ExpireKind::kEx || o->expire == ExpireKind::kPx ||
           o->expire == ExpireKind::kExAt || o->expire == ExpireKind::kPxAt;
  };
  for (std::size_t j = first; j < c.args.size(); ++j) {
    const std::string_view opt = c.args[j];
    const bool has_next = j + 1 < c.args.size();
    const ExpireKind e = o->expire;
    if (is_set && iequals(opt, "nx") && !o->xx) {
      o->nx = true;
    } else if (is_set && iequals(opt, "xx") && !o->nx) {
      o->xx = true;
    } else if (is_set && iequals(opt, "get")) {
      o->get = true;
    } else if (is_set && iequals(opt, "keepttl") && e != ExpireKind::kPersist && !timed()) {
      o->expire = ExpireKind::kKeepTtl;
    } else if (!is_set && iequals(opt, "persist") && e != ExpireKind::kKeepTtl && !timed()) {
      o->expire = ExpireKind::kPersist;
    } else if (has_next && iequals(opt, "ex") && (e == ExpireKind::kNone || e == ExpireKind::kEx)) {
      o->expire = ExpireKind::kEx;
      o->expire_value = c.args[++j];
    } else if (has_next && iequals(opt, "px") && (e == ExpireKind::kNone || e == ExpireKind::kPx)) {
      o->expire = ExpireKind::kPx;
      o->expire_value = c.args[++j];
    } else if (has_next && iequals(opt, "exat") &&
               (e == ExpireKind::kNone || e == ExpireKind::kExAt)) {
      o->expire = ExpireKind::kExAt;
      o->expire_value = c.args[++j];
    } else if (has_next && iequals(opt, "pxat") &&
               (e == ExpireKind::kNone || e == ExpireKind::kPxAt)) {
      o->expire = ExpireKind::kPxAt;
      o->expire_value = c.args[++j];
    } else {
      err_syntax(c.out);
      return false;
    }
  }
  return true;
}

// ---- strings -------------------------------------------------------------------------------

void cmd_get(Ctx& c) {
  const Session* s;
  switch (lookup(c, c.args[1], &s)) {
    case Type::kNone:
      return append_null(c.out);
    case Type::kString:
      return append_bulk(c.out, s->field(kValueField)->value);
    default:
      return err_wrong_type(c.out);
  }
}

// SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT t|KEEPTTL], and SETEX/PSETEX through it, in
// two steps so that a pipeline's SETs can share one write (Commands::execute_all): checking the
// arguments, then the decision on the key's current value.
struct SetRequest {
  std::string_view key, value;
  int db = 0;
  StringOptions options;
  std::int64_t deadline = storage::kNoDeadline;
  std::string reply;
  bool created = false, written = false;  // for the keyspace notifications

  void decide(const Session* cur, std::int64_t at, Rewrite* w) {
    const StringOptions& o = options;
    const Type t = type_of(cur, key);
    if (o.get) {
      if (t != Type::kNone && t != Type::kString) return err_wrong_type(&reply);
      if (t == Type::kString) {
        append_bulk(&reply, cur->field(kValueField)->value);
      } else {
        append_null(&reply);
      }
    }
    if ((o.nx && t != Type::kNone) || (o.xx && t == Type::kNone)) {
      if (!o.get) append_null(&reply);
      return;
    }
    if (!o.get) append_simple(&reply, "OK");
    std::int64_t d = deadline;
    if (o.expire == ExpireKind::kKeepTtl && t != Type::kNone) d = deadline_of(*cur);
    if (d <= at) {  // a deadline in the past: set, then expired at once
      w->kind = Rewrite::Kind::kDelete;
      return;
    }
    w->kind = Rewrite::Kind::kPut;
    w->fields = string_fields(key, value);
    w->timeouts = timeouts_for(d, at);
    created = t == Type::kNone;
    written = true;
  }

  // The notifications of a SET that was applied: new, set, and expire when it set a TTL.
  void notify(Commands::Shared& shared) const {
    if (!written) return;
    if (created) shared.notify_event(kNotifyNew, "new", key, db);
    shared.notify_event(kNotifyString, "set", key, db);
    if (options.expire != ExpireKind::kNone && options.expire != ExpireKind::kKeepTtl) {
      shared.notify_event(kNotifyGeneric, "expire", key, db);
    }
  }
};

// Checks a SET, SETEX or PSETEX (c.name) and fills *r; false after replying the error.
bool prepare_set(Ctx& c, SetRequest* r) {
  r->key = c.args[1];
  r->db = c.client.db;
  if (c.name == "set") {
    r->value = c.args[2];
    if (!parse_string_options(c, 3, true, &r->options)) return false;
  } else {  // SETEX key seconds value; PSETEX key milliseconds value
    r->value = c.args[3];
    r->options.expire = c.name == "setex" ? ExpireKind::kEx : ExpireKind::kPx;
    r->options.expire_value = c.args[2];
  }
  const ExpireKind e = r->options.expire;
  if (e != ExpireKind::kNone && e != ExpireKind::kKeepTtl &&
      !expire_deadline(c, e, r->options.expire_value, c.clock.now_ms(), &r->deadline)) {
    return false;
  }
  return !key_too_long(c, r->key);
}

// Runs SETs as one SessionTable::rewrite_batch and appends each reply (or error) to
// *outs[i], in order.
void run_sets(storage::SessionTable& table, Commands::Shared& shared,
              std::span<SetRequest> requests, std::span<std::string* const> outs) {
  if (requests.empty()) return;
  // RewriteFn refers to its callable, so the callables live in `deciders` for the call.
  struct Decider {
    SetRequest* request;
    void operator()(const Session* cur, std::int64_t at, Rewrite* w) const {
      request->decide(cur, at, w);
    }
  };
  std::vector<storage::SessionId> ids;
  std::vector<Decider> deciders;
  ids.reserve(requests.size());
  deciders.reserve(requests.size());
  for (SetRequest& r : requests) {
    ids.push_back(key_id(r.key, r.db));
    deciders.push_back(Decider{&r});
  }
  const std::vector<storage::RewriteFn> decides(deciders.begin(), deciders.end());
  std::vector<Status> statuses(requests.size());
  table.rewrite_batch(ids, decides, statuses);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (statuses[i].ok()) {
      outs[i]->append(requests[i].reply);
      requests[i].notify(shared);
    } else {
      err_status(outs[i], statuses[i]);
    }
  }
}

void cmd_set(Ctx& c) {  // SET, SETEX, PSETEX
  SetRequest r;
  if (!prepare_set(c, &r)) return;
  Status s = c.table.rewrite(id_of(c, r.key), [&](const Session* cur, std::int64_t at, Rewrite* w) {
    r.decide(cur, at, w);
  });
  finish(c, s, r.reply);
  if (s.ok()) r.notify(c.shared);
}

void cmd_setnx(Ctx& c) {
  const std::string_view key = c.args[1], value = c.args[2];
  if (key_too_long(c, key)) return;
  bool created = false;
  Status s = c.table.rewrite(id_of(c, key), [&](const Session* cur, std::int64_t at, Rewrite* w) {
    if (type_of(cur, key) != Type::kNone) return;
    w->kind = Rewrite::Kind::kPut;
    w->fields = string_fields(key, value);
    w->timeouts = timeouts_for(storage::kNoDeadline, at);
    created = true;
  });
  if (!s.ok()) return err_status(c.out, s);
  append_integer(c.out, created ? 1 : 0);
  if (!created) return;
  notify(c, kNotifyNew, "new", key);
  notify(c, kNotifyString, "set", key);
}

void cmd_append(Ctx& c) {  // keeps the key's TTL, as in Redis
  const std::string_view key = c.args[1], value = c.args[2];
  if (key_too_long(c, key)) return;
  std::int64_t length = 0;
  bool wrong_type = false, created = false;
  Status s = c.table.rewrite(id_of(c, key), [&](const Session* cur, std::int64_t at, Rewrite* w) {
    const Type t = type_of(cur, key);
    if (t == Type::kNone) {
      w->kind = Rewrite::Kind::kPut;
      w->fields = string_fields(key, value);
      w->timeouts = timeouts_for(storage::kNoDeadline, at);
      length = static_cast<std::int64_t>(value.size());
      created = true;
      return;
    }
    if (t != Type::kString) {
      wrong_type = true;
      return;
    }
    std::string joined = cur->field(kValueField)->value;
    joined.append(value);
    length = static_cast<std::int64_t>(joined.size());
    w->kind = Rewrite::Kind::kChange;
    w->changes.set.emplace_back(kValueField, std::move(joined));
  });
  if (wrong_type) return err_wrong_type(c.out);
  if (!s.ok()) return err_status(c.out, s);
  append_integer(c.out, length);
  if (created) notify(c, kNotifyNew, "new", key);
  notify(c, kNotifyString, "append", key);
}

void cmd_getex(Ctx& c) {  // Redis 7.0's order: options, the key and its type, the time
  StringOptions o;
  if (!parse_string_options(c, 2, false, &o)) return;
  const std::string_view key = c.args[1];
  std::string reply;
  std::string_view event;
  Status s = c.table.rewrite(id_of(c, key), [&](const Session* cur, std::int64_t at, Rewrite* w) {
    const Type t = type_of(cur, key);
    if (t == Type::kNone) return append_null(&reply);
    if (t != Type::kString) return err_wrong_type(&reply);
    std::int64_t deadline = storage::kNoDeadline;
    if (o.expire != ExpireKind::kNone && o.expire != ExpireKind::kPersist &&
        !expire_deadline(c, o.expire, o.expire_value, at, &deadline, &reply)) {
      return;
    }
    append_bulk(&reply, cur->field(kValueField)->value);
    if (o.expire == ExpireKind::kNone) return;
    if (o.expire == ExpireKind::kPersist) {
      if (deadline_of(*cur) != storage::kNoDeadline) set_deadline(*cur, deadline, at, w);
      event = w->kind == Rewrite::Kind::kKeep ? "" : "persist";
      return;
    }
    if (deadline <= at) {
      w->kind = Rewrite::Kind::kDelete;
      event = "del";
      return;
    }
    set_deadline(*cur, deadline, at, w);
    event = "expire";
  });
  finish(c, s, reply);
  if (s.ok() && !event.empty()) notify(c, kNotifyGeneric, event, key);
}

void cmd_getdel(Ctx& c) {
  const std::string_view key = c.args[1];
  std::string reply;
  Status s = c.table.rewrite(id_of(c, key), [&](const Session* cur, std::int64_t, Rewrite* w) {
    const Type t = type_of(cur, key);
    if (t == Type::kNone) return append_null(&reply);
    if (t != Type::kString) return err_wrong_type(&reply);
    append_bulk(&reply, cur->field(kValueField)->value);
    w->kind = Rewrite::Kind::kDelete;
  });
  finish(c, s, reply);
  if (s.ok() && reply[0] == '$' && reply[1] != '-') notify(c, kNotifyGeneric, "del", key);
}

void cmd_mget(Ctx& c) {
  const std::size_t start = c.out->size();
  append_array_header(c.out, c.args.size() - 1);
  for (std::size_t i = 1; i < c.args.size(); ++i) {
    const Session* s;
    if (lookup(c, c.args[i], &s) == Type::kString) {
      append_bulk(c.out, s->field(kValueField)->value);
      if (reply_too_large(c, start)) return;
    } else {
      append_null(c.out);
    }
  }
}

// ---- keys ----------------------------------------------------------------------------------

// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT key time [NX|XX|GT|LT] (Redis's expireGenericCommand).
void cmd_expire(Ctx& c) {
  bool nx = false, xx = false, gt = false, lt = false;
  for (std::size_t j = 3; j < c.args.size(); ++j) {
    if (iequals(c.args[j], "nx")) {
      nx = true;
    } else if (iequals(c.args[j], "xx")) {
      xx = true;
    } else if (iequals(c.args[j], "gt")) {
      gt = true;
    } else if (iequals(c.args[j], "lt")) {
      lt = true;
    } else {
      return append_error(c.out, "ERR Unsupported option " + std::string(c.args[j]));
    }
  }
  if (nx && (xx || gt || lt)) {
    return append_error(c.out,
                        "ERR NX and XX, GT or LT options at the same time are not compatible");
  }
  if (gt && lt) {
    return append_error(c.out, "ERR GT and LT options at the same time are not compatible");
  }
  std::int64_t when = 0;
  if (!parse_ll(c.args[2], &when)) return err_not_integer(c.out);
  const bool seconds = c.name == "expire" || c.name == "expireat";
  const bool relative = c.name == "expire" || c.name == "pexpire";
  const std::int64_t now = c.clock.now_ms();
  if (seconds) {
    if (when > LLONG_MAX / 1000 || when < LLONG_MIN / 1000) return err_expire(c.out, c.name);
    when *= 1000;
  }
  const std::int64_t base = relative ? now : 0;
  if (when > LLONG_MAX - base) return err_expire(c.out, c.name);
  when += base;
  if (when > now && when - now > kMaxTtlMs) return err_expire(c.out, c.name);  // sessiond's

  const std::string_view key = c.args[1];
  std::string reply;
  std::string_view event;
  Status s = c.table.rewrite(id_of(c, key), [&](const Session* cur, std::int64_t at, Rewrite* w) {
    if (type_of(cur, key) == Type::kNone) return append_integer(&reply, 0);
    const std::int64_t current = deadline_of(*cur);
    const bool has_ttl = current != storage::kNoDeadline;
    if ((nx && has_ttl) || (xx && !has_ttl) || (gt && (!has_ttl || when <= current)) ||
        (lt && has_ttl && when >= current)) {
      return append_integer(&reply, 0);
    }
    append_integer(&reply, 1);
    if (when <= at) {
      w->kind = Rewrite::Kind::kDelete;
      event = "del";
      return;
    }
    set_deadline(*cur, when, at, w);
    event = "expire";
  });
  finish(c, s, reply);
  if (s.ok() && !event.empty()) notify(c, kNotifyGeneric, event, key);
}

void cmd_persist(Ctx& c) {
  const std::string_view key = c.args[1];
  std::string reply;
  Status s = c.table.rewrite(id_of(c, key), [&](const Session* cur, std::int64_t, Rewrite* w) {
    if (type_of(cur, key) == Type::kNone || deadline_of(*cur) == storage::kNoDeadline) {
      return append_integer(&reply, 0);
    }
    append_integer(&reply, 1);
    w->kind = Rewrite::Kind::kChange;
    w->changes.timeouts = storage::Timeouts{};
  });
  finish(c, s, reply);
  if (s.ok() && reply == ":1\r\n") notify(c, kNotifyGeneric, "persist", key);
}

void cmd_ttl(Ctx& c) {  // TTL and PTTL
  const Session* s;
  if (lookup(c, c.args[1], &s) == Type::kNone) return append_integer(c.out, -2);
  const std::int64_t deadline = deadline_of(*s);
  if (deadline == storage::kNoDeadline) return append_integer(c.out, -1);
  const std::int64_t ttl = std::max<std::int64_t>(deadline - c.clock.now_ms(), 0);
  append_integer(c.out, c.name == "pttl" ? ttl : (ttl + 500) / 1000);
}

void cmd_type(Ctx& c) {
  const Session* s;
  append_simple(c.out, type_name(lookup(c, c.args[1], &s)));
}

// Deletes, with one RocksDB write per group of keys, the sessions whose decision says so;
// returns how many went, or the first error.
// The database of a RESP key's session (its id is the key's id there), or -1: not a RESP key.
int database_of(const SessionId& id, std::string_view key) {
  for (int db = 0; db < kDatabases; ++db) {
    if (key_id(key, db) == id) return db;
  }
  return -1;
}

struct DeleteIf {
  const std::string_view* key;  // nullptr: any key of the RESP namespace in `db`
  int db;                       // with key == nullptr: -1 for every database
  std::uint8_t* found;
  void operator()(const Session* cur, std::int64_t, Rewrite* w) const {
    const Field* k = cur ? cur->field(kKeyField) : nullptr;
    if (k == nullptr) return;
    if (key != nullptr) {
      if (type_of(cur, *key) == Type::kNone) return;
    } else if (db < 0 ? database_of(cur->id, k->value) < 0 : key_id(k->value, db) != cur->id) {
      return;
    }
    *found = 1;
    w->kind = Rewrite::Kind::kDelete;
  }
};

// Deletes `ids` (the keys `keys` of the connection's database; empty: whatever RESP keys of
// database `db` they are, -1: of any database) with one RocksDB write per group of keys;
// returns how many went, or the first error. With `deleted`, which of them went.
Result<std::int64_t> delete_all(Ctx& c, std::span<const SessionId> ids,
                                std::span<const std::string_view> keys, int db,
                                std::vector<std::uint8_t>* deleted_ones = nullptr) {
  std::int64_t deleted = 0;
  constexpr std::size_t kGroup = 256;
  if (deleted_ones != nullptr) deleted_ones->assign(ids.size(), 0);
  for (std::size_t start = 0; start < ids.size(); start += kGroup) {
    const std::size_t n = std::min(kGroup, ids.size() - start);
    std::vector<std::uint8_t> found(n, 0);
    std::vector<DeleteIf> deciders;
    deciders.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      deciders.push_back(DeleteIf{keys.empty() ? nullptr : &keys[start + i], db, &found[i]});
    }
    const std::vector<storage::RewriteFn> decides(deciders.begin(), deciders.end());
    std::vector<Status> statuses(n);
    c.table.rewrite_batch(ids.subspan(start, n), decides, statuses);
    for (std::size_t i = 0; i < n; ++i) {
      if (!statuses[i].ok()) return statuses[i];
      if (found[i]) ++deleted;
      if (deleted_ones != nullptr) (*deleted_ones)[start + i] = found[i];
    }
  }
  return deleted;
}

void cmd_del(Ctx& c) {  // DEL and UNLINK
  const std::span<const std::string_view> keys = c.args.subspan(1);
  std::vector<SessionId> ids;
  ids.reserve(keys.size());
  for (std::string_view key : keys) ids.push_back(id_of(c, key));
  std::vector<std::uint8_t> which;
  auto deleted = delete_all(c, ids, keys, c.client.db, &which);
  if (!deleted.ok()) return err_status(c.out, deleted.status());
  append_integer(c.out, *deleted);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (which[i]) notify(c, kNotifyGeneric, "del", keys[i]);
  }
}

void cmd_exists(Ctx& c) {
  std::int64_t n = 0;
  for (std::size_t i = 1; i < c.args.size(); ++i) {
    const Session* s;
    if (lookup(c, c.args[i], &s) != Type::kNone) ++n;
  }
  append_integer(c.out, n);
}

void cmd_rename(Ctx& c) {
  const std::string_view from = c.args[1], to = c.args[2];
  const Session* s;
  if (from == to) {
    if (lookup(c, from, &s) == Type::kNone) return append_error(c.out, "ERR no such key");
    return append_simple(c.out, "OK");
  }
  if (key_too_long(c, to)) return;
  bool missing = false;
  Status st = c.table.move(
      id_of(c, from), id_of(c, to), [&](const Session* src, std::int64_t at, Rewrite* w) {
        if (type_of(src, from) == Type::kNone) {
          missing = true;
          return;
        }
        w->kind = Rewrite::Kind::kPut;
        w->fields.reserve(src->fields.size());
        for (const Field& f : src->fields) {
          w->fields.emplace_back(f.name, f.name == kKeyField ? std::string(to) : f.value);
        }
        w->timeouts = timeouts_for(deadline_of(*src), at);
      });
  if (missing || st.code() == StatusCode::kNotFound || st.code() == StatusCode::kExpired) {
    return append_error(c.out, "ERR no such key");
  }
  finish(c, st, "+OK\r\n");
  if (!st.ok()) return;
  notify(c, kNotifyGeneric, "rename_from", from);
  notify(c, kNotifyGeneric, "rename_to", to);
}

// Calls visit(key, session) for each RESP key on one page of a table walk, until it answers
// true (enough); returns the next cursor. Sessions of other namespaces (native ones) are
// skipped.
template <typename Visit>
std::uint64_t scan_keys(Ctx& c, std::uint64_t cursor, std::size_t count, Visit visit) {
  const storage::ScanPage page = c.table.scan(cursor, count);
  Session s;
  for (const SessionId& id : page.ids) {
    if (!c.table.get(id, {}, &s).ok()) continue;
    const Field* k = s.field(kKeyField);
    if (k == nullptr || id_of(c, k->value) != id) continue;
    if (visit(k->value, s)) break;
  }
  return page.cursor;
}

// The keys a SCAN or KEYS reply lists, encoded as they are found so that the reply limit
// applies while the list grows (it stops growing once past it).
class KeyList {
 public:
  explicit KeyList(Ctx& c) : c_(c), start_(c.out->size()) {}
  // Adds `key`; true once the list is past the reply limit (the caller stops looking).
  bool add(std::string_view key) {
    append_bulk(&encoded_, key);
    ++count_;
    return full();
  }
  bool full() const {
    return c_.info.max_reply_bytes != 0 && encoded_.size() > c_.info.max_reply_bytes;
  }
  // Appends the array of keys to the reply begun at construction, or the reply limit's error
  // in place of that whole reply.
  void reply() {
    append_array_header(c_.out, count_);
    c_.out->append(encoded_);
    reply_too_large(c_, start_);
  }

 private:
  Ctx& c_;
  std::size_t start_;
  std::string encoded_;
  std::size_t count_ = 0;
};

// A cursor as Redis 7.0 reads it (strtoul, base 10): an optional sign, then digits; "-N" is
// 2^64 - N; "" is 0; leading space, other characters and overflow are invalid.
std::optional<std::uint64_t> parse_cursor(std::string_view text) {
  bool negative = false;
  if (!text.empty() && (text.front() == '+' || text.front() == '-')) {
    negative = text.front() == '-';
    text.remove_prefix(1);
    if (text.empty()) return std::nullopt;  // a sign alone: no digits
  }
  std::uint64_t value = 0;
  if (text.empty()) return value;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return negative ? 0 - value : value;
}

void cmd_scan(Ctx& c) {
  const std::optional<std::uint64_t> parsed = parse_cursor(c.args[1]);
  if (!parsed) return append_error(c.out, "ERR invalid cursor");
  const std::uint64_t cursor = *parsed;
  std::int64_t count = 10;
  std::string_view pattern;
  std::string_view type;
  bool use_pattern = false, use_type = false;
  for (std::size_t i = 2; i < c.args.size();) {
    const bool pair = c.args.size() - i >= 2;
    if (pair && iequals(c.args[i], "count")) {
      if (!parse_ll(c.args[i + 1], &count)) return err_not_integer(c.out);
      if (count < 1) return err_syntax(c.out);
    } else if (pair && iequals(c.args[i], "match")) {
      pattern = c.args[i + 1];
      use_pattern = pattern != "*";
    } else if (pair && iequals(c.args[i], "type")) {
      type = c.args[i + 1];
      use_type = true;
    } else {
      return err_syntax(c.out);
    }
    i += 2;
  }
  KeyList keys(c);
  const std::uint64_t next =
      scan_keys(c, cursor, static_cast<std::size_t>(std::min<std::int64_t>(count, 1'000'000)),
                [&](std::string_view key, const Session& s) {
                  if (use_pattern && !glob_match(pattern, key)) return false;
                  if (use_type && !iequals(type_name(type_of(&s, key)), type)) return false;
                  return keys.add(key);
                });
  append_array_header(c.out, 2);
  append_bulk(c.out, std::to_string(next));
  keys.reply();
}

void cmd_keys(Ctx& c) {
  KeyList keys(c);
  std::uint64_t cursor = 0;
  do {
    cursor = scan_keys(c, cursor, 1000, [&](std::string_view key, const Session&) {
      return glob_match(c.args[1], key) && keys.add(key);
    });
  } while (cursor != 0 && !keys.full());
  keys.reply();
}

// Database 0 answers the table's size at once (every session of the node, as before databases);
// the others count their keys by walking the table (O(sessions), like KEYS).
void cmd_dbsize(Ctx& c) {
  if (c.client.db == 0) return append_integer(c.out, static_cast<std::int64_t>(c.table.size()));
  std::int64_t n = 0;
  std::uint64_t cursor = 0;
  do {
    cursor = scan_keys(c, cursor, 1000, [&](std::string_view, const Session&) {
      ++n;
      return false;
    });
  } while (cursor != 0);
  append_integer(c.out, n);
}

void cmd_flushdb(Ctx& c) {  // FLUSHDB / FLUSHALL [ASYNC|SYNC]
  if (c.args.size() > 2 ||
      (c.args.size() == 2 && !iequals(c.args[1], "async") && !iequals(c.args[1], "sync"))) {
    return err_syntax(c.out);
  }
  std::uint64_t cursor = 0;
  do {
    const storage::ScanPage page = c.table.scan(cursor, 1000);
    auto deleted = delete_all(c, page.ids, {}, c.name == "flushall" ? -1 : c.client.db);
    if (!deleted.ok()) return err_status(c.out, deleted.status());
    cursor = page.cursor;
  } while (cursor != 0);
  append_simple(c.out, "OK");
}

// ---- hashes and sets -------------------------------------------------------------------------

// Adds prefixed names (with values) to a key of type `want`, creating it if needed; `added`
// counts names that were not there. Later duplicates in the command win, as in Redis.
// Names and counts are checked here, in the client's terms (without the one-byte prefix and
// the key's own field), before the engine checks its limits.
void add_members(Ctx& c, std::string_view key, Type want,
                 const std::vector<std::pair<std::string, std::string>>& items) {
  const std::string_view what = want == Type::kHash ? "hash field" : "set member";
  const std::size_t max_name = c.table.options().max_field_name_bytes - 1;
  const std::size_t max_members = c.table.options().max_fields - 1;
  for (const auto& item : items) {
    if (item.first.size() - 1 > max_name) {
      return append_error(c.out, "ERR " + std::string(what) + " of " +
                                     std::to_string(item.first.size() - 1) +
                                     " bytes; sessiond's limit is " + std::to_string(max_name));
    }
  }
  std::int64_t added = 0;
  bool wrong_type = false, too_many = false, created = false;
  Status s = c.table.rewrite(id_of(c, key), [&](const Session* cur, std::int64_t, Rewrite* w) {
    const Type t = type_of(cur, key);
    if (t != Type::kNone && t != want) {
      wrong_type = true;
      return;
    }
    created = t == Type::kNone;
    for (const auto& [name, value] : items) {
      if (t == Type::kNone || cur->field(name) == nullptr) ++added;
    }
    const std::size_t existing = t == Type::kNone ? 0 : cur->fields.size() - 1;
    if (existing + static_cast<std::size_t>(added) > max_members) {
      too_many = true;
      return;
    }
    if (t == Type::kNone) {
      w->kind = Rewrite::Kind::kPut;
      w->fields = items;
      w->fields.emplace_back(kKeyField, key);
      return;
    }
    if (want == Type::kSet && added == 0) return;  // nothing new: no write
    w->kind = Rewrite::Kind::kChange;
    w->changes.set = items;
  });
  if (wrong_type) return err_wrong_type(c.out);
  if (too_many) {
    return append_error(c.out, "ERR a key holds at most " + std::to_string(max_members) + " " +
                                   std::string(what) + "s in sessiond");
  }
  if (!s.ok()) return err_status(c.out, s);
  if (c.name == "hmset") {
    append_simple(c.out, "OK");
  } else {
    append_integer(c.out, added);
  }
  if (created) notify(c, kNotifyNew, "new", key);
  if (want == Type::kHash) {
    notify(c, kNotifyHash, "hset", key);
  } else if (added > 0) {
    notify(c, kNotifySet, "sadd", key);
  }
}

// Items with their prefix, duplicates folded (the last one wins).
std::vector<std::pair<std::string, std::string>> fold(
    std::vector<std::pair<std::string, std::string>> items) {
  std::vector<std::pair<std::string, std::string>> out;
  absl::flat_hash_map<std::string, std::size_t> where;
  for (auto& item : items) {
    auto [it, fresh] = where.emplace(item.first, out.size());
    if (fresh) {
      out.push_back(std::move(item));
    } else {
      out[it->second].second = std::move(item.second);
    }
  }
  return out;
}

void cmd_hset(Ctx& c) {  // HSET and HMSET
  if (c.args.size() % 2 == 1) return err_arity(c.out, c.name);
  const std::string_view key = c.args[1];
  if (key_too_long(c, key)) return;
  std::vector<std::pair<std::string, std::string>> items;
  for (std::size_t i = 2; i + 1 < c.args.size(); i += 2) {
    items.emplace_back(with_prefix(kHashPrefix, c.args[i]), c.args[i + 1]);
  }
  add_members(c, key, Type::kHash, fold(std::move(items)));
}

void cmd_sadd(Ctx& c) {
  const std::string_view key = c.args[1];
  if (key_too_long(c, key)) return;
  std::vector<std::pair<std::string, std::string>> items;
  for (std::size_t i = 2; i < c.args.size(); ++i) {
    items.emplace_back(with_prefix(kSetPrefix, c.args[i]), std::string());
  }
  add_members(c, key, Type::kSet, fold(std::move(items)));
}

// HDEL, SREM and ZREM: removes names; the key goes when its last one does.
void remove_members(Ctx& c, Type want, char prefix) {
  const std::string_view key = c.args[1];
  std::vector<std::string> names;
  for (std::size_t i = 2; i < c.args.size(); ++i) names.push_back(with_prefix(prefix, c.args[i]));
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::string reply;
  bool emptied = false;
  Status s = c.table.rewrite(id_of(c, key), [&](const Session* cur, std::int64_t, Rewrite* w) {
    const Type t = type_of(cur, key);
    if (t == Type::kNone) return append_integer(&reply, 0);
    if (t != want) return err_wrong_type(&reply);
    std::int64_t removed = 0;
    for (const std::string& n : names) {
      if (cur->field(n) != nullptr) ++removed;
    }
    append_integer(&reply, removed);
    if (removed == 0) return;
    if (static_cast<std::size_t>(removed) == prefixed(*cur, prefix).size()) {
      w->kind = Rewrite::Kind::kDelete;
      emptied = true;
      return;
    }
    w->kind = Rewrite::Kind::kChange;
    w->changes.remove = names;
  });
  finish(c, s, reply);
  if (!s.ok() || reply == ":0\r\n" || reply[0] != ':') return;
  const int type = want == Type::kHash  ? kNotifyHash
                   : want == Type::kSet ? kNotifySet
                                        : kNotifyZset;
  notify(c, type, c.name, key);  // hdel, srem, zrem
  if (emptied) notify(c, kNotifyGeneric, "del", key);
}

void cmd_hdel(Ctx& c) { remove_members(c, Type::kHash, kHashPrefix); }
void cmd_srem(Ctx& c) { remove_members(c, Type::kSet, kSetPrefix); }
void cmd_zrem(Ctx& c) { remove_members(c, Type::kZset, kZsetPrefix); }

// Looks up a key that must be of type `want` (or absent); replies WRONGTYPE otherwise.
bool lookup_as(Ctx& c, Type want, const Session** s) {
  const Type t = lookup(c, c.args[1], s);
  if (t != Type::kNone && t != want) {
    err_wrong_type(c.out);
    return false;
  }
  if (t == Type::kNone) *s = nullptr;
  return true;
}

const Field* member(const Session* s, char prefix, std::string_view name) {
  return s ? s->field(with_prefix(prefix, name)) : nullptr;
}

void cmd_hget(Ctx& c) {
  const Session* s;
  if (!lookup_as(c, Type::kHash, &s)) return;
  const Field* f = member(s, kHashPrefix, c.args[2]);
  if (f == nullptr) return append_null(c.out);
  append_bulk(c.out, f->value);
}

void cmd_hmget(Ctx& c) {
  const Session* s;
  if (!lookup_as(c, Type::kHash, &s)) return;
  const std::size_t start = c.out->size();
  append_array_header(c.out, c.args.size() - 2);
  for (std::size_t i = 2; i < c.args.size(); ++i) {
    const Field* f = member(s, kHashPrefix, c.args[i]);
    if (f == nullptr) {
      append_null(c.out);
    } else {
      append_bulk(c.out, f->value);
      if (reply_too_large(c, start)) return;
    }
  }
}

void cmd_hgetall(Ctx& c) {  // HGETALL, HKEYS, HVALS
  const Session* s;
  if (!lookup_as(c, Type::kHash, &s)) return;
  const auto fields = s ? prefixed(*s, kHashPrefix) : std::vector<const Field*>{};
  const bool keys = c.name != "hvals", values = c.name != "hkeys";
  const std::size_t start = c.out->size();
  append_array_header(c.out, fields.size() * (keys && values ? 2 : 1));
  for (const Field* f : fields) {
    if (keys) append_bulk(c.out, std::string_view(f->name).substr(1));
    if (values) append_bulk(c.out, f->value);
    if (reply_too_large(c, start)) return;
  }
}

void cmd_hexists(Ctx& c) {
  const Session* s;
  if (!lookup_as(c, Type::kHash, &s)) return;
  append_integer(c.out, member(s, kHashPrefix, c.args[2]) != nullptr ? 1 : 0);
}

void cmd_hlen(Ctx& c) {  // HLEN, SCARD and ZCARD
  const Type want = c.name == "hlen" ? Type::kHash : c.name == "scard" ? Type::kSet : Type::kZset;
  const char prefix = want == Type::kHash  ? kHashPrefix
                      : want == Type::kSet ? kSetPrefix
                                           : kZsetPrefix;
  const Session* s;
  if (!lookup_as(c, want, &s)) return;
  const auto n = s ? prefixed(*s, prefix).size() : 0;
  append_integer(c.out, static_cast<std::int64_t>(n));
}

void cmd_smembers(Ctx& c) {
  const Session* s;
  if (!lookup_as(c, Type::kSet, &s)) return;
  const auto members = s ? prefixed(*s, kSetPrefix) : std::vector<const Field*>{};
  const std::size_t start = c.out->size();
  append_array_header(c.out, members.size());
  for (const Field* f : members) {
    append_bulk(c.out, std::string_view(f->name).substr(1));
    if (reply_too_large(c, start)) return;
  }
}

void cmd_sismember(Ctx& c) {
  const Session* s;
  if (!lookup_as(c, Type::kSet, &s)) return;
  append_integer(c.out, member(s, kSetPrefix, c.args[2]) != nullptr ? 1 : 0);
}

// ---- sorted sets -----------------------------------------------------------------------------

// A score as Redis 7.0 prints it (%.17g: exact, "inf" and "-inf" for the infinities).
std::string score_text(double d) {
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%.17g", d);
  return std::string(buf, static_cast<std::size_t>(n));
}

// Redis's getDoubleFromObject: the whole text, no leading space, no NaN, no overflow.
bool parse_score(std::string_view text, double* out) {
  if (text.empty() || text.size() > 256 || std::isspace(static_cast<unsigned char>(text[0]))) {
    return false;
  }
  const std::string copy(text);  // strtod needs the terminating NUL
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size() || std::isnan(v)) return false;
  if (errno == ERANGE && (v == HUGE_VAL || v == -HUGE_VAL || v == 0)) return false;
  *out = v;
  return true;
}

// A bound of ZRANGEBYSCORE: "(x" is exclusive.
struct ScoreBound {
  double value = 0;
  bool exclusive = false;
};

bool parse_bound(std::string_view text, ScoreBound* b) {
  b->exclusive = !text.empty() && text[0] == '(';
  if (b->exclusive) text.remove_prefix(1);
  if (text.empty() || text.size() > 256) return false;
  const std::string copy(text);
  char* end = nullptr;
  const double v = std::strtod(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size() || std::isnan(v)) return false;
  b->value = v;
  return true;
}

// The members of a sorted set with their scores, by score then member bytes.
std::vector<std::pair<double, std::string_view>> by_score(const Session& s) {
  std::vector<std::pair<double, std::string_view>> out;
  for (const Field* f : prefixed(s, kZsetPrefix)) {
    double score = 0;
    if (!parse_score(f->value, &score)) continue;  // never written so
    out.emplace_back(score, std::string_view(f->name).substr(1));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...] (Redis 7.0's zaddGeneric).
void cmd_zadd(Ctx& c) {
  bool nx = false, xx = false, gt = false, lt = false, ch = false, incr = false;
  std::size_t i = 2;
  for (; i < c.args.size(); ++i) {
    const std::string_view o = c.args[i];
    if (iequals(o, "nx")) {
      nx = true;
    } else if (iequals(o, "xx")) {
      xx = true;
    } else if (iequals(o, "gt")) {
      gt = true;
    } else if (iequals(o, "lt")) {
      lt = true;
    } else if (iequals(o, "ch")) {
      ch = true;
    } else if (iequals(o, "incr")) {
      incr = true;
    } else {
      break;
    }
  }
  const std::size_t pairs_args = c.args.size() - i;
  if (pairs_args % 2 != 0 || pairs_args == 0) return err_syntax(c.out);
  if (nx && xx) {
    return append_error(c.out, "ERR XX and NX options at the same time are not compatible");
  }
  if ((gt && nx) || (lt && nx) || (gt && lt)) {
    return append_error(c.out, "ERR GT, LT, and/or NX options at the same time are not compatible");
  }
  if (incr && pairs_args > 2) {
    return append_error(c.out, "ERR INCR option supports a single increment-element pair");
  }
  std::vector<std::pair<double, std::string_view>> items;
  for (std::size_t j = i; j < c.args.size(); j += 2) {
    double score = 0;
    if (!parse_score(c.args[j], &score)) {
      return append_error(c.out, "ERR value is not a valid float");
    }
    items.emplace_back(score, c.args[j + 1]);
  }
  const std::string_view key = c.args[1];
  if (key_too_long(c, key)) return;
  const std::size_t max_name = c.table.options().max_field_name_bytes - 1;
  const std::size_t max_members = c.table.options().max_fields - 1;
  for (const auto& item : items) {
    if (item.second.size() > max_name) {
      return append_error(c.out, "ERR sorted set member of " + std::to_string(item.second.size()) +
                                     " bytes; sessiond's limit is " + std::to_string(max_name));
    }
  }
  std::int64_t added = 0, changed = 0;
  bool wrong_type = false, too_many = false, nan = false, created = false;
  std::optional<double> incr_result;
  Status s = c.table.rewrite(id_of(c, key), [&](const Session* cur, std::int64_t at, Rewrite* w) {
    added = changed = 0;
    incr_result.reset();
    const Type t = type_of(cur, key);
    if (t != Type::kNone && t != Type::kZset) {
      wrong_type = true;
      return;
    }
    // The new scores by member name (the last of duplicates wins; INCR adds up).
    absl::flat_hash_map<std::string, double> next;
    std::vector<std::string> order;
    for (const auto& [score, m] : items) {
      std::string name = with_prefix(kZsetPrefix, m);
      std::optional<double> old;
      if (auto it = next.find(name); it != next.end()) {
        old = it->second;
      } else if (const Field* f = t == Type::kZset ? cur->field(name) : nullptr) {
        double v = 0;
        if (parse_score(f->value, &v)) old = v;
      }
      double value = score;
      if (incr && old) value = *old + score;
      if (std::isnan(value)) {
        nan = true;
        return;
      }
      if ((nx && old) || (xx && !old)) continue;
      if (old && ((gt && value <= *old) || (lt && value >= *old))) continue;
      if (incr) incr_result = value;
      if (old && value == *old) continue;  // unchanged: no write, so no WATCH fails (as Redis)
      if (!old) {
        ++added;
      } else {
        ++changed;
      }
      if (!next.contains(name)) order.push_back(name);
      next[name] = value;
    }
    const std::size_t existing = t == Type::kNone ? 0 : cur->fields.size() - 1;
    if (existing + static_cast<std::size_t>(added) > max_members) {
      too_many = true;
      return;
    }
    if (order.empty()) return;
    std::vector<std::pair<std::string, std::string>> set;
    set.reserve(order.size());
    for (std::string& name : order) {
      const double v = next[name];
      set.emplace_back(std::move(name), score_text(v));
    }
    if (t == Type::kNone) {
      w->kind = Rewrite::Kind::kPut;
      w->fields = std::move(set);
      w->fields.emplace_back(kKeyField, key);
      w->timeouts = timeouts_for(storage::kNoDeadline, at);
      created = true;
      return;
    }
    w->kind = Rewrite::Kind::kChange;
    w->changes.set = std::move(set);
  });
  if (wrong_type) return err_wrong_type(c.out);
  if (nan) return append_error(c.out, "ERR resulting score is not a number (NaN)");
  if (too_many) {
    return append_error(c.out, "ERR a key holds at most " + std::to_string(max_members) +
                                   " sorted set members in sessiond");
  }
  if (!s.ok()) return err_status(c.out, s);
  if (incr) {
    if (incr_result) {
      append_bulk(c.out, score_text(*incr_result));
    } else {
      append_null(c.out);
    }
  } else {
    append_integer(c.out, ch ? added + changed : added);
  }
  if (created) notify(c, kNotifyNew, "new", key);
  if (added + changed > 0) notify(c, kNotifyZset, incr ? "zincr" : "zadd", key);
}

// ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count], and ZREVRANGEBYSCORE key max min.
void cmd_zrangebyscore(Ctx& c) {
  const bool reverse = c.name == "zrevrangebyscore";
  ScoreBound min, max;
  if (!parse_bound(c.args[reverse ? 3 : 2], &min) || !parse_bound(c.args[reverse ? 2 : 3], &max)) {
    return append_error(c.out, "ERR min or max is not a float");
  }
  bool with_scores = false;
  std::int64_t offset = 0, count = -1;
  for (std::size_t j = 4; j < c.args.size(); ++j) {
    if (iequals(c.args[j], "withscores")) {
      with_scores = true;
    } else if (iequals(c.args[j], "limit") && j + 2 < c.args.size()) {
      if (!parse_ll(c.args[j + 1], &offset) || !parse_ll(c.args[j + 2], &count)) {
        return err_not_integer(c.out);
      }
      j += 2;
    } else {
      return err_syntax(c.out);
    }
  }
  const Session* s;
  if (!lookup_as(c, Type::kZset, &s)) return;
  std::vector<std::pair<double, std::string_view>> members;
  if (s != nullptr) members = by_score(*s);
  if (reverse) std::reverse(members.begin(), members.end());
  auto in_range = [&](double v) {
    return (min.exclusive ? v > min.value : v >= min.value) &&
           (max.exclusive ? v < max.value : v <= max.value);
  };
  std::vector<std::pair<double, std::string_view>> picked;
  if (offset >= 0) {
    std::int64_t skipped = 0;
    for (const auto& m : members) {
      if (!in_range(m.first)) continue;
      if (skipped++ < offset) continue;
      if (count >= 0 && static_cast<std::int64_t>(picked.size()) >= count) break;
      picked.push_back(m);
    }
  }
  const std::size_t start = c.out->size();
  append_array_header(c.out, picked.size() * (with_scores ? 2 : 1));
  for (const auto& [score, name] : picked) {
    append_bulk(c.out, name);
    if (with_scores) append_bulk(c.out, score_text(score));
    if (reply_too_large(c, start)) return;
  }
}

void cmd_zscore(Ctx& c) {
  const Session* s;
  if (!lookup_as(c, Type::kZset, &s)) return;
  const Field* f = member(s, kZsetPrefix, c.args[2]);
  if (f == nullptr) return append_null(c.out);
  append_bulk(c.out, f->value);
}

// ---- connection and server -------------------------------------------------------------------

void cmd_ping(Ctx& c) {
  if (c.args.size() > 2) return err_arity(c.out, c.name);
  if (c.client.subscribed()) {  // RESP2's subscribed mode answers with a push-style array
    append_array_header(c.out, 2);
    append_bulk(c.out, "pong");
    append_bulk(c.out, c.args.size() == 2 ? c.args[1] : std::string_view());
    return;
  }
  if (c.args.size() == 2) return append_bulk(c.out, c.args[1]);
  append_simple(c.out, "PONG");
}

void cmd_echo(Ctx& c) { append_bulk(c.out, c.args[1]); }

// With secrets configured (--app-secret and friends) the password decides the role, whatever
// the user name; without, AUTH behaves as a Redis whose default user has no password.
// A wrong password is counted node-wide, and the kMaxAuthFailures-th on a connection closes it
// after the reply (a guesser gets no more tries on it). Without secrets nothing is guessed, and
// a wrong user name is answered as Redis does, connection kept.
bool authenticate(Ctx& c, std::string_view user, std::string_view password, std::string* out) {
  const AuthConfig* auth = c.info.auth;
  if (auth != nullptr && auth->enabled()) {
    const Role role = auth->authenticate(password);
    if (role != Role::kNone) {
      c.client.role = role;
      return true;
    }
    if (c.info.auth_failures != nullptr) c.info.auth_failures->record(c.client.peer);
    if (++c.client.auth_failures >= kMaxAuthFailures) c.client.close = true;
  } else if (user == "default") {
    return true;
  }
  append_error(out, "WRONGPASS invalid username-password pair or user is disabled.");
  return false;
}

void cmd_auth(Ctx& c) {
  if (c.args.size() > 3) return err_syntax(c.out);
  if (c.args.size() == 2) {
    if (c.info.auth == nullptr || !c.info.auth->enabled()) {
      return append_error(c.out,
                          "ERR AUTH <password> called without any password configured for the "
                          "default user. Are you sure your configuration is correct?");
    }
    if (authenticate(c, "default", c.args[1], c.out)) append_simple(c.out, "OK");
    return;
  }
  if (authenticate(c, c.args[1], c.args[2], c.out)) append_simple(c.out, "OK");
}

bool valid_client_name(std::string_view name) {
  return std::all_of(name.begin(), name.end(), [](char ch) { return ch >= '!' && ch <= '~'; });
}

bool set_client_name(Ctx& c, std::string_view name) {
  if (!valid_client_name(name)) {
    append_error(c.out, "ERR Client names cannot contain spaces, newlines or special characters.");
    return false;
  }
  c.client.name = name;
  return true;
}

void cmd_hello(Ctx& c) {
  std::size_t next = 1;
  std::int64_t version = 0;
  if (c.args.size() >= 2) {
    if (!parse_ll(c.args[next++], &version)) {
      return append_error(c.out, "ERR Protocol version is not an integer or out of range");
    }
    // Only RESP2 is spoken: RESP3-first clients take this reply as "fall back to RESP2".
    if (version != 2) return append_error(c.out, "NOPROTO unsupported protocol version");
  }
  std::string_view user, password, name;
  bool has_auth = false, has_name = false;
  for (std::size_t j = next; j < c.args.size(); ++j) {
    const std::size_t more = c.args.size() - 1 - j;
    if (iequals(c.args[j], "auth") && more >= 2) {
      user = c.args[j + 1];
      password = c.args[j + 2];
      has_auth = true;
      j += 2;
    } else if (iequals(c.args[j], "setname") && more >= 1) {
      name = c.args[j + 1];
      has_name = true;
      j += 1;
    } else {
      return append_error(c.out,
                          "ERR Syntax error in HELLO option '" + std::string(c.args[j]) + "'");
    }
  }
  if (has_auth && !authenticate(c, user, password, c.out)) return;
  // Redis 7 checks this after HELLO's own AUTH and before SETNAME.
  if (c.client.role == Role::kNone) {
    return append_error(c.out,
                        "NOAUTH HELLO must be called with the client already authenticated, "
                        "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                        "authenticate the client and select the RESP protocol version at the "
                        "same time");
  }
  if (has_name && !set_client_name(c, name)) return;
  append_array_header(c.out, 14);
  append_bulk(c.out, "server");
  append_bulk(c.out, "redis");
  append_bulk(c.out, "version");
  append_bulk(c.out, "7.0.15");
  append_bulk(c.out, "proto");
  append_integer(c.out, 2);
  append_bulk(c.out, "id");
  append_integer(c.out, static_cast<std::int64_t>(c.client.id));
  append_bulk(c.out, "mode");
  append_bulk(c.out, "standalone");
  append_bulk(c.out, "role");
  append_bulk(c.out, "master");
  append_bulk(c.out, "modules");
  append_array_header(c.out, 0);
}

void cmd_select(Ctx& c) {
  std::int64_t db = 0;
  if (!parse_ll(c.args[1], &db) || db < INT_MIN || db > INT_MAX) return err_not_integer(c.out);
  if (c.info.cluster && db != 0)
    return append_error(c.out, "ERR SELECT is not allowed in cluster mode");
  if (db < 0 || db >= kDatabases) return append_error(c.out, "ERR DB index is out of range");
  c.client.db = static_cast<int>(db);
  append_simple(c.out, "OK");
}

// ---- transactions ----------------------------------------------------------------------------

void unwatch(ClientState& client) { client.watching.reset(); }

void end_multi(ClientState& client) {
  client.in_multi = false;
  client.multi_refused = false;
  client.queued.clear();
  client.queued.shrink_to_fit();
  client.queued_bytes = 0;
}

void cmd_multi(Ctx& c) {
  if (c.client.in_multi) return append_error(c.out, "ERR MULTI calls can not be nested");
  c.client.in_multi = true;
  append_simple(c.out, "OK");
}

void cmd_discard(Ctx& c) {
  if (!c.client.in_multi) return append_error(c.out, "ERR DISCARD without MULTI");
  end_multi(c.client);
  unwatch(c.client);
  append_simple(c.out, "OK");
}

void cmd_watch(Ctx& c) {
  if (c.client.in_multi) return append_error(c.out, "ERR WATCH inside MULTI is not allowed");
  if (!c.client.watching) {
    c.client.watching.reset(new Watching);
    c.client.watching->shared = &c.shared;
  }
  Watching& w = *c.client.watching;
  std::lock_guard lock(c.shared.watch_mu);
  for (std::size_t i = 1; i < c.args.size(); ++i) {
    const SessionId id = id_of(c, c.args[i]);
    if (std::find(w.ids.begin(), w.ids.end(), id) != w.ids.end()) continue;
    w.ids.push_back(id);
    auto [it, fresh] = c.shared.watched.try_emplace(id);
    if (fresh) c.shared.watches.fetch_add(1, std::memory_order_relaxed);
    it->second.push_back(&w);
  }
  append_simple(c.out, "OK");
}

void cmd_unwatch(Ctx& c) {
  unwatch(c.client);
  append_simple(c.out, "OK");
}

// ---- pub/sub ---------------------------------------------------------------------------------

PubSub::Subscriber& subscriber(Ctx& c) {
  if (!c.client.subscriber) {
    PubSub::Deliver deliver = c.client.deliver;
    if (!deliver) deliver = [](std::string_view) {};  // a caller that takes no messages
    c.client.subscriber = c.shared.pubsub.subscriber(std::move(deliver));
  }
  return *c.client.subscriber;
}

void subscription_reply(Ctx& c, std::string_view kind, const std::string* name) {
  append_array_header(c.out, 3);
  append_bulk(c.out, kind);
  if (name != nullptr) {
    append_bulk(c.out, *name);
  } else {
    append_null(c.out);
  }
  append_integer(c.out,
                 static_cast<std::int64_t>(c.client.subscriber ? c.client.subscriber->count() : 0));
}

// What one connection may subscribe to: every PUBLISH (and keyspace event) matches each
// pattern of every connection, so patterns must stay few and short (a 1 MiB pattern would cost
// each publish milliseconds). Keyspace channels hold keys of up to kMaxKeyBytes.
constexpr std::size_t kMaxSubscriptions = 10'000;
constexpr std::size_t kMaxChannelBytes = kMaxKeyBytes + 64;

void cmd_subscribe(Ctx& c) {  // SUBSCRIBE and PSUBSCRIBE
  const bool pattern = c.name == "psubscribe";
  PubSub::Subscriber& s = subscriber(c);
  for (std::size_t i = 1; i < c.args.size(); ++i) {
    const std::string name(c.args[i]);
    if (name.size() > kMaxChannelBytes) {
      return append_error(c.out, "ERR a channel or pattern is at most " +
                                     std::to_string(kMaxChannelBytes) + " bytes in sessiond");
    }
    if (s.count() >= kMaxSubscriptions) {
      return append_error(c.out, "ERR a connection holds at most " +
                                     std::to_string(kMaxSubscriptions) +
                                     " subscriptions (channels and patterns) in sessiond");
    }
    if (pattern) {
      s.psubscribe(name);
    } else {
      s.subscribe(name);
    }
    subscription_reply(c, c.name, &name);
  }
}

void cmd_unsubscribe(Ctx& c) {  // UNSUBSCRIBE and PUNSUBSCRIBE; without names: all
  const bool pattern = c.name == "punsubscribe";
  PubSub::Subscriber& s = subscriber(c);
  std::vector<std::string> names;
  if (c.args.size() > 1) {
    for (std::size_t i = 1; i < c.args.size(); ++i) names.emplace_back(c.args[i]);
  } else {
    names = pattern ? s.patterns() : s.channels();
    if (names.empty()) return subscription_reply(c, c.name, nullptr);
  }
  for (const std::string& name : names) {
    if (pattern) {
      s.punsubscribe(name);
    } else {
      s.unsubscribe(name);
    }
    subscription_reply(c, c.name, &name);
  }
}

void cmd_publish(Ctx& c) { append_integer(c.out, c.shared.pubsub.publish(c.args[1], c.args[2])); }

// ---- CONFIG ----------------------------------------------------------------------------------

// Redis's keyspaceEventsStringToFlags; -1 for a character that is not a class.
int parse_notify_flags(std::string_view text) {
  int flags = 0;
  for (char ch : text) {
    switch (ch) {
      case 'A':
        flags |= kNotifyAll;
        break;
      case 'g':
        flags |= kNotifyGeneric;
        break;
      case '$':
        flags |= kNotifyString;
        break;
      case 'l':
        flags |= kNotifyList;
        break;
      case 's':
        flags |= kNotifySet;
        break;
      case 'h':
        flags |= kNotifyHash;
        break;
      case 'z':
        flags |= kNotifyZset;
        break;
      case 'x':
        flags |= kNotifyExpired;
        break;
      case 'e':
        flags |= kNotifyEvicted;
        break;
      case 'K':
        flags |= kNotifyKeyspace;
        break;
      case 'E':
        flags |= kNotifyKeyevent;
        break;
      case 't':
        flags |= kNotifyStream;
        break;
      case 'm':
        flags |= kNotifyKeyMiss;
        break;
      case 'd':
        flags |= kNotifyModule;
        break;
      case 'n':
        flags |= kNotifyNew;
        break;
      default:
        return -1;
    }
  }
  return flags;
}

// Redis 7.0's keyspaceEventsFlagsToString (with its order, and "A" hiding "n").
std::string notify_flags_text(int flags) {
  std::string out;
  if ((flags & kNotifyAll) == kNotifyAll) {
    out += 'A';
  } else {
    static constexpr std::pair<int, char> kClasses[] = {
        {kNotifyGeneric, 'g'}, {kNotifyString, '$'}, {kNotifyList, 'l'},    {kNotifySet, 's'},
        {kNotifyHash, 'h'},    {kNotifyZset, 'z'},   {kNotifyExpired, 'x'}, {kNotifyEvicted, 'e'},
        {kNotifyStream, 't'},  {kNotifyModule, 'd'}, {kNotifyNew, 'n'}};
    for (const auto& [flag, ch] : kClasses) {
      if (flags & flag) out += ch;
    }
  }
  if (flags & kNotifyKeyspace) out += 'K';
  if (flags & kNotifyKeyevent) out += 'E';
  if (flags & kNotifyKeyMiss) out += 'm';
  return out;
}

// The parameters CONFIG GET knows, in Redis's names, with this node's values.
std::vector<std::pair<std::string_view, std::string>> config_values(const Ctx& c) {
  const std::uint64_t budget = c.table.options().memory_budget_bytes;
  return {
      {"appendonly", "yes"},  // every write is persisted (RocksDB) before it is answered
      {"databases", std::to_string(kDatabases)},
      {"maxclients", std::to_string(c.info.max_connections)},
      {"maxmemory", std::to_string(budget)},
      {"maxmemory-policy", "noeviction"},
      {"notify-keyspace-events", notify_flags_text(c.shared.notify.load())},
      {"port", std::to_string(c.info.port)},
      {"save", ""},
      {"timeout", std::to_string(c.info.idle_timeout_ms / 1000)},
  };
}

void cmd_config(Ctx& c) {
  const std::string sub = lower(c.args[1]);
  if (sub == "get") {
    if (c.args.size() < 3) return err_arity(c.out, "config|get");
    std::vector<std::pair<std::string_view, std::string>> found;
    for (auto& [name, value] : config_values(c)) {
      for (std::size_t i = 2; i < c.args.size(); ++i) {
        if (glob_match(lower(c.args[i]), name)) {
          found.emplace_back(name, std::move(value));
          break;
        }
      }
    }
    append_array_header(c.out, found.size() * 2);
    for (const auto& [name, value] : found) {
      append_bulk(c.out, name);
      append_bulk(c.out, value);
    }
    return;
  }
  if (sub == "set") {
    if (c.args.size() < 4 || c.args.size() % 2 != 0) return err_arity(c.out, "config|set");
    std::optional<int> flags;
    for (std::size_t i = 2; i < c.args.size(); i += 2) {
      const std::string name = lower(c.args[i]);
      const std::string failed = "ERR CONFIG SET failed (possibly related to argument '" +
                                 std::string(c.args[i]) + "') - ";
      if (name == "notify-keyspace-events") {
        if (flags) return append_error(c.out, failed + "duplicate parameter");
        const int parsed = parse_notify_flags(c.args[i + 1]);
        if (parsed < 0) {
          return append_error(c.out,
                              failed + "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.");
        }
        flags = parsed;
        continue;
      }
      const auto values = config_values(c);
      if (std::none_of(values.begin(), values.end(),
                       [&](const auto& v) { return v.first == name; })) {
        return append_error(c.out, "ERR Unknown option or number of arguments for CONFIG SET - '" +
                                       std::string(c.args[i]) + "'");
      }
      if (name == "databases") {  // immutable in Redis too
        return append_error(c.out, failed + "can't set immutable config");
      }
      return append_error(c.out, failed +
                                     "sessiond takes this from its command line or config file "
                                     "(docs/resp.md, \"CONFIG\")");
    }
    if (flags) c.shared.notify.store(*flags);
    return append_simple(c.out, "OK");
  }
  if (sub == "resetstat" && c.args.size() == 2) return append_simple(c.out, "OK");
  if (sub == "rewrite" && c.args.size() == 2) {
    return append_error(c.out, "ERR The server is running without a config file");
  }
  append_error(c.out, "ERR unknown subcommand '" + std::string(c.args[1].substr(0, 128)) +
                          "'. Try CONFIG HELP.");
}

void cmd_quit(Ctx& c) {
  c.client.close = true;
  append_simple(c.out, "OK");
}

std::string client_info_line(const Ctx& c) {
  return "id=" + std::to_string(c.client.id) + " name=" + c.client.name +
         " db=" + std::to_string(c.client.db) + " resp=2" + " lib-name=" + c.client.lib_name +
         " lib-ver=" + c.client.lib_version + "\n";
}

void cmd_client(Ctx& c) {
  const std::string sub = lower(c.args[1]);
  const std::size_t n = c.args.size();
  auto arity = [&](bool ok) {
    if (!ok) err_arity(c.out, "client|" + sub);
    return ok;
  };
  if (sub == "setname") {
    if (arity(n == 3) && set_client_name(c, c.args[2])) append_simple(c.out, "OK");
  } else if (sub == "getname") {
    if (!arity(n == 2)) return;
    if (c.client.name.empty()) return append_null(c.out);
    append_bulk(c.out, c.client.name);
  } else if (sub == "setinfo") {
    if (!arity(n == 4)) return;
    if (!valid_client_name(c.args[3])) {
      return append_error(c.out, "ERR " + upper(c.args[2]) +
                                     " cannot contain spaces, newlines or special characters.");
    }
    if (iequals(c.args[2], "lib-name")) {
      c.client.lib_name = c.args[3];
    } else if (iequals(c.args[2], "lib-ver")) {
      c.client.lib_version = c.args[3];
    } else {
      return append_error(c.out, "ERR Unrecognized option '" + std::string(c.args[2]) + "'");
    }
    append_simple(c.out, "OK");
  } else if (sub == "id") {
    if (arity(n == 2)) append_integer(c.out, static_cast<std::int64_t>(c.client.id));
  } else if (sub == "info") {
    if (arity(n == 2)) append_bulk(c.out, client_info_line(c));
  } else if (sub == "help") {
    static constexpr std::string_view kHelp[] = {
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GETNAME",
        "    Return the name of the current connection.",
        "ID",
        "    Return the ID of the current connection.",
        "INFO",
        "    Return information about the current client connection.",
        "SETINFO <option> <value>",
        "    Set client meta attr (LIB-NAME or LIB-VER).",
        "SETNAME <name>",
        "    Assign the name <name> to the current connection.",
        "HELP",
        "    Print this help."};
    append_array_header(c.out, std::size(kHelp));
    for (std::string_view line : kHelp) append_simple(c.out, line);
  } else {
    append_error(c.out, "ERR unknown subcommand '" + std::string(c.args[1].substr(0, 128)) +
                            "'. Try CLIENT HELP.");
  }
}

void cmd_info(Ctx& c);
void cmd_command(Ctx& c);

// ---- the command table -----------------------------------------------------------------------

struct Spec {
  void (*run)(Ctx&);
  int arity;  // Redis's: N exactly N arguments (with the name), -N at least N
  std::string_view group;
  std::string_view summary;
};

const absl::flat_hash_map<std::string, Spec>& command_table() {
  static const auto* table = new absl::flat_hash_map<std::string, Spec>{
      {"get", {cmd_get, 2, "string", "Returns the string value of a key."}},
      {"set", {cmd_set, -3, "string", "Sets the string value of a key, with options."}},
      {"setex", {cmd_set, 4, "string", "Sets a value and its expiration in seconds."}},
      {"psetex", {cmd_set, 4, "string", "Sets a value and its expiration in milliseconds."}},
      {"getex", {cmd_getex, -2, "string", "Returns a value and changes its expiration."}},
      {"getdel", {cmd_getdel, 2, "string", "Returns a value and deletes the key."}},
      {"mget", {cmd_mget, -2, "string", "Returns the values of several keys."}},
      {"expire", {cmd_expire, -3, "generic", "Sets a key's time to live in seconds."}},
      {"pexpire", {cmd_expire, -3, "generic", "Sets a key's time to live in milliseconds."}},
      {"expireat", {cmd_expire, -3, "generic", "Sets a key's expiration as a Unix time."}},
      {"pexpireat", {cmd_expire, -3, "generic", "Sets a key's expiration as a Unix time in ms."}},
      {"persist", {cmd_persist, 2, "generic", "Removes a key's expiration."}},
      {"ttl", {cmd_ttl, 2, "generic", "Returns a key's time to live in seconds."}},
      {"pttl", {cmd_ttl, 2, "generic", "Returns a key's time to live in milliseconds."}},
      {"type", {cmd_type, 2, "generic", "Returns the type of a key's value."}},
      {"del", {cmd_del, -2, "generic", "Deletes keys."}},
      {"unlink", {cmd_del, -2, "generic", "Deletes keys."}},
      {"exists", {cmd_exists, -2, "generic", "Counts the keys that exist."}},
      {"rename", {cmd_rename, 3, "generic", "Renames a key, replacing the target."}},
      {"scan", {cmd_scan, -2, "generic", "Iterates over the keys."}},
      {"keys", {cmd_keys, 2, "generic", "Returns the keys matching a pattern."}},
      {"dbsize", {cmd_dbsize, 1, "server", "Returns the number of keys."}},
      {"flushdb", {cmd_flushdb, -1, "server", "Deletes every key."}},
      {"flushall", {cmd_flushdb, -1, "server", "Deletes every key."}},
      {"hset", {cmd_hset, -4, "hash", "Sets fields of a hash."}},
      {"hmset", {cmd_hset, -4, "hash", "Sets fields of a hash."}},
      {"hget", {cmd_hget, 3, "hash", "Returns the value of a hash field."}},
      {"hmget", {cmd_hmget, -3, "hash", "Returns the values of hash fields."}},
      {"hgetall", {cmd_hgetall, 2, "hash", "Returns every field and value of a hash."}},
      {"hkeys", {cmd_hgetall, 2, "hash", "Returns the fields of a hash."}},
      {"hvals", {cmd_hgetall, 2, "hash", "Returns the values of a hash."}},
      {"hdel", {cmd_hdel, -3, "hash", "Deletes fields of a hash."}},
      {"hexists", {cmd_hexists, 3, "hash", "Tells whether a hash field exists."}},
      {"hlen", {cmd_hlen, 2, "hash", "Returns the number of fields of a hash."}},
      {"sadd", {cmd_sadd, -3, "set", "Adds members to a set."}},
      {"srem", {cmd_srem, -3, "set", "Removes members from a set."}},
      {"smembers", {cmd_smembers, 2, "set", "Returns the members of a set."}},
      {"sismember", {cmd_sismember, 3, "set", "Tells whether a member is in a set."}},
      {"scard", {cmd_hlen, 2, "set", "Returns the number of members of a set."}},
      {"setnx", {cmd_setnx, 3, "string", "Sets a key's value only when it does not exist."}},
      {"append", {cmd_append, 3, "string", "Appends to a key's value."}},
      {"zadd", {cmd_zadd, -4, "sorted_set", "Adds members to a sorted set, or updates scores."}},
      {"zrem", {cmd_zrem, -3, "sorted_set", "Removes members from a sorted set."}},
      {"zrangebyscore",
       {cmd_zrangebyscore, -4, "sorted_set", "Returns members in a range of scores."}},
      {"zrevrangebyscore",
       {cmd_zrangebyscore, -4, "sorted_set", "Returns members in a range of scores, high first."}},
      {"zcard", {cmd_hlen, 2, "sorted_set", "Returns the number of members of a sorted set."}},
      {"zscore", {cmd_zscore, 3, "sorted_set", "Returns the score of a member."}},
      {"multi", {cmd_multi, 1, "transactions", "Starts a transaction."}},
      {"exec", {nullptr, 1, "transactions", "Executes the queued commands atomically."}},
      {"discard", {cmd_discard, 1, "transactions", "Discards the queued commands."}},
      {"watch", {cmd_watch, -2, "transactions", "Makes EXEC fail if the keys change."}},
      {"unwatch", {cmd_unwatch, 1, "transactions", "Forgets the watched keys."}},
      {"subscribe", {cmd_subscribe, -2, "pubsub", "Listens to channels."}},
      {"psubscribe", {cmd_subscribe, -2, "pubsub", "Listens to channels matching patterns."}},
      {"unsubscribe", {cmd_unsubscribe, -1, "pubsub", "Stops listening to channels."}},
      {"punsubscribe", {cmd_unsubscribe, -1, "pubsub", "Stops listening to patterns."}},
      {"publish", {cmd_publish, 3, "pubsub", "Sends a message to a channel's subscribers."}},
      {"config", {cmd_config, -2, "server", "Reads parameters; sets notify-keyspace-events."}},
      {"ping", {cmd_ping, -1, "connection", "Answers PONG or the message."}},
      {"echo", {cmd_echo, 2, "connection", "Returns the message."}},
      {"auth", {cmd_auth, -2, "connection", "Authenticates the connection."}},
      {"hello", {cmd_hello, -1, "connection", "Handshakes (RESP2 only)."}},
      {"select", {cmd_select, 2, "connection", "Selects database 0."}},
      {"quit", {cmd_quit, -1, "connection", "Closes the connection."}},
      {"client", {cmd_client, -2, "connection", "Names and describes the connection."}},
      {"info", {cmd_info, -1, "server", "Returns information about the server."}},
      {"command", {cmd_command, -1, "server", "Describes the commands."}},
  };
  return *table;
}

// First key, last key (-1: the last argument) and step, as COMMAND reports them.
std::array<int, 3> key_positions(std::string_view name, const Spec& spec) {
  if (spec.group == "connection" || spec.group == "server" || spec.group == "pubsub" ||
      name == "scan" || name == "keys" || (spec.group == "transactions" && name != "watch")) {
    return {0, 0, 0};
  }
  if (name == "del" || name == "unlink" || name == "exists" || name == "mget" || name == "watch") {
    return {1, -1, 1};
  }
  if (name == "rename") return {1, 2, 1};
  return {1, 1, 1};
}

void cmd_command(Ctx& c) {
  const auto& table = command_table();
  auto info = [&](const std::string& name, const Spec& spec) {
    append_array_header(c.out, 10);
    append_bulk(c.out, name);
    append_integer(c.out, spec.arity);
    append_array_header(c.out, 0);  // flags
    for (int position : key_positions(name, spec)) append_integer(c.out, position);
    for (int i = 0; i < 4; ++i) append_array_header(c.out, 0);  // acl, tips, key specs, subs
  };
  std::vector<std::string> names;
  for (const auto& [name, spec] : table) names.push_back(name);
  std::sort(names.begin(), names.end());
  if (c.args.size() == 1) {
    append_array_header(c.out, names.size());
    for (const std::string& name : names) info(name, table.at(name));
    return;
  }
  const std::string sub = lower(c.args[1]);
  if (sub == "count" && c.args.size() == 2) {
    return append_integer(c.out, static_cast<std::int64_t>(table.size()));
  }
  if (sub == "info" || sub == "docs") {
    std::vector<std::string> wanted;
    if (c.args.size() == 2) {
      wanted = names;
    } else {
      for (std::size_t i = 2; i < c.args.size(); ++i) wanted.push_back(lower(c.args[i]));
    }
    if (sub == "info") {
      append_array_header(c.out, wanted.size());
      for (const std::string& name : wanted) {
        auto it = table.find(name);
        if (it == table.end()) {
          append_null_array(c.out);
        } else {
          info(name, it->second);
        }
      }
      return;
    }
    std::vector<const std::string*> known;
    for (const std::string& name : wanted) {
      if (table.contains(name)) known.push_back(&name);
    }
    append_array_header(c.out, known.size() * 2);
    for (const std::string* name : known) {
      const Spec& spec = table.at(*name);
      append_bulk(c.out, *name);
      append_array_header(c.out, 4);
      append_bulk(c.out, "summary");
      append_bulk(c.out, spec.summary);
      append_bulk(c.out, "group");
      append_bulk(c.out, spec.group);
    }
    return;
  }
  if (sub == "count") return err_arity(c.out, "command|count");
  append_error(c.out, "ERR unknown subcommand '" + std::string(c.args[1].substr(0, 128)) +
                          "'. Try COMMAND HELP.");
}

void cmd_info(Ctx& c) {
  std::vector<std::string> sections;
  for (std::size_t i = 1; i < c.args.size(); ++i) sections.push_back(lower(c.args[i]));
  auto wants = [&](std::string_view s) {
    if (sections.empty()) return true;
    for (const std::string& w : sections) {
      if (w == s || w == "all" || w == "everything" || w == "default") return true;
    }
    return false;
  };
  const storage::TableStats stats = c.table.stats();
  const std::int64_t now = c.clock.now_ms();
  std::string text;
  auto line = [&](std::string_view k, const std::string& v) {
    text.append(k).append(":").append(v).append("\r\n");
  };
  if (wants("server")) {
    text += "# Server\r\n";
    line("redis_version", "7.0.15");
    line("sessiond_version", std::string(kVersion));
    line("redis_mode", "standalone");
    line("tcp_port", std::to_string(c.info.port));
    line("uptime_in_seconds", std::to_string((now - c.info.started_ms) / 1000));
    text += "\r\n";
  }
  if (wants("clients")) {
    text += "# Clients\r\n";
    line("connected_clients",
         std::to_string(c.info.connected_clients ? c.info.connected_clients->load() : 0));
    text += "\r\n";
  }
  if (wants("memory")) {
    text += "# Memory\r\n";
    line("used_memory", std::to_string(stats.memory_bytes));
    line("maxmemory", std::to_string(c.table.options().memory_budget_bytes));
    line("maxmemory_policy", "noeviction");
    text += "\r\n";
  }
  if (wants("keyspace")) {
    text += "# Keyspace\r\n";
    if (stats.sessions > 0) line("db0", "keys=" + std::to_string(stats.sessions));
    text += "\r\n";
  }
  if (text.size() >= 2) text.resize(text.size() - 2);  // no blank line at the end
  append_bulk(c.out, text);
}

}  // namespace

Commands::Commands(storage::SessionTable& table, const storage::Clock& clock, NodeInfo info)
    : table_(table), clock_(clock), info_(info), shared_(std::make_unique<Shared>()) {
  Shared* shared = shared_.get();
  // WATCH: any write to a watched key (this node's clients, replication, migration) or its
  // expiry fails the watchers' EXEC; expiries are also keyspace events.
  shared->observer = table_.on_change([shared](const storage::Mutation& m, std::uint64_t) {
    if (m.kind != storage::Mutation::Kind::kGeneration) shared->touched(m.id);
  });
  table_.on_expiry([shared](const SessionId& id, absl::FunctionRef<const Session&()> read) {
    shared->touched(id);
    const int flags = shared->notify.load(std::memory_order_relaxed);
    if ((flags & kNotifyExpired) == 0 || (flags & (kNotifyKeyspace | kNotifyKeyevent)) == 0 ||
        !shared->pubsub.has_subscribers()) {
      return;
    }
    const Session& s = read();
    const Field* key = s.field(kKeyField);
    if (key == nullptr) return;
    if (const int db = database_of(id, key->value); db >= 0) {
      shared->notify_event(kNotifyExpired, "expired", key->value, db);
    }
  });
}

Commands::~Commands() {
  table_.on_expiry(nullptr);
  table_.remove_observer(shared_->observer);
}

PubSub& Commands::pubsub() { return shared_->pubsub; }

namespace {

// What a role may run: before AUTH only AUTH, HELLO and QUIT (as Redis with a password);
// FLUSHDB and FLUSHALL need admin; data commands need app or admin; connection commands any
// role.
const char* refusal(Role role, std::string_view name, const Spec& spec) {
  if (role == Role::kNone) {
    return name == "auth" || name == "hello" || name == "quit" ? nullptr
                                                               : "NOAUTH Authentication required.";
  }
  if (name == "flushdb" || name == "flushall") return role == Role::kAdmin ? nullptr : "";
  if (spec.group == "connection" || name == "command") return nullptr;
  return role == Role::kApp || role == Role::kAdmin ? nullptr : "";
}

// Commands that clients try and sessiond will not run, with why (docs/resp.md).
const char* unsupported(std::string_view name) {
  static constexpr std::string_view kScripting[] = {"eval",   "evalsha",  "eval_ro", "evalsha_ro",
                                                    "script", "function", "fcall",   "fcall_ro"};
  for (std::string_view s : kScripting) {
    if (iequals(name, s)) {
      return "ERR sessiond does not run scripts (EVAL, EVALSHA, SCRIPT, FUNCTION, FCALL); see "
             "docs/resp.md, \"Scripting\"";
    }
  }
  if (iequals(name, "swapdb")) {
    return "ERR SWAPDB is not supported: sessiond's databases are namespaces of hashed keys, "
           "not tables that can be swapped; see docs/resp.md, \"Databases\"";
  }
  return nullptr;
}

// The command's table entry after the arity and permission checks, or nullptr after replying
// the error.
const std::pair<const std::string, Spec>* find_command(std::span<const std::string_view> args,
                                                       const ClientState& client,
                                                       std::string* out) {
  const auto& table = command_table();
  auto it = args[0].size() <= 64 ? table.find(lower(args[0])) : table.end();
  if (it == table.end()) {
    // Redis quotes the arguments while their text is under 128 characters, each cut to what
    // is left of those 128.
    std::string quoted;
    for (std::size_t i = 1; i < args.size() && quoted.size() < 128; ++i) {
      quoted += "'" + std::string(args[i].substr(0, 128 - quoted.size())) + "' ";
    }
    if (const char* why = unsupported(args[0])) {
      append_error(out, why);
      return nullptr;
    }
    append_error(out, "ERR unknown command '" + std::string(args[0].substr(0, 128)) +
                          "', with args beginning with: " + quoted);
    return nullptr;
  }
  const int arity = it->second.arity;
  const auto n = static_cast<int>(std::min<std::size_t>(args.size(), INT_MAX));
  if ((arity > 0 && n != arity) || (arity < 0 && n < -arity)) {
    err_arity(out, it->first);
    return nullptr;
  }
  // Redis checks the name and the arity first, then the permission.
  if (const char* refused = refusal(client.role, it->first, it->second)) {
    append_error(out, *refused != '\0' ? std::string(refused)
                                       : "NOPERM this user has no permissions to run the '" +
                                             it->first + "' command");
    return nullptr;
  }
  return &*it;
}

}  // namespace

namespace {

using Entry = std::pair<const std::string, Spec>;

// What dispatch() needs of a Commands.
struct Env {
  storage::SessionTable& table;
  const storage::Clock& clock;
  const NodeInfo& info;
  Commands::Shared& shared;
};

// A transaction holds at most this much (what it queues is copied): past it, EXECABORT.
constexpr std::size_t kMaxQueuedCommands = 10'000;
constexpr std::size_t kMaxQueuedBytes = 16u << 20;

bool allowed_when_subscribed(std::string_view name) {
  return name == "subscribe" || name == "psubscribe" || name == "unsubscribe" ||
         name == "punsubscribe" || name == "ping" || name == "quit";
}

// Commands that run at once inside MULTI instead of being queued.
bool runs_in_multi(std::string_view name) {
  return name == "exec" || name == "discard" || name == "multi" || name == "watch" ||
         name == "quit";
}

void dispatch(Env& env, std::span<const std::string_view> args, ClientState& client,
              std::string* out, const Entry* command = nullptr);

// EXEC: the queued commands run under the transactions' lock held exclusively, so no other
// client's command runs between them; WATCHed keys are checked under it too.
void exec(Env& env, ClientState& client, std::string* out) {
  if (!client.in_multi) return append_error(out, "ERR EXEC without MULTI");
  if (client.multi_refused) {
    end_multi(client);
    unwatch(client);
    return append_error(out, "EXECABORT Transaction discarded because of previous errors.");
  }
  std::vector<std::vector<std::string>> queued = std::move(client.queued);
  end_multi(client);
  absl::WriterMutexLock lock(&env.shared.tx);
  const bool dirty = client.watching && client.watching->dirty.load(std::memory_order_relaxed);
  unwatch(client);
  if (dirty) return append_null_array(out);
  append_array_header(out, queued.size());
  // Every queued command runs (the transaction is all or nothing), but the reply is bounded:
  // once it has passed NodeInfo::max_reply_bytes, a command whose own reply is more than a few
  // bytes (a read) has it replaced by an error, so MULTI + thousands of GETs of a large value
  // cannot make the node build a reply of gigabytes.
  const std::size_t start = out->size();
  const std::size_t limit = env.info.max_reply_bytes;
  constexpr std::size_t kSmallReply = 64;
  std::string scratch;
  std::vector<std::string_view> args;
  for (const std::vector<std::string>& command : queued) {
    args.assign(command.begin(), command.end());
    if (limit == 0 || out->size() - start <= limit) {
      dispatch(env, args, client, out);
      continue;
    }
    scratch.clear();
    dispatch(env, args, client, &scratch);
    if (scratch.size() <= kSmallReply) {
      out->append(scratch);
    } else {
      append_error(out, "ERR reply dropped: the transaction's replies passed --max-output-bytes");
    }
  }
}

// Runs one command (or queues it, inside MULTI). The caller holds the transactions' lock
// shared, except for EXEC, which takes it exclusively.
void dispatch(Env& env, std::span<const std::string_view> args, ClientState& client,
              std::string* out, const Entry* command) {
  if (command == nullptr) command = find_command(args, client, out);
  if (command == nullptr) {
    if (client.in_multi) client.multi_refused = true;  // EXEC will answer EXECABORT
    return;
  }
  const std::string& name = command->first;
  if (client.subscribed() && !allowed_when_subscribed(name)) {
    return append_error(out, "ERR Can't execute '" + name +
                                 "': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET "
                                 "are allowed in this context");
  }
  if (client.in_multi && !runs_in_multi(name)) {
    std::size_t bytes = 0;
    for (std::string_view a : args) bytes += a.size();
    if (client.queued.size() >= kMaxQueuedCommands ||
        client.queued_bytes + bytes > kMaxQueuedBytes) {
      client.multi_refused = true;
      return append_error(out, "ERR a transaction holds at most " +
                                   std::to_string(kMaxQueuedCommands) + " commands and " +
                                   std::to_string(kMaxQueuedBytes >> 20) + " MiB in sessiond");
    }
    client.queued.emplace_back(args.begin(), args.end());
    client.queued_bytes += bytes;
    return append_simple(out, "QUEUED");
  }
  if (name == "exec") return exec(env, client, out);
  Ctx c{env.table, env.clock, env.info, client, args, out, name, env.shared};
  command->second.run(c);
}

// Holds the transactions' lock shared, and lets go of it around an EXEC.
class SharedTx {
 public:
  explicit SharedTx(absl::Mutex& mu) : mu_(mu) { mu_.ReaderLock(); }
  ~SharedTx() { mu_.ReaderUnlock(); }
  SharedTx(const SharedTx&) = delete;
  SharedTx& operator=(const SharedTx&) = delete;
  template <typename F>
  void without(F&& f) {
    mu_.ReaderUnlock();
    f();
    mu_.ReaderLock();
  }

 private:
  absl::Mutex& mu_;
};

}  // namespace

void Commands::execute(std::span<const std::string_view> args, ClientState& client,
                       std::string* out) {
  Env env{table_, clock_, info_, *shared_};
  SharedTx tx(shared_->tx);
  if (iequals(args[0], "exec")) {
    tx.without([&] { dispatch(env, args, client, out); });
  } else {
    dispatch(env, args, client, out);
  }
}

std::size_t Commands::execute_all(std::span<const std::vector<std::string_view>> commands,
                                  ClientState& client, std::string* out,
                                  std::size_t output_budget) {
  // Consecutive SETs wait in `sets`, consecutive GETs in `gets`, and each run goes to the
  // engine together (one RocksDB write; overlapping memory reads). Anything else first sends
  // what waits, so replies keep the commands' order.
  // At most kMaxBatch commands wait: a read of many small GETs must not copy every value at
  // once, and the per-thread sessions keep their buffers only up to that size.
  // GETs copy their values, so fewer of them wait: a batch of GETs is what the replies can pass
  // the output budget by.
  // Inside MULTI and in subscribed mode nothing is batched: each command goes to dispatch().
  constexpr std::size_t kMaxBatch = 128;
  constexpr std::size_t kMaxGetBatch = 16;
  thread_local std::vector<SetRequest> sets;
  thread_local std::vector<std::string_view> gets;
  thread_local std::vector<Session> sessions;
  sets.clear();
  gets.clear();
  Env env{table_, clock_, info_, *shared_};
  SharedTx tx(shared_->tx);
  auto send_sets = [&] {
    if (sets.empty()) return;
    run_sets(table_, *shared_, sets, std::vector<std::string*>(sets.size(), out));
    sets.clear();
  };
  auto send_gets = [&] {
    if (gets.empty()) return;
    std::vector<storage::SessionId> ids;
    ids.reserve(gets.size());
    for (std::string_view key : gets) ids.push_back(key_id(key, client.db));
    if (sessions.size() < gets.size()) sessions.resize(gets.size());
    std::vector<Status> statuses(gets.size());
    table_.get_batch(ids, {}, sessions, statuses);
    for (std::size_t i = 0; i < gets.size(); ++i) {
      switch (statuses[i].ok() ? type_of(&sessions[i], gets[i]) : Type::kNone) {
        case Type::kNone:
          append_null(out);
          break;
        case Type::kString:
          append_bulk(out, sessions[i].field(kValueField)->value);
          break;
        default:
          err_wrong_type(out);
      }
    }
    for (std::size_t i = 0; i < gets.size(); ++i) {  // large values are not kept between reads
      std::size_t bytes = 0;
      for (const Field& f : sessions[i].fields) bytes += f.name.capacity() + f.value.capacity();
      if (bytes > (64u << 10)) sessions[i] = Session();
    }
    gets.clear();
  };
  std::size_t executed = 0;
  for (const std::vector<std::string_view>& args : commands) {
    if (client.close) break;  // QUIT: what follows is not executed
    if (out->size() >= output_budget) break;
    ++executed;
    if (client.in_multi || client.subscribed()) {
      send_gets();
      send_sets();
      if (iequals(args[0], "exec")) {  // EXEC takes the transactions' lock exclusively
        tx.without([&] { dispatch(env, args, client, out); });
      } else {
        dispatch(env, args, client, out);
      }
      continue;
    }
    std::string error;
    const Entry* command = find_command(args, client, &error);
    if (command != nullptr && command->second.run == cmd_get) {
      send_sets();
      gets.push_back(args[1]);
      if (gets.size() == kMaxGetBatch) send_gets();
      continue;
    }
    send_gets();
    if (command != nullptr && command->second.run == cmd_set) {
      Ctx c{table_, clock_, info_, client, args, &error, command->first, *shared_};
      SetRequest r;
      if (prepare_set(c, &r)) {
        sets.push_back(std::move(r));
        if (sets.size() == kMaxBatch) send_sets();
        continue;
      }
    }
    send_sets();
    if (command == nullptr || !error.empty()) {
      out->append(error);
      continue;
    }
    dispatch(env, args, client, out, command);  // EXEC here is one without MULTI: an error
  }
  send_sets();
  send_gets();
  return executed;
}

struct SetGroup::Impl {
  explicit Impl(Commands& c) : commands(c) {}
  Commands& commands;
  std::vector<SetRequest> requests;
  std::vector<std::string*> outs;  // where requests[i]'s reply goes
};

SetGroup::SetGroup(Commands& commands) : impl_(std::make_unique<Impl>(commands)) {}
SetGroup::~SetGroup() = default;
bool SetGroup::empty() const { return impl_->requests.empty(); }

bool SetGroup::add(std::span<const std::vector<std::string_view>> commands,
                   const ClientState& client, std::string* out) {
  if (client.in_multi || client.subscribed()) return false;
  const std::size_t before = impl_->requests.size();
  ClientState state;  // SETs neither read nor change the connection's state but its database
  state.db = client.db;
  for (const std::vector<std::string_view>& args : commands) {
    std::string error;
    const auto* command = find_command(args, state, &error);
    if (command != nullptr && command->second.run == cmd_set) {
      Commands& cs = impl_->commands;
      Ctx c{cs.table_, cs.clock_, cs.info_, state, args, &error, command->first, *cs.shared_};
      SetRequest r;
      if (prepare_set(c, &r)) {
        impl_->requests.push_back(std::move(r));
        impl_->outs.push_back(out);
        continue;
      }
    }
    impl_->requests.resize(before);  // not all SETs: the caller runs them in order instead
    impl_->outs.resize(before);
    return false;
  }
  return true;
}

void SetGroup::run() {
  Commands& cs = impl_->commands;
  SharedTx tx(cs.shared_->tx);
  run_sets(cs.table_, *cs.shared_, impl_->requests, impl_->outs);
  impl_->requests.clear();
  impl_->outs.clear();
}

}  // namespace sessiond::daemon::resp
