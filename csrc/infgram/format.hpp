// fastspec's on-disk ∞-gram index: one directory, two files per shard s,
//   tokens.<s>        header + token ids (uint16 or uint32), each document preceded by a
//                     separator (the largest value of the width), so that no n-gram of valid
//                     ids crosses a document boundary
//   suffix_array.<s>  header + suffix array of token positions (uint32), tokens compared as
//                     unsigned integers
// Every header is 64 bytes, little-endian; both files of a shard carry the same counts.
#pragma once

#include <cstdint>
#include <string>

namespace fastspec {

constexpr char kIndexMagic[8] = {'F', 'S', 'I', 'N', 'F', 'G', 'R', 'M'};
constexpr std::uint32_t kIndexVersion = 1;
constexpr std::uint32_t kKindTokens = 1;
constexpr std::uint32_t kKindSuffixArray = 2;

struct FileHeader {
  char magic[8];
  std::uint32_t version;
  std::uint32_t kind;         // kKindTokens or kKindSuffixArray
  std::uint32_t token_width;  // bytes per token: 2 or 4
  std::uint32_t sa_width;     // bytes per suffix-array entry: 4
  std::uint64_t n_positions;  // tokens in the shard, separators included
  std::uint64_t n_docs;       // documents (= separators)
  std::uint64_t vocab_size;   // valid ids are [0, vocab_size)
  std::uint32_t shard;
  std::uint32_t n_shards;
  std::uint64_t reserved;
};
static_assert(sizeof(FileHeader) == 64, "the on-disk header is 64 bytes");

inline std::string tokens_file(std::uint32_t shard) { return "tokens." + std::to_string(shard); }
inline std::string suffix_array_file(std::uint32_t shard) { return "suffix_array." + std::to_string(shard); }

}  // namespace fastspec
