// Session security of a node: signed ids, hijack detection and the per-preset policies, on their
// own (security.h) and as the request handlers apply them to an in-memory table.
#include "daemon/security.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <span>
#include <thread>

#include "daemon/handlers.h"
#include "protocol/frame.h"
#include "protocol/sessiond.pb.h"
#include "storage/clock.h"
#include "storage/session_table.h"
#include "tests/support/temp_dir.h"

namespace sessiond::daemon {
namespace {

namespace wire = sessiond::wire;
using storage::AccessEntry;
using storage::Preset;

constexpr std::int64_t kMinute = 60'000;

// Writes a key file as an operator would: readable by its owner only.
void write_private(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  ::chmod(path.c_str(), 0600);
}

IdKeys keys_of(char current, char previous = 0, std::int64_t until = 0) {
  IdKeys k;
  k.current.assign(kIdKeyBytes, current);
  if (previous) k.previous.assign(kIdKeyBytes, previous);
  k.previous_until_ms = until;
  return k;
}

std::span<const std::uint8_t> tag_of(const std::string& signed_id) {
  return {reinterpret_cast<const std::uint8_t*>(signed_id.data()) + 32, kIdTagBytes};
}

TEST(IdSigner, SignsAndVerifiesAndEveryBitFlipOfTheTagIsRefused) {
  IdSigner signer(keys_of('k'));
  const storage::SessionId id = storage::new_session_id();
  const std::string s = signer.sign(id);
  ASSERT_EQ(s.size(), kSignedIdBytes);
  EXPECT_EQ(s.substr(0, 32), std::string(reinterpret_cast<const char*>(id.data()), 32));
  EXPECT_TRUE(signer.verify(id, tag_of(s), 0));
  for (std::size_t bit = 0; bit < 8 * kSignedIdBytes; ++bit) {
    std::string forged = s;
    forged[bit / 8] = static_cast<char>(forged[bit / 8] ^ (1 << (bit % 8)));
    storage::SessionId forged_id;
    std::memcpy(forged_id.data(), forged.data(), 32);
    EXPECT_FALSE(signer.verify(forged_id, tag_of(forged), 0)) << "bit " << bit;
  }
  // Another key's tag, and a signer without keys, refuse it.
  EXPECT_FALSE(IdSigner(keys_of('x')).verify(id, tag_of(s), 0));
  EXPECT_FALSE(IdSigner().verify(id, tag_of(s), 0));
}

TEST(IdSigner, TheTagIsTruncatedHmacSha256AsOpenSslComputesIt) {
  for (char k : {'\0', 'k', '\xff'}) {
    const IdKeys keys = keys_of(k);
    const IdSigner signer(keys);
    for (int i = 0; i < 16; ++i) {
      const storage::SessionId id = storage::new_session_id();
      unsigned char mac[32];
      unsigned int len = 0;
      HMAC(EVP_sha256(), keys.current.data(), static_cast<int>(keys.current.size()), id.data(),
           id.size(), mac, &len);
      ASSERT_EQ(len, 32u);
      EXPECT_EQ(signer.sign(id).substr(32), std::string(reinterpret_cast<char*>(mac), kIdTagBytes));
    }
  }
}

TEST(IdSigner, ThePreviousKeyIsAcceptedOnlyDuringItsGracePeriod) {
  const storage::SessionId id = storage::new_session_id();
  const std::string old_signed = IdSigner(keys_of('a')).sign(id);
  IdSigner rotated(keys_of('b', 'a', 1'000));
  EXPECT_TRUE(rotated.verify(id, tag_of(old_signed), 999));
  EXPECT_FALSE(rotated.verify(id, tag_of(old_signed), 1'000));
  // New ids are signed with the current key.
  EXPECT_EQ(rotated.sign(id), IdSigner(keys_of('b')).sign(id));
}

TEST(IdKeys, TheKeyFileIsMadeOnceAndReadBack) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "id-keys").string();
  auto made = load_id_keys(path, true);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ(made->current.size(), kIdKeyBytes);
  EXPECT_TRUE(made->generated);
  EXPECT_FALSE(std::filesystem::exists(path + ".new"));  // the temporary file is gone
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = load_id_keys(path, true);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->current, made->current);  // not a new key on every start
  EXPECT_FALSE(again->generated);

  IdKeys rotated = keys_of('n', 'o', 1'234);
  write_private(path, id_keys_text(rotated));
  auto read = load_id_keys(path, false);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->current, rotated.current);
  EXPECT_EQ(read->previous, rotated.previous);
  EXPECT_EQ(read->previous_until_ms, 1'234);
}

TEST(IdKeys, BadKeyFilesAreClearErrors) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "keys").string();
  EXPECT_NE(load_id_keys(path, false).status().message().find("cannot read"), std::string::npos);
  const auto error_for = [&](const std::string& text) {
    write_private(path, text);
    return load_id_keys(path, false).status().message();
  };
  EXPECT_NE(error_for("current abc\n").find(":1: a key is 64 hex digits"), std::string::npos);
  EXPECT_NE(error_for("# only a comment\n").find("has no 'current' key"), std::string::npos);
  const std::string hex(64, 'a');
  EXPECT_NE(error_for("current " + hex + "\nprevious " + hex + "\n").find(":2: previous needs"),
            std::string::npos);
  EXPECT_NE(error_for("current " + std::string(63, 'a') + "g\n").find("hex digits only"),
            std::string::npos);
  EXPECT_NE(error_for("next " + hex + "\n").find("expected 'current HEX'"), std::string::npos);
  EXPECT_NE(error_for("current " + hex + "\ncurrent " + hex + "\n").find(":2: a second 'current'"),
            std::string::npos);
  // A key others may read is not a secret any more.
  write_private(path, "current " + hex + "\n");
  ASSERT_TRUE(load_id_keys(path, false).ok());
  for (mode_t mode : {0644, 0640, 0604, 0620}) {
    ::chmod(path.c_str(), mode);
    EXPECT_NE(load_id_keys(path, true).status().message().find("chmod 600"), std::string::npos)
        << std::oct << mode;
  }
  EXPECT_TRUE(load_id_keys((dir.path() / "keys").string(), false).status().code() ==
              StatusCode::kInvalidArgument);
}

TEST(RouteKey, TheFileIsMadeOnceOwnerOnlyAndReadBackAndBadOnesAreClearErrors) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "route-key").string();
  auto made = load_route_key(path, true);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = load_route_key(path, true);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *made) << "the same secret on every start";
  ::chmod(path.c_str(), 0644);
  EXPECT_NE(load_route_key(path, true).status().message().find("chmod 600"), std::string::npos);
  const auto error_for = [&](const std::string& text) {
    write_private(path, text);
    return load_route_key(path, false).status().message();
  };
  EXPECT_NE(error_for("# nothing\n").find("no 'route-key' line"), std::string::npos);
  EXPECT_NE(error_for("route-key abcd\n").find("64 hex digits"), std::string::npos);
  EXPECT_NE(error_for("current " + std::string(64, 'a') + "\n").find("'route-key HEX'"),
            std::string::npos);
  EXPECT_NE(load_route_key((dir.path() / "absent").string(), false)
                .status()
                .message()
                .find("cannot read"),
            std::string::npos);
}

TEST(Hijack, DistanceIsTheGreatCircle) {
  // Paris - New York: 5,837 km; a quarter of the equator: 10,008 km.
  EXPECT_NEAR(distance_km(48.8566, 2.3522, 40.7128, -74.0060), 5837, 10);
  EXPECT_NEAR(distance_km(0, 0, 0, 90), 10'007.5, 1);
  EXPECT_DOUBLE_EQ(distance_km(10, 20, 10, 20), 0);
}

AccessEntry at(std::int64_t time_ms, const std::string& ip, double lat, double lon) {
  return {time_ms, ip, 0, true, lat, lon};
}
AccessEntry unlocated(std::int64_t time_ms, const std::string& ip) { return {time_ms, ip, 0}; }

TEST(Hijack, ImpossibleTravelIsJudgedAgainstTheLastLocatedAccess) {
  const HijackRules rules;  // 1000 km/h, 100 km minimum
  const std::int64_t t0 = 1'700'000'000'000;
  // Paris, then New York five minutes later: ~70,000 km/h.
  std::vector<AccessEntry> log{at(t0, "198.51.100.1", 48.8566, 2.3522),
                               unlocated(t0 + kMinute, "198.51.100.1"),
                               at(t0 + 5 * kMinute, "198.51.100.1", 40.7128, -74.0060)};
  auto found = detect_hijack(log, rules);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].kind, HijackFinding::Kind::kImpossibleTravel);
  EXPECT_NEAR(found[0].distance_km, 5837, 10);
  EXPECT_EQ(found[0].interval_ms, 5 * kMinute);
  EXPECT_NEAR(found[0].speed_kmh, 5837 * 12, 200);
  EXPECT_NE(found[0].message.find("impossible travel: 58"), std::string::npos) << found[0].message;
  // Eight hours later it is a flight (730 km/h), not a hijack.
  log.back().time_ms = t0 + 8 * 60 * kMinute;
  EXPECT_TRUE(detect_hijack(log, rules).empty());
  // Within the minimum distance nothing counts, however fast.
  log.back() = at(t0 + 1, "198.51.100.1", 48.90, 2.40);
  EXPECT_TRUE(detect_hijack(log, rules).empty());
  // An unlocated access cannot travel; the check can be switched off.
  log.back() = unlocated(t0 + 1, "198.51.100.1");
  EXPECT_TRUE(detect_hijack(log, rules).empty());
  HijackRules off = rules;
  off.max_speed_kmh = 0;
  log.back() = at(t0 + 1, "198.51.100.1", -33.87, 151.21);
  EXPECT_TRUE(detect_hijack(log, off).empty());
  EXPECT_EQ(detect_hijack(log, rules).size(), 1u);  // same instant: any distance is too fast
  // The clock stepped back: the order of the two is unknown, so no speed can be judged.
  log.back() = at(t0 - 5 * kMinute, "198.51.100.1", -33.87, 151.21);
  EXPECT_TRUE(detect_hijack(log, rules).empty());
}

TEST(Hijack, TooManyDistinctIpsWithinTheWindow) {
  HijackRules rules;
  rules.max_distinct_ips = 3;
  rules.ip_window_ms = 10 * kMinute;
  const std::int64_t t0 = 1'700'000'000'000;
  std::vector<AccessEntry> log{unlocated(t0, "10.0.0.1"), unlocated(t0 + 1, "10.0.0.2"),
                               unlocated(t0 + 2, "10.0.0.3")};
  EXPECT_TRUE(detect_hijack(log, rules).empty());  // three: at the limit
  log.push_back(unlocated(t0 + 3, "10.0.0.4"));
  auto found = detect_hijack(log, rules);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].kind, HijackFinding::Kind::kManyIps);
  EXPECT_EQ(found[0].distinct_ips, 4u);
  // Coming back from an IP already seen is not a new finding.
  log.push_back(unlocated(t0 + 4, "10.0.0.2"));
  EXPECT_TRUE(detect_hijack(log, rules).empty());
  // Accesses older than the window do not count.
  log.push_back(unlocated(t0 + 10 * kMinute + 3, "10.0.0.5"));
  EXPECT_TRUE(detect_hijack(log, rules).empty());  // .4, .2, .5 in the window
  rules.max_distinct_ips = 0;
  log.push_back(unlocated(t0 + 10 * kMinute + 4, "10.0.0.6"));
  EXPECT_TRUE(detect_hijack(log, rules).empty());
}

TEST(SecurityPolicy, ThePresetTableAndTheStricterOfNodeAndPreset) {
  SecurityPolicy p;
  for (Preset strict : {Preset::kFinance, Preset::kHealthcare}) {
    const SessionPolicy s = p.for_session(strict);
    EXPECT_TRUE(s.destroy_on_context_mismatch);
    EXPECT_EQ(s.on_hijack, HijackAction::kRevokeUser);
    EXPECT_TRUE(s.sign_ids);
  }
  for (Preset lax : {Preset::kEcommerce, Preset::kMedia, Preset::kGaming}) {
    EXPECT_EQ(p.for_session(lax), SessionPolicy{}) << storage::preset_name(lax);
  }
  EXPECT_EQ(p.for_session(std::nullopt), SessionPolicy{});
  p.node.on_hijack = HijackAction::kDestroy;
  EXPECT_EQ(p.for_session(Preset::kMedia).on_hijack, HijackAction::kDestroy);
  EXPECT_EQ(p.for_session(Preset::kFinance).on_hijack, HijackAction::kRevokeUser);

  ASSERT_TRUE(apply_preset_policy("media:hijack=revoke-user,signed-ids=on", &p).ok());
  EXPECT_EQ(p.for_session(Preset::kMedia).on_hijack, HijackAction::kRevokeUser);
  EXPECT_TRUE(p.for_session(Preset::kMedia).sign_ids);
  ASSERT_TRUE(apply_preset_policy("finance:context-mismatch=report", &p).ok());
  EXPECT_FALSE(p.for_session(Preset::kFinance).destroy_on_context_mismatch);
  for (const char* bad : {"finance", "bank:hijack=report", "finance:", "finance:hijack=ban",
                          "finance:signed-ids", "finance:colour=red"}) {
    Status s = apply_preset_policy(bad, &p);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find(bad), std::string::npos) << s.message();
  }
}

// ---- the handlers applying the policy ------------------------------------------------------

class SecureHandlers : public ::testing::Test {
 protected:
  SecureHandlers() : table_(storage::TableOptions{}, clock_, nullptr) {
    handlers_.set_security(policy_, IdSigner(keys_of('k')), clock_);
  }
  void reset(SecurityPolicy policy, IdKeys keys = keys_of('k')) {
    policy_ = std::move(policy);
    handlers_.set_security(policy_, IdSigner(std::move(keys)), clock_);
  }

  // Sends one request; returns the response header and fills *body (ErrorResponse bodies when
  // the status is not OK).
  protocol::FrameHeader call(protocol::Opcode op, const google::protobuf::MessageLite& request,
                             google::protobuf::MessageLite* response) {
    std::string body;
    request.SerializeToString(&body);
    protocol::FrameHeader h;
    h.opcode = static_cast<std::uint16_t>(op);
    h.request_id = 7;
    h.body_length = static_cast<std::uint32_t>(body.size());
    std::string out;
    ConnectionState state;
    state.role = Role::kAdmin;
    handlers_.handle(h, std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()),
                     &state, &out);
    auto d = protocol::decode_frame(
        std::span(reinterpret_cast<const std::uint8_t*>(out.data()), out.size()), 1u << 20);
    EXPECT_EQ(d.kind, protocol::Decoded::Kind::kFrame);
    last_error_.Clear();
    response->Clear();
    if (d.header.status == StatusCode::kOk) {
      EXPECT_TRUE(response->ParseFromArray(d.body.data(), static_cast<int>(d.body.size())));
    } else {
      EXPECT_TRUE(last_error_.ParseFromArray(d.body.data(), static_cast<int>(d.body.size())));
    }
    return d.header;
  }
  std::string create(wire::Preset preset, const std::string& user = "alice") {
    wire::CreateRequest req;
    req.set_user_id(user);
    req.set_preset(preset);
    wire::CreateResponse resp;
    EXPECT_EQ(call(protocol::Opcode::kCreate, req, &resp).status, StatusCode::kOk);
    return resp.session().id();
  }
  // A GET recording an access from (lat, lon).
  protocol::FrameHeader get_from(const std::string& id, double lat, double lon,
                                 wire::GetResponse* resp, const std::string& ip = "198.51.100.9") {
    wire::GetRequest req;
    req.set_id(id);
    req.mutable_record_access()->set_ip(ip);
    req.mutable_record_access()->set_has_location(true);
    req.mutable_record_access()->set_latitude(lat);
    req.mutable_record_access()->set_longitude(lon);
    return call(protocol::Opcode::kGet, req, resp);
  }
  StatusCode get_code(const std::string& id) {
    wire::GetRequest req;
    req.set_id(id);
    wire::GetResponse resp;
    return call(protocol::Opcode::kGet, req, &resp).status;
  }
  std::uint64_t forged() const { return counters_.forged_ids.load(); }

  storage::ManualClock clock_;
  storage::SessionTable table_;
  Counters counters_;
  Handlers handlers_{table_, nullptr, counters_, "", 1u << 20};
  SecurityPolicy policy_;
  wire::ErrorResponse last_error_;
};

// The node derives its session size limit from the frame limit with
// Handlers::session_answer_overhead: a session as large as it gets in every part (signed id,
// longest user id, every field, a bound context, a full access history, both kinds of
// hijack finding) must answer with no more than its data plus that overhead.
TEST_F(SecureHandlers, TheLargestSessionFitsItsDataPlusTheAnswerOverhead) {
  SecurityPolicy p;
  p.node.sign_ids = true;
  p.hijack.max_distinct_ips = 1;
  reset(p);
  const storage::TableOptions limits;
  wire::CreateRequest req;
  req.set_user_id(std::string(limits.max_user_id_bytes, 'u'));
  req.mutable_context()->set_ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
  req.mutable_context()->set_user_agent_hash(~0ull);
  std::size_t data = req.user_id().size();
  for (std::size_t i = 0; i < limits.max_fields; ++i) {
    auto* f = req.add_fields();
    f->set_name(std::to_string(1000 + i) + std::string(196, 'n'));
    f->set_value(std::string(3000, 'v'));
    data += f->name().size() + f->value().size();
  }
  wire::CreateResponse created;
  ASSERT_EQ(call(protocol::Opcode::kCreate, req, &created).status, StatusCode::kOk)
      << last_error_.message();
  wire::GetResponse resp;
  for (std::size_t i = 0; i <= limits.access_log_length; ++i) {
    clock_.advance_ms(kMinute);
    wire::GetRequest get;
    get.set_id(created.session().id());
    get.mutable_expect_context()->set_ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    get.mutable_expect_context()->set_user_agent_hash(~0ull);
    auto* access = get.mutable_record_access();
    access->set_ip("2001:0db8:0000:0000:0000:ff00:0042:" + std::to_string(1000 + i));
    access->set_user_agent_hash(~0ull);
    access->set_has_location(true);
    access->set_latitude(i % 2 ? -89.999999 : 89.999999);
    access->set_longitude(i % 2 ? -179.999999 : 179.999999);
    ASSERT_EQ(call(protocol::Opcode::kGet, get, &resp).status, StatusCode::kOk)
        << last_error_.message();
  }
  ASSERT_EQ(resp.session().access_log_size(), static_cast<int>(limits.access_log_length));
  ASSERT_EQ(resp.detections_size(), 2);  // impossible travel and too many IPs
  EXPECT_LE(resp.ByteSizeLong(), data + Handlers::session_answer_overhead(limits));
}

TEST_F(SecureHandlers, FinanceAndHealthcareSessionsGetSignedIdsOthersDoNot) {
  EXPECT_EQ(create(wire::FINANCE).size(), kSignedIdBytes);
  EXPECT_EQ(create(wire::HEALTHCARE).size(), kSignedIdBytes);
  EXPECT_EQ(create(wire::ECOMMERCE).size(), 32u);
  EXPECT_EQ(create(wire::PRESET_UNSPECIFIED).size(), 32u);  // the node default: ecommerce
  wire::CreateRequest explicit_timeouts;
  explicit_timeouts.mutable_timeouts()->set_idle_ms(1000);
  wire::CreateResponse resp;
  call(protocol::Opcode::kCreate, explicit_timeouts, &resp);
  EXPECT_EQ(resp.session().id().size(), 32u);
}

TEST_F(SecureHandlers, ASignedIdWorksForEveryOperationAndStaysSignedThroughRegenerate) {
  const std::string id = create(wire::FINANCE);
  wire::GetResponse got;
  wire::GetRequest get;
  get.set_id(id);
  ASSERT_EQ(call(protocol::Opcode::kGet, get, &got).status, StatusCode::kOk);
  EXPECT_EQ(got.session().id(), id);
  wire::UpdateRequest update;
  update.set_id(id);
  auto* f = update.add_set();
  f->set_name("cart");
  f->set_value("1");
  wire::UpdateResponse updated;
  ASSERT_EQ(call(protocol::Opcode::kUpdate, update, &updated).status, StatusCode::kOk);
  EXPECT_EQ(updated.session().id(), id);
  wire::RegenerateRequest regen;
  regen.set_id(id);
  wire::RegenerateResponse regenerated;
  ASSERT_EQ(call(protocol::Opcode::kRegenerate, regen, &regenerated).status, StatusCode::kOk);
  const std::string fresh = regenerated.session().id();
  EXPECT_EQ(fresh.size(), kSignedIdBytes);
  EXPECT_EQ(get_code(id), StatusCode::kNotFound);
  EXPECT_EQ(get_code(fresh), StatusCode::kOk);
  wire::ListUserRequest list;
  list.set_user_id("alice");
  wire::ListUserResponse listed;
  call(protocol::Opcode::kListUser, list, &listed);
  ASSERT_EQ(listed.sessions_size(), 1);
  EXPECT_EQ(listed.sessions(0).id(), fresh);
  EXPECT_EQ(forged(), 0u);
}

TEST_F(SecureHandlers, ForgedIdsAreRefusedBeforeAnyLookupAndCounted) {
  const std::string id = create(wire::FINANCE);
  const auto misses_before = table_.stats().read_misses;
  std::string forged_tag = id;
  forged_tag.back() = static_cast<char>(forged_tag.back() ^ 1);
  EXPECT_EQ(get_code(forged_tag), StatusCode::kNotFound);
  EXPECT_NE(last_error_.message().find("signature does not verify"), std::string::npos);
  // A guessed id with a made-up tag: refused the same way, and never looked up.
  std::string guessed(kSignedIdBytes, 'g');
  EXPECT_EQ(get_code(guessed), StatusCode::kNotFound);
  wire::DestroyRequest destroy;
  destroy.set_id(forged_tag);
  wire::DestroyResponse destroyed;
  EXPECT_EQ(call(protocol::Opcode::kDestroy, destroy, &destroyed).status, StatusCode::kNotFound);
  EXPECT_EQ(forged(), 3u);
  EXPECT_EQ(table_.stats().read_misses, misses_before);  // no lookup happened
  EXPECT_EQ(get_code(id), StatusCode::kOk);              // the real one is untouched
  // Other lengths are malformed, not forged.
  EXPECT_EQ(get_code(id.substr(0, 40)), StatusCode::kInvalidArgument);
  EXPECT_EQ(forged(), 3u);
}

TEST_F(SecureHandlers, WithSignedIdsAllBareIdsAreRefusedToo) {
  SecurityPolicy all;
  all.node.sign_ids = true;
  all.require_signed_ids = true;
  reset(all);
  const std::string id = create(wire::MEDIA);
  ASSERT_EQ(id.size(), kSignedIdBytes);
  EXPECT_EQ(get_code(id.substr(0, 32)), StatusCode::kNotFound);
  EXPECT_NE(last_error_.message().find("signed session ids only"), std::string::npos);
  EXPECT_EQ(forged(), 1u);
  EXPECT_EQ(get_code(id), StatusCode::kOk);
}

TEST_F(SecureHandlers, RotationAcceptsIdsOfThePreviousKeyUntilTheGracePeriodEnds) {
  const std::string old_id = create(wire::FINANCE);
  const std::int64_t until = clock_.now_ms() + 60 * kMinute;
  reset(policy_, keys_of('n', 'k', until));
  EXPECT_EQ(get_code(old_id), StatusCode::kOk);
  // The node answers with the id signed under the new key, which verifies too.
  wire::GetRequest get;
  get.set_id(old_id);
  wire::GetResponse got;
  call(protocol::Opcode::kGet, get, &got);
  EXPECT_NE(got.session().id(), old_id);
  EXPECT_EQ(got.session().id().substr(0, 32), old_id.substr(0, 32));
  EXPECT_EQ(get_code(got.session().id()), StatusCode::kOk);
  clock_.set_ms(until);
  EXPECT_EQ(get_code(old_id), StatusCode::kNotFound);
  EXPECT_EQ(forged(), 1u);
}

TEST_F(SecureHandlers, ImpossibleTravelIsReportedForEcommerceSessions) {
  const std::string id = create(wire::ECOMMERCE);
  wire::GetResponse resp;
  ASSERT_EQ(get_from(id, 48.8566, 2.3522, &resp).status, StatusCode::kOk);  // Paris
  EXPECT_EQ(resp.detections_size(), 0);
  clock_.advance_ms(5 * kMinute);
  ASSERT_EQ(get_from(id, 40.7128, -74.0060, &resp).status, StatusCode::kOk);  // New York
  ASSERT_EQ(resp.detections_size(), 1);
  EXPECT_EQ(resp.detections(0).kind(), wire::HijackDetection::IMPOSSIBLE_TRAVEL);
  EXPECT_NEAR(resp.detections(0).distance_km(), 5837, 10);
  EXPECT_EQ(resp.detections(0).interval_ms(), 5 * kMinute);
  EXPECT_EQ(counters_.hijack_travel.load(), 1u);
  EXPECT_EQ(get_code(id), StatusCode::kOk);  // reported, not ended
}

TEST_F(SecureHandlers, AFinanceSessionReadFromFarAwayRevokesEverySessionOfItsUser) {
  const std::string id = create(wire::FINANCE, "bob");
  const std::string other = create(wire::FINANCE, "bob");
  const std::string someone_else = create(wire::FINANCE, "carol");
  wire::GetResponse resp;
  ASSERT_EQ(get_from(id, 48.8566, 2.3522, &resp).status, StatusCode::kOk);
  clock_.advance_ms(3 * kMinute);
  const auto h = get_from(id, 35.6762, 139.6503, &resp);  // Tokyo, three minutes later
  EXPECT_EQ(h.status, StatusCode::kHijackSuspected);
  EXPECT_FALSE(resp.has_session());
  EXPECT_NE(last_error_.message().find("impossible travel"), std::string::npos);
  EXPECT_NE(last_error_.message().find("every session of the user was revoked (2)"),
            std::string::npos)
      << last_error_.message();
  ASSERT_EQ(last_error_.detections_size(), 1);
  EXPECT_EQ(get_code(id), StatusCode::kNotFound);
  EXPECT_EQ(get_code(other), StatusCode::kNotFound);
  EXPECT_EQ(get_code(someone_else), StatusCode::kOk);
}

TEST_F(SecureHandlers, DestroyPolicyEndsOnlyThatSessionOnTooManyIps) {
  SecurityPolicy p;
  p.node.on_hijack = HijackAction::kDestroy;
  p.hijack.max_distinct_ips = 2;
  reset(p);
  const std::string id = create(wire::MEDIA, "dave");
  const std::string other = create(wire::MEDIA, "dave");
  wire::GetResponse resp;
  ASSERT_EQ(get_from(id, 0, 0, &resp, "10.1.0.1").status, StatusCode::kOk);
  ASSERT_EQ(get_from(id, 0, 0, &resp, "10.1.0.2").status, StatusCode::kOk);
  EXPECT_EQ(get_from(id, 0, 0, &resp, "10.1.0.3").status, StatusCode::kHijackSuspected);
  EXPECT_NE(last_error_.message().find("many IPs: 3 distinct"), std::string::npos)
      << last_error_.message();
  EXPECT_EQ(counters_.hijack_many_ips.load(), 1u);
  EXPECT_EQ(get_code(id), StatusCode::kNotFound);
  EXPECT_EQ(get_code(other), StatusCode::kOk);
}

TEST_F(SecureHandlers, AContextMismatchDestroysFinanceSessionsButOnlyReportsForMedia) {
  for (auto [preset, destroyed] : {std::pair{wire::FINANCE, true}, {wire::MEDIA, false}}) {
    wire::CreateRequest req;
    req.set_preset(preset);
    req.mutable_context()->set_ip("203.0.113.0/24");
    wire::CreateResponse created;
    ASSERT_EQ(call(protocol::Opcode::kCreate, req, &created).status, StatusCode::kOk);
    wire::GetRequest get;
    get.set_id(created.session().id());
    get.mutable_expect_context()->set_ip("198.51.100.1");
    wire::GetResponse resp;
    EXPECT_EQ(call(protocol::Opcode::kGet, get, &resp).status, StatusCode::kContextMismatch);
    EXPECT_EQ(last_error_.message().find("destroyed") != std::string::npos, destroyed);
    EXPECT_EQ(get_code(created.session().id()),
              destroyed ? StatusCode::kNotFound : StatusCode::kOk);
  }
  EXPECT_EQ(counters_.context_mismatches.load(), 2u);
}

// An error message that quotes what the client sent stays parsable (found by handlers_fuzz:
// protobuf refuses a string field that is not UTF-8, so the client saw no message at all).
TEST_F(SecureHandlers, ErrorsQuotingClientBytesReachTheClient) {
  wire::CreateRequest req;
  for (int i = 0; i < 2; ++i) {
    auto* f = req.add_fields();
    f->set_name("\xff\xfe");
    f->set_value("v");
  }
  wire::CreateResponse resp;
  EXPECT_EQ(call(protocol::Opcode::kCreate, req, &resp).status, StatusCode::kInvalidArgument);
  EXPECT_EQ(last_error_.message(), "field '\\xff\\xfe' given twice");
}

// Pipelined CREATEs go through handle_creates (one RocksDB write for the group): the same
// presets, the same signed ids as one by one.
TEST_F(SecureHandlers, PipelinedCreatesGetTheirPresetsAndSignedIds) {
  std::vector<std::string> bodies;
  for (auto preset : {wire::FINANCE, wire::MEDIA, wire::HEALTHCARE}) {
    wire::CreateRequest req;
    req.set_user_id("erin");
    req.set_preset(preset);
    bodies.push_back(req.SerializeAsString());
  }
  std::vector<Handlers::Request> requests;
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    protocol::FrameHeader h;
    h.opcode = static_cast<std::uint16_t>(protocol::Opcode::kCreate);
    h.request_id = static_cast<std::uint32_t>(i + 1);
    requests.push_back(
        {h, std::span(reinterpret_cast<const std::uint8_t*>(bodies[i].data()), bodies[i].size())});
  }
  std::string out;
  ConnectionState state;
  state.role = Role::kApp;
  handlers_.handle_creates(requests, &state, &out);
  std::vector<std::string> ids;
  std::span<const std::uint8_t> rest(reinterpret_cast<const std::uint8_t*>(out.data()), out.size());
  while (!rest.empty()) {
    auto d = protocol::decode_frame(rest, 1u << 20);
    ASSERT_EQ(d.kind, protocol::Decoded::Kind::kFrame);
    ASSERT_EQ(d.header.status, StatusCode::kOk);
    wire::CreateResponse resp;
    ASSERT_TRUE(resp.ParseFromArray(d.body.data(), static_cast<int>(d.body.size())));
    ids.push_back(resp.session().id());
    rest = rest.subspan(d.consumed);
  }
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0].size(), kSignedIdBytes);
  EXPECT_EQ(ids[1].size(), 32u);
  EXPECT_EQ(ids[2].size(), kSignedIdBytes);
  for (const auto& id : ids) EXPECT_EQ(get_code(id), StatusCode::kOk);
}

// --signed-ids off after a time with signing: new sessions are not signed, and the signed ids
// already handed out keep working (the node still loads its keys to verify them).
TEST_F(SecureHandlers, TurningSigningOffKeepsIssuedSignedIdsWorking) {
  const std::string signed_before = create(wire::FINANCE);
  ASSERT_EQ(signed_before.size(), kSignedIdBytes);
  SecurityPolicy off;
  for (auto& p : off.presets) p.sign_ids = false;
  reset(off);
  EXPECT_EQ(create(wire::FINANCE).size(), 32u);
  wire::GetRequest get;
  get.set_id(signed_before);
  wire::GetResponse got;
  ASSERT_EQ(call(protocol::Opcode::kGet, get, &got).status, StatusCode::kOk);
  EXPECT_EQ(got.session().id(), signed_before);  // still handed out as the client holds it
  EXPECT_EQ(forged(), 0u);
}

// --signed-ids all after a time without: every id the node hands out is signed from now on,
// older sessions' included, and their bare ids are refused like guesses.
TEST_F(SecureHandlers, RequiringSignedIdsSignsOlderSessionsToo) {
  const std::string bare = create(wire::MEDIA, "frank");
  ASSERT_EQ(bare.size(), 32u);
  SecurityPolicy all;
  all.node.sign_ids = true;
  all.require_signed_ids = true;
  reset(all);
  EXPECT_EQ(get_code(bare), StatusCode::kNotFound);
  wire::ListUserRequest list;
  list.set_user_id("frank");
  wire::ListUserResponse listed;
  call(protocol::Opcode::kListUser, list, &listed);
  ASSERT_EQ(listed.sessions_size(), 1);
  EXPECT_EQ(listed.sessions(0).id().size(), kSignedIdBytes);
  EXPECT_EQ(listed.sessions(0).id().substr(0, 32), bare);
  EXPECT_EQ(get_code(listed.sessions(0).id()), StatusCode::kOk);
}

TEST_F(SecureHandlers, SetSecurityWhileServingGivesEveryRequestOneWholePolicy) {
  // What a SIGHUP reload does: replace the policy and the keys while worker threads serve.
  // Finance ids are signed under one policy and bare under the other, and the two key sets
  // accept each other's ids, so every id a worker gets must answer a GET; a request that mixed
  // two snapshots, or read one while it was replaced, would show here or under TSan.
  const std::int64_t far = clock_.now_ms() + 1000 * kMinute;
  SecurityPolicy signing = policy_;
  SecurityPolicy bare = policy_;
  bare.presets[static_cast<std::size_t>(Preset::kFinance)].sign_ids = false;
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::atomic<int> requests{0};
  const auto serve = [&] {
    ConnectionState state;
    state.role = Role::kAdmin;
    while (!done.load()) {
      wire::CreateRequest create;
      create.set_user_id("alice");
      create.set_preset(wire::FINANCE);
      std::string body;
      create.SerializeToString(&body);
      protocol::FrameHeader h;
      h.opcode = static_cast<std::uint16_t>(protocol::Opcode::kCreate);
      h.body_length = static_cast<std::uint32_t>(body.size());
      std::string out;
      handlers_.handle(h,
                       std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()),
                       &state, &out);
      auto d = protocol::decode_frame(
          std::span(reinterpret_cast<const std::uint8_t*>(out.data()), out.size()), 1u << 20);
      wire::CreateResponse created;
      if (d.header.status != StatusCode::kOk ||
          !created.ParseFromArray(d.body.data(), static_cast<int>(d.body.size()))) {
        failures.fetch_add(1);
        continue;
      }
      wire::GetRequest get;
      get.set_id(created.session().id());
      get.SerializeToString(&body);
      h.opcode = static_cast<std::uint16_t>(protocol::Opcode::kGet);
      h.body_length = static_cast<std::uint32_t>(body.size());
      out.clear();
      handlers_.handle(h,
                       std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()),
                       &state, &out);
      d = protocol::decode_frame(
          std::span(reinterpret_cast<const std::uint8_t*>(out.data()), out.size()), 1u << 20);
      if (d.header.status != StatusCode::kOk) failures.fetch_add(1);
      requests.fetch_add(2);
    }
  };
  std::thread a(serve);
  std::thread b(serve);
  for (int i = 0; i < 300; ++i) {
    const int served = requests.load();
    handlers_.set_security(i % 2 ? bare : signing,
                           IdSigner(i % 2 ? keys_of('j', 'k', far) : keys_of('k', 'j', far)),
                           clock_);
    // Each snapshot serves a few requests before the next replaces it.
    while (requests.load() < served + 4) std::this_thread::yield();
  }
  done = true;
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace sessiond::daemon
