"""fastspec.report: the trace figures are written as real PNGs; the page's phase summary."""

import pytest
from traceframes import trace_frame

from fastspec.report import plot_trace


@pytest.mark.parametrize("layers", [(0, 1), tuple(range(12))])
def test_plots_are_written(tmp_path, layers):
    rank = [50, 20, 8, 12, 30, 45, 40, 30]
    frame = trace_frame(rank, [1.0] * 8, steps=[0, 1, 2, 4, 8, 512, 1000, 2000], layers=layers)
    paths = plot_trace(frame, tmp_path)
    for p in paths:
        with open(p, "rb") as fh:
            data = fh.read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_the_report_s_phase_ranges_never_overlap():
    import pandas as pd

    from fastspec.report.page import _phase_runs

    labelled = pd.DataFrame({"phase": ["warmup", "flat", "flat", "entropy-seeking"], "step": [0, 100, 200, 400]})
    assert _phase_runs(labelled) == "warmup: step 0; flat: steps 100–200; entropy-seeking: step 400"


def test_toy_runs_recorded_on_a_log_step_axis_are_drawn_on_one(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from fastspec import toy
    from fastspec.report.figures import plot_conditions

    scales = []
    real = Figure.savefig

    def spy(self, *args, **kwargs):
        scales.append([ax.get_xscale() for ax in self.axes])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    runs = {"log": toy.train(width=4, classes=16, steps=200, log_steps=20),
            "linear": toy.train(width=4, classes=16, steps=200)}
    assert plot_conditions(runs, tmp_path / "toy.png") == str(tmp_path / "toy.png")
    assert scales == [["symlog", "linear", "symlog", "linear"]]  # (RankMe, α) rows × (log, linear) columns
