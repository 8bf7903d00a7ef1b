// SA-IS against std::sort of the suffixes on random texts (small alphabets, runs, big
// alphabets, the 32-bit separator remap). Builds with plain g++:
//   g++ -std=c++17 -O2 -Icsrc/infgram tests/cpp/test_sais.cpp csrc/infgram/sais.cpp -o /tmp/test_sais && /tmp/test_sais
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "sais.hpp"

template <class T>
std::vector<std::int32_t> naive(const std::vector<T>& s, std::uint64_t remap_from, std::uint64_t remap_to) {
  auto key = [&](T v) -> std::uint64_t { return v == remap_from ? remap_to : v; };
  std::vector<std::int32_t> sa(s.size());
  std::iota(sa.begin(), sa.end(), 0);
  std::sort(sa.begin(), sa.end(), [&](std::int32_t a, std::int32_t b) {
    std::size_t n = s.size();
    while (a < (std::int64_t)n && b < (std::int64_t)n && key(s[a]) == key(s[b])) ++a, ++b;
    if (b == (std::int64_t)n) return false;
    if (a == (std::int64_t)n) return true;
    return key(s[a]) < key(s[b]);
  });
  return sa;
}

int main() {
  std::mt19937_64 rng(7);
  int failures = 0, cases = 0;
  for (int it = 0; it < 4000; ++it) {
    std::size_t n = 1 + rng() % (it < 3000 ? 40 : 3000);
    std::uint32_t sigma = 1 + rng() % (it % 3 == 0 ? 2 : (it % 3 == 1 ? 5 : 300));
    std::vector<std::uint16_t> s16(n);
    std::vector<std::uint32_t> s32(n);
    for (std::size_t i = 0; i < n; ++i) {
      std::uint32_t v = rng() % sigma;
      if (it % 7 == 0 && i > 0 && rng() % 4 != 0) v = s16[i - 1];  // runs
      s16[i] = static_cast<std::uint16_t>(v);
      s32[i] = rng() % 11 == 0 ? 0xFFFFFFFFu : v;  // separators, sorted as sigma
    }
    std::vector<std::int32_t> sa(n);
    fastspec::suffix_array_u16(s16.data(), (std::int64_t)n, 65536, sa.data());
    failures += sa != naive(s16, 1u << 20, 0);
    fastspec::suffix_array_u32(s32.data(), (std::int64_t)n, sigma + 1, 0xFFFFFFFFu, sa.data());
    failures += sa != naive(s32, 0xFFFFFFFFu, sigma);
    cases += 2;
  }
  std::printf("%d/%d suffix arrays wrong\n", failures, cases);
  return failures == 0 ? 0 : 1;
}
