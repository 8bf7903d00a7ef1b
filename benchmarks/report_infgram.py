"""Turn pytest-benchmark JSON from test_bench_infgram.py into the Markdown tables of RESULTS.md.

    FASTSPEC_BENCH_FULL=1 pytest benchmarks/test_bench_infgram.py --benchmark-json=infgram.json
    python benchmarks/report_infgram.py infgram.json

A ratio is infini-gram's time over fastspec's (above 1: fastspec is faster). Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from report import fmt_time  # benchmarks/report.py: the same time format in every table


def report(data: dict[str, Any]) -> str:
    rows: dict[tuple[str, int, str], dict[str, Any]] = {}
    for b in data["benchmarks"]:
        e = b.get("extra_info", {})
        if "engine" not in e:
            continue
        key = (e["kind"], e["token_width"], e["engine"] + (f"-{e['threads']}t" if e["kind"] == "score" and e["engine"] == "fastspec" else ""))
        rows[key] = {"median": b["stats"]["median"], "rounds": b["stats"]["rounds"], **e}
    m = data.get("machine_info", {})
    out = [f"{data.get('datetime', '')}; {m.get('cpu', {}).get('brand_raw', '?')}, {m.get('fastspec_bench', {}).get('cpu_count', '?')} CPUs; "
           f"sizes: {'full' if m.get('fastspec_bench', {}).get('full') else 'small'}.", ""]

    out += ["| build | ids | tokens | fastspec | peak MB (B/token) | infini-gram | peak MB (B/token) | ratio |", "|---|---|--:|--:|--:|--:|--:|--:|"]
    for w in (2, 4):
        f, i = rows.get(("build", w, "fastspec")), rows.get(("build", w, "infini_gram"))
        if not f:
            continue
        n = f["n_tokens"]
        fm = f.get("probe_peak_rss_mb")
        cell_f = f"{fm:.0f} ({fm * 2**20 / n:.1f})" if fm is not None else "—"
        if i and i.get("error"):
            ig, cell_i, ratio = f"failed after {fmt_time(i.get('probe_seconds'))}", i["error"][:60], "—"
        elif i:
            im = i.get("probe_peak_rss_mb")
            ig, cell_i, ratio = fmt_time(i["median"]), f"{im:.0f} ({im * 2**20 / n:.1f})", f"{i['median'] / f['median']:.2f}×"
        else:
            ig, cell_i, ratio = "—", "—", "—"
        out.append(f"| build | {8 * w}-bit (max id {f['max_id']}) | {n:,} | {fmt_time(f['median'])} | {cell_f} | {ig} | {cell_i} | {ratio} |")
    out += ["", "| query | ids | fastspec per call | infini-gram per call | ratio |", "|---|---|--:|--:|--:|"]
    for kind in ("count", "infgram_prob"):
        for w in (2, 4):
            f, i = rows.get((kind, w, "fastspec")), rows.get((kind, w, "infini_gram"))
            if not f:
                continue
            fq = f["median"] / f["queries"]
            iq = i["median"] / i["queries"] if i else None
            out.append(f"| `{kind}` | {8 * w}-bit | {fmt_time(fq)} | {fmt_time(iq)} | {f'{iq / fq:.1f}×' if iq else '— (no 32-bit infini-gram index)'} |")
    out += ["", "| sequence scoring | ids | tokens | tokens/s | vs infini-gram |", "|---|---|--:|--:|--:|"]
    ig = rows.get(("score", 2, "infini_gram"))
    ig_rate = ig["tokens"] / ig["median"] if ig else None
    for w in (2, 4):
        for t in (1, 2):
            f = rows.get(("score", w, f"fastspec-{t}t"))
            if f:
                rate = f["tokens"] / f["median"]
                out.append(f"| fastspec `score`, {t} thread{'s' if t > 1 else ''} | {8 * w}-bit | {f['tokens']:,} | {rate:,.0f} | "
                           f"{f'{rate / ig_rate:.0f}×' if ig_rate else '—'} |")
    if ig:
        out.append(f"| infini-gram `infgram_prob` per position | 16-bit | {ig['tokens']:,} | {ig_rate:,.0f} | 1× |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: report_infgram.py BENCH.json")
    print(report(json.loads(Path(sys.argv[1]).read_text())))
