#include "common/safetensors/safetensors.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"

namespace microrl::safetensors {
namespace {

using ::testing::HasSubstr;

// A file image from a header text and a data section.
std::string Image(const std::string& header, const std::string& data) {
  std::string out;
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
  return out + header + data;
}

absl::Status ParseError(const std::string& bytes) {
  return SafetensorsFile::FromBytes(bytes, "test.safetensors").status();
}

TEST(SafetensorsTest, RoundTripsTensorsAndMetadataWithAlignedOffsets) {
  const float f32[] = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  const uint16_t bf16[] = {0x3f80, 0xc000, 0x4040};
  const int64_t i64[] = {1, -2};
  const uint8_t flag[] = {1};
  absl::StatusOr<std::string> bytes =
      Serialize({{"z.f32", DType::kF32, {2, 3}, f32},
                 {"a.bf16", DType::kBF16, {3}, bf16},
                 {"m.i64", DType::kI64, {2}, i64},
                 {"b.bool", DType::kBool, {1}, flag},
                 {"empty", DType::kF32, {0, 4}, nullptr}},
                {{"format", "pt"}});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<std::shared_ptr<SafetensorsFile>> file =
      SafetensorsFile::FromBytes(*bytes, "mem");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  ASSERT_EQ((*file)->tensors().size(), 5u);
  const TensorInfo* z = (*file)->Find("z.f32");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->dtype, DType::kF32);
  EXPECT_EQ(z->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp((*file)->Data(*z), f32, sizeof(f32)), 0);
  EXPECT_EQ(
      std::memcmp((*file)->Data(*(*file)->Find("a.bf16")), bf16, sizeof(bf16)),
      0);
  EXPECT_EQ(
      std::memcmp((*file)->Data(*(*file)->Find("m.i64")), i64, sizeof(i64)), 0);
  EXPECT_EQ((*file)->Find("empty")->numel(), 0);
  EXPECT_EQ((*file)->Find("nope"), nullptr);
  // Every tensor starts aligned to its element size within the buffer.
  for (const TensorInfo& info : (*file)->tensors()) {
    EXPECT_EQ(info.begin % DTypeSize(info.dtype), 0u) << info.name;
  }
}

TEST(SafetensorsTest, WritesAndMapsFiles) {
  const std::string path = testing::MakeTempDir() + "/t.safetensors";
  const float values[] = {1, 2, 3, 4};
  ASSERT_TRUE(Write(path, {{"w", DType::kF32, {2, 2}, values}}).ok());
  absl::StatusOr<std::shared_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(
      std::memcmp((*file)->Data(*(*file)->Find("w")), values, sizeof(values)),
      0);
  EXPECT_EQ((*file)->label(), path);
  EXPECT_EQ(SafetensorsFile::Open(path + ".missing").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, RejectsMalformedFilesNamingTheProblem) {
  struct Case {
    std::string bytes;
    std::string message;
  };
  std::string huge_length(8, '\0');
  huge_length[6] = 0x01;  // 2^48 bytes of header
  const std::vector<Case> cases = {
      {"", "shorter than the 8-byte header length"},
      {Image("{}", "").substr(0, 5), "shorter than"},
      {huge_length, "exceeds"},
      {Image("{", ""), "not a JSON object"},
      {Image("[]", ""), "not a JSON object"},
      {Image(R"({"t": {"dtype": "F32", "shape": [1]}})", "abcd"),
       "needs dtype, shape"},
      {Image(R"({"t": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}})",
             "abcd"),
       "unsupported dtype"},
      {Image(
           R"({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})",
           "abcd"),
       "non-natural"},
      {Image(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}})",
             "abcd"),
       "outside the 4-byte data section"},
      {Image(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})",
             "abcd"),
       "need 8 bytes, data_offsets give 4"},
      {Image(R"({"a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},)"
             R"("b": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}})",
             "abcd"),
       "overlap"},
      {Image(R"({"__metadata__": {"k": 1}})", ""), "is not a string"},
      {Image(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})",
             "abcd"),
       "outside"},
  };
  for (const Case& c : cases) {
    const absl::Status status = ParseError(c.bytes);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(std::string(status.message()), HasSubstr("test.safetensors"))
        << c.message;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << status;
  }
}

TEST(SafetensorsTest, SerializeRefusesBadInput) {
  const float one = 1;
  EXPECT_EQ(
      Serialize({{"x", DType::kF32, {1}, &one}, {"x", DType::kF32, {1}, &one}})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Serialize({{"", DType::kF32, {1}, &one}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Serialize({{"x", DType::kF32, {1}, nullptr}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Serialize({{"x", DType::kF32, {-2}, &one}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, DTypeNamesRoundTrip) {
  for (const char* name : {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32",
                           "I64", "U64", "F16", "BF16", "F32", "F64"}) {
    absl::StatusOr<DType> dtype = ParseDType(name);
    ASSERT_TRUE(dtype.ok()) << name;
    EXPECT_STREQ(DTypeName(*dtype), name);
  }
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF64), 8u);
}

}  // namespace
}  // namespace microrl::safetensors
