// File helpers shared by every writer of ift's outputs (checkpoints, safetensors, packed files,
// reports, JSONL task files, HTML).
//
// Every byte ift writes goes through AtomicFile: a temporary sibling of the target, written with
// write(2), fsync'ed, then renamed over the target. A crash, a full disk (ENOSPC) or an I/O error
// (EIO) therefore never leaves a partial file under the final name: the error names the file and
// the system's reason, the temporary is removed, and an existing file at the target is unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace ift {

class AtomicFile {
 public:
  // Creates a unique temporary file beside `path` (same filesystem, so the rename is atomic).
  explicit AtomicFile(std::filesystem::path path);
  // Not committed: the temporary file is removed and `path` is left as it was.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends (buffered). Throws ift::Error naming the target and the errno text on failure.
  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Overwrites bytes already written, at `offset` from the start (a header filled in last).
  void write_at(uint64_t offset, const void* data, size_t n);
  // Flushes, fsyncs, closes and renames the file into place, then syncs the directory.
  void commit();

  const std::filesystem::path& path() const { return path_; }

 private:
  void flush();
  void write_raw(const void* data, size_t n, int64_t offset);  // offset < 0: append
  [[noreturn]] void fail_io(const char* what) const;

  std::filesystem::path path_, tmp_;
  int fd_ = -1;
  std::string buffer_;
  bool committed_ = false;
};

// Writes `text` to `path` through an AtomicFile: a reader (or a crash) never sees half a file.
void write_text_atomically(const std::filesystem::path& path, std::string_view text);

// Copies `from` to `to` through an AtomicFile (so a full disk is reported like any other write).
void copy_file_atomically(const std::filesystem::path& from, const std::filesystem::path& to);

// The whole content of a file; ift::Error naming it if it cannot be read.
std::string read_text(const std::filesystem::path& path);

// fsync of a directory, so the entries created or renamed in it are durable. Best effort.
void sync_directory(const std::filesystem::path& dir);

// Test seam, for the tests of what a full disk does: the `nth` low-level write from now on
// (1 = the next write(2) or pwrite(2) of an AtomicFile whose target path contains `path_part`; every
// AtomicFile when it is empty) fails with errno `err` (ENOSPC, EIO), as the kernel would report it;
// later writes succeed again. nth = 0 disarms it. Arm it around single-threaded code only.
void inject_write_failure(int64_t nth, int err, std::string path_part = "");
// Whether the armed failure is still to come (it matched no write yet).
bool write_failure_pending();

}  // namespace ift
