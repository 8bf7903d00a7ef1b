import numpy as np
import pytest
import torch
from reference import make_activations


@pytest.fixture
def power_law_acts() -> torch.Tensor:
    return make_activations(3000, np.arange(1, 257, dtype=np.float64) ** -1.0, seed=1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    reason = "no CUDA device visible" if torch.version.cuda else f"torch {torch.__version__} has no CUDA"
    for item in items:
        # The marker, not item.keywords: keywords also hold the names of parent directories,
        # so a checkout in a folder named "cuda" would skip every test.
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A byte-level BPE trained here on made-up text, saved as a Hugging Face tokenizer
    directory (nothing downloaded)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away", "question", "answer", "paris", "france"]
    texts = [" ".join(words[i] for i in rng.integers(0, len(words), size=rng.integers(3, 12))) for _ in range(200)]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=None))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    out = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(str(out))
    return out, texts
