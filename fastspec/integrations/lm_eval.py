"""An lm-eval-harness model type, ``fastspec-ablate``: any lm-eval task, scored with the top-k
eigenvectors of one layer's covariance retained or removed (fastspec's
``fastspec.analyses.ablation.Projector``, the paper's Table 2 ablation).

From the command line (lm-eval 0.4.13 finds third-party models only in its own registry,
which its ``lm_eval`` command fills from a fixed table, ``lm_eval.models.MODEL_MAPPING``: it
reads no entry points and imports no plugin, and ``--include_path`` adds tasks, not models),
run lm-eval through ``fastspec lm-eval`` (or ``python -m fastspec.integrations.lm_eval``),
which registers the model and then hands the command line to lm-eval's own ``cli_evaluate``
unchanged::

    fastspec lm-eval --model fastspec-ablate \\
        --model_args pretrained=DIR,layer=-1,k=10,mode=retain,basis=texts.txt,n_basis=1000 \\
        --tasks sciq --device cuda:0 --batch_size 16

Every ``lm_eval`` option and subcommand works after ``fastspec lm-eval`` as it does after ``lm_eval``; the plain
``lm_eval --model fastspec-ablate`` command does not know the name. From Python, importing
this module registers it::

    import lm_eval, fastspec.integrations.lm_eval
    lm_eval.simple_evaluate(model="fastspec-ablate", model_args="pretrained=DIR,k=10,basis=texts.txt",
                            tasks=["sciq"])

``model_args`` (besides every argument of lm-eval's ``hf`` model, :class:`HFLM`, which
loads the model and tokenizer; the model must be a causal LM). lm-eval splits them at commas,
so a path cannot hold one. Whole numbers given as floats count as integers: lm-eval's command
line reads ``layer=-1`` as −1.0. The results' ``config`` records ``fastspec_layer``,
``fastspec_k``, ``fastspec_mode``, ``fastspec_final_norm``, ``fastspec_basis`` and
``fastspec_basis_samples``.

- ``basis`` (required): where the eigenvectors come from.

  * a text file, ``.txt`` (one text per non-blank line), ``.jsonl`` (the ``text_field`` of
    each line, default ``text``) or ``.parquet`` (that column): the covariance is that of
    the texts' last-token representations at ``layer``, extracted by :func:`fastspec.extract`
    as :func:`fastspec.ablate` does (``basis_max_length`` tokens per text, default: the
    model's context; ``basis_batch_size`` texts per forward, default 16). ``n_basis`` caps the
    number of texts: at most that many, drawn without replacement with the seeded generator
    of ``fastspec.models.data.sample_texts`` (``basis_seed``, default 0), in file order;
    all of them when the file holds fewer or ``n_basis`` is not given.
  * a saved accumulator, ``.pt``/``.pth``: ``torch.save(acc.state_dict(), FILE)`` of the
    :class:`fastspec.CovarianceAccumulator` of that layer (e.g. from
    ``fastspec.extract(model, tok, texts, layers=[l])[l]``); its mean and eigenvectors are
    used as they are, and its width must be the model's.

- ``layer`` (default −1): as in :func:`fastspec.extract`: 0 is the embedding output, l the
  output of block l, −1 the last layer, after the final norm as Hugging Face's
  ``hidden_states[-1]`` unless ``final_norm=False`` (``final_norm=True``/``False``; default:
  after it where the model has one, see ``fastspec.models.layout.resolve_final_norm``).
- ``k`` (default 10): the number of eigenvectors, at most min(n − 1, d) for n basis samples
  (eigenvectors of fastspec's float64 covariance, centred, ddof=1).
- ``mode`` (default ``retain``): ``retain`` projects h on μ + U_k U_kᵀ (h − μ), ``remove``
  takes the projection away, h − U_k U_kᵀ (h − μ) (μ: the basis mean).
- ``positions``: only ``all``. Every position of every sequence lm-eval runs is projected,
  as :func:`fastspec.ablate` does with ``positions="all"``. fastspec's ``"scored"`` (only the
  positions whose predictions are scored) does not map onto lm-eval's calls: the model sees
  padded batches alone, and lm-eval's logits cache runs one sequence for several requests
  whose scored positions differ.

The hook is in place only while lm-eval calls the model (its ``_model_call`` and
``_model_generate``), so log-likelihood, rolling and generation tasks are all ablated, and
``self.model`` is the unchanged model outside them. Under data parallelism every process
computes the same basis from the whole file.

Multiple-choice scores: lm-eval's ``acc_norm`` divides each choice's summed log-likelihood by
the choice's length in *characters* — ``completion_len = np.array([float(len(i)) for i in
choices])`` and ``pred_norm = np.argmax(lls / completion_len)`` in
``ConfigurableTask.process_results`` (lm_eval/api/task.py, 0.4.13) — the choice as
``doc_to_choice`` gives it, without the target delimiter; ``acc_bytes`` divides by its UTF-8
bytes. ``fastspec.analyses.ablation.accuracies`` computes both the same way.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Sequence

import torch

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("fastspec.integrations.lm_eval needs lm-eval-harness: pip install 'fastspec[lm-eval]'") from err

from ..analyses.ablation import MODES, Projector, eigenbasis
from ..models.data import TEXT_SUFFIXES, read_texts, sample_texts
from ..spectral import CovarianceAccumulator

__all__ = ["NAME", "AblatedLM", "main"]

NAME = "fastspec-ablate"
ACCUMULATOR_SUFFIXES = (".pt", ".pth")
log = logging.getLogger(__name__)


def _integer(value: Any) -> int | None:
    """``value`` as an int, or None when it is not a whole number. lm-eval's command line
    reads ``layer=-1`` as the float −1.0 (``"-1".isnumeric()`` is false), so whole floats count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _positive_int(value: Any, name: str, *, optional: bool = False) -> int | None:
    if optional and value is None:
        return None
    number = _integer(value)
    if number is None or number < 1:
        raise ValueError(f"{NAME}: {name} must be a positive integer, got {value!r}")
    return number


def load_basis(path: str | os.PathLike, *, n_basis: int | None = None, seed: int = 0,
               text_field: str = "text") -> list[str] | CovarianceAccumulator:
    """The ``basis=FILE`` of the model type: its texts (at most ``n_basis``, see the module
    docstring) or the :class:`CovarianceAccumulator` saved in it."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in TEXT_SUFFIXES + ACCUMULATOR_SUFFIXES:
        raise ValueError(f"{NAME}: basis={path}: unknown file type {suffix!r}; expected texts "
                         f"({', '.join(TEXT_SUFFIXES)}) or a saved CovarianceAccumulator state_dict "
                         f"({', '.join(ACCUMULATOR_SUFFIXES)})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{NAME}: basis={path}: no such file")
    if suffix in TEXT_SUFFIXES:
        texts = read_texts(path, text_field=text_field)
        if n_basis is not None and n_basis < len(texts):
            texts = sample_texts(texts, n_basis, seed=seed, source=path)
        return texts
    if n_basis is not None:
        raise ValueError(f"{NAME}: n_basis caps the texts of a text file; basis={path} is a saved accumulator")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not a checkpoint
        raise ValueError(f"{NAME}: basis={path}: cannot read it as a torch.save file: {err}") from err
    if not isinstance(state, dict) or not isinstance(state.get("dim"), int):
        raise ValueError(f"{NAME}: basis={path}: not a CovarianceAccumulator state_dict "
                         "(save one with torch.save(acc.state_dict(), path))")
    acc = CovarianceAccumulator(state["dim"])
    try:
        acc.load_state_dict(state)  # a state with folds holds the pooled statistics too
    except (ValueError, TypeError) as err:
        raise ValueError(f"{NAME}: basis={path}: {err}") from err
    return acc


class AblatedLM(HFLM):
    """lm-eval's ``HFLM`` with the top-k eigenvectors of one layer's covariance retained or removed.

    Registered in lm-eval as ``fastspec-ablate`` when this module is imported (the paper's
    Table 2 ablation on any lm-eval task). The arguments are the ``model_args`` of the
    command line (``pretrained=DIR,layer=-1,k=10,basis=texts.txt``); lm-eval's command line
    reads whole numbers as floats, so ``layer=-1.0`` counts as -1. The projection hooks the
    layer only while lm-eval calls the model, so log-likelihood, rolling and generation
    tasks are all ablated. Every argument that needs no model is checked before the model
    loads.

    Parameters
    ----------
    pretrained : str or transformers.PreTrainedModel
        The causal language model, as lm-eval's ``hf`` model takes it (a directory or hub
        id), which also loads its tokenizer.
    basis : str or os.PathLike
        Required: where the eigenvectors come from. A text file (``.txt``, a text per
        non-blank line; ``.jsonl``, the ``text_field`` of each line; ``.parquet``, that
        column): the covariance of the texts' last-token representations at ``layer``,
        extracted as `fastspec.ablate` does. Or a saved accumulator (``.pt``/``.pth``:
        ``torch.save(acc.state_dict(), FILE)`` of that layer's
        `fastspec.CovarianceAccumulator`), whose width must be the model's.
    layer : int, default -1
        0 the embedding output, l the output of block l, -1 the last layer (after the final
        norm, as Hugging Face's ``hidden_states[-1]``, unless ``final_norm=False``).
    k : int, default 10
        The number of eigenvectors, at most min(n - 1, d) for n basis samples.
    mode : {'retain', 'remove'}, default 'retain'
        ``retain`` projects h on μ + U_k U_kᵀ (h - μ); ``remove`` takes the projection
        away, h - U_k U_kᵀ (h - μ) (μ: the basis mean).
    n_basis : int, optional
        At most this many texts of a text basis, drawn without replacement with a seeded
        generator, in file order (all when the file holds fewer, or when not given).
    basis_seed : int, default 0
        The seed of that draw.
    text_field : str, default 'text'
        The field or column of the text in a ``.jsonl``/``.parquet`` basis.
    final_norm : bool, optional
        At the last layer, project after the model's final norm (default where it has one)
        or before it (False).
    basis_max_length : int, optional
        Tokens per basis text (default: the model's context).
    basis_batch_size : int, default 16
        Basis texts per forward pass.
    positions : {'all'}, default 'all'
        Only ``'all'``: every position of every sequence lm-eval runs is projected (lm-eval's
        calls see padded batches alone, so the scored positions are not known).
    **kwargs
        Every other argument of lm-eval's ``HFLM`` (``device``, ``batch_size``, ``dtype``, …).

    Attributes
    ----------
    projector : fastspec.analyses.ablation.Projector
        The hook and its basis (``.mean``, ``.basis``: d×k).
    basis_samples : int
        The number of samples of the basis covariance.

    Raises
    ------
    ValueError
        No ``basis``, an unknown file type, ``mode`` or ``positions``, a non-integer
        ``layer`` or ``k``, a model that is not a causal LM, or a basis that does not fit
        the model, each naming ``fastspec-ablate`` and the argument.
    FileNotFoundError
        ``basis`` does not exist.

    See Also
    --------
    fastspec.ablate : The same ablation on multiple-choice items, without lm-eval.

    Examples
    --------
    Importing the module registers the model type:

    >>> from lm_eval.api.registry import get_model
    >>> from fastspec.integrations.lm_eval import AblatedLM, NAME
    >>> NAME, get_model(NAME) is AblatedLM
    ('fastspec-ablate', True)
    >>> AblatedLM("model-dir", basis="texts.txt", mode="keep")  # checked before any model loads
    Traceback (most recent call last):
    ...
    ValueError: fastspec-ablate: mode must be one of retain, remove, got 'keep'

    From Python, with a causal LM in ``model-dir`` and basis texts in ``texts.txt``::

        import lm_eval
        lm_eval.simple_evaluate(model="fastspec-ablate", tasks=["sciq"],
                                model_args="pretrained=model-dir,layer=-1,k=10,basis=texts.txt")
    """

    def __init__(self, pretrained: Any, basis: str | os.PathLike | None = None, layer: int = -1, k: int = 10,
                 mode: str = "retain", n_basis: int | None = None, basis_seed: int = 0, text_field: str = "text",
                 final_norm: bool | None = None, basis_max_length: int | None = None, basis_batch_size: int = 16,
                 positions: str = "all", **kwargs: Any):
        # Everything that needs no model is checked before the model loads.
        if basis is None:
            raise ValueError(f"{NAME} needs basis=FILE: texts ({', '.join(TEXT_SUFFIXES)}) or a saved "
                             f"CovarianceAccumulator ({', '.join(ACCUMULATOR_SUFFIXES)})")
        if not isinstance(basis, (str, os.PathLike)):
            raise ValueError(f"{NAME}: basis must be a file path, got {basis!r} (quote it in model_args: basis='...')")
        if mode not in MODES:
            raise ValueError(f"{NAME}: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if positions != "all":
            raise ValueError(f"{NAME}: positions={positions!r} is not supported: lm-eval's model calls see "
                             "padded batches only, so every position is projected (positions=all)")
        if _integer(layer) is None:
            raise ValueError(f"{NAME}: layer must be an integer (0: embeddings, l: block l, -1: last), got {layer!r}")
        layer = _integer(layer)
        if final_norm is not None and not isinstance(final_norm, bool):
            raise ValueError(f"{NAME}: final_norm must be true or false, got {final_norm!r}")
        k = _positive_int(k, "k")
        n_basis = _positive_int(n_basis, "n_basis", optional=True)
        basis_max_length = _positive_int(basis_max_length, "basis_max_length", optional=True)
        basis_batch_size = _positive_int(basis_batch_size, "basis_batch_size")
        seed = _integer(basis_seed)
        if seed is None or seed < 0:
            raise ValueError(f"{NAME}: basis_seed must be a non-negative integer, got {basis_seed!r}")
        source = load_basis(basis, n_basis=n_basis, seed=seed, text_field=text_field)

        super().__init__(pretrained=pretrained, **kwargs)
        if self.backend != "causal":
            raise ValueError(f"{NAME} ablates causal language models; {pretrained!r} loads as {self.backend}")
        try:
            self.projector = Projector(self.model, layer, final_norm=final_norm)
        except ValueError as err:
            raise ValueError(f"{NAME}: layer={layer}: {err}") from err
        try:
            mean, vectors, acc = eigenbasis(self.model, self.tokenizer, source, self.projector.layer, k,
                                            final_norm=final_norm, max_length=basis_max_length,
                                            batch_size=basis_batch_size)
        except ValueError as err:
            raise ValueError(f"{NAME}: basis={os.fspath(basis)}: {err}") from err
        self.projector.set(mean, vectors, mode)
        self.basis_samples = acc.n_samples
        self._fastspec_info = {"fastspec_layer": self.projector.layer, "fastspec_k": k, "fastspec_mode": mode,
                               "fastspec_final_norm": self.projector.final_norm,
                               "fastspec_basis": os.fspath(basis), "fastspec_basis_samples": acc.n_samples}
        log.info("%s: %s the top %d eigenvectors of layer %d (basis: %d samples of %s)", NAME, mode, k,
                 self.projector.layer, acc.n_samples, os.fspath(basis))

    def _model_call(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with self.projector:
            return super()._model_call(*args, **kwargs)

    def _model_generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.projector:
            return super()._model_generate(*args, **kwargs)

    def get_model_info(self) -> dict:
        """What lm-eval records of the model, with the ablation's settings.

        Returns
        -------
        dict
            ``HFLM``'s model information, and ``fastspec_layer``, ``fastspec_k``,
            ``fastspec_mode``, ``fastspec_final_norm``, ``fastspec_basis`` and
            ``fastspec_basis_samples``: in the results' ``config`` of every run.
        """
        return {**super().get_model_info(), **self._fastspec_info}


if __name__ != "__main__":  # see the end of the module
    register_model(NAME)(AblatedLM)


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's command line (``lm_eval …``) with ``fastspec-ablate`` registered.

    lm-eval's own ``lm_eval`` command finds models only in a fixed table, so it cannot know
    ``fastspec-ablate``; ``fastspec lm-eval`` and ``python -m fastspec.integrations.lm_eval``
    run this, which hands the command line to lm-eval's ``cli_evaluate`` unchanged: every
    option and subcommand works as after ``lm_eval``.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments, in place of ``sys.argv[1:]`` (which they replace while lm-eval runs).

    Examples
    --------
    On the command line (``fastspec lm-eval`` is this function)::

        fastspec lm-eval --model fastspec-ablate \\
            --model_args pretrained=DIR,layer=-1,k=10,mode=retain,basis=texts.txt,n_basis=1000 \\
            --tasks sciq --device cuda:0 --batch_size 16

    or from Python, with the same arguments::

        from fastspec.integrations.lm_eval import main
        main(["--model", "fastspec-ablate", "--model_args", "pretrained=DIR,k=10,basis=texts.txt",
              "--tasks", "sciq"])
    """
    from lm_eval.__main__ import cli_evaluate

    if argv is None:
        cli_evaluate()
        return
    saved = sys.argv
    sys.argv = [sys.argv[0], *argv]  # lm-eval's parser reads sys.argv alone
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    # Run as ``python -m``, this file is ``__main__`` and registers nothing (a second class
    # under the same name would clash in lm-eval's registry); the module under its own name
    # registers AblatedLM, and runs lm-eval's command line.
    from fastspec.integrations.lm_eval import main as _main

    _main()
