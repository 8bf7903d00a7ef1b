"""fastspec.demo's training recipe, pinned on a shortened run: the standard library's source
as the corpus, the warmup collapse and the entropy-seeking rise after it.

The full recipe (10k steps) adds the compression-seeking fall; that takes minutes, so it is
measured in docs/explanation/demo-recipe.md, not here. At 400 steps (the same warmup of
100 steps, the cosine compressed into the rest) RankMe of the last layer falls from ≈10 to
≈4 by the end of the warmup and then rises by ≈25%, well beyond the phase rule's 10%.
"""

import json

import pytest

pytest.importorskip("transformers")

from fastspec.demo import TraceDemoConfig, run_trace_demo  # noqa: E402
from fastspec.models.data import stdlib_corpus  # noqa: E402


def test_the_recipe_shortened_collapses_in_the_warmup_then_seeks_entropy(tmp_path):
    cfg = TraceDemoConfig(steps=400, every=100, n_trace=300)
    result = run_trace_demo(cfg, str(tmp_path), progress=False)
    corpus = stdlib_corpus()
    done = json.loads((tmp_path / "model" / "training.json").read_text())
    assert done["data_sha256"] == corpus.sha256 == result["corpus_sha256"]
    assert done["config"]["hidden"] == 32 and done["config"]["final_lr"] == 0.0
    assert not set(result["held_texts"]) & set(corpus.train_paragraphs)
    labelled = result["phases"]
    assert labelled["step"].tolist() == [0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400]
    assert labelled["phase"].tolist() == ["warmup"] * 9 + ["entropy-seeking"] * 3
    rank = dict(zip(labelled["step"], labelled["rankme"]))
    alpha = dict(zip(labelled["step"], labelled["alpha"]))
    assert rank[100] < 0.6 * rank[0] and alpha[100] > alpha[0]  # the collapse: RankMe down, α up
    assert rank[400] > 1.15 * rank[100] and alpha[400] < alpha[100]  # entropy-seeking: RankMe up, α down
    assert (tmp_path / "trajectories.png").exists() and (tmp_path / "phases.csv").exists()
