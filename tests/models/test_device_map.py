"""Models larger than one device: a checkpoint loaded through accelerate's big-model path
(``device_map``), part of it offloaded to disk, extracts and traces what the model loaded
whole does. On the CPU the offloaded blocks run the same float32 kernels on the same
weights (accelerate brings them in from the safetensors file for each forward), so the rows
are the same to float32 rounding; the tolerance below is that of float32 rows summed in
another order, 1e-6 of the largest eigenvalue (observed: exactly equal)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from tinylm import CORPUS, save_model

import fastspec
from fastspec.models.layout import layer_device, model_layout
from fastspec.models.settings import TraceSettings, _parse_device_map

trace_mod = sys.modules["fastspec.models.trace"]  # the module, which fastspec.models.trace (a function) hides
TEXTS = CORPUS[::3][:40]
#: The tiny GPT-NeoX's modules (AutoModel: no LM head): the embedding (whose weight is the model's first
#: parameter, "meta" until it runs), blocks 2 and 4 and the final norm on disk.
OFFLOADED = {"embed_in": "disk", "emb_dropout": "cpu", "rotary_emb": "cpu", "layers.0": "cpu", "layers.1": "disk",
             "layers.2": "cpu", "layers.3": "disk", "final_layer_norm": "disk"}
KW = dict(max_length=32, batch_size=8, fit_range=(2, 20))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model(str(tmp_path_factory.mktemp("dm") / "neox"), "gpt_neox", layers=4)


def _load(path, **kwargs):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(path, **kwargs).eval(), AutoTokenizer.from_pretrained(path)


def _assert_same_spectra(got, want):
    for x, y in zip(want, got):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-6 * x[0])


def test_a_model_offloaded_to_disk_extracts_what_the_whole_model_does(model_dir, tmp_path):
    plain, tok = _load(model_dir)
    split, _ = _load(model_dir, device_map=OFFLOADED, offload_folder=str(tmp_path / "offload"))
    assert split.layers[3].attention.dense.weight.device.type == "meta"  # on disk until it runs
    want = fastspec.extract(plain, tok, TEXTS, max_length=32, progress=False)
    got = fastspec.extract(split, tok, TEXTS, max_length=32, progress=False)
    assert list(got) == [0, 1, 2, 3, 4]
    _assert_same_spectra([a.spectrum().eigenvalues for a in got.values()],
                         [a.spectrum().eigenvalues for a in want.values()])
    for layer in got:
        assert got[layer].n_samples == len(TEXTS) and got[layer].device == torch.device("cpu")
        np.testing.assert_allclose(got[layer].mean.numpy(), want[layer].mean.numpy(), rtol=0, atol=1e-6)
    # Early stop through accelerate's hooks: an offloaded block after the last layer asked for
    # never runs, and the blocks that ran are back on disk.
    calls = []
    split.layers[3].register_forward_pre_hook(lambda *a: calls.append(1))
    early = fastspec.extract(split, tok, TEXTS, layers=[0, 2], max_length=32, progress=False)
    assert not calls and split.layers[1].attention.dense.weight.device.type == "meta"
    _assert_same_spectra([early[2].spectrum().eigenvalues], [want[2].spectrum().eigenvalues])


def test_each_accumulator_lives_on_the_device_of_its_layers_output(model_dir):
    """Where accelerate runs a module (its hook's execution device), not where its weights
    wait: faked here, as this machine has one device; extraction places each new
    accumulator there (the GPU run below does it for real)."""
    model, _ = _load(model_dir)
    layout = model_layout(model)
    model.layers[1]._hf_hook = types.SimpleNamespace(execution_device=torch.device("meta"))
    model.final_layer_norm._hf_hook = types.SimpleNamespace(
        hooks=[types.SimpleNamespace(execution_device=torch.device("cuda", 3))])  # a SequentialHook's
    assert layer_device(layout, 2).type == "meta"  # layer 2 is block 2's output (layers[1])
    assert layer_device(layout, 4, final_norm=True) == torch.device("cuda", 3)
    assert layer_device(layout, 4) == layer_device(layout, 0) == torch.device("cpu")


def test_trace_with_a_device_map_equals_the_plain_trace_and_resumes_inside_a_checkpoint(model_dir, tmp_path,
                                                                                        monkeypatch):
    fastspec.trace([model_dir], TEXTS, tmp_path / "plain", progress=False, **KW)
    plain = fastspec.load_trace(tmp_path / "plain", eigenvalues=True)

    class Killed(Exception):
        pass

    real = trace_mod.extract

    def killed_after_two_batches(*args, on_batch, **kwargs):
        def save_then_die(done, accs):
            on_batch(done, accs)
            if done == 2:
                raise Killed
        return real(*args, on_batch=save_then_die, **kwargs)

    out = tmp_path / "split"
    monkeypatch.setattr(trace_mod, "extract", killed_after_two_batches)
    with pytest.raises(Killed):
        fastspec.trace([model_dir], TEXTS, out, device_map=OFFLOADED, save_every=1, progress=False, **KW)
    monkeypatch.setattr(trace_mod, "extract", real)
    fastspec.trace([model_dir], TEXTS, out, device_map=OFFLOADED, save_every=1, progress=False, **KW)
    record = json.loads(next((out / "checkpoints").glob("*.json")).read_text())
    assert record["resumed_from_batch"] == 2  # the saved accumulators, placed per layer, went on
    assert json.loads((out / "config.json").read_text())["device_map"] == OFFLOADED
    split = fastspec.load_trace(out, eigenvalues=True)
    assert split["n_samples"].eq(len(TEXTS)).all()
    _assert_same_spectra(split["eigenvalues"], plain["eigenvalues"])
    np.testing.assert_allclose(split["rankme"], plain["rankme"], rtol=1e-6)


def test_device_map_settings_and_their_errors(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps(OFFLOADED))
    assert _parse_device_map("auto") == "auto"
    assert _parse_device_map(json.dumps({"layers.0": 0})) == {"layers.0": 0}
    assert _parse_device_map(str(path)) == OFFLOADED
    with pytest.raises(Exception, match="device map as JSON"):
        _parse_device_map("{layers: 0}")
    with pytest.raises(ValueError, match="device='cpu' and device_map='auto' both say where the model goes"):
        TraceSettings(device="cpu", device_map="auto")
    with pytest.raises(ValueError, match="offload_folder='x' is where device_map offloads"):
        TraceSettings(offload_folder="x")
    with pytest.raises(ValueError, match="maps 'layers.0' to neither a GPU index"):
        TraceSettings(device_map={"layers.0": -1})
    # operational: a run resumed with another placement is not refused (rounding only)
    assert "device_map" not in TraceSettings.affecting_names()


@pytest.mark.cuda
def test_on_a_gpu_with_cpu_and_disk_offload_equals_the_cpu_run(model_dir, tmp_path):
    """Blocks offloaded to the CPU and to disk run on GPU 0 (accelerate's main device); the
    accumulators are there too; float32 GPU kernels sum in another order (~1e-6)."""
    plain, tok = _load(model_dir)
    gpu_map = {**OFFLOADED, "embed_in": 0, "emb_dropout": 0, "rotary_emb": 0, "layers.0": 0, "layers.2": "cpu"}
    split, _ = _load(model_dir, device_map=gpu_map, offload_folder=str(tmp_path / "offload"))
    want = fastspec.extract(plain, tok, TEXTS, max_length=32, progress=False)
    got = fastspec.extract(split, tok, TEXTS, max_length=32, progress=False)
    for layer in got:
        assert got[layer].device.type == "cuda"
        x, y = want[layer].spectrum().eigenvalues, got[layer].spectrum().eigenvalues
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-4 * x[0])
