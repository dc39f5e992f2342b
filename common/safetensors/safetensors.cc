#include "common/safetensors/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "nlohmann/json.hpp"

namespace microrl::safetensors {
namespace {

// Larger headers are refused (the reference implementation's limit is 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100 << 20;

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},
    {DType::kI8, "I8", 1},     {DType::kI16, "I16", 2},
    {DType::kU16, "U16", 2},   {DType::kI32, "I32", 4},
    {DType::kU32, "U32", 4},   {DType::kI64, "I64", 8},
    {DType::kU64, "U64", 8},   {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},
};

const DTypeEntry& Entry(DType dtype) {
  for (const DTypeEntry& entry : kDTypes) {
    if (entry.dtype == dtype) return entry;
  }
  return kDTypes[0];
}

// numel of `shape`, or -1 on overflow or a negative dimension.
int64_t CheckedNumel(const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return -1;
    if (dim != 0 && numel > std::numeric_limits<int64_t>::max() / dim)
      return -1;
    numel *= dim;
  }
  return numel;
}

}  // namespace

const char* DTypeName(DType dtype) { return Entry(dtype).name; }
size_t DTypeSize(DType dtype) { return Entry(dtype).size; }

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const DTypeEntry& entry : kDTypes) {
    if (name == entry.name) return entry.dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype \"", name, "\""));
}

int64_t TensorInfo::numel() const { return CheckedNumel(shape); }

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", path, ": ", strerror(errno)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return absl::InternalError(
        absl::StrCat("cannot stat ", path, ": ", strerror(err)));
  }
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile);
  file->label_ = path;
  const size_t size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    // Private and writable: pages stay shared with the page cache unless a
    // caller writes to a tensor viewing them, which then gets its own copy.
    void* map = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      close(fd);
      return absl::InternalError(
          absl::StrCat("cannot map ", path, ": ", strerror(err)));
    }
    file->map_ = map;
    file->map_size_ = size;
  }
  close(fd);
  if (absl::Status status =
          file->Parse(static_cast<const uint8_t*>(file->map_), size);
      !status.ok()) {
    return status;
  }
  return file;
}

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    std::string bytes, std::string label) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile);
  file->label_ = std::move(label);
  file->owned_ = std::move(bytes);
  if (absl::Status status =
          file->Parse(reinterpret_cast<const uint8_t*>(file->owned_.data()),
                      file->owned_.size());
      !status.ok()) {
    return status;
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status SafetensorsFile::Parse(const uint8_t* bytes, size_t size) {
  auto error = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(label_, ": not a valid safetensors file: ", why));
  };
  if (size < 8) return error("shorter than the 8-byte header length");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxHeaderBytes) {
    return error(absl::StrCat("header length ", header_size, " exceeds ",
                              kMaxHeaderBytes));
  }
  if (header_size > size - 8) {
    return error(absl::StrCat("header length ", header_size,
                              " exceeds the file (", size, " bytes)"));
  }
  data_ = bytes + 8 + header_size;
  const uint64_t data_size = size - 8 - header_size;
  const nlohmann::json header =
      nlohmann::json::parse(bytes + 8, bytes + 8 + header_size, /*cb=*/nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return error("header is not a JSON object");
  }
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return error("__metadata__ is not an object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string())
          return error(absl::StrCat("metadata \"", key, "\" is not a string"));
        metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor \"", name, "\": ");
    if (!value.is_object() || !value.contains("dtype") ||
        !value.contains("shape") || !value.contains("data_offsets")) {
      return error(where + "needs dtype, shape and data_offsets");
    }
    TensorInfo info;
    info.name = name;
    if (!value["dtype"].is_string())
      return error(where + "dtype is not a string");
    absl::StatusOr<DType> dtype = ParseDType(value["dtype"].get<std::string>());
    if (!dtype.ok())
      return error(where + std::string(dtype.status().message()));
    info.dtype = *dtype;
    if (!value["shape"].is_array())
      return error(where + "shape is not an array");
    for (const auto& dim : value["shape"]) {
      if (!dim.is_number_unsigned())
        return error(where + "shape holds a non-natural number");
      info.shape.push_back(dim.get<int64_t>());
    }
    const auto& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 ||
        !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      return error(where + "data_offsets is not [begin, end]");
    }
    info.begin = offsets[0].get<uint64_t>();
    info.end = offsets[1].get<uint64_t>();
    if (info.begin > info.end || info.end > data_size) {
      return error(absl::StrCat(where, "data_offsets [", info.begin, ", ",
                                info.end, "] outside the ", data_size,
                                "-byte data section"));
    }
    const int64_t numel = info.numel();
    if (numel < 0 ||
        static_cast<uint64_t>(numel) >
            std::numeric_limits<uint64_t>::max() / 8 ||
        static_cast<uint64_t>(numel) * DTypeSize(info.dtype) !=
            info.end - info.begin) {
      return error(absl::StrCat(where, "shape and dtype need ",
                                numel < 0 ? 0 : numel * DTypeSize(info.dtype),
                                " bytes, data_offsets give ",
                                info.end - info.begin));
    }
    tensors_.push_back(std::move(info));
  }
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (i > 0 && tensors_[i].begin < tensors_[i - 1].end) {
      return error(absl::StrCat("tensors \"", tensors_[i - 1].name, "\" and \"",
                                tensors_[i].name, "\" overlap"));
    }
    index_[tensors_[i].name] = i;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Serialize(
    const std::vector<TensorView>& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorView*> order;
  std::set<std::string> names;
  for (const TensorView& tensor : tensors) {
    if (tensor.name.empty() || tensor.name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat("bad tensor name \"", tensor.name, "\""));
    }
    if (!names.insert(tensor.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("duplicate tensor \"", tensor.name, "\""));
    }
    const int64_t numel = CheckedNumel(tensor.shape);
    if (numel < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", tensor.name, "\": bad shape"));
    }
    if (numel > 0 && tensor.data == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", tensor.name, "\": no data"));
    }
    order.push_back(&tensor);
  }
  std::sort(order.begin(), order.end(),
            [](const TensorView* a, const TensorView* b) {
              const size_t sa = DTypeSize(a->dtype), sb = DTypeSize(b->dtype);
              return sa != sb ? sa > sb : a->name < b->name;
            });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorView* tensor : order) {
    const uint64_t bytes =
        CheckedNumel(tensor->shape) * DTypeSize(tensor->dtype);
    header[tensor->name] = {{"dtype", DTypeName(tensor->dtype)},
                            {"shape", tensor->shape},
                            {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + header_text.size() + offset);
  uint64_t length = header_text.size();
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
  out += header_text;
  for (const TensorView* tensor : order) {
    const uint64_t bytes =
        CheckedNumel(tensor->shape) * DTypeSize(tensor->dtype);
    out.append(static_cast<const char*>(tensor->data), bytes);
  }
  return out;
}

absl::Status Write(const std::string& path,
                   const std::vector<TensorView>& tensors,
                   const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> bytes = Serialize(tensors, metadata);
  if (!bytes.ok()) return bytes.status();
  return WriteFileAtomically(path, *bytes);
}

}  // namespace microrl::safetensors
