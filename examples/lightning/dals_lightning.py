"""Lightning with this package's optimizers: DALS fed by training_step's loss, LAMB under a torch scheduler.

With automatic optimization Lightning calls ``optimizer.step(closure)``; the closure runs ``training_step`` and
the backward pass and returns the loss, and DALS feeds the loss it gets from its closure to the phase detector.
So ``configure_optimizers`` only builds the optimizer: nothing has to call ``update_phase``.  DALS keeps its own
warmup+cosine here; with a Lightning ``lr_scheduler`` on top, build it with ``schedule=False`` instead.

    python examples/lightning/dals_lightning.py --optimizer dals --steps 200
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torch_layerlr.optim import DALS, LAMB
from torch_layerlr.schedules import WarmupCosine


class Classifier(L.LightningModule):
    """A small MLP classifier whose optimizer is DALS or LAMB."""

    def __init__(self, optimizer: str = "dals", total_steps: int = 100, in_dim: int = 16, classes: int = 4):
        super().__init__()
        if optimizer not in ("dals", "lamb"):
            raise ValueError(f"optimizer must be 'dals' or 'lamb', got {optimizer!r}")
        self.optimizer_name = optimizer
        self.total_steps = total_steps
        self.net = nn.Sequential(nn.Linear(in_dim, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, classes))
        self.train_losses: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        self.train_losses.append(loss.item())
        return loss  # Lightning's closure returns it to optimizer.step(closure): DALS's phase detector gets it

    def configure_optimizers(self):
        if self.optimizer_name == "dals":
            # Depths from the first forward pass of self.net; the built-in warmup+cosine over total_steps.
            return DALS(self.net, total_steps=self.total_steps)
        opt = LAMB(self.parameters(), lr=1e-2, weight_decay=0.01)
        sched = WarmupCosine(opt, total_steps=self.total_steps, warmup_steps=self.total_steps // 10)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def synthetic_loader(n: int = 512, in_dim: int = 16, classes: int = 4, batch_size: int = 64, seed: int = 0):
    """Gaussian blobs, one per class: a task small enough for a CPU in seconds."""
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(classes, in_dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, in_dim, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=g)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=("dals", "lamb"), default="dals")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    model = Classifier(args.optimizer, total_steps=args.steps)
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, synthetic_loader())
    print(f"{args.optimizer}: first loss {model.train_losses[0]:.4f}, last loss {model.train_losses[-1]:.4f}")


if __name__ == "__main__":
    main()
