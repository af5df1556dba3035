"""Training frameworks: a tiny randomly initialised BERT through the Hugging Face Trainer (DALS fed by
DALSLossCallback, LAMB against a hand-written loop) and the Lightning example (DALS fed by training_step's loss
through Lightning's closure, LAMB under WarmupCosine against a hand-written loop). Each test needs its framework
and is skipped without it; .ci/jobs/25-integrations.sh installs both and runs this file."""

from __future__ import annotations

import copy
import importlib.util
import inspect
import math
import os

import pytest
import torch

from torch_layerlr.optim import DALS, LAMB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _framework(name):
    """The framework module; the test is skipped without it, unless LAYERLR_REQUIRE_INTEGRATIONS=1 (the CI job
    that installs the frameworks), where a failed import fails the test."""
    if os.environ.get("LAYERLR_REQUIRE_INTEGRATIONS") == "1":
        return importlib.import_module(name)
    return pytest.importorskip(name)


def _schedule_off() -> dict:
    """DALS(schedule=False) where this DALS has it: the Trainer's scheduler alone sets the lr."""
    return {"schedule": False} if "schedule" in inspect.signature(DALS).parameters else {}


class RecordingDALS(DALS):
    """DALS that records each loss it is fed and, at each step, how many losses it had been fed by then."""

    def __init__(self, *args, **kwargs):
        self.fed: list[float] = []
        self.fed_at_step: list[int] = []
        super().__init__(*args, **kwargs)

    def update_phase(self, loss):
        self.fed.append(float(loss))
        super().update_phase(loss)

    def step(self, closure=None, **kwargs):
        self.fed_at_step.append(len(self.fed))
        return super().step(closure, **kwargs)


# ------------------------------------------------------------------------------------------------
# Hugging Face Trainer
# ------------------------------------------------------------------------------------------------
def _tiny_bert(seed=0):
    transformers = _framework("transformers")
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=2,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config)


class _Examples(torch.utils.data.Dataset):
    """Random token sequences with labels, HF-style dict samples."""

    def __init__(self, n=8, length=10, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 40, (n, length), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}

    def batch(self):
        return {"input_ids": self.ids, "attention_mask": torch.ones_like(self.ids), "labels": self.labels}


def _hf_args(tmp_path, steps, batch_size=8):
    transformers = _framework("transformers")
    return transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=1e-2,
        lr_scheduler_type="constant", max_grad_norm=0.0, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0)


def test_hf_trainer_feeds_dals_the_loss_of_every_step(tmp_path):
    transformers = _framework("transformers")
    from torch_layerlr.integrations.huggingface import DALSLossCallback

    model = _tiny_bert()
    opt = RecordingDALS(model, lr=0.05, **_schedule_off())
    callback = DALSLossCallback()
    trainer = transformers.Trainer(model=model, args=_hf_args(tmp_path, steps=6, batch_size=4),
                                   train_dataset=_Examples(), optimizers=(opt, None), callbacks=[callback])
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 6 and callback.losses_fed == 6
    # each step's loss, as the Trainer logged it, reached DALS before that step
    assert opt.fed == pytest.approx(logged, rel=1e-6)
    assert opt.fed_at_step == [1, 2, 3, 4, 5, 6]
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert not model._forward_hooks  # the recording hook is gone after training


def test_hf_callback_refuses_other_optimizers(tmp_path):
    transformers = _framework("transformers")
    from torch_layerlr.integrations.huggingface import DALSLossCallback

    model = _tiny_bert()
    trainer = transformers.Trainer(model=model, args=_hf_args(tmp_path, steps=1), train_dataset=_Examples(),
                                   optimizers=(LAMB(model.parameters(), lr=1e-3), None),
                                   callbacks=[DALSLossCallback()])
    with pytest.raises(TypeError, match="DALS"):
        trainer.train()


def test_hf_trainer_lamb_matches_a_plain_loop(tmp_path):
    """Trainer + LAMB (constant lr, no clipping, the whole dataset as one batch) == the same LAMB stepped by a
    hand-written loop on the same batch."""
    transformers = _framework("transformers")

    model = _tiny_bert(seed=1)
    twin = copy.deepcopy(model)
    data = _Examples()
    trainer = transformers.Trainer(model=model, args=_hf_args(tmp_path, steps=4), train_dataset=data,
                                   optimizers=(LAMB(model.parameters(), lr=1e-2, weight_decay=0.01), None))
    trainer.train()

    opt = LAMB(twin.parameters(), lr=1e-2, weight_decay=0.01)
    twin.train()
    for _ in range(4):
        opt.zero_grad()
        twin(**data.batch()).loss.backward()
        opt.step()
    moved = sum(float((p - q).detach().abs().max()) for p, q in zip(twin.parameters(),
                                                                    _tiny_bert(seed=1).parameters()))
    assert moved > 1e-3
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p.detach(), q.detach(), rtol=1e-4, atol=1e-6), name


# ------------------------------------------------------------------------------------------------
# Lightning (examples/lightning/dals_lightning.py)
# ------------------------------------------------------------------------------------------------
def _example():
    _framework("lightning")
    path = os.path.join(ROOT, "examples", "lightning", "dals_lightning.py")
    spec = importlib.util.spec_from_file_location("dals_lightning", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fit(module, example, steps, tmp_path):
    import lightning as L

    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, example.synthetic_loader(seed=0))
    return trainer


def test_lightning_dals_gets_training_step_loss(tmp_path, monkeypatch):
    example = _example()
    fed = []
    original = DALS._advance  # where step() hands the closure's loss to the phase detector

    def recording(self, loss, found_inf):
        if loss is not None:
            fed.append(float(loss))
        return original(self, loss, found_inf)

    monkeypatch.setattr(DALS, "_advance", recording)
    torch.manual_seed(0)
    module = example.Classifier("dals", total_steps=12)
    before = [p.detach().clone() for p in module.parameters()]
    _fit(module, example, 12, tmp_path)
    assert len(module.train_losses) == 12
    assert fed == module.train_losses  # every training_step loss, through Lightning's closure
    assert any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def test_lightning_lamb_with_warmup_cosine_matches_a_plain_loop(tmp_path):
    example = _example()
    torch.manual_seed(0)
    module = example.Classifier("lamb", total_steps=10)
    twin = copy.deepcopy(module)
    lrs = []

    class RecordLR(__import__("lightning").Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            lrs.append(optimizer.param_groups[0]["lr"])

    import lightning as L

    # 8 steps (one epoch of the example's loader) of a 10-step schedule
    trainer = L.Trainer(max_steps=8, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                        callbacks=[RecordLR()])
    trainer.fit(module, example.synthetic_loader(seed=0))

    # the schedule: warmup 1 step from 0, then cosine over 9 (WarmupCosine's formula written out)
    want = [t / 1 if t < 1 else 0.5 * (1 + math.cos(math.pi * (t - 1) / 9)) for t in range(8)]
    assert lrs == pytest.approx([1e-2 * w for w in want], rel=1e-12, abs=1e-15)

    opt = LAMB(twin.parameters(), lr=1e-2, weight_decay=0.01)
    lr_at = iter([1e-2 * w for w in want])
    for x, y in example.synthetic_loader(seed=0):
        opt.param_groups[0]["lr"] = next(lr_at)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(twin(x), y).backward()
        opt.step()
    for p, q in zip(module.parameters(), twin.parameters()):
        assert torch.allclose(p.detach(), q.detach(), rtol=1e-5, atol=1e-7)
