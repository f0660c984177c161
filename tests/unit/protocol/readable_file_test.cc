#include "protocol/readable_file.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "tests/support/temp_dir.h"

namespace sessiond {
namespace {

TEST(CheckReadable, AcceptsAReadableFile) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "cert.pem").string();
  std::FILE* file = std::fopen(path.c_str(), "w");
  ASSERT_NE(file, nullptr);
  std::fclose(file);
  EXPECT_TRUE(check_readable(path, "TLS certificate").ok());
}

TEST(CheckReadable, NamesWhatItIsThePathAndTheReason) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "missing.pem").string();
  const Status s = check_readable(path, "TLS key (--tls-key)");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "cannot read TLS key (--tls-key) " + path + ": No such file or directory");
}

}  // namespace
}  // namespace sessiond
