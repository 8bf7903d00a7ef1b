import torch

import fastspec
from fastspec import _C


def test_compiled_module_reports_its_build():
    info = _C.build_info()
    assert info["version"] == _C.__version__ == fastspec.__version__
    assert set(info) >= {"compiler", "cuda_kernels", "infgram"}


def test_backends_say_why_when_something_is_missing():
    report = fastspec.backends()
    assert report["torch_cpu"]["available"]
    for name in ("torch_cuda", "cuda_kernels", "infgram"):
        entry = report[name]
        assert isinstance(entry["available"], bool)
        assert entry.get("detail") if entry["available"] else entry.get("reason")
    assert report["torch_cuda"]["available"] == torch.cuda.is_available()


def test_public_surface():
    assert set(fastspec.__all__) == {"AlphaFit", "CheckpointError", "CovarianceAccumulator", "InfGramIndex",
                                     "MemorizationResult", "Spectrum", "ExtractSettings", "TraceSettings",
                                     "MemorizationSettings", "SettingError", "__version__", "ablate", "alpha_req", "backends", "correlate",
                                     "extract", "load_texts", "load_trace", "memorization", "memorization_trace", "pass_at_k", "phases", "rankme",
                                     "spectrum", "toy", "trace"}
    for name in fastspec.__all__:
        assert getattr(fastspec, name) is not None
