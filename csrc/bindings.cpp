// The only file that knows Python. Engines live in csrc/<engine>/ and take plain
// pointers, sizes and strides; this file checks arguments and forwards.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "infgram/errors.hpp"
#include "infgram/index.hpp"

namespace py = pybind11;

namespace fastspec {

// What this binary was compiled with. Python's fastspec.backends() reads it, so a user
// can tell from the installed package alone what it can do and, for what it cannot, why.
py::dict build_info() {
  py::dict info;
  info["version"] = FASTSPEC_VERSION;
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  info["compiler"] = std::string("msvc ") + std::to_string(_MSC_VER);
#else
  info["compiler"] = std::string("unknown");
#endif
  info["cplusplus"] = static_cast<long>(__cplusplus);

  py::dict cuda;
  cuda["built"] = false;
  cuda["reason"] =
      "this version of fastspec has no CUDA kernels yet; tensors on a CUDA device use "
      "the torch path";
  info["cuda_kernels"] = cuda;

  py::dict infgram;
  infgram["built"] = true;
  infgram["detail"] =
      "C++ suffix-array engine: SA-IS construction, 16/32-bit ids, memory-mapped shards, reads infini-gram indexes";
  info["infgram"] = infgram;
  return info;
}

namespace {

using I64Array = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(heap->size())}, {sizeof(T)}, heap->data(), owner);
}

const std::int64_t* ids_of(const I64Array& a, const char* name) {
  if (a.ndim() != 1) throw std::invalid_argument(std::string(name) + " must be 1-D, got " + std::to_string(a.ndim()) + " dimensions");
  return a.data();
}

py::dict info_dict(const InfGramEngine& e) {
  const IndexInfo& i = e.info();
  py::dict d;
  d["format"] = i.format;
  d["path"] = i.path;
  d["token_width"] = i.token_width;
  d["vocab_size"] = i.vocab_size;
  d["n_shards"] = i.n_shards;
  d["n_positions"] = i.n_positions;
  d["n_docs"] = i.n_docs;
  d["n_tokens"] = i.n_tokens;
  return d;
}

template <class T>
void build_shard_py(py::array_t<T, py::array::c_style> text, std::uint64_t vocab_size, std::uint32_t shard,
                    const std::string& dir) {
  if (text.ndim() != 1) throw std::invalid_argument("text must be 1-D");
  const T* p = text.data();
  auto n = static_cast<std::int64_t>(text.shape(0));
  py::gil_scoped_release release;
  if constexpr (sizeof(T) == 2) build_shard_u16(p, n, vocab_size, shard, dir);
  else build_shard_u32(p, n, vocab_size, shard, dir);
}

}  // namespace

}  // namespace fastspec

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastspec's compiled core (private; use the fastspec package)";
  m.attr("__version__") = FASTSPEC_VERSION;
  m.def("build_info", &fastspec::build_info,
        "What this binary was built with: version, compiler, and each optional engine "
        "with whether it was built and, if not, why.");

  // Errors of the index files: ValueError (corrupt, via std::invalid_argument), OSError (the
  // operating system refused), NotImplementedError (a layout this build cannot read).
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastspec::IoError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const fastspec::Unsupported& e) {
      PyErr_SetString(PyExc_NotImplementedError, e.what());
    }
  });

  using fastspec::InfGramEngine;
  py::class_<InfGramEngine>(m, "InfGramEngine", "A memory-mapped ∞-gram index (use fastspec.InfGramIndex)")
      .def("info", &fastspec::info_dict)
      .def("count", [](const InfGramEngine& e, const fastspec::I64Array& ids) {
        const std::int64_t* p = fastspec::ids_of(ids, "ids");
        auto m = static_cast<std::size_t>(ids.shape(0));
        py::gil_scoped_release release;
        return e.count(p, m);
      }, py::arg("ids"))
      .def("prob", [](const InfGramEngine& e, const fastspec::I64Array& ctx, std::int64_t token) {
        const std::int64_t* p = fastspec::ids_of(ctx, "context");
        auto m = static_cast<std::size_t>(ctx.shape(0));
        fastspec::ProbResult r;
        {
          py::gil_scoped_release release;
          r = e.prob(p, m, token);
        }
        return py::make_tuple(r.context_count, r.count, r.prob);
      }, py::arg("context"), py::arg("token"))
      .def("infgram_prob", [](const InfGramEngine& e, const fastspec::I64Array& ctx, std::int64_t token) {
        const std::int64_t* p = fastspec::ids_of(ctx, "context");
        auto m = static_cast<std::size_t>(ctx.shape(0));
        fastspec::InfgramResult r;
        {
          py::gil_scoped_release release;
          r = e.infgram_prob(p, m, token);
        }
        return py::make_tuple(r.context_count, r.count, r.prob, r.suffix_len);
      }, py::arg("context"), py::arg("token"))
      .def("next_tokens", [](const InfGramEngine& e, const fastspec::I64Array& ctx) {
        const std::int64_t* p = fastspec::ids_of(ctx, "context");
        auto m = static_cast<std::size_t>(ctx.shape(0));
        std::vector<std::uint32_t> tokens;
        std::vector<std::uint64_t> counts;
        std::uint64_t total;
        {
          py::gil_scoped_release release;
          total = e.next_tokens(p, m, tokens, counts);
        }
        return py::make_tuple(total, fastspec::to_numpy(std::move(tokens)), fastspec::to_numpy(std::move(counts)));
      }, py::arg("context"))
      .def("score", [](const InfGramEngine& e, const fastspec::I64Array& ids, const fastspec::I64Array& offsets, int threads) {
        const std::int64_t* p = fastspec::ids_of(ids, "ids");
        const std::int64_t* o = fastspec::ids_of(offsets, "offsets");
        if (offsets.shape(0) < 1) throw std::invalid_argument("offsets needs at least one entry");
        auto n_seqs = static_cast<std::size_t>(offsets.shape(0) - 1);
        if (o[0] < 0 || o[n_seqs] > ids.shape(0))
          throw std::invalid_argument("offsets reach outside the " + std::to_string(ids.shape(0)) + " ids");
        for (std::size_t k = 0; k < n_seqs; ++k)
          if (o[k + 1] < o[k]) throw std::invalid_argument("offsets must not decrease (at " + std::to_string(k) + ")");
        auto n = static_cast<std::size_t>(o[n_seqs] - o[0]);
        std::vector<std::int64_t> match_len(n), suffix_len(n);
        std::vector<double> prob(n);
        std::vector<std::uint64_t> ctx(n), cnt(n);
        {
          py::gil_scoped_release release;
          e.score(p, o, n_seqs, match_len.data(), suffix_len.data(), prob.data(), ctx.data(), cnt.data(), threads);
        }
        return py::make_tuple(fastspec::to_numpy(std::move(match_len)), fastspec::to_numpy(std::move(suffix_len)),
                              fastspec::to_numpy(std::move(prob)), fastspec::to_numpy(std::move(ctx)),
                              fastspec::to_numpy(std::move(cnt)));
      }, py::arg("ids"), py::arg("offsets"), py::arg("threads") = 1)
      .def("verify", [](const InfGramEngine& e) {
        py::gil_scoped_release release;
        e.verify();
      });

  m.def("infgram_open", [](const std::string& path, const std::string& format, std::uint32_t token_width,
                           std::uint64_t vocab_size) {
    fastspec::OpenOptions opt;
    opt.format = format;
    opt.token_width = token_width;
    opt.vocab_size = vocab_size;
    py::gil_scoped_release release;
    return fastspec::open_index(path, opt);
  }, py::arg("path"), py::arg("format") = "auto", py::arg("token_width") = 0, py::arg("vocab_size") = 0,
        "Open an index directory (fastspec's or infini-gram's), memory-mapped.");
  m.def("infgram_build_shard", &fastspec::build_shard_py<std::uint16_t>, py::arg("text"), py::arg("vocab_size"),
        py::arg("shard"), py::arg("dir"));
  m.def("infgram_build_shard", &fastspec::build_shard_py<std::uint32_t>, py::arg("text"), py::arg("vocab_size"),
        py::arg("shard"), py::arg("dir"), "Write one shard (tokens and SA-IS suffix array) of a fastspec index.");
  m.def("infgram_finish", [](const std::string& dir, std::uint32_t n_shards) {
    py::gil_scoped_release release;
    fastspec::finish_index(dir, n_shards);
  }, py::arg("dir"), py::arg("n_shards"), "Record the shard count in every header: the index is complete.");
}
