"""A trace's DataFrame (``fastspec.load_trace``'s columns) made from given RankMe and α
trajectories, for the phase and figure tests."""

import numpy as np
import pandas as pd


def trace_frame(rankme, alpha=None, steps=None, layers=(0, 1)):
    steps = list(range(0, 10 * len(rankme), 10)) if steps is None else steps
    alpha = [np.nan] * len(rankme) if alpha is None else alpha
    rows = []
    for i, (s, r, a) in enumerate(zip(steps, rankme, alpha)):
        for layer in layers:  # the last layer carries the trajectory; the others are scaled copies
            scale = 1.0 if layer == layers[-1] else 0.5
            rows.append({"checkpoint": f"step{s}", "step": s, "index": i, "layer": layer, "rankme": r * scale,
                         "rankme_sv": r, "alpha": a, "alpha_r2": 0.9, "alpha_intercept": 0.0,
                         "n_samples": 100, "dim": 64, "n_dropped": 0, "alpha_error": None})
    frame = pd.DataFrame(rows)
    frame["step"] = frame["step"].astype("Int64")
    return frame
