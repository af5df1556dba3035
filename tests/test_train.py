"""torch_layerlr.train: the strategy zoo, one run, the report and the ``train`` command, on small synthetic data.

Numbers are checked against independent computations written here: the schedules' closed forms, accuracy and
loss recomputed by hand, means and standard deviations from ``statistics``.
"""

import json
import math
import statistics

import pytest
import torch
from torch.nn import functional as F

from torch_layerlr.cli import main
from torch_layerlr.data import channel_stats, split_train, synthetic_images
from torch_layerlr.models.vision import build_model
from torch_layerlr.train import (STRATEGIES, RunSpec, Setup, Strategy, evaluate, parse_strategies, resolve_dataset,
                                 train_run)
from torch_layerlr.train import comparison as compare_module
from torch_layerlr.train.report import markdown_table, plot_curves, summarize


@pytest.fixture(scope="module")
def tiny():
    data = split_train(synthetic_images(num_train=320, num_test=80, image_size=8, seed=0), 0.25, seed=0)
    return data, channel_stats(data.train_images)


def setup_for(data, mean, std, steps_per_epoch=10, epochs=2):
    from torch_layerlr.data import normalize

    return Setup(steps_per_epoch, epochs, normalize(data.train_images, mean, std), data.train_labels,
                 data.num_classes)


# ---------------------------------------------------------------------------------------------------------------
# the zoo

@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_trains(name, tiny):
    data, (mean, std) = tiny
    torch.manual_seed(0)
    model = build_model("mlp", 1, 8, data.num_classes)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer, scheduler = STRATEGIES[name].build(model, setup_for(data, mean, std))
    x = (data.train_images[:32].float() / 255 - mean[0]) / std[0]
    for _ in range(3):  # DALS's first warmup step has lr 0
        loss = F.cross_entropy(model(x), data.train_labels[:32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    after = list(model.parameters())
    assert all(bool(torch.isfinite(p).all()) for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_discriminative_groups_are_top_level_children(tiny):
    data, (mean, std) = tiny
    model = build_model("convnet", 1, 8, data.num_classes)
    optimizer, _ = STRATEGIES["disc"].build(model, setup_for(data, mean, std))
    expected = [1 / 2.6] * len(list(model.features.parameters())) + [1.0] * len(list(model.classifier.parameters()))
    assert optimizer.param_groups[0]["lr_mult"] == pytest.approx(expected, rel=1e-15)


def test_stlr_discriminative_applies_the_multiplier_once(tiny):
    data, (mean, std) = tiny
    model = build_model("mlp", 1, 8, data.num_classes)
    setup = setup_for(data, mean, std, steps_per_epoch=25, epochs=4)
    optimizer, scheduler = STRATEGIES["stlr-disc"].build(model, setup)
    T, cut_frac, ratio = setup.total_steps, 0.1, 32
    cut = math.floor(T * cut_frac)
    for t in range(T + 5):
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
        p = min(1.0, max(0.0, p))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * (1 + p * (ratio - 1)) / ratio, rel=1e-12)
        optimizer.step()  # no gradients: moves nothing, keeps the scheduler's call order
        scheduler.step()
    # The multiplier stays 2.6^-(3-i) per Linear layer (weight and bias), never divided again.
    expected = [2.6 ** -(3 - i) for i in range(4) for _ in range(2)]
    assert optimizer.param_groups[0]["lr_mult"] == pytest.approx(expected, rel=1e-15)


def test_sgdr_and_dals_acc_restart_after_ten_epochs(tiny):
    data, (mean, std) = tiny
    setup = setup_for(data, mean, std, steps_per_epoch=7, epochs=3)
    _, sgdr = STRATEGIES["sgdr"].build(build_model("mlp", 1, 8, 10), setup)
    assert sgdr.T_0 == 70 and sgdr.T_mult == 2
    dals, _ = STRATEGIES["dals-acc"].build(build_model("mlp", 1, 8, 10), setup)
    assert dals.restart_steps == 70 and dals.variant == "acc"


def test_parse_strategies():
    assert [s.name for s in parse_strategies("all")] == [n for n, s in STRATEGIES.items() if s.default]
    assert {"depth-scaled", "llrd"} <= set(STRATEGIES) - {s.name for s in parse_strategies("all")}
    assert [s.name for s in parse_strategies("depth-scaled,llrd")] == ["depth-scaled", "llrd"]
    assert [s.name for s in parse_strategies("dals, sgdr")] == ["dals", "sgdr"]
    with pytest.raises(ValueError, match="unknown strategy 'sgd'.*fixed-sgd"):
        parse_strategies("sgd")
    with pytest.raises(ValueError, match="twice"):
        parse_strategies("dals,dals")
    with pytest.raises(ValueError, match="at least one"):
        parse_strategies(" , ")


# ---------------------------------------------------------------------------------------------------------------
# one run

def test_evaluate_matches_a_hand_computation(tiny):
    data, (mean, std) = tiny
    torch.manual_seed(1)
    model = build_model("mlp", 1, 8, data.num_classes)
    loss, acc = evaluate(model, data.test_images, data.test_labels, mean, std, "cpu", batch_size=7)
    x = (data.test_images.double() / 255 - mean[0]) / std[0]
    with torch.no_grad():
        logits = model.double()(x)
    assert loss == pytest.approx(float(F.cross_entropy(logits, data.test_labels)), rel=1e-5)
    assert acc == pytest.approx(100.0 * float((logits.argmax(1) == data.test_labels).double().mean()), abs=1e-9)


def test_train_run_records_and_is_deterministic(tiny):
    data, (mean, std) = tiny
    spec = RunSpec(data, "convnet", epochs=2, batch_size=64)
    a = train_run(STRATEGIES["dals"], spec, 3, mean, std)
    b = train_run(STRATEGIES["dals"], spec, 3, mean, std)
    assert a["strategy"] == "dals" and a["seed"] == 3 and not a["diverged"]
    assert [e["epoch"] for e in a["epochs"]] == [1, 2]
    steps_per_epoch = math.ceil(data.train_images.shape[0] / 64)
    assert [e["steps"] for e in a["epochs"]] == [steps_per_epoch, 2 * steps_per_epoch]
    for e in a["epochs"]:
        assert 0 < e["step_s"] <= e["wall_s"]
    timeless = lambda run: [{k: v for k, v in e.items() if not k.endswith("_s")} for e in run["epochs"]]
    assert timeless(a) == timeless(b)


def test_train_run_stops_on_divergence(tiny):
    data, (mean, std) = tiny
    blowup = Strategy("blowup", "blow-up", False, "SGD lr 1e12", lambda model, setup: (
        torch.optim.SGD(model.parameters(), lr=1e12), None))
    run = train_run(blowup, RunSpec(data, "mlp", epochs=3, batch_size=32), 0, mean, std)
    assert run["diverged"] and len(run["epochs"]) < 3


def test_run_spec_errors(tiny):
    data, _ = tiny
    with pytest.raises(ValueError, match="validation split"):
        RunSpec(synthetic_images(num_train=10, num_test=5), "mlp", 1)
    with pytest.raises(ValueError, match="epochs"):
        RunSpec(data, "mlp", 0)
    with pytest.raises(ValueError, match="batch_size"):
        RunSpec(data, "mlp", 1, batch_size=0)


# ---------------------------------------------------------------------------------------------------------------
# the report

def fake_run(name, seed, vals, tests, losses, diverged=False):
    epochs = [dict(epoch=i + 1, val_acc=v, test_acc=t, train_loss=l, wall_s=2.0 * (i + 1), step_s=0.5 * (i + 1),
                   steps=10 * (i + 1)) for i, (v, t, l) in enumerate(zip(vals, tests, losses))]
    return dict(strategy=name, seed=seed, diverged=diverged, epochs=epochs)


RUNS = [
    fake_run("sgdr", 0, [80, 90], [79, 88], [0.5, 0.3]),
    fake_run("sgdr", 1, [85, 89], [84, 87], [0.4, 0.2]),
    # Adam has the better test accuracy but the worse validation accuracy: it must not become the reference.
    fake_run("adam", 0, [70, 86], [75, 95], [0.6, 0.5]),
    fake_run("adam", 1, [71, 87], [76, 96], [0.6, 0.5]),
    fake_run("dals", 0, [60, 91], [61, 90], [0.9, 0.1]),
    fake_run("dals", 1, [62, float("nan")], [60, float("nan")], [0.9, float("nan")], diverged=True),
]


def test_summarize_against_statistics():
    rows = {r["strategy"]: r for r in summarize(RUNS, targets=(85.0, 90.0))}
    sgdr = rows["sgdr"]
    assert sgdr["test_acc"] == (statistics.fmean([88, 87]), statistics.stdev([88, 87]))
    assert sgdr["best_val_acc"] == (statistics.fmean([90, 89]), statistics.stdev([90, 89]))
    assert sgdr["train_loss"][0] == pytest.approx(0.25)
    assert sgdr["epochs_to"][85.0] == (statistics.fmean([2, 1]), 2, 2)
    assert sgdr["epochs_to"][90.0] == (2, 1, 2)
    assert sgdr["step_ms"] == pytest.approx(1e3 * (1.0 + 1.0) / 40)
    assert rows["dals"]["diverged"] == 1 and rows["dals"]["test_acc"] == (90, 0.0)


def test_markdown_table_picks_the_reference_on_validation():
    table = markdown_table(summarize(RUNS, targets=(85.0,)), targets=(85.0,))
    lines = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "reference" in lines["SGDR"]
    assert f"{95.5 - 87.5:+.2f}" in lines["Adam"]
    assert "(1/2 diverged)" in table and "Best single-LR baseline" in table and "SGDR" in table.splitlines()[-1]


def test_plot_curves_writes_a_png(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves(RUNS[:4], str(path), "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------
# the command

def test_train_command_writes_results_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", "--model", "mlp", "--optimizer", "fixed-sgd,dals", "--epochs", "1",
            "--seeds", "2", "--out", str(out)]
    main(args)
    results = json.loads((out / "results.json").read_text())
    assert sorted((r["strategy"], r["seed"]) for r in results["runs"]) == [
        ("dals", 0), ("dals", 1), ("fixed-sgd", 0), ("fixed-sgd", 1)]
    assert results["config"]["dataset"] == "synthetic" and results["config"]["epochs"] == 1
    assert (out / "curves.png").exists() and "| DALS |" in (out / "table.md").read_text()
    capsys.readouterr()
    main(args)
    assert "0 runs to do" in capsys.readouterr().out
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4


def test_train_command_rejects_unknown_strategy(tmp_path):
    with pytest.raises(SystemExit, match="--optimizer: unknown strategy 'nope'"):
        main(["train", "--dataset", "synthetic", "--optimizer", "nope", "--out", str(tmp_path)])


def test_auto_dataset_falls_back_to_synthetic(monkeypatch):
    def missing(root=None):
        raise FileNotFoundError("no Fashion-MNIST here")

    monkeypatch.setattr(compare_module, "fashion_mnist", missing)
    assert resolve_dataset("auto") == "synthetic"
    assert resolve_dataset("cifar10") == "cifar10"


def test_cifar10_needs_a_root():
    with pytest.raises(ValueError, match="data-root"):
        compare_module.load_dataset("cifar10", None)
