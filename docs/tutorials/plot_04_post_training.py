"""
Post-training stages
====================

Post-training checkpoints (base, SFT, DPO, RLVR) have no training step to order them by.
Give them labels: :func:`fastspec.trace` keeps the order given,
:func:`fastspec.load_trace` returns it as a ``label`` column, and ``fastspec plot`` and the
report put the stages on a categorical axis. Here the stages are the tiny model of the
first tutorial (base) and two supervised fine-tunes of it on instruction-formatted text,
20 and 60 steps long.
"""

# %%
# The base model and two fine-tunes
# ---------------------------------

import os

import matplotlib.pyplot as plt
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import fastspec
from fastspec.models.data import stdlib_docstrings
from fastspec.models.tiny import TinyLMConfig, pack, train_checkpoints

work = os.environ.get("FASTSPEC_TUTORIALS", "fastspec-tutorials")
paragraphs = stdlib_docstrings(max_paragraphs=4000)
held_out = paragraphs[::10]
train = [p for i, p in enumerate(paragraphs) if i % 10]
lm = TinyLMConfig(vocab_size=512, hidden=64, layers=2, heads=4, context=64,
                  seq_len=32, batch_size=16, steps=64, lr=3e-3, warmup=8,
                  save_steps=(0, 2, 4, 8, 16, 32, 64))
base = train_checkpoints(train[:3000], os.path.join(work, "model"), lm,
                         progress=False)[-1]

# Fine-tuning data: paragraphs the base model never saw, as answers to an instruction.
sft_texts = [f"### Instruction: explain this API.\n### Response: {p}"
             for p in train[3000:3600]]
tokenizer = AutoTokenizer.from_pretrained(base)
data = pack(tokenizer, sft_texts, 32)

torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(base)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
stages = {"base": base}
for step in range(1, 61):
    batch = data[torch.randint(len(data), (16,))]
    loss = model(input_ids=batch, labels=batch).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step in (20, 60):
        stages[f"sft-{step}"] = path = os.path.join(work, "stages", f"sft-{step}")
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
print(list(stages))

# %%
# Trace the stages, labelled
# --------------------------
# ``labels`` name the checkpoints in order. A resumed run must give the traced checkpoints
# the same labels and the stages the same order, or it is refused, naming the checkpoint.

frame = fastspec.trace(list(stages.values()), held_out,
                       os.path.join(work, "stages-trace"), labels=list(stages),
                       n=200, max_length=32, batch_size=50, fit_range=(2, 40),
                       progress=False)
frame[["label", "layer", "rankme", "rankme_sv", "alpha"]]

# %%
# One line per layer across the stages, on a categorical axis.

fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
for ax, metric, name in zip(axes, ("rankme", "alpha"), ("RankMe", "α")):
    for layer, rows in frame.groupby("layer"):
        ax.plot(rows["label"], rows[metric], marker="o", label=f"layer {layer}")
    ax.set_title(name)
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()

# %%
# The paper traces OLMo-2 and Tülu 3's stages this way (``fastspec trace ORG/base
# ORG/sft ORG/dpo ORG/rlvr --labels base sft dpo rlvr …``, :doc:`/how-to/trace-a-suite`),
# and reports that SFT and DPO tend to raise RankMe while RLVR lowers it.
# :func:`fastspec.phases` runs over the stages in the order given.
