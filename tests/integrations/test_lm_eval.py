"""fastspec.integrations.lm_eval: lm-eval-harness itself runs a local multiple-choice task
(its ``json`` dataset path over a .jsonl written here, no hub) with its ``hf`` model and with
``fastspec-ablate`` on a tiny random-init GPT-NeoX; the scores are compared with fastspec's
own multiple-choice scoring and ablation of the same items with the same prompt template.

lm-eval runs in subprocesses: HF_HUB_OFFLINE and HF_DATASETS_OFFLINE are read when
huggingface_hub and datasets are imported, which other tests of the suite have done before
this one. The subprocesses run with ``-W error`` as pytest runs the suite (lm-eval 0.4.13
warns of nothing here, on import or while it evaluates)."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import tinylm

pytest.importorskip("lm_eval", reason="lm-eval-harness is not installed (pip install 'fastspec[lm-eval]')")

import fastspec  # noqa: E402
from fastspec.analyses.ablation import (  # noqa: E402
    CHOICE, PROMPT, Projector, ablate, accuracies, eigenbasis, encode_items, evaluate, read_items)
from fastspec.integrations.lm_eval import NAME, load_basis  # noqa: E402
from fastspec.models.data import sample_texts  # noqa: E402
from fastspec.models.scoring import continuation_logprobs, load_causal_lm  # noqa: E402

TASK = "fastspec_mc"
# Multi-byte choices make dividing by characters (acc_norm) and by bytes (acc_bytes) differ.
WORDS = ["hill", "town", "sea", "cat", "dog", "river", "stone", "tree", "café", "naïve", "über", "crème brûlée",
         "jalapeño", "smörgåsbord"]
METRICS = ("acc", "acc_norm", "acc_bytes")
# The task in lm-eval's terms, with fastspec's PROMPT and CHOICE: "Question: {question}\nAnswer:"
# then the target delimiter " " and the choice.
TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
  - metric: acc_bytes
"""

WORKER = r"""
import json, sys
import fastspec, fastspec.integrations
imported = "lm_eval" in sys.modules  # import fastspec must not import lm-eval
import lm_eval
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager
import fastspec.integrations.lm_eval  # registers fastspec-ablate

with open(sys.argv[1]) as fh:
    cfg = json.load(fh)
task = cfg["task"]
manager = TaskManager(include_path=cfg["tasks"], include_defaults=False)
out = {"runs": {}, "errors": {}, "fastspec_imported_lm_eval": imported}
for name, (model, args) in cfg["runs"].items():
    res = lm_eval.simple_evaluate(model=model, model_args=args, tasks=[task], task_manager=manager,
                                  log_samples=True, device="cpu", batch_size=5)
    samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
    out["runs"][name] = {
        "metrics": {m: res["results"][task][m + ",none"] for m in ("acc", "acc_norm", "acc_bytes")},
        "lls": [resp[0] for s in samples for resp in s["filtered_resps"]],
        "per_doc": [{m: s[m] for m in ("acc", "acc_norm", "acc_bytes")} for s in samples],
        "config": {k: v for k, v in res["config"].items() if k.startswith("fastspec_")},
    }
for name, args in cfg["errors"].items():
    try:
        get_model("fastspec-ablate").create_from_arg_string(args, {"device": "cpu"})
        out["errors"][name] = None
    except Exception as err:
        out["errors"][name] = [type(err).__name__, str(err)]
# Rolling log-likelihood and generation go through the hook too; outside lm-eval's calls the
# model carries no hook.
from lm_eval.api.instance import Instance
plain = get_model("hf").create_from_arg_string(cfg["other"]["plain"], {"device": "cpu"})
ablated = get_model("fastspec-ablate").create_from_arg_string(cfg["other"]["ablated"], {"device": "cpu"})
text = "a red cat of the hill"
prompt = ("Question: a red the\nAnswer:", {"until": ["\n"], "max_gen_toks": 4, "do_sample": False})
out["other"] = {
    "rolling": [lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])[0]
                for lm in (plain, ablated)],
    "generated": ablated.generate_until([Instance("generate_until", {}, prompt, 0)]),
    "hooks": sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in ablated.model.modules()),
    "plain_hooks": sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in plain.model.modules()),
}
with open(sys.argv[2], "w") as fh:
    json.dump(out, fh)
"""


def _env(tmp) -> dict[str, str]:
    hf = os.path.join(tmp, "hf")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_HOME": hf, "HF_DATASETS_CACHE": os.path.join(hf, "datasets"), "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1"}  # two of these run at once; a tiny model gains nothing from threads


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm_eval")
    path = tinylm.save_model(str(tmp / "model"), "gpt_neox", layers=2, hidden=32)
    rng = np.random.default_rng(0)
    items = [{"question": " ".join(tinylm.CORPUS[i].split()[:4]), "choices": [str(w) for w in rng.permutation(WORDS)[:4]],
              "answer": int(rng.integers(4))} for i in range(0, 180, 8)]
    (tmp / "items.jsonl").write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items), encoding="utf-8")
    (tmp / "tasks").mkdir()
    (tmp / "tasks" / "task.yaml").write_text(TASK_YAML.format(task=TASK, items=tmp / "items.jsonl"))
    (tmp / "basis.txt").write_text("".join(t + "\n" for t in tinylm.CORPUS))
    (tmp / "basis.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in tinylm.CORPUS))
    txt = tmp / "basis.txt"
    # The command line runs beside the worker (it spends ~10 s indexing lm-eval's own tasks).
    with open(tmp / "cli.out", "w") as out_fh, open(tmp / "cli.err", "w") as err_fh:
        cli = subprocess.Popen(
            [sys.executable, "-W", "error", "-m", "fastspec", "lm-eval", "--model", NAME,
             "--model_args", f"pretrained={path},layer=-1,k=2,mode=remove,basis={txt}", "--tasks", TASK,
             "--include_path", str(tmp / "tasks"), "--device", "cpu", "--batch_size", "5",
             "--output_path", str(tmp / "cli")], stdout=out_fh, stderr=err_fh, text=True, cwd=tmp, env=_env(tmp))
    try:
        yield (tmp, path, *_run_worker(tmp, path), cli)
    finally:
        if cli.poll() is None:
            cli.kill()
        cli.wait()


def _run_worker(tmp, path):
    """lm-eval's runs and the model-argument errors (WORKER), and the model here."""
    m, txt = f"pretrained={path}", tmp / "basis.txt"
    model, tok = load_causal_lm(path)
    # The last layer's accumulator, saved as the model type's other basis format.
    acc = fastspec.extract(model, tok, tinylm.CORPUS, layers=[2], max_length=None, progress=False)[2]
    torch.save(acc.state_dict(), tmp / "basis.pt")
    torch.save({"not": "a state"}, tmp / "other.pt")
    runs = {
        "hf": ["hf", m],
        "retain_d": [NAME, f"{m},layer=-1,k=32,mode=retain,basis={txt}"],
        "remove_2": [NAME, f"{m},layer=-1,k=2,mode=remove,basis={txt},n_basis=1000"],
        "remove_2_pt": [NAME, f"{m},k=2,mode=remove,basis={tmp / 'basis.pt'}"],
        "retain_3_layer1": [NAME, f"{m},layer=1,k=3,mode=retain,basis={tmp / 'basis.jsonl'},text_field=body,n_basis=50"],
    }
    errors = {
        "no_basis": m,
        "mode": f"{m},mode=flip,basis={txt}",
        "k_too_large": f"{m},k=33,basis={txt}",
        "k_float": f"{m},k=1.5,basis={txt}",
        "missing_file": f"{m},basis={tmp / 'nothere.txt'}",
        "suffix": f"{m},basis={tmp / 'basis.csv'}",
        "layer": f"{m},layer=3,basis={txt}",
        "positions": f"{m},positions=scored,basis={txt}",
        "not_a_state": f"{m},basis={tmp / 'other.pt'}",
        "n_basis_pt": f"{m},basis={tmp / 'basis.pt'},n_basis=10",
        "basis_number": f"{m},basis=12",
    }
    cfg = tmp / "cfg.json"
    other = {"plain": m, "ablated": f"{m},k=1,mode=retain,basis={txt}"}
    cfg.write_text(json.dumps({"task": TASK, "tasks": str(tmp / "tasks"), "runs": runs, "errors": errors,
                               "other": other}))
    proc = subprocess.run([sys.executable, "-W", "error", "-c", WORKER, str(cfg), str(tmp / "out.json")],
                          capture_output=True, text=True, timeout=600, cwd=tmp, env=_env(tmp))
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads((tmp / "out.json").read_text())
    for run in out["runs"].values():
        run["lls"] = np.array(run["lls"])
    return model, tok, out


def _fastspec_scores(model, tok, items_path):
    seqs, prompt_lens, lengths = encode_items(tok, read_items(items_path), PROMPT, CHOICE, 64)
    return continuation_logprobs(model, seqs, prompt_lens, batch_size=7), np.array(lengths, dtype=np.float64)


def test_plain_hf_equals_fastspec_scoring(setup):
    tmp, path, model, tok, out, _ = setup
    hf = out["runs"]["hf"]
    items = read_items(tmp / "items.jsonl")
    scores, lengths = _fastspec_scores(model, tok, tmp / "items.jsonl")
    # the same token sequences: float32 forwards, right- vs left-padded, agree to ~1e-6
    np.testing.assert_allclose(hf["lls"], scores, rtol=0, atol=1e-4)
    mine = evaluate(path, tmp / "items.jsonl")
    assert mine["n_items"] == len(hf["per_doc"]) == 23
    assert {"acc": mine["accuracy"], "acc_norm": mine["acc_norm"], "acc_bytes": mine["acc_bytes"]} == hf["metrics"]
    assert len(set(hf["metrics"].values())) == 3  # the normalisations change the answers here
    # lm-eval's acc_norm divides by characters, acc_bytes by UTF-8 bytes, per item
    at, discriminating = 0, 0
    for item, doc in zip(items, hf["per_doc"]):
        lls, n = hf["lls"][at:at + 4], lengths[at:at + 4]
        at += 4
        by_chars, by_bytes = int(np.argmax(lls / n[:, 0])), int(np.argmax(lls / n[:, 1]))
        assert doc["acc_norm"] == float(by_chars == item.answer)
        assert doc["acc_bytes"] == float(by_bytes == item.answer)
        discriminating += by_chars != by_bytes
    assert discriminating >= 1
    assert accuracies(hf["lls"], lengths, items)["acc_norm"] == hf["metrics"]["acc_norm"]


def test_retaining_every_direction_equals_plain_hf(setup):
    _, _, _, _, out, _ = setup
    hf, kept = out["runs"]["hf"], out["runs"]["retain_d"]
    assert kept["metrics"] == hf["metrics"]
    np.testing.assert_allclose(kept["lls"], hf["lls"], rtol=0, atol=1e-4)
    assert kept["config"] == {"fastspec_layer": 2, "fastspec_k": 32, "fastspec_mode": "retain",
                              "fastspec_final_norm": True, "fastspec_basis": kept["config"]["fastspec_basis"],
                              "fastspec_basis_samples": 180}


def test_removing_changes_the_scores_as_fastspec_ablate_does(setup):
    tmp, _, model, tok, out, _ = setup
    hf, removed = out["runs"]["hf"], out["runs"]["remove_2"]
    assert np.abs(removed["lls"] - hf["lls"]).max() > 0.1  # the hook acts
    assert removed["config"]["fastspec_basis_samples"] == 180  # n_basis=1000 caps at the file's 180 texts
    with Projector(model, -1) as proj:
        mean, vectors, acc = eigenbasis(model, tok, tinylm.CORPUS, proj.layer, 2)
        proj.set(mean, vectors, "remove")
        want, _ = _fastspec_scores(model, tok, tmp / "items.jsonl")
    np.testing.assert_allclose(removed["lls"], want, rtol=0, atol=1e-4)
    frame = ablate(model, tmp / "items.jsonl", acc, tok, layer=-1, ks=[2], modes=["remove"], progress=False)
    assert frame.loc[1, "accuracy"] == removed["metrics"]["acc"]
    assert frame.loc[1, "acc_norm"] == removed["metrics"]["acc_norm"]
    # a saved accumulator of the same texts gives the same eigenvectors
    np.testing.assert_allclose(out["runs"]["remove_2_pt"]["lls"], removed["lls"], rtol=0, atol=1e-5)
    assert out["runs"]["remove_2_pt"]["config"]["fastspec_basis_samples"] == 180


def test_jsonl_basis_sampled_to_n_basis_at_another_layer(setup):
    tmp, _, model, tok, out, _ = setup
    run = out["runs"]["retain_3_layer1"]
    assert run["config"]["fastspec_basis_samples"] == 50 and run["config"]["fastspec_layer"] == 1
    with Projector(model, 1) as proj:
        proj.set(*eigenbasis(model, tok, sample_texts(tinylm.CORPUS, 50, seed=0), 1, 3)[:2], "retain")
        want, _ = _fastspec_scores(model, tok, tmp / "items.jsonl")
    np.testing.assert_allclose(run["lls"], want, rtol=0, atol=1e-4)
    assert np.abs(run["lls"] - out["runs"]["hf"]["lls"]).max() > 0.1


def test_rolling_and_generation_are_ablated_and_the_hook_goes_away(setup):
    _, _, _, _, out, _ = setup
    plain, ablated = out["other"]["rolling"]
    assert abs(plain - ablated) > 0.1
    assert len(out["other"]["generated"]) == 1 and isinstance(out["other"]["generated"][0], str)
    assert out["other"]["hooks"] == out["other"]["plain_hooks"]  # the same model with no hook of ours


@pytest.mark.parametrize("name,kind,match", [
    ("no_basis", "ValueError", "fastspec-ablate needs basis=FILE"),
    ("mode", "ValueError", "mode must be one of retain, remove, got 'flip'"),
    ("k_too_large", "ValueError", "k=33 is more than the 32 eigenvectors the basis can give at layer 2"),
    ("k_float", "ValueError", "k must be a positive integer, got 1.5"),
    ("missing_file", "FileNotFoundError", r"basis=\S*nothere.txt: no such file"),
    ("suffix", "ValueError", r"basis=\S*basis.csv: unknown file type '.csv'"),
    ("layer", "ValueError", "layer=3: unknown layer 3: this model has layers 0"),
    ("positions", "ValueError", "positions='scored' is not supported"),
    ("not_a_state", "ValueError", r"other.pt: not a CovarianceAccumulator state_dict"),
    ("n_basis_pt", "ValueError", "n_basis caps the texts of a text file"),
    ("basis_number", "ValueError", "basis must be a file path, got 12"),
])
def test_bad_model_args(setup, name, kind, match):
    _, _, _, _, out, _ = setup
    got = out["errors"][name]
    assert got is not None, f"{name}: no error"
    assert got[0] == kind, got
    assert re.search(match, got[1]), got[1]


def test_load_basis(setup):
    tmp = setup[0]
    assert load_basis(tmp / "basis.txt") == tinylm.CORPUS
    assert load_basis(tmp / "basis.txt", n_basis=1000) == tinylm.CORPUS
    assert load_basis(tmp / "basis.jsonl", n_basis=7, seed=3, text_field="body") == sample_texts(tinylm.CORPUS, 7, seed=3)
    acc = load_basis(tmp / "basis.pt")
    assert isinstance(acc, fastspec.CovarianceAccumulator) and acc.n_samples == 180 and acc.dim == 32


def test_command_line(setup):
    """``fastspec lm-eval`` (here ``python -m fastspec lm-eval``) is lm-eval's command line with
    the model type registered (started by the fixture): the issue's invocation, ``layer=-1``
    included."""
    tmp, _, _, _, out, cli = setup
    assert cli.wait(timeout=600) == 0, (tmp / "cli.err").read_text()[-4000:]
    stdout = (tmp / "cli.out").read_text()
    assert f"{NAME} (" in stdout and TASK in stdout
    [results] = glob.glob(str(tmp / "cli" / "**" / "results_*.json"), recursive=True)
    with open(results) as fh:
        saved = json.load(fh)
    assert {m: saved["results"][TASK][m + ",none"] for m in METRICS} == out["runs"]["remove_2"]["metrics"]
    assert saved["config"]["fastspec_basis_samples"] == 180 and saved["config"]["fastspec_layer"] == 2
    assert saved["config"]["fastspec_mode"] == "remove"


def test_command_line_bad_model_args_are_one_error_line_and_exit_2(tmp_path):
    """A bad --model_args entry (here an unknown mode) ends ``fastspec lm-eval`` with one
    ``error:`` line and exit status 2, as every fastspec command does, not a traceback. It is
    refused before any model loads, so the model path need not exist."""
    (tmp_path / "basis.txt").write_text("a text\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "task.yaml").write_text(TASK_YAML.format(task=TASK, items=tmp_path / "items.jsonl"))
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "fastspec", "lm-eval", "--model", NAME,
         "--model_args", f"pretrained={tmp_path / 'no-model'},mode=flip,basis={tmp_path / 'basis.txt'}",
         "--tasks", TASK, "--include_path", str(tmp_path / "tasks"), "--device", "cpu"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == ["fastspec lm-eval: error: fastspec-ablate: mode must be one of retain, remove, got 'flip'"], errors


def test_import_fastspec_does_not_import_lm_eval(setup):
    _, _, _, _, out, _ = setup
    assert out["fastspec_imported_lm_eval"] is False


def test_main_with_arguments_leaves_sys_argv_as_it_was(monkeypatch, capsys):
    from fastspec.integrations.lm_eval import main

    monkeypatch.setattr(sys, "argv", ["host-program", "--its-own-flag"])
    with pytest.raises(SystemExit) as stop:
        main(["--help"])  # lm-eval's parser prints its help and exits
    assert stop.value.code == 0 and "lm-eval" in capsys.readouterr().out.lower()
    assert sys.argv == ["host-program", "--its-own-flag"]
