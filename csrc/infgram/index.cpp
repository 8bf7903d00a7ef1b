#include "index.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <thread>
#include <utility>

#include "errors.hpp"
#include "format.hpp"
#include "mapped_file.hpp"
#include "sais.hpp"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the index files are little-endian and are read in place: a little-endian host is required"
#endif

namespace fastspec {
namespace {

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

struct Range {
  std::uint64_t lo = 0, hi = 0;
  std::uint64_t size() const { return hi - lo; }
};

// Byte order of the suffix array: fastspec sorts token values; infini-gram sorts the
// little-endian bytes, i.e. the byte-swapped values.
template <class T, bool kSwap>
inline std::uint32_t key_of(T v) {
  if constexpr (!kSwap || sizeof(T) == 1) {
    return static_cast<std::uint32_t>(v);
  } else if constexpr (sizeof(T) == 2) {
    return static_cast<std::uint32_t>(__builtin_bswap16(v));
  } else {
    return __builtin_bswap32(v);
  }
}

template <class T>
struct Shard {
  MappedFile tokens_file, sa_file;
  const T* text = nullptr;
  std::uint64_t n = 0;               // positions
  const std::uint8_t* sa = nullptr;  // n entries of sa_width bytes
  std::uint32_t sa_width = 4;
  std::uint32_t shift = 0;           // infini-gram stores byte offsets: position = entry >> shift
  std::uint64_t n_docs = 0;
};

template <class T, bool kSwap>
class Engine final : public InfGramEngine {
 public:
  static constexpr std::uint64_t kSep = std::numeric_limits<T>::max();
  static constexpr std::uint32_t kSepKey = static_cast<std::uint32_t>(kSep);  // the largest key in both orders

  Engine(IndexInfo info, std::vector<Shard<T>> shards) : info_(std::move(info)), shards_(std::move(shards)) {}

  const IndexInfo& info() const override { return info_; }

  void count_separators(bool yes) override { info_.empty_count = yes ? info_.n_positions : info_.n_tokens; }

  std::uint64_t count(const std::int64_t* ids, std::size_t m) const override {
    auto q = keys(ids, m, "query");
    if (m == 0) return info_.empty_count;
    std::uint64_t total = 0;
    for (const auto& s : shards_) total += find(s, q.data(), m).size();
    return total;
  }

  ProbResult prob(const std::int64_t* context, std::size_t m, std::int64_t token) const override {
    auto q = keys_with(context, m, token);
    return prob_keys(q.data(), m);
  }

  std::uint64_t next_tokens(const std::int64_t* context, std::size_t m, std::vector<std::uint32_t>& tokens,
                            std::vector<std::uint64_t>& counts) const override {
    auto q = keys(context, m, "context");
    q.push_back(0);
    std::map<std::uint32_t, std::uint64_t> merged;
    std::uint64_t context_count = 0;
    for (const auto& s : shards_) {
      Range r = m == 0 ? Range{0, s.n} : find(s, q.data(), m);
      context_count += r.size();
      std::uint64_t i = r.lo;
      while (i < r.hi) {
        std::uint64_t p = pos(s, i);
        if (p + m >= s.n) {  // the suffix ends with the text: no next token (sorts first)
          ++i;
          continue;
        }
        std::uint32_t k = key_of<T, kSwap>(s.text[p + m]);
        if (k == kSepKey) break;  // separators sort last: the rest end a document
        q[m] = k;
        std::uint64_t j = upper(s, i, r.hi, q.data(), m + 1, m);
        merged[key_of<T, kSwap>(static_cast<T>(k))] += j - i;  // key_of is its own inverse
        i = j;
      }
    }
    if (m == 0) context_count = info_.empty_count;
    tokens.clear();
    counts.clear();
    for (const auto& kv : merged) {
      tokens.push_back(kv.first);
      counts.push_back(kv.second);
    }
    return context_count;
  }

  InfgramResult infgram_prob(const std::int64_t* context, std::size_t m, std::int64_t token) const override {
    auto q = keys_with(context, m, token);
    // The longest suffix of the context that occurs: occurrence is monotone in the suffix
    // length, so double the length, then bisect (infini-gram does the same).
    auto occurs = [&](std::size_t len) {
      if (len == 0) return true;
      for (const auto& s : shards_)
        if (find(s, q.data() + (m - len), len).size() > 0) return true;
      return false;
    };
    std::size_t good = 0, bad = m + 1;
    for (std::size_t len = 1; len <= m; len *= 2) {
      if (!occurs(len)) {
        bad = len;
        break;
      }
      good = len;
    }
    if (bad == m + 1 && good < m) {
      if (occurs(m)) good = m;
      else bad = m;
    }
    while (bad - good > 1) {
      std::size_t mid = good + (bad - good) / 2;
      if (occurs(mid)) good = mid;
      else bad = mid;
    }
    InfgramResult out;
    static_cast<ProbResult&>(out) = prob_keys(q.data() + (m - good), good);
    out.suffix_len = static_cast<std::int64_t>(good);
    return out;
  }

  void score(const std::int64_t* ids, const std::int64_t* offsets, std::size_t n_seqs, std::int64_t* match_len,
             std::int64_t* suffix_len, double* prob, std::uint64_t* context_count, std::uint64_t* count,
             int threads) const override {
    if (n_seqs == 0) return;
    for (std::size_t k = 0; k < n_seqs; ++k)
      if (offsets[k + 1] < offsets[k]) throw std::invalid_argument("sequence offsets must not decrease");
    const std::int64_t base = offsets[0];
    const std::int64_t total = offsets[n_seqs] - base;
    auto q = keys(ids + base, static_cast<std::size_t>(total), "sequences");
    Out out{match_len, suffix_len, prob, context_count, count};
    auto run = [&](std::size_t first, std::size_t last) {
      std::vector<Range> cur(shards_.size()), nxt(shards_.size());
      for (std::size_t k = first; k < last; ++k) {
        std::int64_t a = offsets[k] - base, b = offsets[k + 1] - base;
        score_one(q.data() + a, static_cast<std::size_t>(b - a), out, static_cast<std::size_t>(a), cur, nxt);
      }
    };
    int nt = std::max(1, std::min<int>(threads, static_cast<int>(n_seqs)));
    if (nt == 1) {
      run(0, n_seqs);
      return;
    }
    // Contiguous runs of sequences with about equal token counts per thread.
    std::vector<std::size_t> cut{0};
    for (int t = 1; t < nt; ++t) {
      std::int64_t target = base + total * t / nt;
      std::size_t k = static_cast<std::size_t>(std::upper_bound(offsets, offsets + n_seqs + 1, target) - offsets) - 1;
      cut.push_back(std::max(cut.back(), std::min(k, n_seqs)));
    }
    cut.push_back(n_seqs);
    std::vector<std::exception_ptr> errors(nt);
    std::vector<std::thread> pool;
    for (int t = 0; t < nt; ++t)
      pool.emplace_back([&, t] {
        try {
          run(cut[t], cut[t + 1]);
        } catch (...) {
          errors[t] = std::current_exception();
        }
      });
    for (auto& th : pool) th.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

  void verify() const override {
    for (const auto& s : shards_) {
      const std::string& name = s.sa_file.path();
      std::vector<bool> seen(s.n);
      for (std::uint64_t i = 0; i < s.n; ++i) {
        std::uint64_t p = pos(s, i);
        if (seen[p]) throw CorruptIndex(name + ": position " + std::to_string(p) + " appears twice in the suffix array");
        seen[p] = true;
      }
      for (std::uint64_t i = 0; i + 1 < s.n; ++i)
        if (!suffix_less(s, pos(s, i), pos(s, i + 1)))
          throw CorruptIndex(name + ": suffix array entries " + std::to_string(i) + " and " + std::to_string(i + 1) +
                             " are out of order");
      std::uint64_t seps = 0;
      for (std::uint64_t p = 0; p < s.n; ++p) {
        std::uint64_t v = s.text[p];
        if (v == kSep) ++seps;
        else if (v >= info_.vocab_size)
          throw CorruptIndex(s.tokens_file.path() + ": token " + std::to_string(v) + " at position " +
                             std::to_string(p) + " is not below the vocabulary size " +
                             std::to_string(info_.vocab_size));
      }
      if (seps != s.n_docs)
        throw CorruptIndex(s.tokens_file.path() + ": " + std::to_string(seps) + " document separators, but " +
                           std::to_string(s.n_docs) + " documents recorded");
    }
  }

 private:
  struct Out {
    std::int64_t* match_len;
    std::int64_t* suffix_len;
    double* prob;
    std::uint64_t* context_count;
    std::uint64_t* count;
  };

  std::uint64_t pos(const Shard<T>& s, std::uint64_t i) const {
    const std::uint8_t* e = s.sa + i * s.sa_width;
    std::uint64_t v = 0;
    if (s.sa_width == 4) {
      std::uint32_t x;
      std::memcpy(&x, e, 4);
      v = x;
    } else {
      std::memcpy(&v, e, s.sa_width);  // little-endian host (checked at compile time)
    }
    std::uint64_t p = v >> s.shift;
    if (p >= s.n || (v & ((std::uint64_t{1} << s.shift) - 1)) != 0)
      throw CorruptIndex(s.sa_file.path() + ": suffix array entry " + std::to_string(i) + " holds " +
                         std::to_string(v) + ", outside the " + std::to_string(s.n) + " token positions");
    return p;
  }

  bool suffix_less(const Shard<T>& s, std::uint64_t a, std::uint64_t b) const {
    for (;; ++a, ++b) {
      if (a == s.n) return true;  // a proper prefix sorts first
      if (b == s.n) return false;
      std::uint32_t x = key_of<T, kSwap>(s.text[a]), y = key_of<T, kSwap>(s.text[b]);
      if (x != y) return x < y;
    }
  }

  // Compares the suffix at p with q[0, m), skipping the first `lcp` tokens known equal;
  // returns <0, 0 (q is a prefix of the suffix), >0, and leaves the common length in lcp.
  static int compare(const Shard<T>& s, std::uint64_t p, const std::uint32_t* q, std::size_t m, std::size_t& lcp) {
    std::uint64_t avail = s.n - p;
    std::size_t lim = static_cast<std::size_t>(std::min<std::uint64_t>(m, avail));
    const T* t = s.text + p;
    std::size_t k = lcp;
    for (; k < lim; ++k) {
      std::uint32_t a = key_of<T, kSwap>(t[k]);
      if (a != q[k]) {
        lcp = k;
        return a < q[k] ? -1 : 1;
      }
    }
    lcp = k;
    return k == m ? 0 : -1;  // a suffix that ends first is smaller
  }

  // First index in [lo, hi) whose suffix is >= q (lower) or > q (upper; q-prefixed suffixes
  // count as equal), where every suffix in [lo, hi) starts with q[0, known). The common
  // prefix with both bracketing suffixes is carried so that no token is compared twice.
  template <bool Upper>
  std::uint64_t bound(const Shard<T>& s, std::uint64_t lo, std::uint64_t hi, const std::uint32_t* q, std::size_t m,
                      std::size_t known) const {
    std::size_t la = known, lb = known;
    while (lo < hi) {
      std::uint64_t mid = lo + (hi - lo) / 2;
      std::size_t l = std::min(la, lb);
      int c = compare(s, pos(s, mid), q, m, l);
      if (Upper ? c <= 0 : c < 0) {
        lo = mid + 1;
        la = l;
      } else {
        hi = mid;
        lb = l;
      }
    }
    return lo;
  }
  std::uint64_t lower(const Shard<T>& s, std::uint64_t lo, std::uint64_t hi, const std::uint32_t* q, std::size_t m,
                      std::size_t known) const {
    return bound<false>(s, lo, hi, q, m, known);
  }
  std::uint64_t upper(const Shard<T>& s, std::uint64_t lo, std::uint64_t hi, const std::uint32_t* q, std::size_t m,
                      std::size_t known) const {
    return bound<true>(s, lo, hi, q, m, known);
  }

  Range find(const Shard<T>& s, const std::uint32_t* q, std::size_t m) const {
    std::uint64_t a = lower(s, 0, s.n, q, m, 0);
    return {a, upper(s, a, s.n, q, m, 0)};
  }

  // The sub-range of r (every suffix in it starts with q[0, m)) whose suffixes continue with q[m].
  Range narrow(const Shard<T>& s, Range r, const std::uint32_t* q, std::size_t m) const {
    if (r.size() == 0) return r;
    std::uint64_t a = lower(s, r.lo, r.hi, q, m + 1, m);
    return {a, upper(s, a, r.hi, q, m + 1, m)};
  }

  ProbResult prob_keys(const std::uint32_t* q, std::size_t m) const {  // q holds context + token
    ProbResult out;
    for (const auto& s : shards_) {
      Range r = m == 0 ? Range{0, s.n} : find(s, q, m);
      if (r.size() == 0) continue;
      out.context_count += r.size();
      out.count += narrow(s, r, q, m).size();
    }
    if (m == 0) out.context_count = info_.empty_count;
    out.prob = out.context_count == 0 ? std::numeric_limits<double>::quiet_NaN()
                                      : static_cast<double>(out.count) / static_cast<double>(out.context_count);
    return out;
  }

  // Matching statistics along one sequence: the current match q[j, i) is held as one
  // suffix-array range per shard; each position narrows it by one token (extend) and, when
  // that leaves nothing, drops leading tokens and re-locates the shorter match (shrink).
  void score_one(const std::uint32_t* q, std::size_t m, const Out& out, std::size_t at, std::vector<Range>& cur,
                 std::vector<Range>& nxt) const {
    auto full = [&] {
      for (std::size_t s = 0; s < shards_.size(); ++s) cur[s] = {0, shards_[s].n};
    };
    full();
    std::size_t j = 0, len = 0;
    std::uint64_t ctx = info_.empty_count;
    for (std::size_t i = 0; i < m; ++i) {
      std::uint64_t cont = 0;
      for (std::size_t s = 0; s < shards_.size(); ++s) {
        nxt[s] = narrow(shards_[s], cur[s], q + j, len);
        cont += nxt[s].size();
      }
      out.suffix_len[at + i] = static_cast<std::int64_t>(len);
      out.context_count[at + i] = ctx;
      out.count[at + i] = cont;
      out.prob[at + i] = static_cast<double>(cont) / static_cast<double>(ctx);
      if (cont > 0) {
        std::swap(cur, nxt);
        ++len;
        ctx = cont;
      } else {
        for (;;) {
          ++j;
          len = i + 1 - j;
          if (len == 0) {
            full();
            ctx = info_.empty_count;
            break;
          }
          std::uint64_t found = 0;
          for (std::size_t s = 0; s < shards_.size(); ++s) {
            nxt[s] = find(shards_[s], q + j, len);
            found += nxt[s].size();
          }
          if (found > 0) {
            std::swap(cur, nxt);
            ctx = found;
            break;
          }
        }
      }
      out.match_len[at + i] = static_cast<std::int64_t>(len);
    }
  }

  std::vector<std::uint32_t> keys(const std::int64_t* ids, std::size_t m, const char* what) const {
    std::vector<std::uint32_t> q(m);
    for (std::size_t i = 0; i < m; ++i) {
      std::int64_t v = ids[i];
      if (v < 0 || static_cast<std::uint64_t>(v) >= info_.vocab_size)
        throw std::invalid_argument(std::string(what) + ": token id " + std::to_string(v) + " at position " +
                                    std::to_string(i) + " is outside [0, " + std::to_string(info_.vocab_size) +
                                    ") of the index " + info_.path);
      q[i] = key_of<T, kSwap>(static_cast<T>(v));
    }
    return q;
  }

  std::vector<std::uint32_t> keys_with(const std::int64_t* context, std::size_t m, std::int64_t token) const {
    auto q = keys(context, m, "context");
    auto t = keys(&token, 1, "token");
    q.push_back(t[0]);
    return q;
  }

  IndexInfo info_;
  std::vector<Shard<T>> shards_;
};

// ---------------------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------------------

FileHeader read_header(const MappedFile& f, std::uint32_t kind) {
  const std::string& name = f.path();
  if (f.size() < sizeof(FileHeader))
    throw CorruptIndex(name + ": truncated: " + std::to_string(f.size()) + " bytes, shorter than the " +
                       std::to_string(sizeof(FileHeader)) + "-byte header");
  FileHeader h;
  std::memcpy(&h, f.data(), sizeof h);
  if (std::memcmp(h.magic, kIndexMagic, sizeof h.magic) != 0)
    throw CorruptIndex(name + ": not a fastspec index file (bad magic)");
  if (h.version != kIndexVersion)
    throw CorruptIndex(name + ": index format version " + std::to_string(h.version) + ", this fastspec reads version " +
                       std::to_string(kIndexVersion));
  if (h.kind != kind)
    throw CorruptIndex(name + ": holds file kind " + std::to_string(h.kind) + ", expected " + std::to_string(kind));
  if (h.token_width != 2 && h.token_width != 4)
    throw CorruptIndex(name + ": token width " + std::to_string(h.token_width) + " bytes (expected 2 or 4)");
  if (h.sa_width != 4) throw CorruptIndex(name + ": suffix-array width " + std::to_string(h.sa_width) + " (expected 4)");
  if (h.n_positions < 1 || h.n_positions >= (std::uint64_t{1} << 32) - 1)
    throw CorruptIndex(name + ": " + std::to_string(h.n_positions) + " token positions is out of range");
  if (h.n_docs < 1 || h.n_docs > h.n_positions)
    throw CorruptIndex(name + ": " + std::to_string(h.n_docs) + " documents in " + std::to_string(h.n_positions) +
                       " positions");
  std::uint64_t max_vocab = (std::uint64_t{1} << (8 * h.token_width)) - 1;
  if (h.vocab_size < 1 || h.vocab_size > max_vocab)
    throw CorruptIndex(name + ": vocabulary size " + std::to_string(h.vocab_size) + " does not fit " +
                       std::to_string(h.token_width) + "-byte token ids");
  std::uint64_t width = kind == kKindTokens ? h.token_width : h.sa_width;
  std::uint64_t want = sizeof(FileHeader) + h.n_positions * width;
  if (f.size() != want)
    throw CorruptIndex(name + ": " + std::to_string(f.size()) + " bytes, the header promises " + std::to_string(want) +
                       (f.size() < want ? " (truncated)" : " (trailing bytes)"));
  return h;
}

template <class T>
std::unique_ptr<InfGramEngine> make_engine(IndexInfo info, std::vector<Shard<T>> shards, bool swap) {
  info.empty_count = info.n_positions;  // infini-gram's: the empty context counts the separators too
  if (swap) return std::make_unique<Engine<T, true>>(std::move(info), std::move(shards));
  return std::make_unique<Engine<T, false>>(std::move(info), std::move(shards));
}

template <class T>
std::unique_ptr<InfGramEngine> open_fastspec_shards(IndexInfo info, std::vector<MappedFile> tok,
                                                    std::vector<MappedFile> sa, const std::vector<FileHeader>& hs) {
  std::vector<Shard<T>> shards;
  for (std::size_t s = 0; s < tok.size(); ++s) {
    Shard<T> sh;
    sh.n = hs[s].n_positions;
    sh.n_docs = hs[s].n_docs;
    sh.text = reinterpret_cast<const T*>(tok[s].data() + sizeof(FileHeader));
    sh.sa = sa[s].data() + sizeof(FileHeader);
    sh.sa_width = 4;
    sh.shift = 0;
    if (static_cast<std::uint64_t>(sh.text[0]) != std::numeric_limits<T>::max())
      throw CorruptIndex(tok[s].path() + ": does not start with a document separator");
    sh.tokens_file = std::move(tok[s]);
    sh.sa_file = std::move(sa[s]);
    shards.push_back(std::move(sh));
  }
  return make_engine<T>(std::move(info), std::move(shards), false);
}

std::unique_ptr<InfGramEngine> open_fastspec(const std::string& dir) {
  std::vector<MappedFile> tok, sa;
  std::vector<FileHeader> hs;
  std::uint32_t n_shards = 1;
  IndexInfo info;
  info.format = "fastspec";
  info.path = dir;
  for (std::uint32_t s = 0; s < n_shards; ++s) {
    tok.emplace_back(join(dir, tokens_file(s)));
    sa.emplace_back(join(dir, suffix_array_file(s)));
    FileHeader h = read_header(tok.back(), kKindTokens);
    FileHeader g = read_header(sa.back(), kKindSuffixArray);
    if (s == 0) {
      if (h.n_shards == 0)
        throw CorruptIndex(tok.back().path() + ": the index build did not finish (no shard count recorded)");
      if (h.n_shards > 1000000) throw CorruptIndex(tok.back().path() + ": implausible shard count " + std::to_string(h.n_shards));
      n_shards = h.n_shards;
      info.token_width = h.token_width;
      info.vocab_size = h.vocab_size;
    }
    auto mismatch = [&](const MappedFile& f, const char* field, std::uint64_t got, std::uint64_t want) {
      return CorruptIndex(f.path() + ": " + field + " " + std::to_string(got) + " does not match " + std::to_string(want) +
                          " in " + tok[0].path());
    };
    if (h.token_width != info.token_width) throw mismatch(tok.back(), "token width", h.token_width, info.token_width);
    if (g.token_width != info.token_width) throw mismatch(sa.back(), "token width", g.token_width, info.token_width);
    if (h.vocab_size != info.vocab_size) throw mismatch(tok.back(), "vocabulary size", h.vocab_size, info.vocab_size);
    if (g.vocab_size != info.vocab_size) throw mismatch(sa.back(), "vocabulary size", g.vocab_size, info.vocab_size);
    if (h.n_shards != n_shards) throw mismatch(tok.back(), "shard count", h.n_shards, n_shards);
    if (g.n_shards != n_shards) throw mismatch(sa.back(), "shard count", g.n_shards, n_shards);
    if (h.shard != s) throw mismatch(tok.back(), "shard number", h.shard, s);
    if (g.shard != s) throw mismatch(sa.back(), "shard number", g.shard, s);
    if (g.n_positions != h.n_positions)
      throw CorruptIndex(sa.back().path() + ": " + std::to_string(g.n_positions) + " positions, but " +
                         tok.back().path() + " has " + std::to_string(h.n_positions));
    if (g.n_docs != h.n_docs)
      throw CorruptIndex(sa.back().path() + ": document count does not match " + tok.back().path());
    info.n_positions += h.n_positions;
    info.n_docs += h.n_docs;
    hs.push_back(h);
  }
  info.n_shards = n_shards;
  info.n_tokens = info.n_positions - info.n_docs;
  if (info.n_tokens < 2)
    throw CorruptIndex(join(dir, tokens_file(0)) + ": the index holds " + std::to_string(info.n_tokens) +
                       " tokens; at least 2 are needed");
  if (info.token_width == 2) return open_fastspec_shards<std::uint16_t>(std::move(info), std::move(tok), std::move(sa), hs);
  return open_fastspec_shards<std::uint32_t>(std::move(info), std::move(tok), std::move(sa), hs);
}

// infini-gram: tokenized.<s> (documents each preceded by 0xFF.. of the token width),
// table.<s> (byte offsets into tokenized, ceil(log2(size)/8) bytes each, suffixes in
// byte order), offset.<s> (uint64 byte offset of each document).
std::uint32_t pointer_width(std::uint64_t ds_size) {
  std::uint32_t p = 1;
  while (p < 8 && (std::uint64_t{1} << (8 * p)) < ds_size) ++p;
  return p;
}

template <class T>
std::unique_ptr<InfGramEngine> open_infini_gram_shards(IndexInfo info, std::vector<MappedFile> tok,
                                                       std::vector<MappedFile> sa, const std::vector<std::uint64_t>& docs) {
  std::vector<Shard<T>> shards;
  std::uint32_t shift = sizeof(T) == 2 ? 1 : (sizeof(T) == 4 ? 2 : 0);
  for (std::size_t s = 0; s < tok.size(); ++s) {
    Shard<T> sh;
    sh.n = tok[s].size() / sizeof(T);
    sh.n_docs = docs[s];
    sh.text = reinterpret_cast<const T*>(tok[s].data());
    sh.sa = sa[s].data();
    sh.sa_width = pointer_width(tok[s].size());
    sh.shift = shift;
    sh.tokens_file = std::move(tok[s]);
    sh.sa_file = std::move(sa[s]);
    shards.push_back(std::move(sh));
  }
  return make_engine<T>(std::move(info), std::move(shards), true);
}

std::unique_ptr<InfGramEngine> open_infini_gram(const std::string& dir, const OpenOptions& opt) {
  std::vector<MappedFile> tok, sa;
  std::vector<std::uint64_t> docs;
  for (std::uint32_t s = 0; file_exists(join(dir, "tokenized." + std::to_string(s))); ++s) {
    tok.emplace_back(join(dir, "tokenized." + std::to_string(s)));
    std::string table = join(dir, "table." + std::to_string(s));
    std::string offset = join(dir, "offset." + std::to_string(s));
    sa.emplace_back(table);
    MappedFile od(offset);
    if (od.size() % 8 != 0)
      throw CorruptIndex(offset + ": " + std::to_string(od.size()) + " bytes is not a whole number of uint64 offsets");
    docs.push_back(od.size() / 8);
  }
  if (tok.empty()) throw IoError(join(dir, "tokenized.0") + ": no such file (not an infini-gram index directory)");
  std::uint32_t width = opt.token_width;
  if (width == 0) {  // infer: the only width whose table size fits the pointer width
    std::vector<std::uint32_t> fits;
    for (std::uint32_t w : {1u, 2u, 4u}) {
      std::uint64_t ds = tok[0].size();
      if (ds % w == 0 && sa[0].size() == ds / w * pointer_width(ds)) fits.push_back(w);
    }
    if (fits.size() != 1)
      throw CorruptIndex(sa[0].path() + ": cannot infer the token width from the sizes of " + tok[0].path() + " (" +
                         std::to_string(tok[0].size()) + " bytes) and this table (" + std::to_string(sa[0].size()) +
                         " bytes)" + (fits.empty() ? ": no width fits, the table is truncated or corrupt" : ": pass token_width"));
    width = fits[0];
  }
  if (width == 1) throw Unsupported(tok[0].path() + ": 8-bit (byte) infini-gram indexes are not supported; fastspec reads 16- and 32-bit ones");
  if (width != 2 && width != 4) throw std::invalid_argument("token_width must be 2 or 4, got " + std::to_string(width));
  IndexInfo info;
  info.format = "infini-gram";
  info.path = dir;
  info.token_width = width;
  std::uint64_t sep = (std::uint64_t{1} << (8 * width)) - 1;
  info.vocab_size = opt.vocab_size == 0 ? sep : opt.vocab_size;
  if (info.vocab_size > sep)
    throw std::invalid_argument("vocab_size " + std::to_string(info.vocab_size) + " does not fit " +
                                std::to_string(width) + "-byte token ids (at most " + std::to_string(sep) + ")");
  info.n_shards = static_cast<std::uint32_t>(tok.size());
  for (std::size_t s = 0; s < tok.size(); ++s) {
    std::uint64_t ds = tok[s].size();
    if (ds < 2 * width || ds % width != 0)
      throw CorruptIndex(tok[s].path() + ": " + std::to_string(ds) + " bytes is not a corpus of " + std::to_string(width) +
                         "-byte tokens (token width mismatch, or truncated)");
    std::uint64_t want = ds / width * pointer_width(ds);
    if (sa[s].size() != want)
      throw CorruptIndex(sa[s].path() + ": " + std::to_string(sa[s].size()) + " bytes, expected " + std::to_string(want) +
                         " for " + tok[s].path() + " with " + std::to_string(width) +
                         "-byte tokens (truncated, or a token width mismatch)");
    if (docs[s] > ds / width)
      throw CorruptIndex(join(dir, "offset." + std::to_string(s)) + ": more documents than tokens");
    info.n_positions += ds / width;
    info.n_docs += docs[s];
  }
  info.n_tokens = info.n_positions - info.n_docs;
  if (info.n_tokens < 2) throw CorruptIndex(tok[0].path() + ": fewer than 2 tokens");
  if (width == 2) return open_infini_gram_shards<std::uint16_t>(std::move(info), std::move(tok), std::move(sa), docs);
  return open_infini_gram_shards<std::uint32_t>(std::move(info), std::move(tok), std::move(sa), docs);
}

// ---------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------

class OutFile {
 public:
  explicit OutFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (f_ == nullptr) throw IoError(tmp_ + ": cannot create: " + std::strerror(errno));
  }
  ~OutFile() {
    if (f_ != nullptr) {
      std::fclose(f_);
      std::remove(tmp_.c_str());
    }
  }
  void write(const void* p, std::size_t bytes) {
    if (bytes > 0 && std::fwrite(p, 1, bytes, f_) != bytes) throw IoError(tmp_ + ": write failed: " + std::strerror(errno));
  }
  void commit() {  // the final name appears only once the file is complete
    int rc = std::fclose(f_);
    f_ = nullptr;
    if (rc != 0) throw IoError(tmp_ + ": close failed: " + std::strerror(errno));
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
      throw IoError(path_ + ": cannot rename from " + tmp_ + ": " + std::strerror(errno));
  }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

template <class T>
void build_shard(const T* text, std::int64_t n, std::uint64_t vocab, std::uint32_t shard, const std::string& dir) {
  constexpr std::uint64_t sep = std::numeric_limits<T>::max();
  if (n < 1) throw std::invalid_argument("a shard needs at least one document (its separator), got 0 positions");
  if (n >= static_cast<std::int64_t>(std::numeric_limits<std::int32_t>::max()))
    throw std::invalid_argument("a shard holds at most 2^31 - 2 positions, got " + std::to_string(n));
  if (vocab < 1 || vocab > sep)
    throw std::invalid_argument("vocab_size " + std::to_string(vocab) + " does not fit " + std::to_string(sizeof(T)) +
                                "-byte ids (at most " + std::to_string(sep) + ")");
  if (text[0] != sep) throw std::invalid_argument("the shard must start with a document separator");
  std::uint64_t docs = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint64_t v = text[i];
    if (v == sep) ++docs;
    else if (v >= vocab)
      throw std::invalid_argument("token id " + std::to_string(v) + " at position " + std::to_string(i) +
                                  " is not below vocab_size " + std::to_string(vocab));
  }
  FileHeader h{};
  std::memcpy(h.magic, kIndexMagic, sizeof h.magic);
  h.version = kIndexVersion;
  h.token_width = sizeof(T);
  h.sa_width = 4;
  h.n_positions = static_cast<std::uint64_t>(n);
  h.n_docs = docs;
  h.vocab_size = vocab;
  h.shard = shard;
  h.n_shards = 0;

  // The tokens go to disk on a second thread while this one sorts.
  std::exception_ptr writer_error;
  std::thread writer([&] {
    try {
      OutFile out(join(dir, tokens_file(shard)));
      FileHeader th = h;
      th.kind = kKindTokens;
      out.write(&th, sizeof th);
      out.write(text, sizeof(T) * static_cast<std::size_t>(n));
      out.commit();
    } catch (...) {
      writer_error = std::current_exception();
    }
  });
  try {
    std::vector<std::int32_t> sa(static_cast<std::size_t>(n));
    if constexpr (sizeof(T) == 2) {
      suffix_array_u16(text, n, 65536, sa.data());
    } else {
      // The separator 0xFFFFFFFF is sorted as vocab (above every id) so buckets stay vocab-sized.
      suffix_array_u32(text, n, vocab + 1, static_cast<std::uint32_t>(sep), sa.data());
    }
    OutFile out(join(dir, suffix_array_file(shard)));
    FileHeader sh = h;
    sh.kind = kKindSuffixArray;
    out.write(&sh, sizeof sh);
    out.write(sa.data(), sizeof(std::int32_t) * sa.size());
    out.commit();
  } catch (...) {
    writer.join();
    throw;
  }
  writer.join();
  if (writer_error) std::rethrow_exception(writer_error);
}

void patch_shard_count(const std::string& path, std::uint32_t n_shards) {
  std::FILE* f = std::fopen(path.c_str(), "r+b");
  if (f == nullptr) throw IoError(path + ": cannot open for update: " + std::strerror(errno));
  bool ok = std::fseek(f, static_cast<long>(offsetof(FileHeader, n_shards)), SEEK_SET) == 0 &&
            std::fwrite(&n_shards, sizeof n_shards, 1, f) == 1;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) throw IoError(path + ": cannot write the shard count: " + std::strerror(errno));
}

}  // namespace

std::unique_ptr<InfGramEngine> open_index(const std::string& dir, const OpenOptions& options) {
  std::string format = options.format;
  if (format == "auto") {
    if (file_exists(join(dir, tokens_file(0)))) format = "fastspec";
    else if (file_exists(join(dir, "tokenized.0"))) format = "infini-gram";
    else
      throw IoError(dir + ": not an index directory (neither " + tokens_file(0) + " nor tokenized.0 is there)" +
                    (file_exists(dir) ? "" : "; the directory does not exist"));
  }
  if (format == "fastspec") {
    if (options.token_width != 0 || options.vocab_size != 0)
      throw std::invalid_argument("token_width and vocab_size are read from a fastspec index's headers; pass them only for infini-gram indexes");
    return open_fastspec(dir);
  }
  if (format == "infini-gram") return open_infini_gram(dir, options);
  throw std::invalid_argument("format must be 'auto', 'fastspec' or 'infini-gram', got '" + format + "'");
}

void build_shard_u16(const std::uint16_t* text, std::int64_t n, std::uint64_t vocab_size, std::uint32_t shard,
                     const std::string& dir) {
  build_shard(text, n, vocab_size, shard, dir);
}

void build_shard_u32(const std::uint32_t* text, std::int64_t n, std::uint64_t vocab_size, std::uint32_t shard,
                     const std::string& dir) {
  build_shard(text, n, vocab_size, shard, dir);
}

void finish_index(const std::string& dir, std::uint32_t n_shards) {
  if (n_shards < 1) throw std::invalid_argument("an index has at least one shard");
  for (std::uint32_t s = 0; s < n_shards; ++s) {
    patch_shard_count(join(dir, tokens_file(s)), n_shards);
    patch_shard_count(join(dir, suffix_array_file(s)), n_shards);
  }
}

}  // namespace fastspec
