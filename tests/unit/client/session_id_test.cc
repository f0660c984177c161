#include "sessiond/session_id.h"

#include <gtest/gtest.h>

#include <string>

namespace sessiond {
namespace {

std::string bytes_0_to_31() {
  std::string bytes;
  for (int i = 0; i < 32; ++i) bytes.push_back(static_cast<char>(i * 8));
  return bytes;
}

TEST(SessionIdText, RoundTripsEveryByteValue) {
  for (int start = 0; start < 256; start += 32) {
    std::string bytes;
    for (int i = 0; i < 32; ++i) bytes.push_back(static_cast<char>(start + i));
    const std::string text = session_id_from_bytes(bytes);
    ASSERT_EQ(text.size(), kSessionIdTextLength);
    EXPECT_TRUE(is_valid_session_id(text));
    EXPECT_EQ(session_id_to_bytes(text), bytes);
  }
}

TEST(SessionIdText, UsesTheUrlSafeAlphabetWithoutPadding) {
  const std::string all_ones(32, '\xff');
  EXPECT_EQ(session_id_from_bytes(all_ones), std::string(42, '_') + "8");
  const std::string text = session_id_from_bytes(bytes_0_to_31());
  EXPECT_EQ(text.find_first_of("+/="), std::string::npos);
}

TEST(SessionIdText, RejectsWrongLengths) {
  const std::string text = session_id_from_bytes(bytes_0_to_31());
  EXPECT_FALSE(is_valid_session_id(text.substr(0, 42)));
  EXPECT_FALSE(is_valid_session_id(text + "A"));
  EXPECT_FALSE(is_valid_session_id(""));
  EXPECT_EQ(session_id_from_bytes(std::string(31, 'x')), "");
  EXPECT_EQ(session_id_from_bytes(std::string(33, 'x')), "");
}

TEST(SessionIdText, RejectsCharactersOutsideBase64Url) {
  std::string text = session_id_from_bytes(bytes_0_to_31());
  for (char bad : {'+', '/', '=', ' ', '.', '\0'}) {
    std::string changed = text;
    changed[5] = bad;
    EXPECT_FALSE(is_valid_session_id(changed)) << "character " << static_cast<int>(bad);
  }
}

TEST(SessionIdText, RejectsStrayBitsInTheLastCharacter) {
  // The last character carries 4 data bits and 2 bits that must be zero: '8' is 0b111100,
  // '9' (0b111101) would name the same bytes, so only '8' is canonical.
  const std::string text = std::string(42, '_') + "8";
  EXPECT_TRUE(is_valid_session_id(text));
  EXPECT_FALSE(is_valid_session_id(std::string(42, '_') + "9"));
  EXPECT_FALSE(is_valid_session_id(std::string(42, '_') + "_"));
}

}  // namespace
}  // namespace sessiond
