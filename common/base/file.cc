#include "common/base/file.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace microrl {

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

namespace {

absl::Status ErrnoError(absl::string_view what, const std::string& path,
                        int err) {
  return absl::InternalError(
      absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(err)));
}

std::string ParentDirectory(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Writes all of `bytes` to `fd`, retrying short writes and EINTR; 0 or the
// errno of the failed write.
int WriteAll(int fd, absl::string_view bytes) {
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    written += static_cast<size_t>(n);
  }
  return 0;
}

// Opens `path` read-only (with `flags`) and fsyncs it; errors say `open_what`
// or `sync_what` and the path.
absl::Status OpenAndSync(const std::string& path, int flags,
                         absl::string_view open_what,
                         absl::string_view sync_what) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | flags);
  if (fd < 0) return ErrnoError(open_what, path, errno);
  const int result = fsync(fd);
  const int err = errno;
  close(fd);
  if (result != 0) return ErrnoError(sync_what, path, err);
  return absl::OkStatus();
}

}  // namespace

absl::Status SyncDirectory(const std::string& dir) {
  return OpenAndSync(dir, O_DIRECTORY, "open directory", "fsync directory");
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view bytes) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  const int fd =
      open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("write", tmp, errno);
  // On any failure below the temporary file goes, whatever was written.
  auto fail = [&](absl::string_view what, int err) {
    close(fd);
    unlink(tmp.c_str());
    return ErrnoError(what, tmp, err);
  };
  if (const int err = WriteAll(fd, bytes); err != 0) return fail("write", err);
  if (fsync(fd) != 0) return fail("fsync", errno);
  if (close(fd) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return ErrnoError("close", tmp, err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path,
                                            ": ", std::strerror(err)));
  }
  return SyncDirectory(ParentDirectory(path));
}

absl::Status AppendToFile(const std::string& path, absl::string_view bytes,
                          bool sync) {
  const bool existed = access(path.c_str(), F_OK) == 0;
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("append to", path, errno);
  struct stat info;
  if (fstat(fd, &info) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoError("stat", path, err);
  }
  const off_t before = info.st_size;
  auto fail = [&](absl::string_view what, int err) {
    // What did get written is cut off again: no torn record stays behind.
    (void)!ftruncate(fd, before);
    close(fd);
    return ErrnoError(what, path, err);
  };
  if (const int err = WriteAll(fd, bytes); err != 0) {
    return fail("append to", err);
  }
  if (sync && fsync(fd) != 0) return fail("fsync", errno);
  if (close(fd) != 0) return ErrnoError("close", path, errno);
  if (sync && !existed) return SyncDirectory(ParentDirectory(path));
  return absl::OkStatus();
}

absl::Status SyncFile(const std::string& path) {
  return OpenAndSync(path, 0, "open", "fsync");
}

absl::Status RemoveTree(const std::string& path) {
  struct stat info;
  if (lstat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::InternalError(
        absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
  }
  auto remove = [](const char* entry, const struct stat*, int, struct FTW*) {
    return ::remove(entry) == 0 ? 0 : -1;
  };
  if (nftw(path.c_str(), remove, 64, FTW_DEPTH | FTW_PHYS) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot remove ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace microrl
