"""fastspec.models.trace (trace, load_trace), with models.checkpoints and models.data: results per
(checkpoint, layer), resuming, checkpoint identity, data files, errors."""

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
from reference import ref_eigenvalues, ref_rankme, rel
from tinylm import CORPUS, checkpoints

import fastspec
from fastspec.models.checkpoints import Checkpoint, as_checkpoint, parse_step
from fastspec.models.data import load_texts, read_texts, sample_texts, texts_digest

trace_mod = sys.modules["fastspec.models.trace"]
TEXTS = CORPUS[1::2]
KW = dict(max_length=32, batch_size=8, fit_range=(2, 20), progress=False)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return checkpoints(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture(scope="module")
def traced(ckpts, tmp_path_factory):
    out = tmp_path_factory.mktemp("trace")
    return out, fastspec.trace(ckpts, TEXTS, out, **KW)


def _results(out):
    """Every checkpoint's layer records and spectra, without the timings."""
    got = {}
    for name in sorted(os.listdir(out / "checkpoints")):
        path = out / "checkpoints" / name
        if name.endswith(".json"):
            rec = json.loads(path.read_text())
            got[name] = {k: v for k, v in rec.items() if k not in ("seconds", "tokens_per_second")}
        elif name.endswith(".npz"):
            with np.load(path) as z:
                got[name] = {k: z[k].tolist() for k in z.files}
    return got


def test_one_row_per_checkpoint_and_layer_with_the_columns(traced, ckpts):
    out, frame = traced
    for col in ("checkpoint", "step", "layer", "rankme", "rankme_sv", "alpha", "alpha_r2", "n_samples", "dim",
                "alpha_error"):
        assert col in frame.columns
    assert len(frame) == 3 * 3  # 3 checkpoints × (embeddings + 2 blocks)
    assert frame["step"].drop_duplicates().tolist() == [0, 3, 6]
    assert set(frame["n_samples"]) == {len(TEXTS)} and set(frame["dim"]) == {32}
    pd.testing.assert_frame_equal(fastspec.load_trace(out), frame)
    table = pd.read_csv(out / "trace.csv")
    assert len(table) == len(frame)
    config = json.loads((out / "config.json").read_text())
    assert config["data_sha256"] == texts_digest(TEXTS) and config["fastspec"] == fastspec.__version__


def test_metrics_equal_a_float64_reference_on_the_same_rows(traced, ckpts):
    """The recorded RankMe, rankme_sv and spectra equal those of the extracted rows."""
    from transformers import AutoModel, AutoTokenizer

    out, frame = traced
    model, tok = AutoModel.from_pretrained(ckpts[-1]).eval(), AutoTokenizer.from_pretrained(ckpts[-1])
    import torch

    with torch.no_grad():
        rows = np.stack([model(**tok(t, return_tensors="pt"), output_hidden_states=True).hidden_states[1][0, -1]
                         .double().numpy() for t in TEXTS])
    lam = ref_eigenvalues(rows)
    row = frame[(frame["step"] == 6) & (frame["layer"] == 1)].iloc[0]
    assert rel(row["rankme"], ref_rankme(lam)) < 1e-5
    assert rel(row["rankme_sv"], ref_rankme(ref_eigenvalues(rows, center=False), sv=True)) < 1e-5
    spectra = fastspec.load_trace(out, eigenvalues=True)
    got = spectra[(spectra["step"] == 6) & (spectra["layer"] == 1)]["eigenvalues"].iloc[0]
    np.testing.assert_allclose(got, lam[: len(got)], rtol=0, atol=1e-5 * lam[0])


class Killed(Exception):
    pass


def test_interrupted_run_resumes_and_equals_an_uninterrupted_one(traced, ckpts, tmp_path, monkeypatch):
    full, _ = traced
    real_extract = trace_mod.extract
    calls, crashed = [], []

    def flaky(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2 and not crashed:
            crashed.append(1)
            raise Killed  # the machine goes away in the middle of the second checkpoint
        return real_extract(model, *args, **kwargs)

    monkeypatch.setattr(trace_mod, "extract", flaky)
    with pytest.raises(Killed):
        fastspec.trace(ckpts, TEXTS, tmp_path, **KW)
    assert len(list((tmp_path / "checkpoints").glob("*.json"))) == 1
    calls.clear()
    fastspec.trace(ckpts, TEXTS, tmp_path, **KW)
    assert len(calls) == 2  # the finished checkpoint was skipped
    assert _results(tmp_path) == _results(full)


@pytest.mark.parametrize("spelling", ["slash", "dot", "absolute"])
def test_a_checkpoint_under_another_spelling_is_not_traced_again(ckpts, tmp_path, monkeypatch, spelling):
    """ck/step2/, ./ck/step2 and its absolute path are ck/step2: skipped, never a second row."""
    out = tmp_path / "run"
    fastspec.trace(ckpts[:2], TEXTS, out, **KW)
    monkeypatch.chdir(os.path.dirname(ckpts[1]))
    name = os.path.basename(ckpts[1])
    again = {"slash": name + "/", "dot": os.path.join(".", name), "absolute": os.path.abspath(name)}[spelling]
    calls = []
    real_extract = trace_mod.extract
    monkeypatch.setattr(trace_mod, "extract", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
    frame = fastspec.trace([again], TEXTS, out, **KW)
    assert calls == []
    assert len(frame) == len(frame.drop_duplicates(["step", "layer"])) == 2 * frame["layer"].nunique()
    with pytest.raises(ValueError, match=r"listed twice \(as .* and .*\)"):
        fastspec.trace([ckpts[1], ckpts[1] + "/"], TEXTS, tmp_path / "other", **KW)


def test_a_results_directory_with_two_entries_for_one_checkpoint_is_refused(traced, tmp_path):
    import shutil

    out = tmp_path / "dup"
    shutil.copytree(traced[0], out)
    first = sorted((out / "checkpoints").glob("*.json"))[0]
    shutil.copy(first, first.with_name("copy-" + first.name))
    with pytest.raises(ValueError, match=r"hold the same checkpoint .*delete one of them"):
        fastspec.load_trace(out)


def test_a_local_directory_has_no_revisions(ckpts, tmp_path):
    with pytest.raises(ValueError, match=r"is a local directory, which has no revisions"):
        fastspec.trace([(ckpts[0], "step1000")], TEXTS, tmp_path, **KW)
    with pytest.raises(ValueError, match=r"is a local directory, which has no revisions"):
        as_checkpoint(f"{ckpts[0]}@step2000")


def test_settings_bind_only_once_a_checkpoint_is_done(ckpts, tmp_path):
    """A first run that fails (max_length beyond the model's context) does not lock the
    directory: the corrected run goes ahead."""
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="longer than the model's context"):
        fastspec.trace(ckpts[:1], TEXTS, out, **{**KW, "max_length": 100_000})
    frame = fastspec.trace(ckpts[:1], TEXTS, out, **KW)
    assert json.loads((out / "config.json").read_text())["max_length"] == 32 and len(frame)


def test_the_default_max_length_fits_a_model_with_a_short_context(ckpts, tmp_path):
    """max_length "auto": 512, or the context (64 here) if shorter, recorded per checkpoint."""
    kw = {k: v for k, v in KW.items() if k != "max_length"}
    fastspec.trace(ckpts[:1], TEXTS, tmp_path, **kw)
    rec = json.loads(next((tmp_path / "checkpoints").glob("*.json")).read_text())
    assert rec["max_length"] == 64
    with pytest.raises(ValueError, match=r"max_length=513 is longer than the model's context of 64"):
        fastspec.trace(ckpts[:1], TEXTS, tmp_path / "x", **{**kw, "max_length": 513})


def test_folds_give_jackknife_standard_errors_per_checkpoint_and_layer(traced, ckpts, tmp_path):
    out, plain = traced
    frame = fastspec.trace(ckpts, TEXTS, tmp_path, folds=4, **KW)
    np.testing.assert_allclose(frame["rankme"], plain["rankme"], rtol=1e-9)  # pooled: the same rows
    assert (frame["rankme_se"] > 0).all() and (frame["rankme_sv_se"] > 0).all()
    assert frame["alpha_se"].notna().any() and plain["rankme_se"].isna().all()
    with pytest.raises(ValueError, match=r"other settings \(folds: 1 there, 4 now\)"):
        fastspec.trace(ckpts, TEXTS, out, folds=4, **KW)  # results written before folds existed mean folds=1
    from fastspec.report import plot_trace

    assert all(os.path.getsize(p) > 20_000 for p in plot_trace(frame, tmp_path / "plots"))


def test_a_resumed_run_must_keep_the_settings(traced, ckpts):
    out, _ = traced
    with pytest.raises(ValueError, match=r"other settings \(max_length: 32 there, 16 now\)"):
        fastspec.trace(ckpts, TEXTS, out, **{**KW, "max_length": 16})


def test_bad_inputs_are_clear_errors(ckpts, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown layer 7"):
        fastspec.trace(ckpts[:1], TEXTS, tmp_path / "a", layers=[7], **KW)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"empty.txt: no documents"):
        fastspec.trace(ckpts[:1], empty, tmp_path / "b", **KW)
    with pytest.raises(fastspec.CheckpointError, match=r"no such directory .*nowhere"):
        fastspec.trace([str(tmp_path / "nowhere" / "step5")], TEXTS, tmp_path / "c", **KW)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(fastspec.CheckpointError, match=r"revision 'step999' of 'EleutherAI/pythia-14m'"):
        fastspec.trace(["EleutherAI/pythia-14m@step999"], TEXTS, tmp_path / "d", **KW)
    with pytest.raises(ValueError, match="listed twice"):
        fastspec.trace([ckpts[0], ckpts[0]], TEXTS, tmp_path / "e", **KW)
    with pytest.raises(ValueError, match="dtype must be one of"):
        fastspec.trace(ckpts[:1], TEXTS, tmp_path / "f", dtype="int8", **KW)
    with pytest.raises(ValueError, match="asked for 500 sequences but the texts given has only"):
        fastspec.trace(ckpts[:1], TEXTS, tmp_path / "g", n=500, **KW)
    with pytest.raises(FileNotFoundError, match="not a trace results directory"):
        fastspec.load_trace(tmp_path / "nothing")
    # issue 24 item 14: more folds than texts is refused before any checkpoint is loaded
    monkeypatch.setattr(trace_mod, "load_checkpoint", lambda *a, **k: pytest.fail("loaded a checkpoint"))
    with pytest.raises(ValueError, match=r"folds=4 asks for more folds than the 3 texts"):
        fastspec.trace(ckpts[:1], TEXTS[:3], tmp_path / "h", folds=4, **KW)


def test_checkpoint_names_and_steps():
    assert parse_step("step1000") == 1000 and parse_step("stage1-step1000-tokens5B") == 1000
    assert parse_step("checkpoint-250") == 250 and parse_step("main") is None and parse_step("mystep3") is None
    assert as_checkpoint("EleutherAI/pythia-160m@step143000") == Checkpoint("EleutherAI/pythia-160m", "step143000")
    assert as_checkpoint(("allenai/OLMo-2-0425-1B", "stage1-step10000-tokens21B")).step == 10000
    assert as_checkpoint("/runs/a/step8").step == 8
    a, b = Checkpoint("/runs/a/step8"), Checkpoint("/runs/b/step8")
    assert a.slug != b.slug and a.slug.startswith("step8-")


def test_data_files(tmp_path):
    docs = [f"document number {i}" for i in range(30)]
    (tmp_path / "d.txt").write_text("\n".join(docs[:10]) + "\n\n" + "\n".join(docs[10:]) + "\n")
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"body": d, "id": i}) for i, d in enumerate(docs)))
    pd.DataFrame({"body": docs}).to_parquet(tmp_path / "d.parquet")
    assert read_texts(tmp_path / "d.txt") == docs
    assert read_texts(tmp_path / "d.jsonl", text_field="body") == docs
    assert read_texts(tmp_path / "d.parquet", text_field="body") == docs
    sample = load_texts(tmp_path / "d.txt", 7, seed=3)
    assert sample == load_texts(tmp_path / "d.txt", 7, seed=3) != load_texts(tmp_path / "d.txt", 7, seed=4)
    assert len(set(sample)) == 7 and sample == sorted(sample, key=docs.index)  # file order kept
    assert sample_texts(docs, None) == docs
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'text' is int"):
        read_texts(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad2.jsonl:2: not JSON"):
        read_texts(tmp_path / "bad2.jsonl")
    with pytest.raises(ValueError, match=r"no field 'text'"):
        read_texts(tmp_path / "d.jsonl")
    with pytest.raises(ValueError, match=r"cannot read column 'text'"):
        read_texts(tmp_path / "d.parquet")
    with pytest.raises(ValueError, match="unknown text file type '.csv'"):
        read_texts(tmp_path / "d.csv")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_texts(tmp_path / "missing.txt")


def test_post_training_stages_keep_their_order_and_labels_through_plot_and_report(tmp_path, capsys):
    """Stages without a training step (base → SFT → DPO → RLVR), tiny local models standing
    for them, traced in the order given with --labels."""
    import matplotlib.image as mpimg

    from fastspec.cli import main
    from fastspec.report.figures import checkpoint_names
    from tinylm import save_model

    stages = ["base", "sft", "dpo", "rlvr"]
    dirs = [save_model(str(tmp_path / f"tulu-{s}"), "llama", layers=2, seed=k) for k, s in enumerate(stages)]
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "stages"
    # given in training order, which is not alphabetical
    assert main(["trace", *dirs, "--labels", *stages, "--data", str(data), "--out", str(out), "--max-length", "32",
                 "--fit-range", "2", "20", "--quiet"]) == 0
    frame = fastspec.load_trace(out)
    once = frame.drop_duplicates("checkpoint")
    assert once["label"].tolist() == stages and once["step"].isna().all()
    assert checkpoint_names(once) == stages
    assert main(["plot", str(out)]) == 0
    assert mpimg.imread(out / "trajectories.png").shape[0] > 100
    assert main(["report", str(out)]) == 0
    page = (out / "report.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and any(f"| {s} " in line for s in stages)]
    assert [next(s for s in stages if f"| {s} " in r) for r in rows] == stages  # the table in stage order
    with pytest.raises(ValueError, match=r"one distinct label per checkpoint, got 3 label\(s\)"):
        fastspec.trace(dirs, TEXTS, tmp_path / "bad", labels=stages[:3], **KW)
    # issue 24 item 6: resumed in another order, or relabelled, the stages would be scrambled
    kw = {**KW, "batch_size": 16}  # the command line's settings above
    with pytest.raises(ValueError, match=r"tulu-sft was traced as number 1 labelled 'sft', and is now given as number 0"):
        fastspec.trace([dirs[1], dirs[0], *dirs[2:]], data, out, labels=[stages[1], stages[0], *stages[2:]], **kw)
    with pytest.raises(ValueError, match=r"labelled 'base', and is now given as number 0 labelled 'pre'"):
        fastspec.trace(dirs, data, out, labels=["pre", *stages[1:]], **kw)
    extra = save_model(str(tmp_path / "tulu-extra"), "llama", layers=2, seed=9)
    with pytest.raises(ValueError, match=r"label 'dpo' already names checkpoint .*tulu-dpo there"):
        fastspec.trace([*dirs[:2], extra], data, out, labels=["base", "sft", "dpo"], **kw)
    assert len(fastspec.trace(dirs, data, out, labels=stages, **kw)) == len(frame)  # as before: all done
    capsys.readouterr()


def test_a_run_killed_inside_a_checkpoint_resumes_there_with_identical_results(tmp_path):
    """kill -9 while a checkpoint is being extracted (once its partial state is on disk),
    resume: the message says where, every number equals an uninterrupted run's (the same
    save_every: the saves are at the same batches), fewer tokens are read than a restart
    would read, and no partial state is left."""
    import signal
    import subprocess
    import time

    from tinylm import save_model

    model = save_model(str(tmp_path / "model"), "gpt_neox", layers=2, hidden=64)
    data = tmp_path / "texts.txt"
    data.write_text("\n".join((CORPUS * 12)[:2400]) + "\n")
    args = [model, "--data", str(data), "--max-length", "32", "--batch-size", "4", "--fit-range", "2", "20",
            "--save-every", "20", "--folds", "3", "--quiet"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "fastspec", "trace"]
    whole = subprocess.run([*cmd, *args, "--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True,
                           timeout=600, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, *args, "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 300
    while not list((out / "checkpoints").glob("*.partial.pt")) if (out / "checkpoints").is_dir() else True:
        assert proc.poll() is None and time.time() < deadline, "the run ended before it saved a partial state"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((out / "checkpoints").glob("*.json"))  # killed inside the checkpoint
    resumed = subprocess.run([*cmd, *args[:-1], "--out", str(out)], env=env, capture_output=True, text=True,
                             timeout=600, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming inside the checkpoint, from batch" in resumed.stdout
    got, want = _results(out), _results(tmp_path / "whole")
    for name in want:  # every number of every layer, and the spectra, exactly
        w = dict(want[name]) if name.endswith(".json") else want[name]
        g = dict(got[name]) if name.endswith(".json") else got[name]
        if name.endswith(".json"):
            for key in ("tokens_read", "resumed_from_batch"):  # how this run got there, not a result
                w.pop(key), g.pop(key)
        assert g == w, name
    assert set(got) == set(want)
    rec = next(json.loads(p.read_text()) for p in (out / "checkpoints").glob("*.json"))
    assert rec["resumed_from_batch"] >= 20 and rec["tokens_read"] < rec["n_tokens"]
    assert not list((out / "checkpoints").glob("*.partial*"))

