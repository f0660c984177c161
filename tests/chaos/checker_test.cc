// The chaos checker against small made-up histories (label unit): each invariant flags the
// history that breaks it, with the lines that show it, and passes its legitimate neighbours
// (concurrent calls, asynchronous regions, unacknowledged calls, graceful handovers).
#include "checker.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "history.h"
#include "tests/support/temp_dir.h"

namespace sessiond::chaos {
namespace {

// Real ids: 43 base64url characters; the first 8 bytes are the ring position.
const std::string kA = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const std::string kB = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

class HistoryBuilder {
 public:
  HistoryBuilder() {
    h_.regions = {"r1", "r2"};
    h_.idle_ms = 300000;
    h_.converged = true;
    h_.converge_ms = 5;
  }
  // An op over [t0, t1] seconds; returns it for more fields.
  Op& op(std::string kind, std::string region, std::string id, double t0, double t1,
         std::string status = "OK") {
    Op o;
    o.op = std::move(kind);
    o.region = std::move(region);
    o.id = std::move(id);
    o.t0 = static_cast<std::int64_t>(t0 * 1e6);
    o.t1 = static_cast<std::int64_t>(t1 * 1e6);
    o.status = std::move(status);
    o.phase = "run";
    o.line = h_.lines.size();
    h_.lines.push_back(o.op + " " + o.region + " " + o.id);
    h_.ops.push_back(o);
    return h_.ops.back();
  }
  Op& create(std::string region, std::string id, double t0, double t1, std::string w,
             std::uint32_t node = 1, std::string user = "u1") {
    Op& o = write("create", std::move(region), std::move(id), t0, t1, std::move(w), node);
    o.user = std::move(user);
    return o;
  }
  Op& write(std::string kind, std::string region, std::string id, double t0, double t1,
            std::string w, std::uint32_t node = 1) {
    Op& o = op(std::move(kind), region, id, t0, t1);
    o.w = std::move(w);
    o.hlc = static_cast<std::uint64_t>(t1 * 1e6);
    o.ver_region = region == "r1" ? 11 : 22;
    o.ver_node = node;
    o.deadline_ms = static_cast<std::int64_t>(t1 * 1000) + h_.idle_ms;
    return o;
  }
  Op& read(std::string region, std::string id, double t0, double t1, std::string status,
           std::string w = "", bool final_phase = false) {
    Op& o = op("get", region, id, t0, t1, std::move(status));
    o.w = std::move(w);
    o.deadline_ms = static_cast<std::int64_t>(t1 * 1000) + h_.idle_ms;
    if (final_phase) o.phase = "final";
    return o;
  }
  void fault(std::string kind, double t) {
    h_.faults.push_back(Fault{static_cast<std::int64_t>(t * 1e6), std::move(kind), "r1/n1", ""});
  }
  History& history() { return h_; }

 private:
  History h_;
};

const Verdict& verdict(const std::vector<Verdict>& all, char number) {
  for (const auto& v : all) {
    if (v.name[0] == number) return v;
  }
  static Verdict none;
  ADD_FAILURE() << "no verdict " << number;
  return none;
}

TEST(ChaosChecker, AReadInTheDestroyingRegionAfterTheDestroyIsAViolation) {
  HistoryBuilder b;
  b.create("r1", kA, 1.0, 1.1, "c1");
  b.op("destroy", "r1", kA, 2.0, 2.1);
  b.read("r1", kA, 2.05, 2.3, "OK", "c1");  // concurrent with the destroy: fine
  auto v = check(b.history());
  EXPECT_TRUE(verdict(v, '1').violations.empty());
  b.read("r1", kA, 2.2, 2.3, "OK", "c1");  // started after it was acknowledged
  v = check(b.history());
  ASSERT_EQ(verdict(v, '1').violations.size(), 1u);
  EXPECT_NE(verdict(v, '1').violations[0].what.find("after destroy"), std::string::npos);
  EXPECT_FALSE(verdict(v, '1').violations[0].lines.empty());
}

TEST(ChaosChecker, AnotherRegionMayLagButNeverGoesBack) {
  HistoryBuilder b;
  b.create("r1", kA, 1.0, 1.1, "c1");
  b.op("destroy", "r1", kA, 2.0, 2.1);
  b.read("r2", kA, 2.2, 2.3, "OK", "c1");  // the tombstone has not arrived: asynchronous
  EXPECT_TRUE(verdict(check(b.history()), '1').violations.empty());
  b.read("r2", kA, 2.4, 2.5, "NOT_FOUND");  // it arrived
  b.read("r2", kA, 2.6, 2.7, "OK", "c1");   // and the session came back
  EXPECT_EQ(verdict(check(b.history()), '1').violations.size(), 1u);
}

TEST(ChaosChecker, AfterTheFaultsNoRegionMayReturnAnEndedSession) {
  HistoryBuilder b;
  b.create("r1", kA, 1.0, 1.1, "c1");
  b.op("destroy", "r1", kA, 2.0, 2.1);
  b.read("r2", kA, 9.0, 9.0, "OK", "c1", /*final_phase=*/true);
  EXPECT_EQ(verdict(check(b.history()), '1').violations.size(), 1u);
}

TEST(ChaosChecker, ARevokeEndsTheSessionsOfItsUserBornBeforeIt) {
  HistoryBuilder b;
  b.create("r1", kA, 1.0, 1.1, "c1");
  Op& revoke = b.op("revoke", "r1", "", 2.0, 2.1);
  revoke.user = "u1";
  b.create("r1", kB, 2.05, 2.2, "c2");  // concurrent with the revoke: may live
  b.read("r1", kB, 3.0, 3.1, "OK", "c2");
  EXPECT_TRUE(verdict(check(b.history()), '1').violations.empty());
  b.read("r1", kA, 3.0, 3.1, "OK", "c1");
  EXPECT_EQ(verdict(check(b.history()), '1').violations.size(), 1u);
}

TEST(ChaosChecker, AnAcknowledgedWriteMustBeEverywhereAfterTheFaults) {
  HistoryBuilder b;
  b.create("r1", kA, 1.0, 1.1, "c1");
  b.write("update", "r2", kA, 2.0, 2.1, "u1");
  b.read("r1", kA, 9.0, 9.0, "OK", "u1", true);
  b.read("r2", kA, 9.0, 9.0, "OK", "u1", true);
  auto v = check(b.history());
  EXPECT_EQ(verdict(v, '2').checked, 2u);
  EXPECT_TRUE(verdict(v, '2').violations.empty());
  b.read("r1", kA, 9.1, 9.1, "OK", "c1", true);  // an older value
  b.read("r2", kA, 9.1, 9.1, "NOT_FOUND", "", true);
  EXPECT_EQ(verdict(check(b.history()), '2').violations.size(), 2u);
}

TEST(ChaosChecker, AnUnacknowledgedCallMayHaveTakenEffect) {
  HistoryBuilder b;
  b.create("r1", kA, 1.0, 1.1, "c1");
  Op& lost = b.write("update", "r1", kA, 2.0, 3.0, "u1");
  lost.status = "UNAVAILABLE";
  b.read("r1", kA, 9.0, 9.0, "OK", "u1", true);  // its value: fine
  b.create("r1", kB, 1.0, 1.1, "c2");
  b.op("destroy", "r1", kB, 2.0, 3.0, "UNAVAILABLE");
  b.read("r1", kB, 9.0, 9.0, "NOT_FOUND", "", true);  // maybe destroyed: fine
  EXPECT_TRUE(verdict(check(b.history()), '2').violations.empty());
}

TEST(ChaosChecker, DigestsThatDifferAreAViolation) {
  HistoryBuilder b;
  b.history().digests.push_back(DigestRecord{"r1", "198.18.1.11:7400", "r2", "", 1, 0});
  EXPECT_TRUE(verdict(check(b.history()), '3').violations.empty());
  b.history().digests.push_back(DigestRecord{"r2", "198.18.2.11:7400", "r1", "", 1, 3});
  EXPECT_EQ(verdict(check(b.history()), '3').violations.size(), 1u);
  b.history().digests.clear();
  EXPECT_EQ(verdict(check(b.history()), '3').violations.size(), 1u) << "no digests compared";
}

TEST(ChaosChecker, DeadlinesMayDifferByTheCoalescingAllowanceOnly) {
  HistoryBuilder b;
  b.create("r1", kA, 1.0, 1.1, "c1");
  b.read("r1", kA, 9.0, 9.0, "OK", "c1", true).deadline_ms = 1'000'000;
  b.read("r2", kA, 9.0, 9.0, "OK", "c1", true).deadline_ms = 1'000'000 + 31'000;  // 300 s x 0.1 + 1
  EXPECT_TRUE(verdict(check(b.history()), '4').violations.empty());
  b.read("r2", kA, 9.1, 9.1, "OK", "c1", true).deadline_ms = 1'000'000 + 31'001;
  EXPECT_EQ(verdict(check(b.history()), '4').violations.size(), 1u);
}

TEST(ChaosChecker, TwoWritersOfOneRangeAtOnceAreAViolation) {
  HistoryBuilder b;
  b.create("r1", kA, 1.0, 1.1, "c1", /*node=*/2);
  b.write("update", "r1", kA, 1.2, 1.3, "u1", 2);
  b.write("update", "r1", kA, 1.4, 1.5, "u2", 1);  // node 1 between two writes of node 2
  b.write("update", "r1", kA, 1.6, 1.7, "u3", 2);
  auto v = check(b.history());
  ASSERT_EQ(verdict(v, '5').violations.size(), 1u);
  EXPECT_EQ(verdict(v, '5').violations[0].lines.size(), 3u);
}

TEST(ChaosChecker, AHandoverAndBackIsNotTwoWriters) {
  HistoryBuilder b;
  b.create("r1", kA, 1.0, 1.1, "c1", 2);
  b.write("update", "r1", kA, 1.4, 1.5, "u1", 1);
  b.fault("restart", 1.55);  // a graceful restart between
  b.write("update", "r1", kA, 1.6, 1.7, "u2", 2);
  b.write("update", "r1", kA, 20.0, 20.1, "u3", 1);  // a lease later: a failover
  b.write("update", "r1", kA, 21.0, 21.1, "u4", 2);
  EXPECT_TRUE(verdict(check(b.history()), '5').violations.empty());
}

TEST(ChaosChecker, ReadsTheHistoryFormatAndNamesABadLine) {
  testing::TempDir dir;
  const std::string path = dir.sub("history.jsonl");
  {
    std::ofstream out(path);
    out << R"({"type":"config","idle_ms":1000,"touch_fraction":0.2,"regions":["r1","r2"]})"
        << "\n"
        << R"({"type":"op","op":"create","region":"r1","id":")" << kA
        << R"(","user":"u","w":"c","t0":1,"t1":2,"status":"OK","ver":[5,11,1],"deadline":9})"
        << "\n"
        << R"({"type":"converged","t":3,"ok":true,"ms":12})"
        << "\n";
  }
  History h;
  std::string error;
  ASSERT_TRUE(read_history({path}, h, error)) << error;
  ASSERT_EQ(h.ops.size(), 1u);
  EXPECT_EQ(h.ops[0].ver_node, 1u);
  EXPECT_EQ(h.idle_ms, 1000);
  EXPECT_EQ(h.converge_ms, 12);
  { std::ofstream(path, std::ios::app) << "{not json\n"; }
  History again;
  EXPECT_FALSE(read_history({path}, again, error));
  EXPECT_NE(error.find(":4:"), std::string::npos) << error;
}

}  // namespace
}  // namespace sessiond::chaos
