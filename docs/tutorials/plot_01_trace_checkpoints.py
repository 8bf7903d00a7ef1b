"""
Trace a model's checkpoints and read the phases
===============================================

Train a tiny language model here, save checkpoints along the way, trace RankMe and α of
every layer at every checkpoint with :func:`fastspec.trace`, and label the pretraining
phases with :func:`fastspec.phases`. This is what ``fastspec demo`` does, at a size that
takes seconds.
"""

# %%
# A model with a training history
# -------------------------------
# The embedded default: the docstrings of Python's own standard library (every machine
# with Python has them) and a tiny GPT-NeoX, Pythia's architecture, trained on them.
# Checkpoints are saved on a log-spaced schedule (0, 2, 4, 8, …), dense early where the
# geometry moves fastest, as Pythia's are. ``train_checkpoints`` reuses a finished run
# with the same settings, so the other tutorials get this model without training again.

import os
import textwrap

import matplotlib.pyplot as plt

import fastspec
from fastspec.models.data import stdlib_docstrings
from fastspec.models.tiny import TinyLMConfig, train_checkpoints

# Where the runs go: ./fastspec-tutorials when you run this yourself
# (the docs build points it at a temporary folder).
work = os.environ.get("FASTSPEC_TUTORIALS", "fastspec-tutorials")

paragraphs = stdlib_docstrings(max_paragraphs=4000)
held_out = paragraphs[::10]
train = [p for i, p in enumerate(paragraphs) if i % 10][:3000]
print(len(train), "training paragraphs, e.g.:")
print(textwrap.fill(train[1], 72))

lm = TinyLMConfig(vocab_size=512, hidden=64, layers=2, heads=4, context=64,
                  seq_len=32, batch_size=16, steps=64, lr=3e-3, warmup=8,
                  save_steps=(0, 2, 4, 8, 16, 32, 64))
checkpoints = train_checkpoints(train, os.path.join(work, "model"), lm,
                                progress=False)
print([os.path.basename(c) for c in checkpoints])

# %%
# Trace every checkpoint
# ----------------------
# One forward pass per batch feeds one covariance accumulator per layer (layer 0 is the
# embedding output; the last is after the final norm, as Hugging Face's
# ``hidden_states[-1]``). A text is represented by its last token. Each checkpoint's
# record is written to the results directory as soon as it is done, so a rerun resumes
# where it stopped. The width here is 64, so α is fitted over ranks 3..40 instead of the
# default 12..100.

frame = fastspec.trace(checkpoints, held_out, os.path.join(work, "trace"),
                       n=200, max_length=32, batch_size=50, fit_range=(2, 40),
                       progress=False)
frame[["step", "layer", "rankme", "rankme_sv", "alpha", "n_samples", "dim"]]

# %%
# Read the phases
# ---------------
# :func:`fastspec.phases` cuts the last layer's RankMe into monotone runs (a run ends once
# RankMe has moved back by more than 10%): the learning-rate warmup first, then rising
# runs are entropy-seeking and falling ones compression-seeking. ``alpha_agrees`` says
# whether α moved the other way, as the paper describes.

labelled = fastspec.phases(frame, warmup_steps=lm.warmup)
labelled[["step", "rankme", "alpha", "phase", "alpha_agrees"]]

# %%
# Plot the trajectories
# ---------------------
# One line per layer, the phases of the last layer shaded. ``fastspec plot DIR`` draws
# the same figure (``trajectories.png``) and a layer × step heatmap.

colours = {"warmup": "#bbbbbb", "entropy-seeking": "#9ecae1",
           "compression-seeking": "#fdae6b", "flat": "#eeeeee"}
steps = labelled["step"].to_numpy(dtype=float)
# each checkpoint's shading reaches halfway to its neighbours
edges = [steps[0], *((steps[1:] + steps[:-1]) / 2), steps[-1]]
fig, axes = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
for ax, metric in zip(axes, ("rankme", "alpha")):
    for i, phase in enumerate(labelled["phase"]):
        ax.axvspan(edges[i], edges[i + 1], color=colours[phase], alpha=0.5, lw=0)
    for layer, rows in frame.groupby("layer"):
        ax.plot(rows["step"], rows[metric], marker="o", ms=3,
                label=f"layer {layer}")
    ax.set_ylabel({"rankme": "RankMe", "alpha": "α"}[metric])
    ax.set_xscale("symlog", linthresh=1)
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
axes[1].set_xlabel("training step")
fig.suptitle("RankMe and α across training; shading: phases of the last layer")
fig.tight_layout()

# %%
# What to look at: the RankMe of the upper layers collapses early (the model first learns
# the most frequent tokens, along few directions) while α rises, and then rises again
# (entropy-seeking). When the collapse outlasts the learning-rate warmup, as it does in
# this 64-step run, the checkpoints still falling after the warmup are labelled
# compression-seeking: a label says which way RankMe moved. The paper's
# compression-seeking phase is a fall after a long rise, which ``fastspec demo``'s 1000
# steps do not reach either, and the paper's models, trained for hundreds of thousands of
# steps, do. The results directory has the same format whatever the model: see
# :doc:`/reference/results`.
