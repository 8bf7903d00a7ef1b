// The engine end to end under the sanitizers: random corpora built and opened, counts and
// matching statistics against naive scans, then every file damaged byte by byte (each open or
// query must answer or throw, never read out of bounds). Builds with plain g++:
//   g++ -std=c++17 -O1 -g -fsanitize=address,undefined -Icsrc/infgram tests/cpp/test_engine.cpp \
//       csrc/infgram/index.cpp csrc/infgram/sais.cpp csrc/infgram/mapped_file.cpp -lpthread -o /tmp/test_engine
//   /tmp/test_engine /tmp/some-empty-dir
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "index.hpp"

using Docs = std::vector<std::vector<std::int64_t>>;

static std::uint64_t naive_count(const Docs& docs, const std::vector<std::int64_t>& q) {
  std::uint64_t c = 0;
  if (q.empty()) {  // every token and, as infini-gram counts it, every document's separator
    for (const auto& d : docs) c += d.size() + 1;
    return c;
  }
  for (const auto& d : docs)
    for (std::size_t i = 0; i + q.size() <= d.size(); ++i)
      if (std::equal(q.begin(), q.end(), d.begin() + static_cast<std::ptrdiff_t>(i))) ++c;
  return c;
}

static std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
static void write_file(const std::string& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_engine EMPTY_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::mt19937_64 rng(1);
  int failures = 0, checks = 0;
  for (int it = 0; it < 60; ++it) {
    bool wide = it % 2 == 1;
    std::uint64_t vocab = 1 + rng() % 5;
    Docs docs(1 + rng() % 6);
    std::vector<std::uint16_t> t16;
    std::vector<std::uint32_t> t32;
    for (auto& d : docs) {
      d.resize(rng() % 20);
      for (auto& x : d) x = static_cast<std::int64_t>(rng() % vocab);
      t16.push_back(0xFFFF);
      t32.push_back(0xFFFFFFFFu);
      for (auto x : d) {
        t16.push_back(static_cast<std::uint16_t>(x));
        t32.push_back(static_cast<std::uint32_t>(x));
      }
    }
    if (naive_count(docs, {}) - docs.size() < 2) continue;
    if (wide) fastspec::build_shard_u32(t32.data(), static_cast<std::int64_t>(t32.size()), vocab, 0, dir);
    else fastspec::build_shard_u16(t16.data(), static_cast<std::int64_t>(t16.size()), vocab, 0, dir);
    fastspec::finish_index(dir, 1);
    {
      auto e = fastspec::open_index(dir, {});
      e->verify();
      for (int k = 0; k < 30; ++k) {
        std::vector<std::int64_t> q(rng() % 25);
        for (auto& x : q) x = static_cast<std::int64_t>(rng() % vocab);
        ++checks;
        failures += e->count(q.data(), q.size()) != naive_count(docs, q);
        std::vector<std::int64_t> off{0, static_cast<std::int64_t>(q.size())}, ml(q.size()), sl(q.size());
        std::vector<double> pr(q.size());
        std::vector<std::uint64_t> cc(q.size()), cn(q.size());
        e->score(q.data(), off.data(), 1, ml.data(), sl.data(), pr.data(), cc.data(), cn.data(), 2);
        for (std::size_t i = 0; i < q.size(); ++i) {
          std::size_t best = 0;
          for (std::size_t l = 1; l <= i + 1; ++l)
            if (naive_count(docs, std::vector<std::int64_t>(q.begin() + static_cast<std::ptrdiff_t>(i + 1 - l), q.begin() + static_cast<std::ptrdiff_t>(i + 1))) > 0) best = l;
          ++checks;
          failures += static_cast<std::size_t>(ml[i]) != best;
          auto r = e->infgram_prob(q.data(), i, q[i]);
          failures += r.suffix_len != sl[i] || r.count != cn[i] || r.context_count != cc[i];
        }
      }
    }
    // Damage every byte of both files in turn: answer or throw, never touch memory out of bounds.
    for (const char* name : {"tokens.0", "suffix_array.0"}) {
      std::string path = dir + "/" + name, clean = read_file(path);
      for (std::size_t at = 0; at < clean.size(); at += 1 + at / 16) {
        for (unsigned char v : {0x00, 0x7F, 0xFF}) {
          std::string bad = clean;
          bad[at] = static_cast<char>(v);
          write_file(path, bad);
          try {
            auto e = fastspec::open_index(dir, {});
            std::int64_t q[3] = {0, 1, 0};
            e->count(q, 3);
            e->infgram_prob(q, 2, 1);
            e->verify();
          } catch (const std::exception&) {
          }
        }
      }
      write_file(path, clean.substr(0, clean.size() / 2));
      try {
        fastspec::open_index(dir, {});
        ++failures;  // a truncated file must not open
      } catch (const std::invalid_argument&) {
      }
      write_file(path, clean);
    }
  }
  std::printf("%d/%d checks failed\n", failures, checks);
  return failures == 0 ? 0 : 1;
}
