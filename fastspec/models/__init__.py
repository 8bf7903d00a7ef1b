"""Models, extraction and tracing: Hugging Face models in, accumulators and results out.

Above the spectral core, beside the ∞-gram engine (neither imports the other). Modules:

- ``hf``: Hugging Face plumbing (quiet loading).
- ``data``: text files, seeded samples, JSON lines, the standard-library corpus.
- ``layout``: where a model keeps its blocks and final norm; a hook on one layer.
- ``batching``: tokenisation, length-sorted batches, padding, position ids.
- ``settings``: ``ExtractSettings``, ``TraceSettings``, ``MemorizationSettings``, each setting once.
- ``extract``: one forward pass feeds one accumulator per layer.
- ``scoring``: continuation log-likelihoods under a causal LM.
- ``checkpoints``: a checkpoint's identity, step and loading.
- ``runs``: the one resumable results directory and checkpoint loop (trace, callbacks, memorization).
- ``trace``: checkpoints × layers into a resumable results directory.
- ``phases``: warmup, entropy-seeking and compression-seeking labels of a trace.
- ``tiny``: the tiny LMs that the demo and the tests train.
"""

from .checkpoints import CheckpointError
from .data import load_texts
from .extract import extract
from .phases import phases
from .settings import ExtractSettings, MemorizationSettings, TraceSettings
from .trace import load_trace, trace

__all__ = ["CheckpointError", "ExtractSettings", "MemorizationSettings", "TraceSettings", "extract", "load_texts",
           "load_trace", "phases", "trace"]
