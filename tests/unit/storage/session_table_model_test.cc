// Randomized model test of SessionTable (DESIGN §12, STYLE "Tests"): long random sequences of
// operations run against the table and against a std::map that implements the session rules of
// session.h / session_table.h in the most direct way, and the two are compared after every step.
//
// The model holds every session the table may still hold: the alive ones, and dead ones the table
// has not certainly removed yet (the expirer is lazy). NOT_FOUND and EXPIRED are one "absent"
// outcome, since which one the table answers depends on whether it already removed the session;
// but OK must come exactly when the model says the session is alive. Ids come from the CSPRNG,
// yet a seed replays the same operations: targets are picked by creation order, never by id.
// SESSIOND_MODEL_SEED=<n> runs that seed only; SESSIOND_MODEL_STEPS=<n> changes the length.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "protocol/status.h"
#include "storage/clock.h"
#include "storage/session.h"
#include "storage/session_table.h"

namespace sessiond::storage {
namespace {

constexpr std::int64_t kStartMs = 1'700'000'000'000;
constexpr std::uint32_t kRegion = 7;
constexpr std::size_t kAccessLogLength = 3;
constexpr std::size_t kMaxFields = 4;
constexpr std::size_t kMaxSessionBytes = 56;
constexpr std::size_t kMaxModelSessions = 60;  // creates turn into destroys above this
constexpr int kDefaultSteps = 4000;
const Timeouts kDefaultTimeouts{250, 900};

// Small pools so that users share sessions and updates hit existing fields.
const std::vector<std::string> kUsers = {"", "alice", "bob", "carol", "dave"};
const std::vector<std::string> kFieldNames = {"a", "b", "cart", "role", "zz"};
// Idle only, absolute only, both (either one binding), and none.
const std::vector<Timeouts> kTimeouts = {{0, 0},     {200, 0},   {0, 500},   {150, 600},
                                         {300, 300}, {400, 250}, {100, 1000}};
const std::vector<ClientContext> kContexts = {{"10.0.0.1", 41}, {"10.0.0.2", 42}};

struct ModelField {
  std::string value;
  Version version;
};

struct ModelSession {
  std::string user_id;
  std::map<std::string, ModelField> fields;
  std::int64_t created_at_ms = 0;
  std::int64_t last_access_ms = 0;
  Timeouts timeouts;
  Version version;
  std::vector<Version> previous_versions;  // for stale expected versions
  std::optional<ClientContext> context;
  std::vector<AccessEntry> access_log;
  // A dead session that an operation may or may not have removed (revoke_user); it only counts
  // towards the upper bound of stats().sessions until expire_due() settles it.
  bool maybe_removed = false;

  // The lifetime cap (the table's default max lifetime) ends even a session without timeouts.
  std::int64_t deadline() const {
    return std::min(compute_deadline(created_at_ms, last_access_ms, timeouts),
                    created_at_ms + TableOptions{}.max_lifetime_ms);
  }
  bool alive(std::int64_t now) const { return now < deadline(); }
};

bool absent(StatusCode code) {
  return code == StatusCode::kNotFound || code == StatusCode::kExpired;
}

// Past the route key (a user's sessions share their first 8 bytes).
std::string short_id(const SessionId& id) { return session_id_to_text(id).substr(11, 6); }

// The codes a request may legitimately get; empty means it must succeed.
struct Expected {
  std::set<StatusCode> codes;
  bool allows(StatusCode code) const {
    if (codes.empty()) return code == StatusCode::kOk;
    if (codes.count(code)) return true;
    // NOT_FOUND and EXPIRED are one outcome.
    return absent(code) &&
           (codes.count(StatusCode::kNotFound) || codes.count(StatusCode::kExpired));
  }
  std::string describe() const {
    if (codes.empty()) return "OK";
    std::string out;
    for (StatusCode c : codes) out += (out.empty() ? "" : "|") + std::string(status_code_name(c));
    return out;
  }
};

// Adds the limit violations of a session with these fields and user to `expected`.
void add_field_violations(const std::string& user_id,
                          const std::vector<std::pair<std::string, std::string>>& fields,
                          Expected* expected) {
  std::set<std::string> names;
  std::size_t bytes = user_id.size();
  for (const auto& [name, value] : fields) {
    if (name.empty() || !names.insert(name).second) {
      expected->codes.insert(StatusCode::kInvalidArgument);
    }
    bytes += name.size() + value.size();
  }
  if (fields.size() > kMaxFields || bytes > kMaxSessionBytes) {
    expected->codes.insert(StatusCode::kTooLarge);
  }
}

class ModelRun {
 public:
  ModelRun(std::uint64_t seed, std::size_t shard_count)
      : seed_(seed), rng_(seed), clock_(kStartMs), table_(options(shard_count), clock_, nullptr) {}

  // Runs `steps` random operations and the final teardown. Stops at the first mismatch, which
  // it reports with the seed and the operations that led to it.
  void run(int steps) {
    for (step_ = 0; step_ < steps; ++step_) {
      random_operation();
      if (!::testing::Test::HasFatalFailure()) check_state();
      if (::testing::Test::HasFatalFailure()) return report();
    }
    finish();
    if (::testing::Test::HasFatalFailure()) return report();
  }

 private:
  static TableOptions options(std::size_t shard_count) {
    TableOptions o;
    o.shard_count = shard_count;
    o.default_timeouts = kDefaultTimeouts;
    o.region = kRegion;
    o.access_log_length = kAccessLogLength;
    o.max_fields = kMaxFields;
    o.max_session_bytes = kMaxSessionBytes;
    return o;
  }

  // ---- randomness ---------------------------------------------------------------------------

  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool chance(int percent) { return uniform(0, 99) < percent; }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<std::size_t>(uniform(0, static_cast<int>(v.size()) - 1))];
  }
  std::string random_value() {
    std::string v(static_cast<std::size_t>(uniform(0, 10)), 'x');
    for (char& c : v) c = static_cast<char>('a' + uniform(0, 25));
    return v;
  }
  // Distinct names usually; sometimes a repeated or an empty name.
  std::vector<std::pair<std::string, std::string>> random_fields(int max_count) {
    std::vector<std::string> names = kFieldNames;
    std::shuffle(names.begin(), names.end(), rng_);
    std::vector<std::pair<std::string, std::string>> fields;
    const int n = uniform(0, max_count);
    for (int i = 0; i < n; ++i) {
      fields.emplace_back(names[static_cast<std::size_t>(i)], random_value());
    }
    if (!fields.empty() && chance(8)) fields.emplace_back(fields.front().first, random_value());
    if (chance(3)) fields.emplace_back("", random_value());
    return fields;
  }
  // A session the model holds (mostly), an id that existed once, or one that never did.
  SessionId pick_id() {
    const int r = uniform(0, 99);
    if (r < 80 && !present_.empty()) return pick(present_);
    if (r < 93 && !history_.empty()) return pick(history_);
    return new_session_id();
  }
  std::vector<SessionId> alive_of_user(const std::string& user) const {
    std::vector<SessionId> out;
    for (const SessionId& id : present_) {
      const ModelSession& m = model_.at(id);
      if (m.user_id == user && m.alive(now())) out.push_back(id);
    }
    return out;
  }

  std::int64_t now() const { return clock_.now_ms(); }
  bool alive(const SessionId& id) const {
    auto it = model_.find(id);
    return it != model_.end() && it->second.alive(now());
  }

  // ---- model bookkeeping ----------------------------------------------------------------------

  void note(std::string what) {
    trace_.push_back("step " + std::to_string(step_) + " @" + std::to_string(now() - kStartMs) +
                     "ms: " + std::move(what));
    if (trace_.size() > 16) trace_.pop_front();
  }

  void add(const SessionId& id, ModelSession m) {
    model_.emplace(id, std::move(m));
    present_.push_back(id);
    history_.push_back(id);
  }

  void erase(const SessionId& id) {
    if (model_.erase(id) == 0) return;
    present_.erase(std::find(present_.begin(), present_.end(), id));
  }

  // After an operation named `id`: a dead session the table answered "absent" for is gone.
  void settle_absent(const SessionId& id, StatusCode code) {
    if (absent(code) && model_.count(id) && !alive(id)) erase(id);
  }

  void check_new_version(const Version& v) {
    ASSERT_EQ(v.region, kRegion) << "versions carry the table's region";
    ASSERT_GT(v, last_version_) << "every write gets a version above all earlier ones";
    last_version_ = v;
  }

  void check_meta(const SessionMeta& meta, const SessionId& id, const ModelSession& m) {
    ASSERT_EQ(meta.id, id);
    ASSERT_EQ(meta.version, m.version);
    ASSERT_EQ(meta.created_at_ms, m.created_at_ms);
    ASSERT_EQ(meta.last_access_ms, m.last_access_ms);
    ASSERT_EQ(meta.deadline_ms, m.deadline());
  }

  void check_session(const Session& got, const SessionId& id, const ModelSession& m) {
    ASSERT_EQ(got.id, id);
    ASSERT_EQ(got.user_id, m.user_id);
    ASSERT_EQ(got.fields.size(), m.fields.size()) << "fields of " << short_id(id);
    auto it = m.fields.begin();
    for (const Field& f : got.fields) {
      ASSERT_EQ(f.name, it->first);
      ASSERT_EQ(f.value, it->second.value) << "field " << f.name;
      ASSERT_EQ(f.version, it->second.version) << "version of field " << f.name;
      ++it;
    }
    ASSERT_EQ(got.created_at_ms, m.created_at_ms);
    ASSERT_EQ(got.last_access_ms, m.last_access_ms);
    ASSERT_EQ(got.timeouts, m.timeouts);
    ASSERT_EQ(got.version, m.version);
    ASSERT_EQ(got.context, m.context);
    ASSERT_EQ(got.access_log, m.access_log);
    ASSERT_GT(got.deadline_ms(), now()) << "a session returned by get is alive";
  }

  void expect_code(StatusCode got, const Expected& expected, const std::string& what) {
    ASSERT_TRUE(expected.allows(got)) << what << " answered " << status_code_name(got)
                                      << "; the model allows " << expected.describe();
  }

  // ---- operations ---------------------------------------------------------------------------

  void random_operation() {
    const int r = uniform(0, 99);
    if (r < 16) return op_create();
    if (r < 30) return op_get();
    if (r < 34) return op_get_batch();
    if (r < 50) return op_update();
    if (r < 58) return op_touch();
    if (r < 62) return op_destroy();
    if (r < 68) return op_regenerate();
    if (r < 70) return op_revoke_user();
    if (r < 74) return op_expire_due();
    op_advance_clock();
  }

  void op_advance_clock() {
    const int r = uniform(0, 99);
    std::int64_t to = now();
    if (r < 70) {
      to += uniform(0, 3);
    } else if (r < 82) {
      // Exactly onto a deadline (that session dies now) or one ms before it (it is still alive):
      // mostly the nearest one, so that sessions die one at a time.
      std::int64_t deadline = kNoDeadline;
      if (chance(70)) {
        for (const auto& [id, m] : model_) {
          if (m.deadline() > now()) deadline = std::min(deadline, m.deadline());
        }
      } else if (!present_.empty()) {
        deadline = model_.at(pick(present_)).deadline();
      }
      if (deadline != kNoDeadline && deadline > now()) to = deadline - uniform(0, 1);
    } else {
      to += uniform(5, 60);
    }
    note("advance clock by " + std::to_string(to - now()) + "ms");
    clock_.set_ms(to);
  }

  void op_create() {
    if (present_.size() >= kMaxModelSessions) return op_destroy();
    NewSession req;
    req.user_id = pick(kUsers);
    req.fields = random_fields(chance(5) ? 5 : 4);
    Expected expected;
    const int t = uniform(0, 99);
    if (t < 20) {
      req.timeouts = std::nullopt;
    } else if (t < 96) {
      req.timeouts = pick(kTimeouts);
    } else {
      req.timeouts = Timeouts{-1, 100};
      expected.codes.insert(StatusCode::kInvalidArgument);
    }
    if (chance(30)) req.context = pick(kContexts);
    add_field_violations(req.user_id, req.fields, &expected);
    note("create user='" + req.user_id + "' fields=" + std::to_string(req.fields.size()) +
         " expect " + expected.describe());

    auto result = table_.create(req);
    ASSERT_NO_FATAL_FAILURE(expect_code(result.code(), expected, "create"));
    if (!result.ok()) return;
    const SessionMeta& meta = *result;
    ASSERT_NO_FATAL_FAILURE(check_new_version(meta.version));
    ASSERT_EQ(std::count(history_.begin(), history_.end(), meta.id), 0) << "ids are never reused";
    ModelSession m;
    m.user_id = req.user_id;
    for (const auto& [name, value] : req.fields) m.fields[name] = {value, meta.version};
    m.created_at_ms = m.last_access_ms = now();
    m.timeouts = req.timeouts.value_or(kDefaultTimeouts);
    m.version = meta.version;
    m.context = req.context;
    ASSERT_NO_FATAL_FAILURE(check_meta(meta, meta.id, m));
    trace_.back() += " -> " + short_id(meta.id);
    add(meta.id, std::move(m));
    ++creates_;
  }

  // Random read options; the context and the access entry live in *storage.
  ReadOptions random_read_options(ClientContext* context, AccessEntry* access) {
    ReadOptions options;
    options.touch = chance(50);
    *context = pick(kContexts);
    if (chance(25)) options.expect_context = context;
    *access = AccessEntry{0,
                          "192.0.2." + std::to_string(uniform(1, 9)),
                          static_cast<std::uint64_t>(uniform(1, 3)),
                          chance(50),
                          48.85,
                          2.35};
    if (chance(25)) options.record_access = access;
    return options;
  }

  std::string describe_read(const SessionId& id, const ReadOptions& options) const {
    return short_id(id) + (options.touch ? " touch" : "") +
           (options.expect_context ? " ctx=" + options.expect_context->ip : "") +
           (options.record_access ? " record" : "");
  }

  // Checks one read's answer against the model, then applies the read to the model.
  void check_read(const SessionId& id, const ReadOptions& options, const Status& s,
                  const Session& out) {
    Expected expected;
    if (!alive(id)) {
      expected.codes = {StatusCode::kNotFound, StatusCode::kExpired};
    } else if (const ModelSession& m = model_.at(id);
               options.expect_context && m.context && *m.context != *options.expect_context) {
      expected.codes = {StatusCode::kContextMismatch};
    }
    ASSERT_NO_FATAL_FAILURE(expect_code(s.code(), expected, "get " + short_id(id)));
    settle_absent(id, s.code());
    if (!s.ok()) return;
    ModelSession& m = model_.at(id);
    if (options.record_access) {
      AccessEntry entry = *options.record_access;
      entry.time_ms = now();
      if (!entry.has_location) entry.latitude = entry.longitude = 0;  // no stray coordinates
      // The history is a set of accesses (DESIGN §7: merged as a union): the same access twice
      // in one millisecond is one, ordered by time (then content), the newest N kept.
      auto key = [](const AccessEntry& e) {
        return std::tie(e.time_ms, e.ip, e.user_agent_hash, e.has_location, e.latitude,
                        e.longitude);
      };
      if (std::none_of(m.access_log.begin(), m.access_log.end(),
                       [&](const AccessEntry& e) { return e == entry; })) {
        m.access_log.push_back(entry);
      }
      std::sort(m.access_log.begin(), m.access_log.end(),
                [&](const AccessEntry& a, const AccessEntry& b) { return key(a) < key(b); });
      if (m.access_log.size() > kAccessLogLength) m.access_log.erase(m.access_log.begin());
    }
    if (options.touch) m.last_access_ms = std::max(m.last_access_ms, now());
    ++read_hits_;
    ASSERT_NO_FATAL_FAILURE(check_session(out, id, m));
  }

  void op_get() {
    const SessionId id = pick_id();
    ClientContext context;
    AccessEntry access;
    const ReadOptions options = random_read_options(&context, &access);
    note("get " + describe_read(id, options));
    Session out;
    Status s = table_.get(id, options, &out);
    ASSERT_NO_FATAL_FAILURE(check_read(id, options, s, out));
  }

  // A batch answers as the same gets one after another would (an id may repeat).
  void op_get_batch() {
    std::vector<SessionId> ids(static_cast<std::size_t>(uniform(1, 6)));
    for (std::size_t i = 0; i < ids.size(); ++i) {
      ids[i] = i > 0 && chance(20) ? ids[0] : pick_id();
    }
    ClientContext context;
    AccessEntry access;
    const ReadOptions options = random_read_options(&context, &access);
    std::string what = "get_batch";
    for (const SessionId& id : ids) what += " " + short_id(id);
    note(what + (options.touch ? " touch" : "") + (options.record_access ? " record" : ""));
    std::vector<Session> out(ids.size());
    std::vector<Status> statuses(ids.size(), Status::Internal("not written"));
    table_.get_batch(ids, options, out, statuses);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      ASSERT_NO_FATAL_FAILURE(check_read(ids[i], options, statuses[i], out[i])) << "item " << i;
    }
  }

  void op_update() {
    const SessionId id = pick_id();
    FieldChanges changes;
    changes.set = random_fields(2);
    for (int i = uniform(0, 2); i > 0; --i) {
      changes.remove.push_back(chance(80) ? pick(kFieldNames) : "absent");
    }
    Expected expected;
    const int t = uniform(0, 99);
    if (t < 15) {
      changes.timeouts = pick(kTimeouts);
    } else if (t < 18) {
      changes.timeouts = Timeouts{100, -5};
    }
    std::optional<Version> expected_version;
    const ModelSession* m = alive(id) ? &model_.at(id) : nullptr;
    const int v = uniform(0, 99);
    if (v < 25 && m) {
      expected_version = m->version;
    } else if (v < 40 && m && !m->previous_versions.empty()) {
      expected_version = pick(m->previous_versions);
    } else if (v < 45) {
      expected_version = Version{1, kRegion};
    } else if (v < 50) {
      expected_version = Version{UINT64_MAX, kRegion};
    }

    const bool bad_timeouts = changes.timeouts && changes.timeouts->absolute_ms < 0;
    std::map<std::string, std::string> merged;
    // Invalid timeouts may be refused before or after the lookup; either answer is right.
    if (bad_timeouts) expected.codes.insert(StatusCode::kInvalidArgument);
    if (!m) {
      expected.codes.insert(StatusCode::kNotFound);
    } else if (expected_version && *expected_version != m->version) {
      expected.codes.insert(StatusCode::kVersionConflict);
    } else if (!bad_timeouts) {
      // Removed first, then set (a name both set and removed is set).
      for (const auto& [name, f] : m->fields) merged[name] = f.value;
      for (const std::string& name : changes.remove) merged.erase(name);
      for (const auto& [name, value] : changes.set) merged[name] = value;
      add_field_violations(m->user_id, {merged.begin(), merged.end()}, &expected);
      // A name repeated in `set` collapses in `merged`, but the request is invalid all the same.
      std::set<std::string> names;
      for (const auto& [name, value] : changes.set) {
        if (!names.insert(name).second) expected.codes.insert(StatusCode::kInvalidArgument);
      }
    }
    note("update " + short_id(id) + " set=" + std::to_string(changes.set.size()) + " remove=" +
         std::to_string(changes.remove.size()) + (changes.timeouts ? " timeouts" : "") +
         (expected_version ? " expected_version" : "") + " expect " + expected.describe());

    auto result = table_.update(id, changes, expected_version);
    ASSERT_NO_FATAL_FAILURE(expect_code(result.code(), expected, "update"));
    settle_absent(id, result.code());
    if (!result.ok()) return;
    ASSERT_NO_FATAL_FAILURE(check_new_version(result->version));
    ModelSession& s = model_.at(id);
    std::map<std::string, ModelField> fields;
    for (const auto& [name, value] : merged) {
      auto old = s.fields.find(name);
      const bool written = std::any_of(changes.set.begin(), changes.set.end(),
                                       [&](const auto& kv) { return kv.first == name; });
      fields[name] = written ? ModelField{value, result->version} : old->second;
    }
    s.fields = std::move(fields);
    s.previous_versions.push_back(s.version);
    s.version = result->version;
    s.last_access_ms = std::max(s.last_access_ms, now());
    if (changes.timeouts) s.timeouts = *changes.timeouts;
    ++updates_;
    ASSERT_NO_FATAL_FAILURE(check_meta(*result, id, s));
  }

  void op_touch() {
    const SessionId id = pick_id();
    const bool is_alive = alive(id);
    note("touch " + short_id(id) + (is_alive ? " (alive)" : " (absent)"));
    auto result = table_.touch(id);
    if (!is_alive) {
      ASSERT_TRUE(absent(result.code()))
          << "touch of a dead session answered " << status_code_name(result.code());
      settle_absent(id, result.code());
      return;
    }
    ASSERT_TRUE(result.ok()) << "touch of an alive session: " << result.status().ToString();
    ModelSession& m = model_.at(id);
    m.last_access_ms = std::max(m.last_access_ms, now());
    ASSERT_NO_FATAL_FAILURE(check_meta(*result, id, m));
  }

  void op_destroy() {
    const SessionId id = pick_id();
    const bool is_alive = alive(id);
    note("destroy " + short_id(id) + (is_alive ? " (alive)" : " (absent)"));
    Status s = table_.destroy(id);
    if (!is_alive) {
      ASSERT_TRUE(absent(s.code())) << "destroy of a dead session answered " << s.ToString();
      settle_absent(id, s.code());
      return;
    }
    ASSERT_TRUE(s.ok()) << "destroy of an alive session: " << s.ToString();
    erase(id);
    ++destroys_;
  }

  void op_regenerate() {
    const SessionId id = pick_id();
    RegenerateOptions options;
    if (chance(30)) options.replace_fields = random_fields(3);
    if (chance(30)) options.user_id = pick(kUsers);
    Expected expected;
    const ModelSession* m = alive(id) ? &model_.at(id) : nullptr;
    std::vector<std::pair<std::string, std::string>> fields;
    if (!m) {
      expected.codes = {StatusCode::kNotFound};
    } else {
      if (options.replace_fields) {
        fields = *options.replace_fields;
      } else {
        for (const auto& [name, f] : m->fields) fields.emplace_back(name, f.value);
      }
      add_field_violations(options.user_id.value_or(m->user_id), fields, &expected);
    }
    note("regenerate " + short_id(id) + (options.replace_fields ? " replace" : "") +
         (options.user_id ? " user='" + *options.user_id + "'" : "") + " expect " +
         expected.describe());

    auto result = table_.regenerate(id, options);
    ASSERT_NO_FATAL_FAILURE(expect_code(result.code(), expected, "regenerate"));
    settle_absent(id, result.code());
    if (!result.ok()) return;
    const SessionMeta& meta = *result;
    ASSERT_NO_FATAL_FAILURE(check_new_version(meta.version));
    ASSERT_NE(meta.id, id);
    ASSERT_EQ(std::count(history_.begin(), history_.end(), meta.id), 0) << "ids are never reused";
    ModelSession fresh;
    fresh.user_id = options.user_id.value_or(m->user_id);
    for (const auto& [name, value] : fields) fresh.fields[name] = {value, meta.version};
    // The same user keeps the session's lifetime (its absolute deadline); a new one starts it.
    fresh.created_at_ms = fresh.user_id == m->user_id ? m->created_at_ms : now();
    fresh.last_access_ms = now();
    fresh.timeouts = m->timeouts;
    fresh.version = meta.version;
    fresh.context = m->context;
    fresh.access_log = m->access_log;
    ASSERT_NO_FATAL_FAILURE(check_meta(meta, meta.id, fresh));
    trace_.back() += " -> " + short_id(meta.id);
    erase(id);
    add(meta.id, std::move(fresh));
    ++regenerates_;
  }

  void op_revoke_user() {
    // The empty user is "no user": revoking it must not touch anonymous sessions.
    const std::string user = pick(kUsers);
    std::vector<SessionId> victims = user.empty() ? std::vector<SessionId>{} : alive_of_user(user);
    std::optional<SessionId> keep;
    const int k = uniform(0, 99);
    if (k < 40 && !victims.empty()) {
      keep = pick(victims);
    } else if (k < 60) {
      keep = pick_id();
    }
    if (keep) victims.erase(std::remove(victims.begin(), victims.end(), *keep), victims.end());
    note("revoke_user '" + user + "'" + (keep ? " keep " + short_id(*keep) : "") + " expect " +
         std::to_string(victims.size()));

    auto result = table_.revoke_user(user, keep ? &*keep : nullptr);
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    ASSERT_EQ(*result, victims.size()) << "sessions revoked for '" << user << "'";
    for (const SessionId& id : victims) erase(id);
    for (const SessionId& id : present_) {
      ModelSession& m = model_.at(id);
      if (!user.empty() && m.user_id == user && !m.alive(now())) m.maybe_removed = true;
    }
    destroys_ += victims.size();
  }

  void op_expire_due() {
    std::size_t certain = 0, possible = 0;
    std::vector<SessionId> dead;
    for (const SessionId& id : present_) {
      const ModelSession& m = model_.at(id);
      if (m.alive(now())) continue;
      dead.push_back(id);
      ++possible;
      if (!m.maybe_removed) ++certain;
    }
    note("expire_due, " + std::to_string(certain) + ".." + std::to_string(possible) + " due");
    const std::size_t removed = table_.expire_due();
    ASSERT_GE(removed, certain) << "expire_due left due sessions behind";
    ASSERT_LE(removed, possible) << "expire_due removed more sessions than were due";
    for (const SessionId& id : dead) erase(id);
    ASSERT_EQ(table_.stats().sessions, model_.size())
        << "after expire_due the table holds exactly the alive sessions";
  }

  // ---- comparison -----------------------------------------------------------------------------

  void check_state() {
    std::size_t alive_count = 0;
    std::set<std::string> alive_users, possible_users;
    Session out;
    for (const auto& [id, m] : model_) {
      if (!m.user_id.empty()) possible_users.insert(m.user_id);
      if (!m.alive(now())) continue;  // a get would remove it and hide the lazy expiry paths
      ++alive_count;
      if (!m.user_id.empty()) alive_users.insert(m.user_id);
      Status s = table_.get(id, ReadOptions{}, &out);
      ASSERT_TRUE(s.ok()) << "alive session " << short_id(id) << ": " << s.ToString();
      ++read_hits_;
      ASSERT_NO_FATAL_FAILURE(check_session(out, id, m));
    }

    for (const std::string& user : kUsers) {
      std::vector<SessionMeta> listed = table_.list_user(user);
      for (std::size_t i = 1; i < listed.size(); ++i) {
        ASSERT_LE(listed[i - 1].created_at_ms, listed[i].created_at_ms)
            << "list_user('" << user << "') is oldest first";
      }
      std::vector<SessionId> want = user.empty() ? std::vector<SessionId>{} : alive_of_user(user);
      ASSERT_EQ(listed.size(), want.size()) << "list_user('" << user << "')";
      std::sort(want.begin(), want.end());
      std::sort(listed.begin(), listed.end(),
                [](const SessionMeta& a, const SessionMeta& b) { return a.id < b.id; });
      for (std::size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(listed[i].id, want[i]) << "list_user('" << user << "')";
        ASSERT_NO_FATAL_FAILURE(check_meta(listed[i], want[i], model_.at(want[i])));
      }
    }

    const TableStats stats = table_.stats();
    ASSERT_EQ(stats.creates, creates_);
    ASSERT_EQ(stats.updates, updates_);
    ASSERT_EQ(stats.destroys, destroys_);
    ASSERT_EQ(stats.regenerates, regenerates_);
    ASSERT_EQ(stats.read_hits, read_hits_);
    ASSERT_GE(stats.sessions, alive_count) << "stats().sessions below the alive count";
    ASSERT_LE(stats.sessions, model_.size()) << "stats().sessions counts a removed session";
    ASSERT_EQ(stats.sessions, stats.creates - stats.destroys - stats.expiries)
        << "every session that ends is counted once as a destroy or an expiry";
    ASSERT_GE(stats.users, alive_users.size());
    ASSERT_LE(stats.users, possible_users.size());
    check_memory(stats);
  }

  // Non-fatal and reported once per run: a wrong byte count must not hide model mismatches.
  void check_memory(const TableStats& stats) {
    if (memory_reported_ || (stats.sessions == 0) == (stats.memory_bytes == 0)) return;
    memory_reported_ = true;
    ADD_FAILURE() << "seed " << seed_ << " step " << step_ << ": stats() reports "
                  << stats.memory_bytes << " memory bytes for " << stats.sessions
                  << " sessions; record accounting drifted. Last operations:\n"
                  << trace_text();
  }

  // Probes every id ever issued, then ends every session: the table must come back to empty.
  void finish() {
    step_ = -1;
    Session out;
    for (const SessionId& id : history_) {
      const bool is_alive = alive(id);
      Status s = table_.get(id, ReadOptions{}, &out);
      if (is_alive) {
        ASSERT_TRUE(s.ok()) << short_id(id) << ": " << s.ToString();
        ++read_hits_;
        ASSERT_NO_FATAL_FAILURE(check_session(out, id, model_.at(id)));
      } else {
        ASSERT_TRUE(absent(s.code()))
            << "dead or destroyed " << short_id(id) << " answered " << s.ToString();
        settle_absent(id, s.code());
      }
    }
    note("advance clock by 10s");
    clock_.advance_ms(10'000);
    ASSERT_NO_FATAL_FAILURE(op_expire_due());
    for (const SessionId& id : std::vector<SessionId>(present_)) {
      ASSERT_GT(model_.at(id).deadline(), now()) << "only sessions without timeouts are left";
      ASSERT_TRUE(table_.destroy(id).ok());
      erase(id);
      ++destroys_;
    }
    ASSERT_NO_FATAL_FAILURE(check_state());
    const TableStats stats = table_.stats();
    EXPECT_EQ(stats.sessions, 0u);
    EXPECT_EQ(stats.users, 0u) << "user index entries outlived their sessions";
    check_memory(stats);
  }

  std::string trace_text() const {
    std::string out;
    for (const std::string& line : trace_) out += "  " + line + "\n";
    return out;
  }

  void report() {
    ADD_FAILURE() << "model mismatch with seed " << seed_ << " at step " << step_
                  << " (replay: SESSIOND_MODEL_SEED=" << seed_ << "). Last operations:\n"
                  << trace_text();
  }

  const std::uint64_t seed_;
  std::mt19937_64 rng_;
  ManualClock clock_;
  SessionTable table_;
  int step_ = 0;

  std::map<SessionId, ModelSession> model_;
  std::vector<SessionId>
      present_;  // keys of model_ in creation order (picks must not depend on ids)
  std::vector<SessionId> history_;  // every id the table issued
  std::deque<std::string> trace_;
  Version last_version_;
  std::uint64_t creates_ = 0, updates_ = 0, destroys_ = 0, regenerates_ = 0, read_hits_ = 0;
  bool memory_reported_ = false;
};

std::vector<std::uint64_t> seeds() {
  if (const char* s = std::getenv("SESSIOND_MODEL_SEED"); s && *s) {
    return {std::strtoull(s, nullptr, 10)};
  }
  return {1, 2, 3, 4};
}

int steps() {
  if (const char* s = std::getenv("SESSIOND_MODEL_STEPS"); s && *s) return std::atoi(s);
  return kDefaultSteps;
}

void run_seeds(std::size_t shard_count) {
  for (std::uint64_t seed : seeds()) {
    std::cout << "[   seed   ] " << seed << " (" << shard_count << " shards, " << steps()
              << " steps)\n";
    SCOPED_TRACE("seed " + std::to_string(seed));
    ModelRun(seed, shard_count).run(steps());
    if (::testing::Test::HasFatalFailure()) break;  // later seeds would stop at once
  }
}

TEST(SessionTableModel, RandomOperationsMatchModel) { run_seeds(256); }

// Few shards: many sessions per shard heap, and regenerate often stays in one shard.
TEST(SessionTableModel, RandomOperationsMatchModelWithFewShards) { run_seeds(4); }

TEST(SessionTableModel, RandomOperationsMatchModelWithOneShard) { run_seeds(1); }

}  // namespace
}  // namespace sessiond::storage
