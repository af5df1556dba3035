"""Equal tuning (torch_layerlr.train.sweep), the zoo's lr_scale, the `train --lr-sweep` command and the deep MLPs of
the depth-transfer benchmark."""

import json
import math

import pytest
import torch

from torch_layerlr.cli import main
from torch_layerlr.data import channel_stats, normalize, split_train, synthetic_images
from torch_layerlr.models import DeepMLP
from torch_layerlr.models.vision import build_model
from torch_layerlr.train import STRATEGIES, Setup
from torch_layerlr.train.sweep import SWEEP_FACTORS, choose, parse_factors, sweep_table, tune


def fake_run(scale, seed, val=None, diverged=False):
    return dict(lr_scale=scale, seed=seed, diverged=diverged, epochs=[dict(val_acc=val, test_acc=val)])


def test_tune_picks_the_best_validation_factor_then_runs_the_seeds_there():
    calls = []
    val = {1 / 9: 50.0, 1 / 3: 70.0, 1.0: 80.0, 3.0: 85.0, 9.0: 10.0}

    def train(scale, seed):
        calls.append((scale, seed))
        return fake_run(scale, seed, val[min(val, key=lambda f: abs(f - scale))] + seed / 100, diverged=scale == 9.0)

    t = tune(train, SWEEP_FACTORS, seeds=3)
    assert t.chosen == pytest.approx(3.0)
    assert [r["seed"] for r in t.runs] == [0, 1, 2] and all(r["lr_scale"] == t.chosen for r in t.runs)
    assert len(calls) == 5 + 2  # seed 0 of the chosen factor is its sweep run
    again = []
    t2 = tune(lambda s, seed: again.append(s), SWEEP_FACTORS, 3, previous=t.sweep + t.runs)
    assert not again and t2.chosen == t.chosen
    assert "**85.00**" in sweep_table({"x": t}) and "div." in sweep_table({"x": t})


def test_choose_ties_and_divergence():
    assert choose([fake_run(1 / 3, 0, 80.0), fake_run(1.0, 0, 80.0), fake_run(3.0, 0, 80.0)]) == 1.0
    assert choose([fake_run(1 / 9, 0, 80.0), fake_run(3.0, 0, 80.0)]) == 3.0  # |log 3| < |log 1/9|
    assert choose([fake_run(1.0, 0, 99.0, diverged=True), fake_run(3.0, 0, 20.0)]) == 3.0
    assert choose([fake_run(1.0, 0, math.nan), fake_run(3.0, 0, 20.0)]) == 3.0
    with pytest.raises(ValueError, match="empty"):
        choose([])


def test_parse_factors():
    assert parse_factors("0.5, 1,2") == (0.5, 1.0, 2.0)
    for bad in ("", "a", "1,1", "0,1", "-1", "inf"):
        with pytest.raises(ValueError, match="factor"):
            parse_factors(bad)
    with pytest.raises(ValueError, match="seeds"):
        tune(lambda s, seed: None, (1.0,), 0)


@pytest.fixture(scope="module")
def tiny():
    data = split_train(synthetic_images(num_train=320, num_test=80, image_size=8, seed=0), 0.25, seed=0)
    mean, std = channel_stats(data.train_images)
    return data, normalize(data.train_images, mean, std)


def _lrs(name, data, x, scale):
    torch.manual_seed(0)
    model = build_model("mlp", 1, 8, data.num_classes)
    opt, _ = STRATEGIES[name].build(model, Setup(10, 2, x, data.train_labels, data.num_classes, scale))
    return [(g["lr"], g.get("initial_lr")) for g in opt.param_groups]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_lr_scale_multiplies_every_rate_a_strategy_sets(name, tiny):
    data, x = tiny
    for (lr1, init1), (lr3, init3) in zip(_lrs(name, data, x, 1.0), _lrs(name, data, x, 3.0)):
        assert lr3 == pytest.approx(3 * lr1, rel=1e-6, abs=1e-12)
        if init1 is not None and not name.startswith("sharpness-"):  # their placeholder lr is not a rate
            assert init3 == pytest.approx(3 * init1, rel=1e-12)


def test_train_command_lr_sweep(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["train", "--dataset", "synthetic", "--optimizer", "fixed-sgd", "--epochs", "1", "--seeds", "2",
            "--lr-sweep", "0.5,1,2", "--out", str(out)]
    main(args)
    runs = json.loads((out / "results.json").read_text())["runs"]
    sweep = {r["lr_scale"]: r["epochs"][-1]["val_acc"] for r in runs if r["seed"] == 0}
    assert sorted(sweep) == [0.5, 1.0, 2.0]
    best = max(sweep.values())
    chosen = min((f for f, v in sweep.items() if v == best), key=lambda f: abs(math.log(f)))
    assert [(r["lr_scale"], r["seed"]) for r in runs if r["seed"] == 1] == [(chosen, 1)]
    assert f"x{chosen:.3g}" in (out / "sweep.md").read_text()
    capsys.readouterr()
    main(args)
    assert "0 sweep runs" in capsys.readouterr().out
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4
    with pytest.raises(SystemExit, match="--lr-sweep"):
        main(args[:-4] + ["--lr-sweep", "0,1", "--out", str(out)])


def test_eval_every_evaluates_only_the_chosen_epochs(tiny):
    from torch_layerlr.train import RunSpec, train_run

    data, _ = tiny
    mean, std = channel_stats(data.train_images)
    every = train_run(STRATEGIES["fixed-sgd"], RunSpec(data, "mlp", 3, 64), 0, mean, std)
    sparse = train_run(STRATEGIES["fixed-sgd"], RunSpec(data, "mlp", 3, 64, eval_every=2), 0, mean, std)
    assert math.isnan(sparse["epochs"][0]["val_acc"]) and math.isnan(sparse["epochs"][0]["test_loss"])
    for e in (1, 2):  # epoch 2 (a multiple of 2) and the last
        for key in ("val_acc", "val_loss", "test_acc", "test_loss", "train_loss"):
            assert sparse["epochs"][e][key] == every["epochs"][e][key]
    with pytest.raises(ValueError, match="eval_every"):
        RunSpec(data, "mlp", 1, eval_every=0)


def test_deep_mlp_against_a_hand_forward():
    torch.manual_seed(0)
    x = torch.randn(5, 1, 4, 4)
    for residual in (False, True):
        net = DeepMLP(1, 4, 3, depth=5, residual=residual, width=6)
        assert sum(p.numel() for p in net.parameters()) == (16 * 6 + 6) + 3 * (6 * 6 + 6) + (6 * 3 + 3)
        h = x.flatten(1) @ net.inp.weight.T + net.inp.bias
        for layer in net.hidden:
            branch = h.relu() @ layer.weight.T + layer.bias
            h = h + branch / math.sqrt(3) if residual else branch
        expected = h.relu() @ net.head.weight.T + net.head.bias
        torch.testing.assert_close(net(x), expected)


def test_build_model_deep_names():
    assert isinstance(build_model("deep-mlp-8", 1, 28, 10), DeepMLP)
    net = build_model("res-mlp-3", 1, 28, 10)
    assert net.residual and len(net.hidden) == 1
    for bad in ("deep-mlp-1", "deep-mlp-x", "res-mlp-"):
        with pytest.raises(ValueError):
            build_model(bad, 1, 28, 10)
