"""torch_layerlr.layers: forward-order layer discovery, depth ratios, discriminative multipliers."""

import pytest
import torch
from torch import nn

from torch_layerlr.layers import (
    ForwardOrderRecorder,
    depth_ratios,
    discriminative_multipliers,
    layer_order,
    layerwise_lr_decay,
)


def ids(layers):
    return [[id(p) for p in layer] for layer in layers]


class Shuffled(nn.Module):
    """Registers head, then body, then stem; runs stem -> body -> head."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 2)
        self.body = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.LayerNorm(6))
        self.stem = nn.Linear(4, 5)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def test_forward_order_differs_from_registration_order():
    m = Shuffled()
    x = torch.randn(3, 4)
    reg = layer_order(m)  # no inputs: registration order
    assert ids(reg) == ids(
        [list(m.head.parameters()), list(m.body[0].parameters()), list(m.body[2].parameters()),
         list(m.stem.parameters())]
    )
    assert [p for layer in reg for p in layer] == list(m.parameters())

    fwd = layer_order(m, x)
    assert ids(fwd) == ids(
        [list(m.stem.parameters()), list(m.body[0].parameters()), list(m.body[2].parameters()),
         list(m.head.parameters())]
    )


def test_by_children_vs_by_module():
    m = Shuffled()
    x = torch.randn(3, 4)
    by_children = layer_order(m, x, by="children")
    assert ids(by_children) == ids(
        [list(m.stem.parameters()), list(m.body.parameters()), list(m.head.parameters())]
    )
    assert len(layer_order(m, x, by="module")) == 4
    # registration order by children (the DALS authors' grouping)
    assert ids(layer_order(m, by="children")) == ids(
        [list(m.head.parameters()), list(m.body.parameters()), list(m.stem.parameters())]
    )


def test_by_children_includes_model_direct_params_first():
    class WithToken(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(3, 3)
            self.token = nn.Parameter(torch.zeros(3))
            self.out = nn.Linear(3, 1)

        def forward(self, x):
            return self.out(self.enc(x + self.token))

    m = WithToken()
    layers = layer_order(m, torch.randn(2, 3), by="children")
    assert ids(layers) == ids([[m.token], list(m.enc.parameters()), list(m.out.parameters())])
    layers = layer_order(m, torch.randn(2, 3), by="module")
    assert ids(layers) == ids([[m.token], list(m.enc.parameters()), list(m.out.parameters())])


def test_shared_parameter_belongs_to_first_layer_that_runs_it():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.dec = nn.Linear(4, 4, bias=False)  # registered first, runs last
            self.mid = nn.Linear(4, 4)
            self.enc = nn.Linear(4, 4, bias=False)
            self.dec.weight = self.enc.weight

        def forward(self, x):
            return self.dec(self.mid(self.enc(x)))

    m = Tied()
    layers = layer_order(m, torch.randn(2, 4))
    # dec has no parameter of its own left, so it is not a layer
    assert ids(layers) == ids([[m.enc.weight], [m.mid.weight, m.mid.bias]])
    mult = discriminative_multipliers(m, torch.randn(2, 4), decay=2.0)
    assert len(mult) == len(list(m.parameters())) == 3
    by_id = dict(zip(map(id, m.parameters()), mult))
    assert by_id[id(m.enc.weight)] == 0.5
    assert by_id[id(m.mid.weight)] == by_id[id(m.mid.bias)] == 1.0


def test_unused_module_goes_last_in_registration_order():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.aux2 = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.aux1 = nn.Linear(3, 3)
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return self.b(self.a(x))

    m = Unused()
    layers = layer_order(m, torch.randn(1, 3))
    assert ids(layers) == ids(
        [list(m.a.parameters()), list(m.b.parameters()), list(m.aux2.parameters()), list(m.aux1.parameters())]
    )


def test_frozen_params_listed_and_model_state_restored():
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))
    m[0].weight.requires_grad_(False)
    m.train()
    m[3].eval()  # mixed modes must be restored exactly
    before = m[1].running_mean.clone()
    layers = layer_order(m, torch.randn(1, 3))  # batch of one is fine: the pass runs in eval mode
    assert [p for layer in layers for p in layer] == list(m.parameters())
    assert torch.equal(m[1].running_mean, before)
    assert [mod.training for mod in m.modules()] == [True, True, True, True, False]
    assert all(not mod._forward_pre_hooks and not mod._forward_hooks for mod in m.modules())


def test_single_layer_guard_and_depth_ratios():
    m = nn.Linear(3, 2)
    layers = layer_order(m, torch.randn(1, 3))
    assert len(layers) == 1
    d = depth_ratios(layers)
    assert d == {m.weight: 0.5, m.bias: 0.5}
    assert discriminative_multipliers(m) == [1.0, 1.0]

    a, b, c = (nn.Parameter(torch.zeros(1)) for _ in range(3))
    d = depth_ratios([[a], [b], [c]])
    assert d[a] == 0.0 and d[b] == 0.5 and d[c] == 1.0
    assert depth_ratios([]) == {}


def test_discriminative_multipliers_three_layer_mlp():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(2, 4)
    expected = [2.6**-2, 2.6**-2, 2.6**-1, 2.6**-1, 1.0, 1.0]
    assert discriminative_multipliers(m, x) == pytest.approx(expected, rel=1e-15)
    assert discriminative_multipliers(m) == pytest.approx(expected, rel=1e-15)
    assert discriminative_multipliers(m, x, decay=2.0) == [0.25, 0.25, 0.5, 0.5, 1.0, 1.0]
    assert layerwise_lr_decay(m, x, factor=0.5) == [0.25, 0.25, 0.5, 0.5, 1.0, 1.0]
    assert layerwise_lr_decay(m, x) == pytest.approx([0.65**2] * 2 + [0.65] * 2 + [1.0] * 2, rel=1e-15)
    assert all(type(v) is float for v in layerwise_lr_decay(m, x))
    # depth ratios 0, 0.5, 1
    d = depth_ratios(layer_order(m, x))
    assert [d[p] for p in m.parameters()] == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]


def test_multipliers_follow_forward_order():
    m = Shuffled()
    mult = dict(zip(map(id, m.parameters()), discriminative_multipliers(m, torch.randn(2, 4), decay=2.0)))
    assert mult[id(m.stem.weight)] == 0.125
    assert mult[id(m.body[0].weight)] == 0.25
    assert mult[id(m.body[2].weight)] == 0.5
    assert mult[id(m.head.weight)] == 1.0


def test_bad_arguments():
    m = nn.Linear(2, 2)
    for bad in (0, -1.0, float("inf"), float("nan"), "2.6", True):
        with pytest.raises(ValueError, match="decay"):
            discriminative_multipliers(m, decay=bad)
        with pytest.raises(ValueError, match="factor"):
            layerwise_lr_decay(m, factor=bad)
    with pytest.raises(ValueError, match="by"):
        layer_order(m, by="layer")
    with pytest.raises(ValueError, match="by"):
        ForwardOrderRecorder(m, by="block")
    with pytest.raises(TypeError, match="model"):
        layer_order([m])


def _n_hooks(model):
    return sum(len(mod._forward_pre_hooks) + len(mod._forward_hooks) for mod in model.modules())


def test_recorder_records_first_forward_and_removes_hooks():
    m = Shuffled()
    rec = ForwardOrderRecorder(m)
    assert _n_hooks(m) > 0
    assert not rec.recorded
    assert ids(rec.layers()) == ids(layer_order(m))  # registration order before any forward
    m.body(torch.randn(1, 5))  # a submodule call alone is not a forward of the model
    assert not rec.recorded
    out = m(torch.randn(2, 4))  # with grad, in training mode
    out.sum().backward()
    assert rec.recorded
    assert _n_hooks(m) == 0
    assert ids(rec.layers()) == ids(layer_order(m, torch.randn(2, 4)))
    rec.remove()  # idempotent


def test_recorder_discards_failed_forward_and_manual_remove():
    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Linear(2, 2)
            self.a = nn.Linear(2, 2)
            self.fail = True

        def forward(self, x):
            if self.fail:
                self.b(x)
                raise RuntimeError("boom")
            return self.b(self.a(x))

    m = Flaky()
    rec = ForwardOrderRecorder(m)
    with pytest.raises(RuntimeError):
        m(torch.randn(1, 2))
    assert not rec.recorded
    m.fail = False
    m(torch.randn(1, 2))
    assert rec.recorded
    assert ids(rec.layers()) == ids([list(m.a.parameters()), list(m.b.parameters())])
    assert _n_hooks(m) == 0

    m2 = Shuffled()
    with ForwardOrderRecorder(m2, by="children") as rec2:
        assert _n_hooks(m2) > 0
    assert _n_hooks(m2) == 0
    assert not rec2.recorded
    m2(torch.randn(1, 4))
    assert not rec2.recorded
