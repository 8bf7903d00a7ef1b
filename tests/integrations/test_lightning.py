"""fastspec.integrations.lightning.GeometryCallback in a real lightning.pytorch.Trainer.fit of a tiny
GPT-NeoX: its points equal fastspec.trace of the model as it was at those steps, its metrics
reach the Trainer's logger, and it measures at checkpoint saves by default."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from hf_worker import FIT_RANGE, PROBE, corpus_blocks
from tinylm import save_model

import fastspec

L = pytest.importorskip("lightning.pytorch")
from fastspec.integrations.lightning import GeometryCallback  # noqa: E402

COLS = ["step", "layer", "rankme", "rankme_sv", "alpha"]
# Lightning 2.6 calls torch's deprecated LeafSpec check, which torch 2.13 warns about: not the callback's.
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")


class Module(L.LightningModule):
    def __init__(self, model_dir: str, snapshots: dict | None = None):
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(model_dir).train()  # from_pretrained gives eval mode
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.snapshots = snapshots

    def training_step(self, batch, batch_idx):
        return self.model(**batch).loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.snapshots is not None:  # the weights after each optimiser step, to trace afterwards
            self.snapshots[self.trainer.global_step] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model(str(tmp_path_factory.mktemp("pl") / "model"), "gpt_neox", layers=2, hidden=32)


def fit(module, tmp_path, callback, **trainer_kwargs):
    loader = torch.utils.data.DataLoader(corpus_blocks(module.tokenizer, copies=2), batch_size=8, shuffle=False)
    trainer = L.Trainer(max_steps=8, accelerator="cpu", devices=1, logger=L.loggers.CSVLogger(tmp_path / "logs"),
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, **{"enable_checkpointing": False, "callbacks": [callback],
                                                      **trainer_kwargs})
    trainer.fit(module, loader)
    return trainer


def test_points_equal_a_trace_of_the_weights_at_those_steps_and_reach_the_logger(model_dir, tmp_path):
    snapshots = {}
    module = Module(model_dir, snapshots)
    snapshots[0] = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    cb = GeometryCallback(PROBE, batch_size=8, fit_range=FIT_RANGE, every_n_steps=4, out_dir=tmp_path / "geo",
                          collapse=None)
    trainer = fit(module, tmp_path, cb)
    got = fastspec.load_trace(tmp_path / "geo")
    assert got["step"].drop_duplicates().tolist() == [0, 4, 8]
    dirs = []
    for step in (0, 4, 8):
        module.model.load_state_dict(snapshots[step])
        module.model.save_pretrained(tmp_path / f"step{step}")
        module.tokenizer.save_pretrained(tmp_path / f"step{step}")
        dirs.append(tmp_path / f"step{step}")
    after = fastspec.trace(dirs, PROBE, tmp_path / "after", batch_size=8, fit_range=FIT_RANGE, progress=False)
    np.testing.assert_allclose(got[COLS].to_numpy(float), after[COLS].to_numpy(float), rtol=1e-5, atol=1e-9)
    logged = pd.read_csv(os.path.join(trainer.logger.log_dir, "metrics.csv"))
    rows = logged.dropna(subset=["geometry/rankme/layer_2"])
    assert rows["step"].tolist() == [0, 4, 8]
    np.testing.assert_allclose(rows["geometry/rankme/layer_2"], got[got["layer"] == 2]["rankme"], rtol=1e-12)
    assert module.model.training  # measured in eval mode, handed back in train mode


def test_by_default_it_measures_at_every_checkpoint_save(model_dir, tmp_path):
    saves = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    cb = GeometryCallback(PROBE, batch_size=8, fit_range=FIT_RANGE, out_dir=tmp_path / "geo", collapse=None)
    fit(Module(model_dir), tmp_path, cb, enable_checkpointing=True, callbacks=[cb, saves])
    got = fastspec.load_trace(tmp_path / "geo")
    assert got.drop_duplicates("step")[["step", "chosen_by"]].values.tolist() == [
        [0, "callback:start"], [3, "callback:save"], [6, "callback:save"]]
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["epoch=0-step=3.ckpt", "epoch=0-step=6.ckpt"]


def test_a_module_without_a_hugging_face_model_is_refused_by_name(tmp_path):

    class Plain(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 4)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4)), batch_size=4)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        callbacks=[GeometryCallback(PROBE, tokenizer=object())])
    with pytest.raises(TypeError, match="Plain being trained holds none"):
        trainer.fit(Plain(), loader)
