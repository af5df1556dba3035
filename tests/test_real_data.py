"""One epoch on the real Fashion-MNIST through ``python -m torch_layerlr train`` (skipped where the dataset is not
installed; CI installs Debian's ``dataset-fashion-mnist``).

The bounds are far below what one epoch of these strategies reaches (about 85% for SGDR, 81% for DALS) and far
above chance (10%): they catch a broken loader, normalization or training loop, not a few points of accuracy.
"""

import json

import pytest

from torch_layerlr.cli import main
from torch_layerlr.data import fashion_mnist


def _have_fashion_mnist() -> bool:
    try:
        fashion_mnist()
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _have_fashion_mnist(), reason="Fashion-MNIST is not installed (dataset-fashion-mnist)")
def test_one_epoch_on_fashion_mnist(tmp_path):
    main(["train", "--dataset", "fashion-mnist", "--model", "mlp", "--optimizer", "sgdr,dals", "--epochs", "1",
          "--seeds", "1", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["train"] == 54000 and results["config"]["test"] == 10000
    for run in results["runs"]:
        epoch = run["epochs"][0]
        assert not run["diverged"]
        assert epoch["test_acc"] > 75.0 and epoch["val_acc"] > 75.0, run["strategy"]
        assert epoch["train_loss"] < 1.0, run["strategy"]
