// Writing outputs safely: bytes go to a temporary file beside the final path,
// which is renamed into place by commit(). A file never committed is removed
// by the destructor, so an error or a kill never leaves a partial output under
// its final name.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace qforge {

class AtomicFile {
 public:
  explicit AtomicFile(std::string final_path);  // throws qforge::Error
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& temp_path() const { return temp_path_; }
  const std::string& final_path() const { return final_path_; }
  int fd() const { return fd_; }

  void write(const void* data, size_t n);                // appends; throws on error
  void pwrite(const void* data, size_t n, uint64_t at);  // positional
  uint64_t size() const { return size_; }
  void commit();  // flush, rename into place
  void discard();

 private:
  std::string final_path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  bool done_ = false;
};

// Removes temporary files left in `dir` by AtomicFiles of processes that no
// longer run (a build killed with SIGKILL). Returns how many were removed.
size_t sweep_stale_temps(const std::string& dir);

}  // namespace qforge
