// A read-only memory map of a whole file (POSIX).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fastspec {

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);  // throws IoError naming the path
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  const std::uint8_t* data_ = nullptr;
  std::uint64_t size_ = 0;
  std::string path_;
};

bool file_exists(const std::string& path);

}  // namespace fastspec
