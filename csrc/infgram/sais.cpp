// SA-IS (Nong, Zhang & Chan 2011), written for fastspec. The text carries an implicit
// sentinel after its last symbol, smaller than every symbol; the sentinel is never stored.
#include "sais.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastspec {
namespace {

constexpr std::int32_t kEmpty = -1;

// Reads symbol i of the text through `Key` (identity, or a remap of one separator value).
template <class T, class Key>
struct Text {
  const T* s;
  Key key;
  std::uint32_t operator[](std::int64_t i) const { return key(s[i]); }
};

struct Identity {
  template <class T>
  std::uint32_t operator()(T v) const { return static_cast<std::uint32_t>(v); }
};

// The reduced string of a recursion level (names stored in the suffix array's space).
struct Ints {
  const std::int32_t* s;
  std::uint32_t operator[](std::int64_t i) const { return static_cast<std::uint32_t>(s[i]); }
};

struct Remap {
  std::uint32_t from, to;
  std::uint32_t operator()(std::uint32_t v) const { return v == from ? to : v; }
};

// Bucket heads (end=false) or ends (end=true) of every symbol, from a fresh count: one array
// of the alphabet's size is all the algorithm keeps, recounted per pass (a sequential scan is
// cheap next to the random accesses of induced sorting).
template <class S>
void buckets(const S& s, std::int64_t n, std::vector<std::int32_t>& bkt, bool end) {
  std::fill(bkt.begin(), bkt.end(), 0);
  for (std::int64_t i = 0; i < n; ++i) ++bkt[s[i]];
  std::int32_t sum = 0;
  for (auto& b : bkt) {
    sum += b;
    b = end ? sum : sum - b;
  }
}

// t[i] = 1 for S-type, 0 for L-type. The implicit sentinel makes the last symbol L-type.
template <class S>
void classify(const S& s, std::int64_t n, std::vector<std::uint8_t>& t) {
  t[n - 1] = 0;
  for (std::int64_t i = n - 2; i >= 0; --i) {
    auto a = s[i], b = s[i + 1];
    t[i] = (a < b || (a == b && t[i + 1])) ? 1 : 0;
  }
}

inline bool is_lms(const std::vector<std::uint8_t>& t, std::int64_t i) { return i > 0 && t[i] && !t[i - 1]; }

// Induced sorting is a stream of dependent random accesses (sa[i] -> s[j], t[j] -> bkt ->
// a write into sa). Prefetching them a few dozen entries ahead hides most of the misses: the
// text and type of the suffix 2D ahead, and the bucket slot of the one D ahead.
constexpr std::int64_t kPrefetch = 32;

template <class S>
void induce(const S& s, std::int64_t n, const std::vector<std::uint8_t>& t, std::vector<std::int32_t>& bkt,
            std::int32_t* sa) {
  const std::uint8_t* tp = t.data();
  std::int32_t* bp = bkt.data();
  buckets(s, n, bkt, false);
  // The sentinel suffix is the smallest; the suffix just before it (n-1, L-type) goes first.
  sa[bp[s[n - 1]]++] = static_cast<std::int32_t>(n - 1);
  for (std::int64_t i = 0; i < n; ++i) {
    if (i + 2 * kPrefetch < n) {
      std::int32_t f = sa[i + 2 * kPrefetch] - 1;
      if (f >= 0) {
        __builtin_prefetch(&s.s[f]);
        __builtin_prefetch(tp + f);
      }
      std::int32_t g = sa[i + kPrefetch] - 1;
      if (g >= 0 && !tp[g]) __builtin_prefetch(sa + bp[s[g]], 1);
    }
    std::int32_t j = sa[i] - 1;
    if (j >= 0 && !tp[j]) sa[bp[s[j]]++] = j;
  }
  buckets(s, n, bkt, true);
  for (std::int64_t i = n - 1; i >= 0; --i) {
    if (i - 2 * kPrefetch >= 0) {
      std::int32_t f = sa[i - 2 * kPrefetch] - 1;
      if (f >= 0) {
        __builtin_prefetch(&s.s[f]);
        __builtin_prefetch(tp + f);
      }
      std::int32_t g = sa[i - kPrefetch] - 1;
      if (g >= 0 && tp[g]) __builtin_prefetch(sa + bp[s[g]] - 1, 1);
    }
    std::int32_t j = sa[i] - 1;
    if (j >= 0 && tp[j]) sa[--bp[s[j]]] = j;
  }
}

// Two LMS substrings (from an LMS position to the next one, inclusive) are equal.
template <class S>
bool same_lms_substring(const S& s, std::int64_t n, const std::vector<std::uint8_t>& t, std::int64_t a,
                        std::int64_t b) {
  for (std::int64_t k = 0;; ++k) {
    bool a_end = a + k == n, b_end = b + k == n;
    if (a_end || b_end) return false;  // the sentinel's substring equals no other
    if (s[a + k] != s[b + k] || t[a + k] != t[b + k]) return false;
    if (k > 0 && (is_lms(t, a + k) || is_lms(t, b + k))) return is_lms(t, a + k) && is_lms(t, b + k);
  }
}

template <class S>
void sais(const S& s, std::int64_t n, std::int64_t alphabet, std::int32_t* sa) {
  if (n == 1) {
    sa[0] = 0;
    return;
  }
  std::vector<std::uint8_t> t(static_cast<std::size_t>(n));
  classify(s, n, t);
  std::vector<std::int32_t> bkt(static_cast<std::size_t>(alphabet));

  // Stage 1: sort the LMS substrings by one induced-sorting pass.
  std::fill(sa, sa + n, kEmpty);
  buckets(s, n, bkt, true);
  for (std::int64_t i = 1; i < n; ++i)
    if (is_lms(t, i)) sa[--bkt[s[i]]] = static_cast<std::int32_t>(i);
  induce(s, n, t, bkt, sa);

  // Compact the sorted LMS positions to the front, then name them: equal substrings, equal names.
  std::int64_t n1 = 0;
  for (std::int64_t i = 0; i < n; ++i)
    if (is_lms(t, sa[i])) sa[n1++] = sa[i];
  std::fill(sa + n1, sa + n, kEmpty);
  std::int32_t name = -1;
  std::int64_t prev = -1;
  for (std::int64_t i = 0; i < n1; ++i) {
    std::int64_t p = sa[i];
    if (prev < 0 || !same_lms_substring(s, n, t, prev, p)) ++name;
    prev = p;
    sa[n1 + p / 2] = name;  // LMS positions are at least two apart: p/2 is unique
  }
  // The reduced string: names in text order, packed at the end of sa.
  std::int64_t j = n - 1;
  for (std::int64_t i = n - 1; i >= n1; --i)
    if (sa[i] >= 0) sa[j--] = sa[i];
  std::int32_t* s1 = sa + n - n1;
  std::int32_t* sa1 = sa;

  // Stage 2: sort the LMS suffixes, recursively unless every name is unique.
  if (name + 1 < n1) {
    // Only the bucket array of this level is live during the recursion: free it first.
    std::vector<std::int32_t>().swap(bkt);
    sais(Ints{s1}, n1, static_cast<std::int64_t>(name) + 1, sa1);
    bkt.resize(static_cast<std::size_t>(alphabet));
  } else {
    for (std::int64_t i = 0; i < n1; ++i) sa1[s1[i]] = static_cast<std::int32_t>(i);
  }

  // Stage 3: induce the full order from the sorted LMS suffixes.
  j = 0;
  for (std::int64_t i = 1; i < n; ++i)
    if (is_lms(t, i)) s1[j++] = static_cast<std::int32_t>(i);  // LMS positions in text order
  for (std::int64_t i = 0; i < n1; ++i) sa1[i] = s1[sa1[i]];
  std::fill(sa + n1, sa + n, kEmpty);
  buckets(s, n, bkt, true);
  for (std::int64_t i = n1 - 1; i >= 0; --i) {
    std::int32_t p = sa[i];
    sa[i] = kEmpty;
    sa[--bkt[s[p]]] = p;
  }
  induce(s, n, t, bkt, sa);
}

void check_size(std::int64_t n) {
  if (n < 1) throw std::invalid_argument("suffix array of an empty text");
  if (n >= std::numeric_limits<std::int32_t>::max())
    throw std::invalid_argument("a shard holds at most 2^31 - 2 tokens, got " + std::to_string(n));
}

template <class S>
void check_alphabet(const S& s, std::int64_t n, std::uint64_t alphabet) {
  for (std::int64_t i = 0; i < n; ++i)
    if (s[i] >= alphabet)
      throw std::invalid_argument("token " + std::to_string(s[i]) + " at position " + std::to_string(i) +
                                  " is not below the alphabet size " + std::to_string(alphabet));
}

}  // namespace

void suffix_array_u16(const std::uint16_t* text, std::int64_t n, std::uint64_t alphabet, std::int32_t* sa) {
  check_size(n);
  if (alphabet == 0 || alphabet > 65536) throw std::invalid_argument("16-bit alphabet size must be in [1, 65536]");
  Text<std::uint16_t, Identity> s{text, {}};
  check_alphabet(s, n, alphabet);
  sais(s, n, static_cast<std::int64_t>(alphabet), sa);
}

void suffix_array_u32(const std::uint32_t* text, std::int64_t n, std::uint64_t alphabet, std::uint32_t remap_from,
                      std::int32_t* sa) {
  check_size(n);
  if (alphabet == 0 || alphabet > (std::uint64_t{1} << 31))
    throw std::invalid_argument("32-bit alphabet size must be in [1, 2^31], got " + std::to_string(alphabet));
  Text<std::uint32_t, Remap> s{text, Remap{remap_from, static_cast<std::uint32_t>(alphabet - 1)}};
  check_alphabet(s, n, alphabet);
  sais(s, n, static_cast<std::int64_t>(alphabet), sa);
}

}  // namespace fastspec
