// Suffix array construction by induced sorting (SA-IS).
//
// Nong, Zhang and Chan, "Two Efficient Algorithms for Linear Time Suffix Array
// Construction", IEEE Transactions on Computers 60(10), 2011. Linear time for an integer
// alphabet; the recursion reuses the output array, so the extra memory is one byte of
// type flags per symbol plus one bucket array of the alphabet's size (at the first
// recursion level: at most n/2 names).
#pragma once

#include <cstdint>

namespace fastspec {

// Suffix array of `text[0, n)` into `sa[0, n)`: sa[r] is the start of the r-th smallest
// suffix, comparing token values as unsigned integers; a suffix that is a proper prefix of
// another sorts first. Every value must be < `alphabet`, except that `remap_from` (when
// `alphabet` <= remap_from) is read as `alphabet - 1`: 32-bit corpora store their document
// separator as 0xFFFFFFFF, which must not size the bucket array. n < 2^31.
// Throws std::invalid_argument on a value out of range, std::bad_alloc when out of memory.
void suffix_array_u16(const std::uint16_t* text, std::int64_t n, std::uint64_t alphabet, std::int32_t* sa);
void suffix_array_u32(const std::uint32_t* text, std::int64_t n, std::uint64_t alphabet, std::uint32_t remap_from,
                      std::int32_t* sa);

}  // namespace fastspec
