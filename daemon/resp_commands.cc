// Each command follows Redis 7.0's implementation of it: the order of its checks (arity, then
// options, then numbers, then the key's type), its replies and its error texts, so that clients
// and scripts written against Redis see the same answers. Writes are one SessionTable::rewrite()
// (or move()) each: the decision runs under the key's shard lock and is persisted before the
// reply is sent; a reply computed inside a decision is kept aside and sent only if the write
// succeeded.
#include "daemon/resp_commands.h"

#include <absl/container/flat_hash_map.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "daemon/resp.h"
#include "protocol/version.h"

namespace sessiond::daemon::resp {

using storage::Field;
using storage::Rewrite;
using storage::Session;
using storage::SessionId;

storage::SessionId key_id(std::string_view key) {
  // The domain and its NUL come first, so no key hashes like a key of another namespace. The
  // digest is fetched once and each thread keeps a context: OpenSSL's one-shot SHA256() looks
  // the algorithm up under a lock on every call.
  static constexpr std::string_view kDomain{"sessiond-resp\0", 14};
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                                 EVP_MD_CTX_free);
  SessionId id;
  unsigned int size = 0;
  if (sha256 == nullptr || ctx == nullptr || EVP_DigestInit_ex2(ctx.get(), sha256, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), kDomain.data(), kDomain.size()) != 1 ||
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

namespace {

// Field names: the key, a string's value, and prefixes for hash fields and set members.
constexpr std::string_view kKeyField = "K";
constexpr std::string_view kValueField = "V";
constexpr char kHashPrefix = 'H';
constexpr char kSetPrefix = 'S';
// The engine accepts timeouts up to 100 years; a longer TTL is an invalid expire time.
constexpr std::int64_t kMaxTtlMs = 100LL * 365 * 24 * 3600 * 1000;

enum class Type { kNone, kString, kHash, kSet };

// The type of the key's value in `s` (fields are sorted: "H..." < "K" < "S..." < "V").
Type type_of(const Session* s, std::string_view key) {
  if (s == nullptr || s->fields.empty()) return Type::kNone;
  const Field* k = s->field(kKeyField);
  if (k == nullptr || k->value != key) return Type::kNone;
  if (s->fields.front().name[0] == kHashPrefix) return Type::kHash;
  const std::string& last = s->fields.back().name;
  if (last == kValueField) return Type::kString;
  if (last[0] == kSetPrefix) return Type::kSet;
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
};

// The alive value of `key`, read into a per-thread session (valid until the next lookup).
Type lookup(Ctx& c, std::string_view key, const Session** found) {
  thread_local Session session;
  *found = nullptr;
  if (!c.table.get(key_id(key), {}, &session).ok()) return Type::kNone;
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
  StringOptions options;
  std::int64_t deadline = storage::kNoDeadline;
  std::string reply;

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
  }
};

// Checks a SET, SETEX or PSETEX (c.name) and fills *r; false after replying the error.
bool prepare_set(Ctx& c, SetRequest* r) {
  r->key = c.args[1];
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
void run_sets(storage::SessionTable& table, std::span<SetRequest> requests,
              std::span<std::string* const> outs) {
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
    ids.push_back(key_id(r.key));
    deciders.push_back(Decider{&r});
  }
  const std::vector<storage::RewriteFn> decides(deciders.begin(), deciders.end());
  std::vector<Status> statuses(requests.size());
  table.rewrite_batch(ids, decides, statuses);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (statuses[i].ok()) {
      outs[i]->append(requests[i].reply);
    } else {
      err_status(outs[i], statuses[i]);
    }
  }
}

void cmd_set(Ctx& c) {  // SET, SETEX, PSETEX
  SetRequest r;
  if (!prepare_set(c, &r)) return;
  Status s = c.table.rewrite(key_id(r.key), [&](const Session* cur, std::int64_t at, Rewrite* w) {
    r.decide(cur, at, w);
  });
  finish(c, s, r.reply);
}

void cmd_getex(Ctx& c) {  // Redis 7.0's order: options, the key and its type, the time
  StringOptions o;
  if (!parse_string_options(c, 2, false, &o)) return;
  const std::string_view key = c.args[1];
  std::string reply;
  Status s = c.table.rewrite(key_id(key), [&](const Session* cur, std::int64_t at, Rewrite* w) {
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
      return;
    }
    if (deadline <= at) {
      w->kind = Rewrite::Kind::kDelete;
      return;
    }
    set_deadline(*cur, deadline, at, w);
  });
  finish(c, s, reply);
}

void cmd_getdel(Ctx& c) {
  const std::string_view key = c.args[1];
  std::string reply;
  Status s = c.table.rewrite(key_id(key), [&](const Session* cur, std::int64_t, Rewrite* w) {
    const Type t = type_of(cur, key);
    if (t == Type::kNone) return append_null(&reply);
    if (t != Type::kString) return err_wrong_type(&reply);
    append_bulk(&reply, cur->field(kValueField)->value);
    w->kind = Rewrite::Kind::kDelete;
  });
  finish(c, s, reply);
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
  Status s = c.table.rewrite(key_id(key), [&](const Session* cur, std::int64_t at, Rewrite* w) {
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
      return;
    }
    set_deadline(*cur, when, at, w);
  });
  finish(c, s, reply);
}

void cmd_persist(Ctx& c) {
  const std::string_view key = c.args[1];
  std::string reply;
  Status s = c.table.rewrite(key_id(key), [&](const Session* cur, std::int64_t, Rewrite* w) {
    if (type_of(cur, key) == Type::kNone || deadline_of(*cur) == storage::kNoDeadline) {
      return append_integer(&reply, 0);
    }
    append_integer(&reply, 1);
    w->kind = Rewrite::Kind::kChange;
    w->changes.timeouts = storage::Timeouts{};
  });
  finish(c, s, reply);
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
struct DeleteIf {
  const std::string_view* key;  // nullptr: any key of the RESP namespace
  std::uint8_t* found;
  void operator()(const Session* cur, std::int64_t, Rewrite* w) const {
    const Field* k = cur ? cur->field(kKeyField) : nullptr;
    if (k == nullptr) return;
    if (key == nullptr ? key_id(k->value) != cur->id : type_of(cur, *key) == Type::kNone) return;
    *found = 1;
    w->kind = Rewrite::Kind::kDelete;
  }
};

Result<std::int64_t> delete_all(Ctx& c, std::span<const SessionId> ids,
                                std::span<const std::string_view> keys) {
  std::int64_t deleted = 0;
  constexpr std::size_t kGroup = 256;
  for (std::size_t start = 0; start < ids.size(); start += kGroup) {
    const std::size_t n = std::min(kGroup, ids.size() - start);
    std::vector<std::uint8_t> found(n, 0);
    std::vector<DeleteIf> deciders;
    deciders.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      deciders.push_back(DeleteIf{keys.empty() ? nullptr : &keys[start + i], &found[i]});
    }
    const std::vector<storage::RewriteFn> decides(deciders.begin(), deciders.end());
    std::vector<Status> statuses(n);
    c.table.rewrite_batch(ids.subspan(start, n), decides, statuses);
    for (std::size_t i = 0; i < n; ++i) {
      if (!statuses[i].ok()) return statuses[i];
      if (found[i]) ++deleted;
    }
  }
  return deleted;
}

void cmd_del(Ctx& c) {  // DEL and UNLINK
  const std::span<const std::string_view> keys = c.args.subspan(1);
  std::vector<SessionId> ids;
  ids.reserve(keys.size());
  for (std::string_view key : keys) ids.push_back(key_id(key));
  auto deleted = delete_all(c, ids, keys);
  if (!deleted.ok()) return err_status(c.out, deleted.status());
  append_integer(c.out, *deleted);
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
  Status st =
      c.table.move(key_id(from), key_id(to), [&](const Session* src, std::int64_t at, Rewrite* w) {
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
    if (k == nullptr || key_id(k->value) != id) continue;
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

void cmd_dbsize(Ctx& c) { append_integer(c.out, static_cast<std::int64_t>(c.table.size())); }

void cmd_flushdb(Ctx& c) {  // FLUSHDB / FLUSHALL [ASYNC|SYNC]
  if (c.args.size() > 2 ||
      (c.args.size() == 2 && !iequals(c.args[1], "async") && !iequals(c.args[1], "sync"))) {
    return err_syntax(c.out);
  }
  std::uint64_t cursor = 0;
  do {
    const storage::ScanPage page = c.table.scan(cursor, 1000);
    auto deleted = delete_all(c, page.ids, {});
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
  bool wrong_type = false, too_many = false;
  Status s = c.table.rewrite(key_id(key), [&](const Session* cur, std::int64_t, Rewrite* w) {
    const Type t = type_of(cur, key);
    if (t != Type::kNone && t != want) {
      wrong_type = true;
      return;
    }
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
  if (c.name == "hmset") return append_simple(c.out, "OK");
  append_integer(c.out, added);
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

// HDEL and SREM: removes names; the key goes when its last one does.
void remove_members(Ctx& c, Type want, char prefix) {
  const std::string_view key = c.args[1];
  std::vector<std::string> names;
  for (std::size_t i = 2; i < c.args.size(); ++i) names.push_back(with_prefix(prefix, c.args[i]));
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::string reply;
  Status s = c.table.rewrite(key_id(key), [&](const Session* cur, std::int64_t, Rewrite* w) {
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
      return;
    }
    w->kind = Rewrite::Kind::kChange;
    w->changes.remove = names;
  });
  finish(c, s, reply);
}

void cmd_hdel(Ctx& c) { remove_members(c, Type::kHash, kHashPrefix); }
void cmd_srem(Ctx& c) { remove_members(c, Type::kSet, kSetPrefix); }

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

void cmd_hlen(Ctx& c) {  // HLEN and SCARD
  const Type want = c.name == "hlen" ? Type::kHash : Type::kSet;
  const Session* s;
  if (!lookup_as(c, want, &s)) return;
  const auto n = s ? prefixed(*s, want == Type::kHash ? kHashPrefix : kSetPrefix).size() : 0;
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

// ---- connection and server -------------------------------------------------------------------

void cmd_ping(Ctx& c) {
  if (c.args.size() > 2) return err_arity(c.out, c.name);
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
  if (db != 0) return append_error(c.out, "ERR DB index is out of range");
  append_simple(c.out, "OK");
}

void cmd_quit(Ctx& c) {
  c.client.close = true;
  append_simple(c.out, "OK");
}

std::string client_info_line(const Ctx& c) {
  return "id=" + std::to_string(c.client.id) + " name=" + c.client.name + " db=0 resp=2" +
         " lib-name=" + c.client.lib_name + " lib-ver=" + c.client.lib_version + "\n";
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
  if (spec.group == "connection" || spec.group == "server" || name == "scan" || name == "keys") {
    return {0, 0, 0};
  }
  if (name == "del" || name == "unlink" || name == "exists" || name == "mget") return {1, -1, 1};
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
    : table_(table), clock_(clock), info_(info) {}

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

void Commands::execute(std::span<const std::string_view> args, ClientState& client,
                       std::string* out) {
  const auto* command = find_command(args, client, out);
  if (command == nullptr) return;
  Ctx c{table_, clock_, info_, client, args, out, command->first};
  command->second.run(c);
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
  constexpr std::size_t kMaxBatch = 128;
  constexpr std::size_t kMaxGetBatch = 16;
  thread_local std::vector<SetRequest> sets;
  thread_local std::vector<std::string_view> gets;
  thread_local std::vector<Session> sessions;
  sets.clear();
  gets.clear();
  auto send_sets = [&] {
    if (sets.empty()) return;
    run_sets(table_, sets, std::vector<std::string*>(sets.size(), out));
    sets.clear();
  };
  auto send_gets = [&] {
    if (gets.empty()) return;
    std::vector<storage::SessionId> ids;
    ids.reserve(gets.size());
    for (std::string_view key : gets) ids.push_back(key_id(key));
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
    std::string error;
    const auto* command = find_command(args, client, &error);
    if (command != nullptr && command->second.run == cmd_get) {
      send_sets();
      gets.push_back(args[1]);
      if (gets.size() == kMaxGetBatch) send_gets();
      continue;
    }
    send_gets();
    if (command != nullptr && command->second.run == cmd_set) {
      Ctx c{table_, clock_, info_, client, args, &error, command->first};
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
    Ctx c{table_, clock_, info_, client, args, out, command->first};
    command->second.run(c);
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

bool SetGroup::add(std::span<const std::vector<std::string_view>> commands, std::string* out) {
  const std::size_t before = impl_->requests.size();
  ClientState unused;  // SETs neither read nor change the connection's state (the server
                       // groups only reads of app and admin connections)
  for (const std::vector<std::string_view>& args : commands) {
    std::string error;
    const auto* command = find_command(args, unused, &error);
    if (command != nullptr && command->second.run == cmd_set) {
      Commands& cs = impl_->commands;
      Ctx c{cs.table_, cs.clock_, cs.info_, unused, args, &error, command->first};
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
  run_sets(impl_->commands.table_, impl_->requests, impl_->outs);
  impl_->requests.clear();
  impl_->outs.clear();
}

}  // namespace sessiond::daemon::resp
