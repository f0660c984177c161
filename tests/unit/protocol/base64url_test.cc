#include "protocol/base64url.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <string>

namespace sessiond {
namespace {

// Every byte string of every length 0..40 (random contents, and all 0x00 / all 0xFF) comes
// back from its text, and the text has the length and alphabet RFC 4648 §5 gives it.
TEST(Base64url, RoundTripsEveryLengthUpTo40) {
  std::mt19937 random(11);
  for (std::size_t length = 0; length <= 40; ++length) {
    for (int fill : {-1, 0x00, 0xFF}) {
      std::string bytes(length, '\0');
      for (char& c : bytes) {
        c = static_cast<char>(fill >= 0 ? fill : static_cast<int>(random() & 0xFF));
      }
      const std::string text = base64url_encode(bytes);
      EXPECT_EQ(text.size(), base64url_encoded_size(length)) << length;
      EXPECT_EQ(text.find_first_not_of(
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                std::string::npos)
          << text;
      auto decoded = base64url_decode(text);
      ASSERT_TRUE(decoded.ok()) << length << ": " << decoded.status().ToString();
      EXPECT_EQ(*decoded, bytes) << length;
    }
  }
}

TEST(Base64url, MatchesTheRfcVectorsWithoutPadding) {
  EXPECT_EQ(base64url_encode(""), "");
  EXPECT_EQ(base64url_encode("f"), "Zg");
  EXPECT_EQ(base64url_encode("fo"), "Zm8");
  EXPECT_EQ(base64url_encode("foo"), "Zm9v");
  EXPECT_EQ(base64url_encode("foob"), "Zm9vYg");
  EXPECT_EQ(base64url_encode("fooba"), "Zm9vYmE");
  EXPECT_EQ(base64url_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");  // the two characters that differ from base64
}

TEST(Base64url, RefusesCharactersOutsideTheAlphabet) {
  for (const char* bad : {"Zm9v=", "Zg==", "Zm+v", "Zm/v", "Zm v", "Zm9\n", "Zm\x80v"}) {
    auto decoded = base64url_decode(bad);
    ASSERT_FALSE(decoded.ok()) << bad;
    EXPECT_EQ(decoded.code(), StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(base64url_decode(std::string("Zm\0v", 4)).status().message(),
            "not base64url (character)");
}

TEST(Base64url, RefusesLengthsNoEncodingHas) {
  for (std::size_t length = 1; length <= 41; length += 4) {
    auto decoded = base64url_decode(std::string(length, 'A'));
    ASSERT_FALSE(decoded.ok()) << length;
    EXPECT_EQ(decoded.status().message(), "not base64url (length)");
  }
}

TEST(Base64url, RefusesNonCanonicalTrailingBits) {
  // "Zg" is "f"; "Zh" decodes to the same byte with a stray bit set.
  EXPECT_FALSE(base64url_decode("Zh").ok());
  EXPECT_FALSE(base64url_decode("Zm9").ok());  // "fo" is "Zm8"
  EXPECT_EQ(base64url_decode("Zh").status().message(), "not base64url (trailing bits)");
}

TEST(Base64url, DecodesIntoAFixedSizeBuffer) {
  std::array<std::uint8_t, 3> out{};
  ASSERT_TRUE(base64url_decode_to("Zm9v", out).ok());
  EXPECT_EQ(out, (std::array<std::uint8_t, 3>{'f', 'o', 'o'}));
  std::array<std::uint8_t, 2> small{};
  EXPECT_EQ(base64url_decode_to("Zm9v", small).code(), StatusCode::kInvalidArgument);
  std::array<std::uint8_t, 4> large{};
  EXPECT_EQ(base64url_decode_to("Zm9v", large).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sessiond
