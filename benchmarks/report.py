"""Turn pytest-benchmark JSON from test_bench_spectrum.py into Markdown tables.

    FASTSPEC_BENCH_FULL=1 pytest benchmarks --benchmark-json=bench.json
    python benchmarks/report.py bench.json [-o bench.md]

GPU results (benchmarks/test_bench_gpu.py, methods named gpu_*) get their own section: per shape,
each method's median, its ratio to fastspec's kernels, its achieved TFLOP/s, its peak GPU memory,
and the issue's goals computed from the same run. ``--gpu-run DIR`` makes bench.md of one run of
benchmarks/gpu.sh from the JSON lines it wrote (the card and versions, the steps, the floors of
gpu_floors.py, a summary of ratios to each baseline and floor, then those sections):

    python benchmarks/report.py --gpu-run OUT_DIR -o OUT_DIR/bench.md

One table per CPU shape: each method's median time, its time relative to fastspec's (a baseline's
``× fastspec`` above 1 means fastspec is that many times faster), its peak resident memory
in a fresh process (above the input and libraries, and in total), and, for spectrum shapes,
fastspec's time relative to the floor (XᵀX in fp32 plus fp32 eigvalsh, timed separately in
the same run). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

LABELS = {
    "fastspec": "fastspec: `spectrum` + `.rankme` + `alpha_req`",
    "reptrix": "Reptrix: `get_rankme` + `get_alpha` (2 PCAs)",
    "torch_svdvals": "torch `svdvals` of centred X (Garrido-style)",
    "torch_cov_eigvalsh": "torch `cov` + `eigvalsh` (fp32)",
    "floor_gemm": "floor: XᵀX alone (fp32 GEMM)",
    "floor_eigvalsh_fp32": "floor: `eigvalsh` alone (fp32, d×d)",
    "fastspec_stream": "fastspec `CovarianceAccumulator.update`",
    "torch_fp64_stream": "torch fp64 running Σxᵀx + Σx",
}
GPU_LABELS = {
    "gpu_fastspec": "fastspec kernels: `spectrum` + `.rankme` + `alpha_req`",
    "gpu_fastspec_tf32x3": "fastspec kernels, 3×TF32 products (`products=\"tf32x3\"`)",
    "gpu_fastspec_torch": "fastspec torch path (`backend=\"torch\"`)",
    "gpu_torch_cov_eigvalsh": "torch `cov` + `eigvalsh` (fp32)",
    "gpu_torch_svdvals": "torch `svdvals` of centred X (fp32)",
    "gpu_fastspec_accumulate": "part: fastspec kernels' accumulation alone",
    "gpu_fastspec_accumulate_tf32x3": "part: the kernels' accumulation alone, 3×TF32",
    "gpu_floor_gemm": "floor: `X.T @ X` in the input dtype (cuBLAS GEMM)",
    "gpu_floor_gemm_tf32": "floor: `X.T @ X`, TF32 tensor cores",
    "gpu_fastspec_eig": "part: fastspec's eigen step (`acc.spectrum()`)",
    "gpu_floor_xsyevd": "floor: bare `cusolverDnXsyevd` (fp64)",
    "gpu_floor_eigvalsh_fp64": "floor: torch `eigvalsh` (fp64)",
    "gpu_fastspec_stream": "fastspec kernels: stream + spectrum",
    "gpu_fastspec_tf32x3_stream": "fastspec kernels, 3×TF32: stream + spectrum",
    "gpu_fastspec_torch_stream": "fastspec torch path: stream + spectrum",
    "gpu_torch_fp64_stream": "torch fp64 running Σxᵀx + Σx, `eigvalsh`",
}
ORDER = list(LABELS)
FLOOR_PARTS = ("floor_gemm", "floor_eigvalsh_fp32")
BASELINES = ("reptrix", "torch_svdvals", "torch_cov_eigvalsh")


def load(paths: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Benchmarks of all files (a later file's run of the same test replaces an earlier one)."""
    by_name: dict[str, dict[str, Any]] = {}
    machine: dict[str, Any] = {}
    when = ""
    for path in paths:
        data = json.loads(path.read_text())
        machine = data.get("machine_info", machine)
        when = data.get("datetime", when)
        for b in data.get("benchmarks", []):
            if "method" in b.get("extra_info", {}):
                by_name[b["fullname"]] = b
    return list(by_name.values()), machine, when


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else (f"{x:.3g}×" if x < 100 else f"{x:.0f}×")


def fmt_mb(x: Any) -> str:
    return "—" if x is None else f"{float(x):,.0f}" if float(x) >= 10 else f"{float(x):.1f}"


def fmt_rate(x: Any) -> str:
    if x is None:
        return "—"
    x = float(x)
    return f"{x / 1e6:.3g} M" if x >= 1e6 else f"{x / 1e3:.3g} k" if x >= 1e3 else f"{x:.3g}"


def median(b: dict[str, Any] | None) -> float | None:
    return None if b is None else float(b["stats"]["median"])


def group_key(benches: list[dict[str, Any]]) -> tuple:
    e = benches[0]["extra_info"]
    return (e["kind"] != "spectrum", e["d"], e["n"], e.get("batch") or 0)


def table(rows: list[list[str]], header: list[str], align: str) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(":--" if a == "l" else "--:" for a in align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def method_rows(benches: dict[str, dict[str, Any]], ours: str) -> Iterator[tuple[str, dict[str, Any], float, str, list[str]]]:
    """Per method present, in ORDER: (method, extra_info, median, ratio to ``ours``, the
    memory and rounds cells every table ends with)."""
    ref = median(benches.get(ours))
    for method in ORDER:
        b = benches.get(method)
        if b is None:
            continue
        e, t = b["extra_info"], median(b)
        ratio = "1×" if method == ours else (fmt_ratio(t / ref) if ref else "—")
        yield method, e, t, ratio, [fmt_mb(e.get("peak_rss_mb")), fmt_mb(e.get("peak_rss_total_mb")), str(b["stats"]["rounds"])]


def spectrum_section(group: str, benches: dict[str, dict[str, Any]]) -> list[str]:
    ref = median(benches.get("fastspec"))
    rows = []
    for method, e, t, ratio, tail in method_rows(benches, "fastspec"):
        rankme = f"{e['rankme']:.2f}" if "rankme" in e else ""
        rows.append([LABELS[method], fmt_time(t), ratio, tail[0], tail[1], rankme, tail[2]])
    lines = [f"### {group}", ""]
    lines += table(rows, ["method", "median", "× fastspec", "peak RSS above input (MB)", "peak RSS total (MB)", "RankMe", "rounds"],
                   "lrrrrrr")
    floor = floor_time(benches)
    d = next(iter(benches.values()))["extra_info"]["d"]
    if "reptrix" in benches and d > 2048:
        lines += ["", "Reptrix's RankMe keeps only the top 2048 PCA components (its default), so it differs "
                      "from fastspec's full-spectrum value here; it was checked against "
                      "`fastspec.rankme(s, max_eigenvalues=2048)`."]
    if floor is not None:
        lines += ["", f"Floor (XᵀX + fp32 eigvalsh, timed apart): {fmt_time(floor)}; "
                      f"fastspec / floor = {fmt_ratio(ref / floor) if ref else '—'}."]
    return lines + [""]


def stream_section(group: str, benches: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for method, e, t, ratio, tail in method_rows(benches, "fastspec_stream"):
        rate = e.get("rows_per_s") or (e["n"] / t if t else None)
        rows.append([LABELS[method], fmt_time(t), fmt_rate(rate) + " rows/s", ratio, *tail])
    lines = [f"### {group}", ""]
    lines += table(rows, ["method", "median", "throughput", "× fastspec", "peak RSS above input (MB)", "peak RSS total (MB)", "rounds"],
                   "lrrrrrr")
    return lines + [""]


def floor_time(benches: dict[str, dict[str, Any]]) -> float | None:
    parts = [median(benches.get(m)) for m in FLOOR_PARTS]
    return None if any(p is None for p in parts) else sum(parts)  # type: ignore[arg-type]


def summary(groups: list[tuple[str, dict[str, dict[str, Any]]]]) -> list[str]:
    rows = []
    for _group, benches in groups:
        f = benches.get("fastspec")
        if f is None:
            continue
        ref, e = median(f), f["extra_info"]
        floor = floor_time(benches)
        row = [f"{e['n']} × {e['d']}", fmt_time(ref)]
        row += [fmt_ratio(median(benches[m]) / ref) if m in benches and ref else "—" for m in BASELINES]
        row.append(fmt_ratio(ref / floor) if floor and ref else "—")
        rows.append(row)
    if not rows:
        return []
    header = ["N × d", "fastspec", "Reptrix ×", "svdvals ×", "cov+eigvalsh ×", "fastspec / floor"]
    return ["## Summary: spectrum + RankMe + α", "",
            "A baseline's `×` is its median time over fastspec's (above 1: fastspec is faster). "
            "The floor is XᵀX (fp32 GEMM) plus fp32 `eigvalsh` on a d×d matrix.", ""] + table(rows, header, "lrrrrr") + [""]


def _ratio(benches: dict[str, dict[str, Any]], num: str, den: str) -> float | None:
    a, b = median(benches.get(num)), median(benches.get(den))
    return a / b if a and b else None


def gpu_goals(groups: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The issue's GPU goals, each from numbers of the same run."""
    rows = []
    for _name, b in sorted(groups.items(), key=lambda kv: group_key(list(kv[1].values()))):
        e = next(iter(b.values()))["extra_info"]
        shape = f"N={e['n']} d={e['d']} {e['dtype']}"
        if e["kind"] == "spectrum":
            gemm = b.get("gpu_floor_gemm_tf32" if e["dtype"] == "fp32" else "gpu_floor_gemm")
            for name, what in (("gpu_fastspec_accumulate", "accumulation"),
                               ("gpu_fastspec_accumulate_tf32x3", "accumulation (3×TF32)")):
                acc = b.get(name)
                if acc and gemm and acc["extra_info"].get("tflops") and gemm["extra_info"].get("tflops"):
                    frac = acc["extra_info"]["tflops"] / gemm["extra_info"]["tflops"]
                    rows.append([shape, f"{what} ≥ 60% of the card's BF16/TF32 GEMM rate",
                                 f"{acc['extra_info']['tflops']:.1f} vs {gemm['extra_info']['tflops']:.1f} TFLOP/s = {frac:.0%}",
                                 "yes" if frac >= 0.6 else "**no**"])
            r = _ratio(b, "gpu_fastspec_eig", "gpu_floor_xsyevd")
            if r is not None:
                rows.append([shape, "eigen step ≤ 1.1× a bare cusolverDnXsyevd", f"{r:.2f}×", "yes" if r <= 1.1 else "**no**"])
            r = _ratio(b, "gpu_torch_svdvals", "gpu_fastspec")
            if r is not None and e["d"] == 4096 and e["n"] == 15000:
                rows.append([shape, "end to end ≥ 20× faster than svdvals RankMe", f"{r:.1f}×", "yes" if r >= 20 else "**no**"])
        else:
            for name, what in (("gpu_fastspec_stream", ""), ("gpu_fastspec_tf32x3_stream", " (3×TF32)")):
                r = _ratio(b, "gpu_fastspec_torch_stream", name)
                if r is not None and e["d"] == 8192:
                    rows.append([shape, f"streamed end to end{what} ≥ 4× faster than the torch path", f"{r:.2f}×",
                                 "yes" if r >= 4 else "**no**"])
    if not rows:
        return []
    return ["### Goals (issue 4)", ""] + table(rows, ["shape", "goal", "measured", "met?"], "llrl") + [""]


def gpu_section(groups: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    any_bench = next(iter(next(iter(groups.values())).values()))
    lines = ["## GPU", "", f"Device: {any_bench['extra_info'].get('device', '?')}. " + GPU_NOTE, ""]
    return lines + gpu_goals(groups) + gpu_tables(groups)


GPU_NOTE = ("Times are medians over the rounds shown, each ending in a device synchronisation. TFLOP/s counts the "
            "method's own arithmetic (one triangle is N·d·(d+1), for 3×TF32 too); \"GEMM-equiv\" is 2·N·d² over the "
            "time. Peak GPU memory: torch's peak allocation above what was allocated before the rounds.")


def gpu_tables(groups: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One table per GPU shape: each method's median, its ratio to fastspec's kernels, TFLOP/s,
    peak GPU memory, RankMe and rounds."""
    lines: list[str] = []
    for name, benches in sorted(groups.items(), key=lambda kv: group_key(list(kv[1].values()))):
        ref_name = "gpu_fastspec" if "gpu_fastspec" in benches else "gpu_fastspec_stream"
        ref = median(benches.get(ref_name))
        rows = []
        for method, label in GPU_LABELS.items():
            b = benches.get(method)
            if b is None:
                continue
            e, t = b["extra_info"], median(b)
            ratio = "1×" if method == ref_name else (fmt_ratio(t / ref) if ref and t else "—")
            tf = f"{e['tflops']:.1f}" if e.get("tflops") else "—"
            eq = f"{e['gemm_equiv_tflops']:.1f}" if e.get("gemm_equiv_tflops") else "—"
            rankme = f"{e['rankme']:.2f}" if "rankme" in e else ""
            rows.append([label, fmt_time(t), ratio, tf, eq, fmt_mb(e.get("peak_gpu_mb")), rankme, str(b["stats"]["rounds"])])
        lines += [f"### {name}", ""]
        lines += table(rows, ["method", "median", "× fastspec", "TFLOP/s", "GEMM-equiv TFLOP/s", "peak GPU MB", "RankMe",
                              "rounds"], "lrrrrrrr")
        lines.append("")
    return lines


# ---------------------------------------------------------------------------------------
# One run of benchmarks/gpu.sh: its folder of JSON lines -> bench.md
# ---------------------------------------------------------------------------------------

FLOOR_LABELS = {
    "gemm_fp32": "torch `x.T @ x`, fp32 IEEE",
    "gemm_tf32": "torch `x.T @ x`, TF32 tensor cores",
    "gemm_bf16": "torch `x.T @ x`, bf16",
    "ssyrk_fp32": "bare cuBLAS `cublasSsyrk_v2`, fp32 IEEE, default math",
    "ssyrk_fp32_pedantic": "bare cuBLAS `cublasSsyrk_v2`, fp32 IEEE, pedantic math (as the kernels)",
    "eigvalsh_fp32": "torch `eigvalsh`, fp32 (d×d)",
    "eigvalsh_fp64": "torch `eigvalsh`, fp64 (d×d)",
}


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none if it is missing; a line cut off mid-write is dropped)."""
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return lines


def bench_groups(lines: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """bench.jsonl's timed results as pytest-benchmark-like entries, by group and method (a
    later line for the same method and group replaces an earlier one)."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for line in lines:
        e = line.get("extra_info") or {}
        if line.get("median") is None or "method" not in e or "kind" not in e:
            continue
        groups.setdefault(line.get("group") or line["name"], {})[e["method"]] = {
            "name": line["name"], "fullname": line["name"], "group": line.get("group"), "extra_info": e,
            "stats": {"median": line["median"], "rounds": line.get("rounds")}}
    return groups


def _floor(floors: dict[tuple[str, int], dict[str, Any]], name: str, d: int) -> dict[str, Any] | None:
    f = floors.get((name, d))
    return f if f and f.get("median_s") else None


def run_summary(groups: dict[str, dict[str, dict[str, Any]]], floors: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """Per shape: fastspec's kernels, each baseline's time over theirs, and theirs over the floor."""
    rows = []
    for _name, b in sorted(groups.items(), key=lambda kv: group_key(list(kv[1].values()))):
        e = next(iter(b.values()))["extra_info"]
        stream = e["kind"] == "stream"
        ours = "gpu_fastspec_stream" if stream else "gpu_fastspec"
        fallback = ours not in b  # no kernels measured: the ratios are to fastspec's torch path
        if fallback:
            ours = "gpu_fastspec_torch_stream" if stream else "gpu_fastspec_torch"
        t = median(b.get(ours))
        rows_n = e["n"]
        if stream:  # the rows fed: whole batches, a little over N
            rs = [(x["extra_info"].get("rows_per_s") or 0) * median(x) for x in b.values()]
            rows_n = round(max(rs)) if max(rs) > 0 else e["n"]

        def over(m: str, b: dict[str, dict[str, Any]] = b, t: float | None = t) -> str:
            return fmt_ratio(median(b[m]) / t) if t and m in b else "—"

        # The kernels' SSYRK runs in CUBLAS_PEDANTIC_MATH: their floor is the pedantic one, where
        # it was timed (older runs timed the default mode only).
        syrk = _floor(floors, "ssyrk_fp32_pedantic", e["d"]) or _floor(floors, "ssyrk_fp32", e["d"])
        eig = _floor(floors, "eigvalsh_fp64", e["d"])
        floor = None
        if syrk and eig:  # the same arithmetic as fastspec's: fp32 products (scaled to the rows) + fp64 solve
            floor = syrk["median_s"] * rows_n / syrk["n"] + eig["median_s"]
        acc_syrk = "—"
        if not stream and syrk and syrk["n"] == e["n"] and median(b.get("gpu_fastspec_accumulate")):
            acc_syrk = fmt_ratio(median(b["gpu_fastspec_accumulate"]) / syrk["median_s"])
        eig_ratio = fmt_ratio(median(b["gpu_fastspec_eig"]) / eig["median_s"]) if eig and "gpu_fastspec_eig" in b else "—"
        tf32x3 = "gpu_fastspec_tf32x3_stream" if stream else "gpu_fastspec_tf32x3"
        rows.append([f"{e['kind']} N={e['n']} d={e['d']} {e['dtype']}",
                     fmt_time(t) + (" (torch path: no kernels)" if fallback and t else ""),
                     over("gpu_fastspec_torch_stream" if stream else "gpu_fastspec_torch"),
                     "—" if stream else over("gpu_torch_cov_eigvalsh"), "—" if stream else over("gpu_torch_svdvals"),
                     over("gpu_torch_fp64_stream") if stream else "—", over(tf32x3),
                     fmt_ratio(t / floor) if t and floor else "—", acc_syrk, eig_ratio])
    if not rows:
        return []
    header = ["shape", "fastspec kernels", "torch path ×", "cov+eigvalsh ×", "svdvals ×", "fp64 stream ×",
              "3×TF32 / fp32", "fastspec / floor", "accumulation / SSYRK", "eigen step / eigvalsh fp64"]
    return ["### Summary: fastspec's kernels (fp32 SSYRK products, the default) against each baseline and floor", "",
            "A baseline's `×` is its median time over the kernels' (above 1: the kernels are faster); \"3×TF32 / "
            "fp32\" is the 3×TF32 product path's time over the default's (below 1: 3×TF32 is faster). The floor is "
            "the floors' bare cuBLAS SSYRK (fp32, in the pedantic math mode the kernels use, scaled to the rows) "
            "plus torch's fp64 `eigvalsh` of a d×d matrix: "
            "the same arithmetic as fastspec's; the last two columns compare each part with its floor. Where the "
            "kernels were not measured, the ratios are to fastspec's torch path.", ""] \
        + table(rows, header, "lrrrrrrrrr") + [""]


def floors_section(floors: list[dict[str, Any]]) -> list[str]:
    rows, skipped = [], []
    for f in floors:
        label = FLOOR_LABELS.get(f["name"], f["name"])
        if f.get("median_s") is None:
            skipped.append(f"- {label}, N={f.get('n')} d={f.get('d')}: {f.get('skipped') or f.get('error')}")
            continue
        note = "" if f.get("check", "ok") == "ok" else f" (**check {f['check']}**: {f.get('max_rel_err_vs_gemm_fp32')})"
        rows.append([label + note, str(f["d"]), f["dtype"], fmt_time(f["median_s"]),
                     f"{f['tflops']:.1f}" if f.get("tflops") else "—", str(f["rounds"])])
    if not rows and not skipped:
        return []
    n = floors[0].get("n")
    lines = ["### Floors: the card's libraries alone (benchmarks/gpu_floors.py, no fastspec)", "",
             f"N = {n} rows of the benchmarks' activations; eigvalsh of their d×d covariance. Median over the "
             "rounds shown, after one warm-up, timed with CUDA events (perf_counter on the CPU).", ""]
    lines += table(rows, ["floor", "d", "dtype", "median", "TFLOP/s", "rounds"], "lrlrrr")
    return lines + ([""] + skipped if skipped else []) + [""]


def run_header(versions: dict[str, Any], steps: list[dict[str, Any]], device: str) -> list[str]:
    gpu = versions.get("gpu") or {}
    card = gpu.get("name") or device or "no GPU"
    fs = versions.get("fastspec") or {}
    kernels = (fs.get("backends") or {}).get("cuda_kernels") or {}
    src = versions.get("fastspec_source") or {}
    kern = ("available" + (f" ({kernels['detail']})" if kernels.get("detail") else "")) if kernels.get("available") \
        else f"not available: {kernels.get('reason', '?')}"
    parts = [f"{card}" + (f", {gpu['memory_gib']} GiB, compute capability {gpu['capability']}" if gpu else ""),
             f"driver/GPU: {versions.get('nvidia_smi') or '?'}",
             f"Python {versions.get('python', '?')}, torch {versions.get('torch', '?')} (CUDA {versions.get('torch_cuda')})",
             f"nvcc: {versions.get('nvcc') or 'absent'}"]
    parts += [f"{k} {versions[k]}" for k in ("transformers", "pybind11", "scikit-build-core", "pytest-benchmark")
              if versions.get(k)]
    parts.append(f"fastspec {fs.get('version') or src.get('version', '?')} (commit {src.get('commit') or 'unknown'}, "
                 f"tree sha256 {str(src.get('tree_sha256', '?'))[:12]})")
    lines = [f"## GPU: {card}, {versions.get('date', 'undated')}", "", "; ".join(parts) + ".", "",
             f"fastspec's CUDA kernels: {kern}.", ""]
    if steps:
        cells = [f"{s['step']} {s['status']}" + (f" ({s['seconds']} s)" if s.get("seconds") else "")
                 + (f": {s['reason']}" if s.get("reason") and s["status"] != "ok" else "") for s in steps]
        lines += ["Steps of benchmarks/gpu.sh: " + "; ".join(cells) + ".", ""]
    return lines


def gpu_run(folder: Path) -> str:
    """bench.md of one run of benchmarks/gpu.sh, from the files it wrote into ``folder``."""
    versions = json.loads((folder / "versions.json").read_text()) if (folder / "versions.json").exists() else {}
    steps = load_jsonl(folder / "steps.jsonl")
    floor_lines = load_jsonl(folder / "floors.jsonl")
    bench = load_jsonl(folder / "bench.jsonl")
    groups = bench_groups(bench)
    floors = {(f["name"], f["d"]): f for f in floor_lines if f.get("median_s") is not None}
    device = next((f.get("device") for f in floor_lines if f.get("device")), "")
    lines = run_header(versions, steps, device)
    lines += run_summary(groups, floors)
    lines += floors_section(floor_lines)
    if groups:
        lines += [GPU_NOTE, ""] + gpu_goals(groups) + gpu_tables(groups)
    else:
        lines += ["No benchmark results in bench.jsonl.", ""]
    others: dict[str, dict[str, list[str]]] = {}  # why -> method -> shapes
    for b in bench:
        if b.get("median") is None:
            why = f"{b.get('outcome')}: {b.get('reason') or b.get('error') or ''}".rstrip(": ")
            shape = (b.get("group") or b.get("step") or "").removeprefix("gpu ")
            others.setdefault(why, {}).setdefault(b.get("method") or b["name"], []).append(shape)
    if others:
        lines += ["### Not measured", ""]
        for why, methods in others.items():
            lines.append(f"- {why}: " + "; ".join(f"{m} ({', '.join(shapes)})" for m, shapes in methods.items()))
        lines.append("")
    failed = [b for b in bench if b.get("median") is not None and b.get("outcome") != "passed"]
    if failed:
        lines += ["### Timed, but the answer check failed", ""]
        lines += [f"- {b.get('method')} ({b.get('group')}): {b.get('error', '')}" for b in failed] + [""]
    return "\n".join(lines).rstrip() + "\n"


EXTRACT_LABELS = {
    "fastspec": "fastspec `extract(layers=\"all\")` (hooks, length-sorted batches, no LM head)",
    "naive_hidden_states": "`output_hidden_states=True` on the causal LM, last token sliced",
}


def extract_section(groups: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Extraction (test_bench_extract.py): tokens/s and peak memory, fastspec beside the loop."""
    lines = ["## Extraction for all-layer tracing", ""]
    for name, benches in groups.items():
        ours = benches.get("fastspec")
        rows = []
        for method, label in EXTRACT_LABELS.items():
            b = benches.get(method)
            if b is None:
                continue
            e = b["extra_info"]
            speedup = "1×" if b is ours or ours is None else fmt_ratio(median(b) / median(ours))
            rows.append([label, fmt_time(median(b)), fmt_rate(e["tokens_per_s"]), speedup, fmt_mb(e.get("peak_rss_mb")),
                         fmt_mb(e.get("peak_rss_total_mb")), str(b["stats"]["rounds"])])
        lines += [f"### {name}", ""]
        lines += table(rows, ["method", "median", "tokens/s", "× fastspec's time", "peak RSS above model (MB)",
                              "peak RSS total (MB)", "rounds"], "lrrrrrr")
        lines.append("")
    return lines


def render(benchmarks: list[dict[str, Any]], machine: dict[str, Any], when: str) -> str:
    extract: dict[str, dict[str, dict[str, Any]]] = {}
    for b in benchmarks:
        if b["extra_info"].get("kind") == "extract":
            extract.setdefault(b.get("group") or b["name"], {})[b["extra_info"]["method"]] = b
    benchmarks = [b for b in benchmarks if b["extra_info"].get("kind") != "extract"]
    gpu: dict[str, dict[str, dict[str, Any]]] = {}
    for b in benchmarks:
        if b["extra_info"]["method"].startswith("gpu_"):
            gpu.setdefault(b.get("group") or b["name"], {})[b["extra_info"]["method"]] = b
    benchmarks = [b for b in benchmarks if not b["extra_info"]["method"].startswith("gpu_")]
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for b in benchmarks:
        grouped.setdefault(b.get("group") or b["name"], {})[b["extra_info"]["method"]] = b
    groups = sorted(grouped.items(), key=lambda kv: group_key(list(kv[1].values())))
    info = machine.get("fastspec_bench", {})
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or "unknown CPU"
    lines = ["# fastspec benchmarks", ""]
    lines.append(
        f"{when or 'undated'}; {cpu}, {info.get('cpu_count', '?')} CPUs, torch {info.get('torch', '?')} "
        f"({info.get('torch_threads', '?')} threads), numpy {info.get('numpy', '?')}, "
        f"scikit-learn {info.get('scikit-learn', '?')}, reptrix {info.get('reptrix') or 'absent'}, "
        f"fastspec {info.get('fastspec', '?')}; sizes: {'full' if info.get('full') else 'small (CI)'}."
    )
    lines += ["", "Times are medians over the rounds shown. Peak RSS: one run of the method in a fresh process "
                  "(VmHWM), above what the process held just before the call (libraries and the N×d float32 "
                  "input), and in total.", ""]
    if groups and any(next(iter(g[1].values()))["extra_info"]["kind"] == "spectrum" for g in groups):
        lines += summary([g for g in groups if next(iter(g[1].values()))["extra_info"]["kind"] == "spectrum"])
        lines += ["## Per shape", ""]
    for group, benches in groups:
        kind = next(iter(benches.values()))["extra_info"]["kind"]
        lines += spectrum_section(group, benches) if kind == "spectrum" else stream_section(group, benches)
    if extract:
        lines += extract_section(extract)
    if gpu:
        lines += gpu_section(gpu)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="*", type=Path, help="pytest-benchmark --benchmark-json output(s)")
    parser.add_argument("--gpu-run", type=Path, metavar="DIR",
                        help="summarise the folder one run of benchmarks/gpu.sh wrote (versions.json, steps.jsonl, "
                             "floors.jsonl, bench.jsonl) instead")
    parser.add_argument("-o", "--output", type=Path, help="write the Markdown here (default: stdout)")
    args = parser.parse_args(argv)
    if args.gpu_run is not None:
        text = gpu_run(args.gpu_run)
    elif not args.json:
        parser.error("give pytest-benchmark JSON files, or --gpu-run DIR")
    else:
        benchmarks, machine, when = load(args.json)
        if not benchmarks:
            print("no fastspec benchmarks in " + ", ".join(map(str, args.json)), file=sys.stderr)
            return 1
        text = render(benchmarks, machine, when)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
