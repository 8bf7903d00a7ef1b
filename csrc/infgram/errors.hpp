// Errors of the infgram engine. The bindings map them to Python: CorruptIndex and
// std::invalid_argument to ValueError, IoError to OSError, std::bad_alloc to MemoryError.
#pragma once

#include <stdexcept>
#include <string>

namespace fastspec {

// A file of an index that cannot be what it claims to be: its message names the file.
struct CorruptIndex : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// The operating system refused (open, mmap, write); the message names the file and errno.
struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An index feature this build cannot read (bound to NotImplementedError).
struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace fastspec
