"""
Geometry during training with the Trainer callback
==================================================

Measure RankMe, α and the phase of every layer while a Hugging Face ``Trainer`` trains,
with :class:`fastspec.integrations.hf.GeometryCallback`: on fixed probe texts, every few
steps, logged through ``Trainer.log`` (so TensorBoard and W&B get them), with a call when
a layer's phase changes, into a results directory that ``fastspec plot`` and
``fastspec report`` read.
"""

# %%
# A model and its training data
# -----------------------------
# A fresh tiny GPT-NeoX and a byte-level BPE tokenizer trained on the standard library's
# docstrings, cut into blocks of 32 tokens. Any causal LM and dataset work the same way.

import os

import matplotlib.pyplot as plt
import torch
from transformers import (AutoModelForCausalLM, PrinterCallback, Trainer,
                          TrainingArguments)

import fastspec
from fastspec.integrations.hf import GeometryCallback
from fastspec.models.data import stdlib_docstrings
from fastspec.models.tiny import model_config, train_tokenizer

work = os.environ.get("FASTSPEC_TUTORIALS", "fastspec-tutorials")
paragraphs = stdlib_docstrings(max_paragraphs=4000)
probe = paragraphs[::10][:200]
train = [p for i, p in enumerate(paragraphs) if i % 10][:2000]

tokenizer = train_tokenizer(train, vocab_size=512)
ids = [t for text in train
       for t in tokenizer(text + tokenizer.eos_token)["input_ids"]]
blocks = torch.tensor(ids[: len(ids) // 32 * 32]).view(-1, 32)
dataset = [{"input_ids": b, "attention_mask": torch.ones_like(b), "labels": b}
           for b in blocks]

torch.manual_seed(0)
config = model_config("gpt_neox", vocab_size=len(tokenizer), hidden=64, layers=2,
                      heads=4, context=64, eos_id=tokenizer.eos_token_id,
                      pad_id=tokenizer.pad_token_id)
model = AutoModelForCausalLM.from_config(config)

# %%
# Attach the callback
# -------------------
# ``every_n_steps=5`` measures every five optimiser steps (by default: at every evaluation
# and every save) and before the first. A ``TrainerCallback`` is handed no Trainer, which
# is why ``attach`` is the way in: it registers the callback and lets it log through the
# Trainer.

args = TrainingArguments(
    output_dir=os.path.join(work, "trainer"), max_steps=40,
    per_device_train_batch_size=16, learning_rate=3e-3, warmup_steps=5,
    save_strategy="no", logging_steps=10, report_to="none", use_cpu=True, seed=0,
    disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=dataset,
                  processing_class=tokenizer)
trainer.remove_callback(PrinterCallback)  # the cells below show what was logged

changes = []
callback = GeometryCallback(
    probe, every_n_steps=5, max_length=32, batch_size=50, fit_range=(2, 40),
    out_dir=os.path.join(work, "geometry"),
    on_phase_change=lambda step, layer, old, new: changes.append(
        (step, layer, old, new)))
callback.attach(trainer)
trainer.train()

# %%
# What it logged
# --------------
# ``geometry/{rankme,rankme_sv,alpha,phase}/layer_{l}`` at every measurement, beside the
# loss (``phase``: 0 warmup, 1 entropy-seeking, 2 compression-seeking, 3 flat).

for entry in trainer.state.log_history:
    if "geometry/rankme/layer_2" in entry:
        print(entry["step"], {k.removeprefix("geometry/"): round(v, 2)
                              for k, v in entry.items() if k.endswith("layer_2")})
print("phase changes (step, layer, old, new):")
for change in changes:
    print("  ", change)

# %%
# The same results directory as a trace
# -------------------------------------
# ``out_dir`` holds one checkpoint ``step<N>`` per measurement in :func:`fastspec.trace`'s
# format, so everything that reads a trace reads it: :func:`fastspec.load_trace`,
# :func:`fastspec.phases`, ``fastspec plot`` and ``fastspec report``.

frame = fastspec.load_trace(os.path.join(work, "geometry"))
fig, ax = plt.subplots(figsize=(6, 3.5))
for layer, rows in frame.groupby("layer"):
    ax.plot(rows["step"], rows["rankme"], marker="o", ms=3, label=f"layer {layer}")
ax.set_xlabel("optimiser step")
ax.set_ylabel("RankMe")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()

# %%
# The Lightning callback (:class:`fastspec.integrations.lightning.GeometryCallback`)
# takes the same arguments; under torchrun every rank measures its share of the probe
# texts and the accumulators are all-reduced. See :doc:`/how-to/other-tools`.
