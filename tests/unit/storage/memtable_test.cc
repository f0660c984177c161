// The prefix-sorted memtable (storage/detail/memtable.h) under the real RocksDB: keys chosen to
// share their first 16 bytes, to be prefixes of one another and to carry several versions, read
// back through the memtable (forward, backward, seeks, a snapshot), after a flush (RocksDB checks
// the order of what a flush writes) and after a reopen, each against a std::map.
#include "storage/detail/memtable.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace sessiond::storage::detail {
namespace {

using Model = std::map<std::string, std::string>;

class PrefixSortedMemtable : public ::testing::Test {
 protected:
  void open() {
    rocksdb::Options options;
    options.create_if_missing = true;
    options.memtable_factory = prefix_sorted_memtable_factory();
    options.allow_concurrent_memtable_write = false;
    options.write_buffer_size = 64u << 20;  // nothing flushes unless a test asks
    rocksdb::DB* db = nullptr;
    const rocksdb::Status s = rocksdb::DB::Open(options, dir_.sub("db"), &db);
    ASSERT_TRUE(s.ok()) << s.ToString();
    db_.reset(db);
  }
  void SetUp() override { open(); }

  // A key from a small alphabet (0x00, 0x01, 0x7f, 0x80, 0xff) and lengths around 8 and 16, so
  // that keys often share their first 16 bytes or are prefixes of one another.
  std::string random_key() {
    static constexpr std::size_t kLengths[] = {0, 1, 7, 8, 9, 15, 16, 17, 24, 32, 33};
    static constexpr unsigned char kBytes[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    std::string key(kLengths[rng_() % std::size(kLengths)], '\0');
    // Three keys in four begin with one of three 16-byte stems; the rest are random throughout.
    static const std::string kStems[] = {
        std::string(16, '\x80'), std::string(16, '\0'),
        std::string("\x01\x7f\xff\x00\x80\x01\x7f\xff\x00\x80\x01\x7f\xff\x00\x80\x01", 16)};
    const std::string* stem = rng_() % 4 != 0 ? &kStems[rng_() % std::size(kStems)] : nullptr;
    for (std::size_t i = 0; i < key.size(); ++i) {
      key[i] = stem != nullptr && i < 16 ? (*stem)[i]
                                         : static_cast<char>(kBytes[rng_() % std::size(kBytes)]);
    }
    return key;
  }

  // n random puts and deletes, each applied to the database and to the model.
  void write(int n, Model* model) {
    for (int i = 0; i < n; ++i) {
      std::string key = random_key();
      if (rng_() % 5 == 0) {
        ASSERT_TRUE(db_->Delete(rocksdb::WriteOptions(), key).ok());
        model->erase(key);
      } else {
        std::string value = "v" + std::to_string(i);
        ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key, value).ok());
        (*model)[key] = value;
      }
    }
  }

  // Everything an iterator shows, forward and backward, and at random seeks, against the model.
  void check(const Model& model, const rocksdb::Snapshot* snapshot = nullptr) {
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    // Each scan stops after more steps than the model has keys: a memtable out of order can
    // send RocksDB's iterator around in circles.
    const std::size_t bound = model.size() + 1;
    Model forward;
    for (it->SeekToFirst(); it->Valid() && forward.size() < bound; it->Next()) {
      EXPECT_TRUE(forward.emplace(it->key().ToString(), it->value().ToString()).second)
          << "a key twice";
    }
    ASSERT_TRUE(it->status().ok()) << it->status().ToString();
    // An iterator over a memtable out of order can loop inside RocksDB going backward: stop here.
    ASSERT_EQ(forward, model);
    std::vector<std::string> backward;
    for (it->SeekToLast(); it->Valid() && backward.size() < bound; it->Prev()) {
      backward.push_back(it->key().ToString());
    }
    std::vector<std::string> expected_backward;
    for (auto m = model.rbegin(); m != model.rend(); ++m) expected_backward.push_back(m->first);
    EXPECT_EQ(backward, expected_backward);
    for (int i = 0; i < 300; ++i) {
      const std::string target = random_key();
      it->Seek(target);
      auto lb = model.lower_bound(target);
      ASSERT_EQ(it->Valid(), lb != model.end()) << "Seek";
      if (lb != model.end()) {
        EXPECT_EQ(it->key().ToString(), lb->first);
        EXPECT_EQ(it->value().ToString(), lb->second);
      }
      it->SeekForPrev(target);
      auto ub = model.upper_bound(target);
      ASSERT_EQ(it->Valid(), ub != model.begin()) << "SeekForPrev";
      if (ub != model.begin()) {
        EXPECT_EQ(it->key().ToString(), std::prev(ub)->first);
      }
    }
  }

  sessiond::testing::TempDir dir_;
  std::unique_ptr<rocksdb::DB> db_;
  std::mt19937_64 rng_{20261203};
};

TEST_F(PrefixSortedMemtable, ReadsFromTheMemtableFollowTheKeyOrderAndTheNewestVersion) {
  Model model;
  write(4000, &model);
  ASSERT_GT(model.size(), 100u);
  ASSERT_NO_FATAL_FAILURE(check(model));
}

TEST_F(PrefixSortedMemtable, ASnapshotSeesTheVersionsOfItsTime) {
  Model before;
  write(2000, &before);
  const rocksdb::Snapshot* snapshot = db_->GetSnapshot();
  Model after = before;
  write(2000, &after);
  ASSERT_NE(before, after);
  ASSERT_NO_FATAL_FAILURE(check(before, snapshot));
  ASSERT_NO_FATAL_FAILURE(check(after));
  db_->ReleaseSnapshot(snapshot);
}

TEST_F(PrefixSortedMemtable, AFlushWritesTheNewestVersionsInOrderAndTheyOutliveAReopen) {
  Model model;
  write(3000, &model);
  ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions()).ok());
  std::string files;
  ASSERT_TRUE(db_->GetProperty("rocksdb.num-files-at-level0", &files));
  EXPECT_EQ(files, "1");
  ASSERT_NO_FATAL_FAILURE(check(model));
  // Newer versions and deletes in a new memtable over the flushed file.
  write(3000, &model);
  ASSERT_NO_FATAL_FAILURE(check(model));
  ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions()).ok());
  ASSERT_TRUE(db_->CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr).ok());
  write(500, &model);
  db_.reset();
  open();
  ASSERT_NO_FATAL_FAILURE(check(model));
}

}  // namespace
}  // namespace sessiond::storage::detail
