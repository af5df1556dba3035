"""torch_layerlr.sharpness against independent references: eigvalsh of Hessians built by
torch.autograd.functional.hessian (float64), quadratics with a known spectrum, and plain arithmetic for the
monitor's records."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from torch_layerlr.optim import LayerwiseSGD
from torch_layerlr.sharpness import SharpnessMonitor, layer_sharpness, module_groups, top_eigenvalue

F64 = torch.float64


def small_net(dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)
    x = torch.randn(32, 4, generator=g, dtype=F64).to(dtype)
    y = torch.randint(0, 3, (32,), generator=g)
    return net, lambda: F.cross_entropy(net(x), y)


def reference_hessian(net, loss_fn_of_params):
    """The full Hessian over ``net``'s parameters (registration order, flattened) by autograd.functional."""
    params = list(net.parameters())
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def f(v):
        return loss_fn_of_params([c.reshape(s) for c, s in zip(torch.split(v, sizes), shapes)])

    return torch.autograd.functional.hessian(f, flat)


def net_loss_of(net, x, y):
    names = [n for n, _ in net.named_parameters()]
    return lambda ps: F.cross_entropy(torch.func.functional_call(net, dict(zip(names, ps)), (x,)), y)


def test_top_eigenvalue_matches_eigvalsh():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(F64)
    x, y = torch.randn(32, 4, generator=g, dtype=F64), torch.randint(0, 3, (32,), generator=g)
    h = reference_hessian(net, net_loss_of(net, x, y))
    pair = top_eigenvalue(lambda: F.cross_entropy(net(x), y), list(net.parameters()), tol=1e-12)
    assert pair.converged and pair.residual <= 1e-12 * pair.value
    assert pair.value == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-10)
    # the returned vector is a unit eigenvector: H v = S v
    v = torch.cat([t.reshape(-1) for t in pair.vector])
    assert float(v.norm()) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(h @ v, pair.value * v, atol=1e-9)


def test_top_eigenvalue_is_the_algebraically_largest():
    """A quadratic whose most negative eigenvalue is the largest in magnitude: power iteration would return
    -5; Lanczos returns the largest, 2."""
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=F64))
    a = q @ torch.diag(torch.tensor([-5.0, -1.0, 0.5, 1.0, 1.5, 2.0], dtype=F64)) @ q.T
    theta = torch.randn(6, dtype=F64, requires_grad=True)
    pair = top_eigenvalue(lambda: 0.5 * theta @ a @ theta, [theta], tol=1e-12)
    assert pair.value == pytest.approx(2.0, rel=1e-12)


def test_layer_sharpness_matches_diagonal_blocks():
    g = torch.Generator().manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).to(F64)
    x, y = torch.randn(16, 3, generator=g, dtype=F64), torch.randn(16, 1, generator=g, dtype=F64)
    names = [n for n, _ in net.named_parameters()]
    h = reference_hessian(net, lambda ps: 0.5 * (torch.func.functional_call(net, dict(zip(names, ps)), (x,)) - y)
                          .pow(2).mean())
    loss_fn = lambda: 0.5 * (net(x) - y).pow(2).mean()  # noqa: E731
    groups = module_groups(net)
    assert list(groups) == ["0", "2"]
    pairs = layer_sharpness(loss_fn, groups, tol=1e-12)
    sizes = [sum(p.numel() for p in ps) for ps in groups.values()]
    start = 0
    for (name, ps), n in zip(groups.items(), sizes):
        block = h[start:start + n, start:start + n]
        start += n
        assert pairs[name].value == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-10)
        assert len(pairs[name].vector) == len(ps)
    # a list of groups gives a list; one-element blocks (the output bias) end when their space is exhausted
    single = [[p] for p in net.parameters()]
    got = layer_sharpness(loss_fn, single, tol=1e-12)
    start = 0
    for p, pair in zip(net.parameters(), got):
        block = h[start:start + p.numel(), start:start + p.numel()]
        start += p.numel()
        assert pair.value == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-10, abs=1e-14)
        assert pair.iterations <= p.numel()
    assert got[-1].iterations == 1 and got[-1].converged


def test_warm_start_and_iteration_limit():
    net, loss_fn = small_net()
    params = list(net.parameters())
    cold = top_eigenvalue(loss_fn, params, tol=1e-10)
    warm = top_eigenvalue(loss_fn, params, tol=1e-8, start=cold.vector)
    assert warm.iterations <= 2 and warm.value == pytest.approx(cold.value, rel=1e-10)
    short = top_eigenvalue(loss_fn, params, iters=2, tol=1e-12)
    assert not short.converged and short.iterations == 2 and short.value <= cold.value * (1 + 1e-12)
    other = top_eigenvalue(loss_fn, params, tol=1e-10, seed=5)
    assert other.value == pytest.approx(cold.value, rel=1e-9)


def test_float32():
    net64, loss64 = small_net(F64)
    net32, loss32 = small_net(torch.float32)
    with torch.no_grad():
        for a, b in zip(net32.parameters(), net64.parameters()):
            a.copy_(b)
    pair = top_eigenvalue(loss32, list(net32.parameters()), tol=1e-5)
    assert pair.vector[0].dtype == torch.float32
    ref = top_eigenvalue(loss64, list(net64.parameters()), tol=1e-12)
    assert pair.value == pytest.approx(ref.value, rel=1e-4)


def test_no_side_effects_on_parameters_or_grads():
    net, loss_fn = small_net()
    loss_fn().backward()
    before = [(p.detach().clone(), p.grad.clone()) for p in net.parameters()]
    top_eigenvalue(loss_fn, list(net.parameters()))
    layer_sharpness(loss_fn, module_groups(net))
    for p, (value, grad) in zip(net.parameters(), before):
        assert torch.equal(p, value) and torch.equal(p.grad, grad)


def test_bad_inputs():
    net, loss_fn = small_net()
    params = list(net.parameters())
    with pytest.raises(ValueError, match="params is empty"):
        top_eigenvalue(loss_fn, [])
    with pytest.raises(ValueError, match="iters"):
        top_eigenvalue(loss_fn, params, iters=0)
    with pytest.raises(ValueError, match="tol"):
        top_eigenvalue(loss_fn, params, tol=-1.0)
    with pytest.raises(ValueError, match="require grad"):
        top_eigenvalue(loss_fn, [torch.zeros(3, dtype=F64)])
    with pytest.raises(ValueError, match="scalar"):
        top_eigenvalue(lambda: net[0].weight.sum(0), params)
    with pytest.raises(ValueError, match="twice"):
        layer_sharpness(loss_fn, [[params[0]], [params[0], params[1]]])
    with pytest.raises(ValueError, match="single tensor"):
        layer_sharpness(loss_fn, [params[0]])
    with pytest.raises(ValueError, match="dtype and device"):
        top_eigenvalue(loss_fn, params + [torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="start"):
        top_eigenvalue(loss_fn, params, start=[torch.zeros(1)])
    with pytest.raises(ValueError, match="start"):
        top_eigenvalue(loss_fn, params, start=[torch.zeros_like(p) for p in params])
    with pytest.raises(ValueError, match="model"):
        module_groups("net")


def test_monitor_records_every_n_steps():
    net, loss_fn = small_net()
    groups = module_groups(net)
    mult = [1.0, 1.0, 0.5, 0.5, 2.0, 2.0]
    opt = LayerwiseSGD(net.parameters(), lr=0.1, lr_mult=mult)
    monitor = SharpnessMonitor(loss_fn, groups, every=3, optimizer=opt, tol=1e-10, iters=100)
    got = [monitor.step() for _ in range(7)]
    assert [r is not None for r in got] == [False, False, True, False, False, True, False]
    assert [r["step"] for r in monitor.records] == [3, 6]
    rec = monitor.records[-1]
    params = list(net.parameters())
    ref = top_eigenvalue(loss_fn, params, tol=1e-12).value
    assert rec["sharpness"] == pytest.approx(ref, rel=1e-8)
    assert rec["eta"] == 0.1 and rec["eta_s"] == pytest.approx(0.1 * ref, rel=1e-8)
    blocks = layer_sharpness(loss_fn, groups, tol=1e-12)
    for (name, pair), m in zip(blocks.items(), (1.0, 0.5, 2.0)):
        assert rec["layers"][name] == pytest.approx(pair.value, rel=1e-8)
        assert rec["layer_eta_s"][name] == pytest.approx(0.1 * m * pair.value, rel=1e-8)
    # each of the 4 rows (global + 3 layers) takes at most ``products`` steps and stops at its own tolerance
    assert rec["converged"] and rec["seconds"] > 0 and rec["products"] <= rec["hvps"] <= 4 * rec["products"]
    assert monitor.seconds == pytest.approx(sum(r["seconds"] for r in monitor.records))
    # the second measurement starts from the first's eigenvectors: the Hessian has not moved, so it is short
    assert monitor.records[1]["hvps"] < monitor.records[0]["hvps"]


def test_monitor_with_fixed_lr_and_global_only():
    net, loss_fn = small_net()
    monitor = SharpnessMonitor(loss_fn, module_groups(net), every=1, lr=0.3, per_layer=False)
    rec = monitor.step()
    assert rec["layers"] == {} and rec["eta_s"] == pytest.approx(0.3 * rec["sharpness"])
    with pytest.raises(ValueError, match="exactly one"):
        SharpnessMonitor(loss_fn, module_groups(net), every=1)
    with pytest.raises(ValueError, match="every"):
        SharpnessMonitor(loss_fn, module_groups(net), every=0, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        SharpnessMonitor(loss_fn, module_groups(net), every=1, lr=-1.0)
    with pytest.raises(ValueError, match="groups"):
        SharpnessMonitor(loss_fn, {}, every=1, lr=0.1)


def test_monitor_tracks_the_edge_of_stability():
    """GD on a quadratic 0.5 a theta^2 at lr = 1/a: eta * S = 1, the monitor's indicator, exactly."""
    theta = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    a = torch.tensor([3.0, 0.5], dtype=F64)
    opt = torch.optim.SGD([theta], lr=1 / 3)
    monitor = SharpnessMonitor(lambda: 0.5 * (a * theta * theta).sum(), {"theta": [theta]}, every=2,
                               optimizer=opt, tol=1e-12)
    for _ in range(4):
        opt.zero_grad()
        (0.5 * (a * theta * theta).sum()).backward()
        opt.step()
        monitor.step()
    assert [r["eta_s"] for r in monitor.records] == [pytest.approx(1.0, rel=1e-12)] * 2
    assert math.isclose(monitor.records[0]["layer_eta_s"]["theta"], 1.0, rel_tol=1e-12)


# ---- the training loop's monitor ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from torch_layerlr.data import channel_stats, split_train, synthetic_images

    data = split_train(synthetic_images(num_train=320, num_test=80, image_size=8, seed=0), 0.25, seed=0)
    return data, channel_stats(data.train_images)


def timeless(run):
    return [{k: v for k, v in e.items() if not k.endswith("_s")} for e in run["epochs"]]


def test_train_run_with_monitor_trains_the_same(tiny):
    from torch_layerlr.data import normalize
    from torch_layerlr.models.vision import build_model
    from torch_layerlr.train import STRATEGIES, RunSpec, train_run
    from torch_layerlr.sharpness import MONITOR_ITERS
    from torch_layerlr.train.loop import SHARPNESS_BATCH

    data, (mean, std) = tiny
    plain = train_run(STRATEGIES["fixed-sgd"], RunSpec(data, "mlp", epochs=2, batch_size=64), 1, mean, std)
    spec = RunSpec(data, "mlp", epochs=2, batch_size=64, sharpness_every=2)
    watched = train_run(STRATEGIES["fixed-sgd"], spec, 1, mean, std)
    assert "sharpness" not in plain and "sharpness_s" not in plain["epochs"][0]
    assert timeless(watched) == timeless(plain)
    steps = plain["epochs"][-1]["steps"]
    assert steps % 2 == 0
    assert [r["step"] for r in watched["sharpness"]] == list(range(2, steps + 1, 2))
    assert all(0 <= e["sharpness_s"] for e in watched["epochs"])
    # the last measurement is at the final parameters: replay the run's training and recompute it
    torch.manual_seed(1)
    net = build_model("mlp", 1, 8, data.num_classes)
    from torch_layerlr.data import batches
    from torch_layerlr.train.zoo import Setup

    sample = normalize(data.train_images[:4096], mean, std)
    opt, _ = STRATEGIES["fixed-sgd"].build(net, Setup(steps // 2, 2, sample, data.train_labels[:4096],
                                                      data.num_classes))
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        for xb, yb in batches(data.train_images, data.train_labels, 64, shuffle=True, generator=gen, mean=mean,
                              std=std):
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
    x = normalize(data.train_images[:SHARPNESS_BATCH], mean, std)
    y = data.train_labels[:SHARPNESS_BATCH]
    ref = top_eigenvalue(lambda: F.cross_entropy(net(x), y), list(net.parameters()), tol=1e-8)
    last = watched["sharpness"][-1]
    # a few warm-started Lanczos steps per measurement: a Ritz value, so at most S, and its recorded residual
    assert last["products"] <= MONITOR_ITERS and last["products"] <= last["hvps"] <= 5 * last["products"]
    assert 0 < last["sharpness"] <= ref.value * (1 + 1e-6) and last["residual"] >= 0
    assert last["eta_s"] == pytest.approx(last["eta"] * last["sharpness"])
    assert list(last["layers"]) == ["layer1", "layer2", "layer3", "layer4"]


def test_fixed_batch_loss_leaves_batchnorm_statistics():
    from torch_layerlr.train.loop import fixed_batch_loss

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).to(F64)
    x, y = torch.randn(16, 3, dtype=F64), torch.randint(0, 2, (16,))
    before = [b.clone() for b in net.buffers()]
    loss_fn = fixed_batch_loss(net, x, y)
    got = top_eigenvalue(loss_fn, list(net.parameters()), tol=1e-10)
    layer_sharpness(loss_fn, module_groups(net))
    assert all(torch.equal(a, b) for a, b in zip(net.buffers(), before))
    assert float(loss_fn().detach()) == pytest.approx(float(F.cross_entropy(net(x), y).detach()), rel=1e-14)
    for b, v in zip(net.buffers(), before):
        b.data.copy_(v)
    ref = top_eigenvalue(lambda: F.cross_entropy(net(x), y), list(net.parameters()), tol=1e-10)
    assert got.value == pytest.approx(ref.value, rel=1e-8)


def test_module_groups_by_children():
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 3)), nn.ReLU(), nn.Linear(3, 1))
    assert {k: len(v) for k, v in module_groups(net, by="children").items()} == {"0": 4, "2": 2}
    assert list(module_groups(net)) == ["0.0", "0.1", "2"]
    with pytest.raises(ValueError, match="by"):
        module_groups(net, by="layer")


def test_sharpness_monitoring_context_and_plot(tiny, tmp_path):
    from torch_layerlr.train import STRATEGIES, RunSpec, train_run
    from torch_layerlr.train.loop import sharpness_monitoring
    from torch_layerlr.train.report import plot_curves

    data, (mean, std) = tiny
    spec = RunSpec(data, "mlp", epochs=1, batch_size=64)
    with sharpness_monitoring(3):
        run = train_run(STRATEGIES["fixed-sgd"], spec, 0, mean, std)
    assert [r["step"] for r in run["sharpness"]] == [3]
    assert "sharpness" not in train_run(STRATEGIES["fixed-sgd"], spec, 0, mean, std)
    path = tmp_path / "curves.png"
    plot_curves([run], str(path), "tiny")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="every"):
        with sharpness_monitoring(-1):
            pass
    with pytest.raises(ValueError, match="sharpness_every"):
        RunSpec(data, "mlp", 1, sharpness_every=-2)


# ---- the monitor's cheap defaults: few warm-started steps per call, its own batch, forward-over-reverse --------
def block_tops(h, sizes):
    out, start = [], 0
    for n in sizes:
        out.append(float(torch.linalg.eigvalsh(h[start:start + n, start:start + n])[-1]))
        start += n
    return out


def test_warm_started_calls_converge_to_eigvalsh():
    """With the Hessian fixed, each call continues the previous one's iteration: after enough 2-step calls the
    global and per-layer values equal autograd's eigvalsh; every value is a Ritz value (at most the top
    eigenvalue) and lies within its recorded residual of an eigenvalue."""
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)
    x, y = torch.randn(40, 3, generator=g, dtype=F64), torch.randint(0, 2, (40,), generator=g)
    h = reference_hessian(net, net_loss_of(net, x[:16], y[:16]))
    eigs = torch.linalg.eigvalsh(h)
    groups = module_groups(net)
    sizes = [sum(p.numel() for p in ps) for ps in groups.values()]
    monitor = SharpnessMonitor.for_module(net, x, y, 1, batch_size=16, lr=0.1, by="module")
    assert monitor.iters == 2
    for _ in range(30):
        rec = monitor.measure()
        assert rec["products"] <= 2 and rec["products"] <= rec["hvps"] <= 3 * rec["products"]
        assert rec["sharpness"] <= float(eigs[-1]) * (1 + 1e-12)
        nearest = float((eigs - rec["sharpness"]).abs().min())
        assert nearest <= rec["residual"] * abs(rec["sharpness"]) * (1 + 1e-6) + 1e-12
    assert rec["sharpness"] == pytest.approx(float(eigs[-1]), rel=1e-8) and rec["residual"] < 1e-6
    for name, top in zip(groups, block_tops(h, sizes)):
        assert rec["layers"][name] == pytest.approx(top, rel=1e-8)
        assert rec["layer_residuals"][name] < 1e-6
    # the first, cold call is far less accurate than the last: the accuracy comes from the continuation
    assert monitor.records[0]["residual"] > 1e3 * rec["residual"]


def test_for_module_measures_its_batch_with_batchnorm():
    """for_module's loss is that of the first batch_size rows, a train-mode BatchNorm normalising with the batch's
    statistics while its running statistics stay as they were; converged, its values are eigvalsh of that loss's
    autograd Hessian and of its diagonal blocks."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).to(F64)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(24, 3, generator=g, dtype=F64), torch.randint(0, 2, (24,), generator=g)
    before = [b.clone() for b in net.buffers()]
    monitor = SharpnessMonitor.for_module(net, x, y, 1, batch_size=16, lr=0.1, by="module", iters=100, tol=1e-12)
    rec = monitor.measure()
    assert all(torch.equal(a, b) for a, b in zip(net.buffers(), before))
    assert rec["converged"] and list(rec["layers"]) == ["0", "1", "3"]
    h = reference_hessian(net, net_loss_of(net, x[:16], y[:16]))
    assert rec["sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-9)
    sizes = [sum(p.numel() for p in ps) for ps in module_groups(net).values()]
    for name, top in zip(rec["layers"], block_tops(h, sizes)):
        assert rec["layers"][name] == pytest.approx(top, rel=1e-9)


def test_block_products_are_the_diagonal_blocks():
    """Each block's product is H_bb v over its own tensors (overlapping blocks share one graph), against the
    autograd Hessian; a tensor the loss ignores has a zero row."""
    from torch_layerlr.sharpness import _hessian_blocks

    g = torch.Generator().manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(F64)
    x, y = torch.randn(32, 4, generator=g, dtype=F64), torch.randint(0, 3, (32,), generator=g)
    h = reference_hessian(net, net_loss_of(net, x, y))
    params = list(net.parameters())
    where, start = {}, 0
    for p in params:
        where[id(p)] = torch.arange(start, start + p.numel())
        start += p.numel()
    unused = torch.zeros(3, dtype=F64, requires_grad=True)
    blocks = [params, params[:2], params[2:4] + [unused], params[4:]]
    products = _hessian_blocks(lambda: F.cross_entropy(net(x), y), params + [unused], blocks)
    for product, block in zip(products, blocks):
        known = [p for p in block if p is not unused]
        index = torch.cat([where[id(p)] for p in known])
        v = torch.randn(sum(p.numel() for p in block), generator=g, dtype=F64)
        got = product(v)
        assert torch.allclose(got[:index.numel()], h[index][:, index] @ v[:index.numel()], rtol=1e-10, atol=1e-14)
        assert torch.equal(got[index.numel():], torch.zeros(got.numel() - index.numel(), dtype=F64))


def test_monitor_cost_accounting():
    """tol = 0 never stops early: every call is exactly ``iters`` batched products of 1 + layers rows; a block
    whose Krylov space is exhausted (2 parameters) stops there."""
    net, loss_fn = small_net()
    calls = []

    def counted():
        calls.append(1)
        return loss_fn()

    monitor = SharpnessMonitor(counted, module_groups(net), 1, lr=0.1, iters=3, tol=0.0)
    for _ in range(2):
        rec = monitor.measure()
        assert (rec["products"], rec["hvps"]) == (3, 12) and not rec["converged"]
    assert len(calls) == 2  # one graph per measurement, shared by every product and row
    theta = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    a = torch.tensor([3.0, 0.5], dtype=F64)
    tiny = SharpnessMonitor(lambda: 0.5 * (a * theta * theta).sum(), {"theta": [theta]}, 1, lr=0.1, iters=5, tol=0.0)
    rec = tiny.measure()
    assert (rec["products"], rec["hvps"]) == (2, 4) and rec["converged"]
    assert rec["sharpness"] == pytest.approx(3.0, rel=1e-12)
    # rows stop on their own: the 2-parameter layer after 2 steps, the 5-parameter one and the global row
    # (7 distinct eigenvalues) after 4
    phi = torch.ones(5, dtype=F64, requires_grad=True)
    b = torch.tensor([0.1, 0.2, 0.4, 0.7, 1.1], dtype=F64)
    mixed = SharpnessMonitor(lambda: 0.5 * (a * theta * theta).sum() + 0.5 * (b * phi * phi).sum(),
                             {"theta": [theta], "phi": [phi]}, 1, lr=0.1, iters=4, tol=0.0)
    rec = mixed.measure()
    assert (rec["products"], rec["hvps"]) == (4, 4 + 2 + 4)


def test_continuation_starts_hold_no_subnormal_floats():
    """A power step per call shrinks the start's component along a tiny eigenvalue geometrically (here 1e-3 a
    call); the monitor drops it once under the unit vector's rounding level, before it turns into subnormal
    floats (which slow every later product on CPUs), and the value becomes exact."""
    theta = torch.ones(2, requires_grad=True)
    a = torch.tensor([1.0, 1e-3])
    monitor = SharpnessMonitor(lambda: 0.5 * (a * theta * theta).sum(), {"theta": [theta]}, 1, lr=0.1, iters=1,
                               tol=0.0)
    tiny = torch.finfo(torch.float32).tiny
    for _ in range(20):
        rec = monitor.measure()
        assert all(bool(((s == 0) | (s.abs() >= tiny)).all()) for s in monitor._starts)
    assert rec["sharpness"] == 1.0 and rec["residual"] == 0.0


def test_for_module_bad_inputs():
    net, _ = small_net()
    x, y = torch.randn(8, 4, dtype=F64), torch.randint(0, 3, (8,))
    with pytest.raises(ValueError, match="batch_size"):
        SharpnessMonitor.for_module(net, x, y, 1, lr=0.1, batch_size=0)
    with pytest.raises(ValueError, match="model"):
        SharpnessMonitor.for_module("net", x, y, 1, lr=0.1)
    with pytest.raises(ValueError, match="iters"):
        SharpnessMonitor.for_module(net, x, y, 1, lr=0.1, iters=0)


def test_compare_passes_sharpness_every(tiny, tmp_path, monkeypatch):
    from torch_layerlr.train import STRATEGIES, compare
    from torch_layerlr.train import comparison
    from torch_layerlr.train.report import load_json

    data, _ = tiny
    monkeypatch.setattr(comparison, "load_dataset", lambda name, root=None: data)
    out = str(tmp_path)
    compare("synthetic", "mlp", [STRATEGIES["fixed-sgd"]], 1, 1, out, batch_size=64, show_progress=False,
            sharpness_every=2)
    saved = load_json(f"{out}/results.json")
    assert saved["config"]["sharpness_every"] == 2
    steps = saved["runs"][0]["epochs"][-1]["steps"]
    assert [r["step"] for r in saved["runs"][0]["sharpness"]] == list(range(2, steps + 1, 2))
    # another N is another configuration: the run is redone, not resumed
    compare("synthetic", "mlp", [STRATEGIES["fixed-sgd"]], 1, 1, out, batch_size=64, show_progress=False,
            sharpness_every=3)
    run = load_json(f"{out}/results.json")["runs"][0]
    assert [r["step"] for r in run["sharpness"]] == list(range(3, steps + 1, 3))
    with pytest.raises(ValueError, match="sharpness_every"):
        compare("synthetic", "mlp", [STRATEGIES["fixed-sgd"]], 1, 1, out, sharpness_every=-1)
