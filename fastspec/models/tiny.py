"""Tiny causal language models trained here, offline, with checkpoints along the way.

The demo (and the tests) need a model with a training history and nothing to download: a
byte-level BPE tokenizer is trained on the given texts, a small transformer of a real
Hugging Face architecture (GPT-NeoX as in Pythia, OLMo-2, Llama, GPT-2) is initialised from
a config, trained with AdamW under a linear-warmup cosine schedule, and saved with
``save_pretrained`` at the chosen steps into ``step<N>/`` directories that
``AutoModel.from_pretrained``/``AutoTokenizer.from_pretrained`` load back.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .._files import bar_off, remove_stale, replacing, temporary_name, write_json
from .data import texts_digest
from .hf import quiet_transformers

ARCHITECTURES = ("gpt_neox", "olmo2", "llama", "gpt2")
EOS, PAD = "<|endoftext|>", "<|pad|>"


@dataclass(frozen=True)
class TinyLMConfig:
    arch: str = "gpt_neox"
    vocab_size: int = 2048
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    context: int = 128
    seq_len: int = 64
    batch_size: int = 16
    steps: int = 300
    lr: float = 3e-3
    warmup: int = 30
    final_lr: float = 0.1       # the cosine ends at final_lr·lr
    weight_decay: float = 0.01
    seed: int = 0
    save_steps: tuple[int, ...] = field(default=(0, 1, 2, 4, 8, 16, 32, 64, 100, 150, 200, 250, 300))


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (every byte is in its alphabet, so no
    text is unknown), as a ``PreTrainedTokenizerFast`` with an end-of-text and a pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=EOS, pad_token=PAD, bos_token=EOS,
                                   model_max_length=1 << 30)


def model_config(arch: str, *, vocab_size: int, hidden: int, layers: int, heads: int, context: int,
                 eos_id: int | None = None, pad_id: int | None = None) -> Any:
    """A Hugging Face config of one of :data:`ARCHITECTURES`, small."""
    import transformers as hf

    common = {"vocab_size": vocab_size, "bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": pad_id}
    if arch == "gpt2":
        return hf.GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=context, **common)
    kwargs = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": 4 * hidden, "max_position_embeddings": context, **common}
    if arch == "gpt_neox":
        return hf.GPTNeoXConfig(rotary_pct=0.25, **kwargs)
    if arch == "olmo2":
        return hf.Olmo2Config(**kwargs)
    if arch == "llama":
        return hf.LlamaConfig(**kwargs)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")


def pack(tokenizer: Any, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """All texts' tokens, each followed by end-of-text, cut into rows of ``seq_len``."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    flat = np.fromiter((t for doc in ids for t in (*doc, tokenizer.eos_token_id)), dtype=np.int64)
    rows = len(flat) // seq_len
    if rows < 1:
        raise ValueError(f"the training texts give {len(flat)} tokens, fewer than one sequence of {seq_len}")
    return torch.from_numpy(flat[: rows * seq_len].reshape(rows, seq_len))


def lr_at(step: int, cfg: TinyLMConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup`` steps, then cosine decay to ``final_lr``·lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * (cfg.final_lr + (1 - cfg.final_lr) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def train_checkpoints(texts: Sequence[str], out_dir: str | os.PathLike, cfg: TinyLMConfig = TinyLMConfig(), *,
                      progress: bool = True, threads: int | None = None) -> list[str]:
    """Train a tiny LM on ``texts`` and save it at ``cfg.save_steps`` into
    ``out_dir/step<N>``; return those directories in training order. A finished run in
    ``out_dir`` with the same configuration and texts is reused, not trained again; an
    interrupted one resumes from its last saved step (``out_dir/resume.pt``: weights,
    optimizer and sampler state) and ends as the uninterrupted run would.
    ``threads``: torch's intra-op threads while training (restored after); a model this
    small trains only about 20% faster on two idle cores than on one, and many times slower
    on two when another job shares them."""
    out_dir = os.fspath(out_dir)
    if any(s < 0 or s > cfg.steps for s in cfg.save_steps):
        raise ValueError(f"save_steps {cfg.save_steps} must lie in [0, steps={cfg.steps}]")
    dirs = [os.path.join(out_dir, f"step{s}") for s in sorted(set(cfg.save_steps))]
    digest = texts_digest(texts)
    done_file = os.path.join(out_dir, "training.json")
    if os.path.exists(done_file):
        with open(done_file) as fh:
            done = json.load(fh)
        if (done.get("config") == _jsonable(cfg) and done.get("data_sha256") == digest
                and all(os.path.isdir(d) for d in dirs)):
            return dirs
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        _train(texts, out_dir, cfg, digest, progress)
    finally:
        torch.set_num_threads(before)
    return dirs


def _resume_state(path: str, cfg: TinyLMConfig, digest: str) -> dict[str, Any] | None:
    """The state saved in ``path`` by an interrupted run of this configuration on these
    texts, or None when there is none (or it is another run's)."""
    if not os.path.exists(path):
        return None
    try:
        state = torch.load(path, weights_only=True)
        ours = json.loads(state["run"]) == {"config": _jsonable(cfg), "data_sha256": digest}
    except Exception as err:  # torch raises several types (and long advice) for a damaged file
        raise ValueError(f"{path} cannot be read ({type(err).__name__}); it should hold an interrupted training "
                         "run's state: delete it to train from the start") from err
    return state if ours else None


def _save_step(model: Any, tokenizer: Any, out_dir: str, step: int) -> None:
    """``out_dir/step<N>`` written under a temporary name and renamed into place (a killed
    process's temporary is removed by the next run: ``remove_stale``)."""
    final = os.path.join(out_dir, f"step{step}")
    tmp = os.path.join(out_dir, temporary_name(f"step{step}"))
    try:
        with quiet_transformers():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _train(texts: Sequence[str], out_dir: str, cfg: TinyLMConfig, digest: str, progress: bool) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    remove_stale(out_dir)  # a step directory half-written by a killed run
    resume_file = os.path.join(out_dir, "resume.pt")
    state = _resume_state(resume_file, cfg, digest)
    torch.manual_seed(cfg.seed)
    if state is None:
        tokenizer = train_tokenizer(texts, cfg.vocab_size)
    else:  # the tokenizer the run began with (BPE training is not promised to be deterministic)
        tokenizer = AutoTokenizer.from_pretrained(os.path.join(out_dir, f"step{state['step']}"))
    data = pack(tokenizer, texts, cfg.seq_len)
    config = model_config(cfg.arch, vocab_size=len(tokenizer), hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                          context=cfg.context, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
    # eager attention: the same arithmetic as sdpa, and ~9% faster per step at this size on CPU
    # (sdpa's flash kernel is built for larger heads than 8 dimensions)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95),
                            fused=True)  # one kernel per step, not one per tensor: ~5% of a step here
    gen = torch.Generator().manual_seed(cfg.seed)
    save = set(cfg.save_steps)
    losses: dict[int, float] = {}
    recent: list[float] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        losses, recent, start = state["losses"], state["recent"], state["step"]
        if progress:
            print(f"resuming the training at step {start} of {cfg.steps} ({resume_file})", flush=True)
    model.train()
    for step in tqdm(range(start, cfg.steps + 1), initial=start, total=cfg.steps + 1, desc="training", unit="step",
                     disable=bar_off(progress), leave=False):
        if step in save:
            _save_step(model, tokenizer, out_dir, step)
            if recent:
                losses[step] = float(np.mean(recent))
            if step < cfg.steps:
                with replacing(resume_file) as tmp:
                    torch.save({"run": json.dumps({"config": _jsonable(cfg), "data_sha256": digest}), "step": step,
                                "model": model.state_dict(), "optimizer": opt.state_dict(),
                                "generator": gen.get_state(), "losses": losses, "recent": recent}, tmp)
        if step == cfg.steps:
            break
        batch = data[torch.randint(len(data), (cfg.batch_size,), generator=gen)]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent = [*recent[-9:], loss.item()]  # the training loss recorded at a step: the mean of the last 10
    write_json(os.path.join(out_dir, "training.json"),
               {"config": _jsonable(cfg), "train_loss": {str(k): v for k, v in losses.items()},
                "n_train_tokens": int(data.numel()), "data_sha256": digest})  # last: its presence means the run is complete
    if os.path.exists(resume_file):
        os.remove(resume_file)


def _jsonable(cfg: TinyLMConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg)))
