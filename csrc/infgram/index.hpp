// The ∞-gram engine: counts, n-gram and ∞-gram probabilities and matching statistics over
// the memory-mapped suffix arrays of one index directory (fastspec's own layout, see
// format.hpp, or an infini-gram index), summed over its shards. Pure C++17.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "errors.hpp"

namespace fastspec {

struct IndexInfo {
  std::string format;            // "fastspec" or "infini-gram"
  std::string path;              // the directory
  std::uint32_t token_width = 0; // bytes per token id
  std::uint64_t vocab_size = 0;  // valid ids are [0, vocab_size)
  std::uint32_t n_shards = 0;
  std::uint64_t n_positions = 0; // token slots over all shards, separators included
  std::uint64_t n_docs = 0;
  std::uint64_t n_tokens = 0;    // n_positions - n_docs: tokens without the separators
  // The count of the empty n-gram, the denominator after backing off to the empty context:
  // n_positions by default (infini-gram's), n_tokens with count_separators(false).
  std::uint64_t empty_count = 0;
};

struct ProbResult {
  std::uint64_t context_count = 0;  // occurrences of the context (empty_count when it is empty)
  std::uint64_t count = 0;          // occurrences of context + token
  double prob = 0.0;                // count / context_count; NaN when the context never occurs
};

struct InfgramResult : ProbResult {
  std::int64_t suffix_len = 0;  // length of the longest suffix of the context that occurs
};

struct OpenOptions {
  std::string format = "auto";    // "auto", "fastspec" or "infini-gram"
  std::uint32_t token_width = 0;  // infini-gram: 0 infers it from the file sizes
  std::uint64_t vocab_size = 0;   // infini-gram: 0 means every id below the separator
};

class InfGramEngine {
 public:
  virtual ~InfGramEngine() = default;
  virtual const IndexInfo& info() const = 0;
  // Whether the empty context's count includes the document separators (infini-gram's
  // definition, the default) or not (the number of tokens).
  virtual void count_separators(bool yes) = 0;
  // Queries take token ids as int64 and throw std::invalid_argument naming the first id
  // outside [0, vocab_size) and its position.
  virtual std::uint64_t count(const std::int64_t* ids, std::size_t m) const = 0;
  virtual ProbResult prob(const std::int64_t* context, std::size_t m, std::int64_t token) const = 0;
  // Every token that follows the context, ascending by id, with its count; returns the
  // context's count (occurrences at a document's end have no next token, so the counts
  // can sum to less).
  virtual std::uint64_t next_tokens(const std::int64_t* context, std::size_t m, std::vector<std::uint32_t>& tokens,
                                    std::vector<std::uint64_t>& counts) const = 0;
  virtual InfgramResult infgram_prob(const std::int64_t* context, std::size_t m, std::int64_t token) const = 0;
  // Matching statistics of sequences ids[offsets[k], offsets[k+1]) for k < n_seqs; per position
  // i of the concatenation: match_len[i] (longest suffix of the sequence up to and including
  // i that occurs), and the ∞-gram prob of token i given the sequence before it with its
  // suffix_len, context_count and count. Splits the sequences over `threads` threads.
  virtual void score(const std::int64_t* ids, const std::int64_t* offsets, std::size_t n_seqs,
                     std::int64_t* match_len, std::int64_t* suffix_len, double* prob, std::uint64_t* context_count,
                     std::uint64_t* count, int threads) const = 0;
  // Full check of every shard: suffix-array entries in range and a permutation, adjacent
  // suffixes in strictly increasing order, token values valid. O(n · average match length).
  virtual void verify() const = 0;
};

std::unique_ptr<InfGramEngine> open_index(const std::string& dir, const OpenOptions& options);

// Writes shard `shard` of a fastspec index into `dir` (tokens.<shard>, suffix_array.<shard>):
// `text` holds n positions, each document preceded by the separator (0xFFFF or 0xFFFFFFFF),
// every other value below vocab_size. Builds the suffix array by SA-IS while a second thread
// writes the tokens. n_shards is written as 0 until finish_index() sets it.
void build_shard_u16(const std::uint16_t* text, std::int64_t n, std::uint64_t vocab_size, std::uint32_t shard,
                     const std::string& dir);
void build_shard_u32(const std::uint32_t* text, std::int64_t n, std::uint64_t vocab_size, std::uint32_t shard,
                     const std::string& dir);
// Marks the index complete: writes n_shards into every shard's headers.
void finish_index(const std::string& dir, std::uint32_t n_shards);

}  // namespace fastspec
