// storage_crash_writer <data-dir> <durability>: the child process of the crash test
// (persistence_test.cc, Persistence.KilledWriterLosesNoAcknowledgedSession).
//
// Opens a Store (durability "memory", "async" or "sync") and a SessionTable on the data
// directory with the system clock, then makes sessions until it is killed or has made
// kMaxSessions. Each session is created for user "crash-writer" with field "origin" =
// "crash-writer", then updated with fields derived from its id: "id" = its text form and
// "reversed" = that text reversed. Only after both writes returned OK does the writer print the
// id's text form and a newline on stdout, with write(2) so that nothing acknowledged sits in a
// stdio buffer when the SIGKILL comes: every line is a promise the parent holds the store to.
//
// With a third argument "touch" it makes one session instead (user "crash-toucher", idle
// timeout kToucherIdleMs, the default coalescing fraction 0.1), prints its id, then reads it
// with touch every few milliseconds and prints each read's last_access (ms since the epoch):
// the test holds the store to the coalescing bound of the last one printed
// (Persistence.KilledToucherLosesAtMostTheCoalescingSlack).
//
// With a third argument "batched" it writes as the server does (issue 18): 16 sessions at a time
// inside one Store::WalBatch, their WAL bytes handed to the operating system by one finish(),
// and prints the 16 ids only after finish() returned OK
// (Persistence.KilledBatchedWriterLosesNoAcknowledgedSession).
//
// Exits 2 with a message on stderr when the arguments are wrong or the store does not open, 1
// when a write fails, 0 after kMaxSessions (kMaxTouches).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "storage/clock.h"
#include "storage/session.h"
#include "storage/session_table.h"
#include "storage/store.h"

namespace {

using sessiond::storage::Durability;
using sessiond::storage::durability_from_name;
using sessiond::storage::FieldChanges;
using sessiond::storage::NewSession;
using sessiond::storage::ReadOptions;
using sessiond::storage::Session;
using sessiond::storage::session_id_to_text;
using sessiond::storage::SessionTable;
using sessiond::storage::Store;
using sessiond::storage::StoreOptions;
using sessiond::storage::SystemClock;
using sessiond::storage::TableOptions;
using sessiond::storage::Timeouts;

constexpr int kMaxSessions = 1'000'000;
constexpr int kMaxTouches = 100'000;
constexpr std::int64_t kHourMs = 3'600'000;
constexpr std::int64_t kToucherIdleMs = 10'000;

// Writes all of `bytes` to stdout, retrying short writes; false if stdout is gone.
bool write_all(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(STDOUT_FILENO, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// The "touch" mode: one session, read with touch until killed.
int touch(SessionTable& table) {
  NewSession request;
  request.user_id = "crash-toucher";
  request.timeouts = Timeouts{kToucherIdleMs, 24 * kHourMs};
  auto created = table.create(request);
  if (!created.ok()) {
    std::fprintf(stderr, "storage_crash_writer: create: %s\n", created.status().ToString().c_str());
    return 1;
  }
  if (!write_all(session_id_to_text(created->id) + "\n")) return 1;
  ReadOptions with_touch;
  with_touch.touch = true;
  Session session;
  for (int i = 0; i < kMaxTouches; ++i) {
    if (auto s = table.get(created->id, with_touch, &session); !s.ok()) {
      std::fprintf(stderr, "storage_crash_writer: get: %s\n", s.ToString().c_str());
      return 1;
    }
    if (!write_all(std::to_string(session.last_access_ms) + "\n")) return 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // a pace, not a wait
  }
  return 0;
}

constexpr int kBatch = 16;

int run(const std::string& path, Durability durability, std::string_view mode) {
  StoreOptions store_options;
  store_options.path = path;
  store_options.durability = durability;
  auto store = Store::open(store_options, SystemClock::instance());
  if (!store.ok()) {
    std::fprintf(stderr, "storage_crash_writer: %s\n", store.status().ToString().c_str());
    return 2;
  }
  TableOptions table_options;
  table_options.shard_count = 16;
  SessionTable table(table_options, SystemClock::instance(), store->get());
  if (auto recovered = table.recover(); !recovered.ok()) {
    std::fprintf(stderr, "storage_crash_writer: %s\n", recovered.status().ToString().c_str());
    return 2;
  }

  if (mode == "touch") return touch(table);
  const bool batched = mode == "batched";
  NewSession request;
  request.user_id = "crash-writer";
  request.fields = {{"origin", "crash-writer"}};
  request.timeouts = Timeouts{kHourMs, 24 * kHourMs};
  FieldChanges changes;
  changes.set.resize(2);
  std::string line;
  std::optional<Store::WalBatch> batch;
  for (int i = 0; i < kMaxSessions; ++i) {
    if (batched && !batch) batch.emplace();
    auto created = table.create(request);
    if (!created.ok()) {
      std::fprintf(stderr, "storage_crash_writer: create: %s\n",
                   created.status().ToString().c_str());
      return 1;
    }
    const std::string text = session_id_to_text(created->id);
    changes.set[0] = {"id", text};
    changes.set[1] = {"reversed", std::string(text.rbegin(), text.rend())};
    if (auto updated = table.update(created->id, changes); !updated.ok()) {
      std::fprintf(stderr, "storage_crash_writer: update: %s\n",
                   updated.status().ToString().c_str());
      return 1;
    }
    line += text;
    line.push_back('\n');
    if (batched && (i + 1) % kBatch != 0) continue;  // acknowledged with the rest of the batch
    if (batch) {
      if (auto flushed = batch->finish(); !flushed.ok()) {
        std::fprintf(stderr, "storage_crash_writer: finish: %s\n", flushed.ToString().c_str());
        return 1;
      }
      batch.reset();
    }
    if (!write_all(line)) return 1;  // the parent stopped listening
    line.clear();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4 ||
      (argc == 4 && std::string_view(argv[3]) != "touch" &&
       std::string_view(argv[3]) != "batched")) {
    std::fprintf(stderr,
                 "usage: storage_crash_writer <data-dir> <memory|async|sync> [touch|batched]\n");
    return 2;
  }
  const auto durability = durability_from_name(argv[2]);
  if (!durability) {
    std::fprintf(stderr, "storage_crash_writer: unknown durability '%s'\n", argv[2]);
    return 2;
  }
  return run(argv[1], *durability, argc == 4 ? std::string_view(argv[3]) : std::string_view());
}
