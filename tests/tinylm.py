"""Tiny Hugging Face models and corpora made in the tests (random init, saved, loaded back)."""

from __future__ import annotations

import os

import torch

from fastspec.models.tiny import ARCHITECTURES, TinyLMConfig, model_config, train_checkpoints, train_tokenizer

CORPUS = [
    f"{w1} {w2} the {n} {w3} of the {w4}" + " and more" * (n % 7)
    for n, (w1, w2, w3, w4) in enumerate(
        [(a, b, c, d) for a in ("a", "one", "some", "every") for b in ("red", "small", "old")
         for c in ("cat", "dog", "tree", "river", "stone") for d in ("hill", "town", "sea")]
    )
]


def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=300)


def save_model(path: str, arch: str, *, layers: int = 3, hidden: int = 32, seed: int = 0, causal: bool = True) -> str:
    """A random-init model of ``arch`` with the test tokenizer, saved to ``path``."""
    from transformers import AutoModelForCausalLM

    tok = tokenizer()
    cfg = model_config(arch, vocab_size=len(tok), hidden=hidden, layers=layers, heads=4, context=64,
                       eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def checkpoints(path: str, arch: str = "gpt_neox", steps: tuple[int, ...] = (0, 3, 6)) -> list[str]:
    """A few checkpoints of a tiny LM after a few optimiser steps on the test corpus."""
    cfg = TinyLMConfig(arch=arch, vocab_size=300, hidden=32, layers=2, heads=4, context=64, seq_len=16,
                       batch_size=8, steps=max(steps), lr=1e-2, warmup=2, save_steps=steps)
    return train_checkpoints(CORPUS, os.fspath(path), cfg, progress=False)


__all__ = ["ARCHITECTURES", "CORPUS", "checkpoints", "save_model", "tokenizer"]
