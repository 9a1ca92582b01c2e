#include "engine/base/io.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>
#include <utility>

#include "engine/base/error.h"

namespace ift {

namespace {

// The armed failure of inject_write_failure.
std::atomic<int64_t> g_fail_countdown{0};  // > 0: the matching write that brings it to 0 fails
int g_fail_errno = 0;
std::string g_fail_path_part;

// write(2) / pwrite(2), or the injected failure.
ssize_t raw_write(int fd, const char* p, size_t n, int64_t offset, const std::filesystem::path& target) {
  if (g_fail_countdown.load(std::memory_order_relaxed) > 0 &&
      target.string().find(g_fail_path_part) != std::string::npos && g_fail_countdown.fetch_sub(1) == 1) {
    errno = g_fail_errno;
    return -1;
  }
  return offset < 0 ? ::write(fd, p, n) : ::pwrite(fd, p, n, offset);
}

constexpr size_t kBufferBytes = size_t(1) << 20;

}  // namespace

void inject_write_failure(int64_t nth, int err, std::string path_part) {
  g_fail_errno = err;
  g_fail_path_part = std::move(path_part);
  g_fail_countdown = nth;
}

bool write_failure_pending() { return g_fail_countdown.load() > 0; }

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
  const std::filesystem::path dir = path_.has_parent_path() ? path_.parent_path() : std::filesystem::path(".");
  std::random_device entropy;
  std::string name = ".";  // built by appending: GCC 12's -Wrestrict misfires on "." + std::string
  name += path_.filename().string();
  name += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(entropy());
  tmp_ = dir / name;
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_io("cannot create the temporary file");
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  if (fd_ >= 0) ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicFile::fail_io(const char* what) const {
  const int err = errno;
  fail(path_.string(), ": ", what, " (", std::strerror(err), err == ENOSPC ? ": the disk is full" : "", "; ",
       tmp_.filename().string(), " removed, ", path_.filename().string(), " left as it was)");
}

void AtomicFile::write_raw(const void* data, size_t n, int64_t offset) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = raw_write(fd_, p, n, offset, path_);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail_io("write failed");
    p += w, n -= static_cast<size_t>(w);
    if (offset >= 0) offset += w;
  }
}

void AtomicFile::flush() {
  write_raw(buffer_.data(), buffer_.size(), -1);
  buffer_.clear();
}

void AtomicFile::write(const void* data, size_t n) {
  IFT_ASSERT(!committed_);
  if (buffer_.size() + n > kBufferBytes) flush();
  if (n >= kBufferBytes) write_raw(data, n, -1);  // large: straight from the caller's memory
  else buffer_.append(static_cast<const char*>(data), n);
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t n) {
  flush();
  write_raw(data, n, static_cast<int64_t>(offset));
}

void AtomicFile::commit() {
  IFT_ASSERT(!committed_);
  flush();
  // A full disk or a failing device often shows only here, when the page cache is written back.
  if (::fsync(fd_) != 0) fail_io("fsync failed");
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) fail_io("close failed");
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail_io("cannot rename the temporary file into place");
  committed_ = true;
  sync_directory(path_.has_parent_path() ? path_.parent_path() : std::filesystem::path("."));
}

void write_text_atomically(const std::filesystem::path& path, std::string_view text) {
  AtomicFile f(path);
  f.write(text);
  f.commit();
}

void copy_file_atomically(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::ifstream in(from, std::ios::binary);
  IFT_CHECK(in, from.string(), ": cannot open");
  AtomicFile out(to);
  std::string chunk(kBufferBytes, '\0');
  while (in.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || in.gcount() > 0)
    out.write(chunk.data(), static_cast<size_t>(in.gcount()));
  IFT_CHECK(!in.bad(), from.string(), ": read failed");
  out.commit();
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  IFT_CHECK(in, path.string(), ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void sync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace ift
