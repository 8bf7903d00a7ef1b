"""A tiny GPT-NeoX trained by a real transformers.Trainer with fastspec's GeometryCallback, in one
process or under torchrun (tests/integrations/test_hf.py; benchmarks/test_bench_callback.py).

    python hf_worker.py MODEL_DIR OUT_DIR [--geometry DIR] [--steps N] [--save-steps N] [--every N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tinylm import CORPUS  # noqa: E402

PROBE = CORPUS[::3]
FIT_RANGE = (1, 16)
SEQ = 16


class Blocks(torch.utils.data.Dataset):
    """Token ids cut into blocks of ``seq`` tokens (inputs are their own labels)."""

    def __init__(self, ids: list[int], seq: int = SEQ):
        self.blocks = [ids[i:i + seq] for i in range(0, len(ids) - seq + 1, seq)]

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.tensor(self.blocks[i])
        return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x}


def corpus_blocks(tokenizer, copies: int = 8) -> Blocks:
    """The test corpus, ``copies`` times over, each text ended by EOS, tokenised and cut into blocks."""
    return Blocks([t for text in CORPUS * copies for t in tokenizer(text + tokenizer.eos_token)["input_ids"]])


def make_trainer(model_dir: str, out_dir: str, *, steps: int, save_steps: int | None, seed: int = 0):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = TrainingArguments(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2, warmup_steps=3,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, logging_steps=5,
        report_to="none", use_cpu=True, seed=seed, data_seed=seed, disable_tqdm=True, dataloader_num_workers=0,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None)
    return Trainer(model=model, args=args, train_dataset=corpus_blocks(tok), processing_class=tok), tok


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("out_dir")
    p.add_argument("--geometry", default=None, help="the callback's out_dir (no callback without it)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--save-steps", type=int, default=None)
    p.add_argument("--every", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    trainer, tok = make_trainer(a.model_dir, a.out_dir, steps=a.steps, save_steps=a.save_steps)
    changes = []
    if a.geometry:
        from fastspec.integrations.hf import GeometryCallback

        GeometryCallback(PROBE, layers="all", batch_size=8, fit_range=FIT_RANGE, every_n_steps=a.every,
                         out_dir=a.geometry, collapse=None,
                         on_phase_change=lambda *change: changes.append(change)).attach(trainer)
    if trainer.is_world_process_zero() and not a.resume:  # the initial weights, to trace afterwards
        trainer.save_model(os.path.join(a.out_dir, "checkpoint-0"))
    trainer.train(resume_from_checkpoint=True if a.resume else None)
    if trainer.is_world_process_zero():
        geometry = [h for h in trainer.state.log_history if any(k.startswith("geometry/") for k in h)]
        with open(os.path.join(a.out_dir, "logged.json"), "w") as fh:
            json.dump({"geometry": geometry, "losses": [h for h in trainer.state.log_history if "loss" in h],
                       "phase_changes": changes}, fh)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # as a training script should: left to interpreter exit, gloo's threads can meet a torn-down
        # process ("terminate called without an active exception", seen once under load)
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
