#ifndef MICRORL_COMMON_SAFETENSORS_SAFETENSORS_H_
#define MICRORL_COMMON_SAFETENSORS_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// The Hugging Face safetensors format: an 8-byte little-endian header length, a
// JSON header {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {str: str}}, then the tensor bytes (little-endian,
// row-major).
namespace microrl::safetensors {

enum class DType {
  kBool,
  kU8,
  kI8,
  kI16,
  kU16,
  kI32,
  kU32,
  kI64,
  kU64,
  kF16,
  kBF16,
  kF32,
  kF64,
};

// "F32", "BF16", ... as the format spells them.
const char* DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(absl::string_view name);
size_t DTypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;

  int64_t numel() const;
};

// A parsed safetensors file, memory-mapped read-only (or held in memory).
// Immutable after Open, so thread-safe; tensor data stays valid as long as the
// object lives (hold it by shared_ptr while views into it are in use).
class SafetensorsFile {
 public:
  // Maps `path` and validates the header: sizes, dtypes, shapes, offsets in
  // range and consistent with dtype x shape, no overlaps. Errors name the file.
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Open(
      const std::string& path);

  // The same for bytes already in memory (e.g. received over gRPC); `label`
  // names the source in errors.
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> FromBytes(
      std::string bytes, std::string label);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Tensors in file order of their data.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr if there is no tensor of that name.
  const TensorInfo* Find(absl::string_view name) const;
  // First byte of a tensor's data.
  const uint8_t* Data(const TensorInfo& info) const {
    return data_ + info.begin;
  }
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  const std::string& label() const { return label_; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse(const uint8_t* bytes, size_t size);

  std::string label_;
  std::string owned_;    // FromBytes: the bytes
  void* map_ = nullptr;  // Open: the mapping
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: `data` points at numel x DTypeSize(dtype) bytes,
// little-endian, row-major; it must stay valid during the call.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Serializes tensors with optional metadata. Like the reference implementation,
// data is ordered by element size (largest first), then name, and the header is
// padded to 8 bytes, so every tensor starts aligned to its element size.
// InvalidArgument for duplicate or empty names, negative dimensions or a null
// data pointer with non-zero size.
absl::StatusOr<std::string> Serialize(
    const std::vector<TensorView>& tensors,
    const std::map<std::string, std::string>& metadata = {});

// Serialize, then WriteFileAtomically (common/base/file.h).
absl::Status Write(const std::string& path,
                   const std::vector<TensorView>& tensors,
                   const std::map<std::string, std::string>& metadata = {});

}  // namespace microrl::safetensors

#endif  // MICRORL_COMMON_SAFETENSORS_SAFETENSORS_H_
