"""torch_layerlr.layers: forward-order layer discovery, depth ratios, discriminative multipliers."""

import pytest
import torch
from torch import nn

from torch_layerlr.layers import (
    ForwardOrderRecorder,
    block_lists,
    depth_ratios,
    discriminative_multipliers,
    layer_order,
    layerwise_lr_decay,
    llrd,
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
        ForwardOrderRecorder(m, by="layer")
    with pytest.raises(ValueError, match="by='block'"):  # no block list in a Linear
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


# ------------------------------------------------------------------------------------------------
# block lists: embeddings -> block 1..N -> head
# ------------------------------------------------------------------------------------------------
class Block(nn.Module):
    """A pre-norm transformer-style block; its MLP is an nn.Sequential of mixed modules (not a block list)
    and its two projections an nn.ModuleList of one class (a block list inside a block: part of the block)."""

    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.proj = nn.ModuleList([nn.Linear(d, d), nn.Linear(d, d)])
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, h):
        h = h + self.proj[1](torch.tanh(self.proj[0](self.norm(h))))
        return h + self.mlp(h)


class Embeddings(nn.Module):
    def __init__(self, vocab, d, length):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, length, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, input_ids):
        return self.norm(self.tok(input_ids) + self.pos[:, : input_ids.shape[1]])


class TinyTransformer(nn.Module):
    """HF-shaped: the head is registered first, the forward takes keywords (``model(**batch)``)."""

    def __init__(self, n_blocks=3, d=8, vocab=11, length=6):
        super().__init__()
        self.head = nn.Linear(d, 2)
        self.embeddings = Embeddings(vocab, d, length)
        self.blocks = nn.ModuleList([Block(d) for _ in range(n_blocks)])
        self.final_norm = nn.LayerNorm(d)

    def forward(self, input_ids, attention_mask=None):
        h = self.embeddings(input_ids)
        for block in self.blocks:
            h = block(h)
        h = self.final_norm(h)
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        return self.head(h[:, 0])


def _batch(n=2, length=6):
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 11, (n, length), generator=g), "attention_mask": torch.ones(n, length)}


def _transformer_layers(m):
    """The expected grouping, written out: embeddings (its own pos first: a module's direct parameters count
    from the start of its forward), each block, then the final norm with the head."""
    emb = [m.embeddings.pos, m.embeddings.tok.weight, m.embeddings.norm.weight, m.embeddings.norm.bias]
    blocks = [list(b.parameters()) for b in m.blocks]
    return [emb] + blocks + [list(m.final_norm.parameters()) + list(m.head.parameters())]


def test_block_lists_outermost_only():
    m = TinyTransformer()
    assert block_lists(m) == [m.blocks]  # the projections inside each block are part of it
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert block_lists(mlp) == []  # mixed children: not a block list
    stack = nn.Sequential(*[Block(4) for _ in range(3)])
    assert block_lists(stack) == [stack]


def test_transformer_grouped_by_block_with_dict_batch():
    m = TinyTransformer()
    expected = _transformer_layers(m)
    assert ids(layer_order(m, _batch())) == ids(expected)  # auto -> block, dict batch -> model(**batch)
    assert ids(layer_order(m, _batch(), by="block")) == ids(expected)
    assert ids(layer_order(m, _batch()["input_ids"])) == ids(expected)  # positional works as before
    # the fine-grained grouping is still there on request: every parameter-owning module
    fine = layer_order(m, _batch(), by="module")
    assert len(fine) == 3 + 3 * 5 + 2  # tok, embeddings (pos), emb norm; 5 per block; final norm, head
    # without inputs: registration order, in which the head comes first and joins the embeddings' run
    assert ids(layer_order(m)) == ids([list(m.head.parameters()) + expected[0]] + expected[1:-1]
                                      + [list(m.final_norm.parameters())])


def test_discriminative_multipliers_per_block():
    m = TinyTransformer()
    layers = _transformer_layers(m)  # 5 layers: embeddings, 3 blocks, head
    want = {id(p): 2.0 ** -(len(layers) - 1 - i) for i, layer in enumerate(layers) for p in layer}
    got = discriminative_multipliers(m, _batch(), decay=2.0)
    assert got == [want[id(p)] for p in m.parameters()]
    got = layerwise_lr_decay(m, _batch(), factor=0.5)
    assert got == [want[id(p)] for p in m.parameters()]


def test_tied_head_goes_to_the_embeddings():
    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(7, 4)
            self.blocks = nn.Sequential(Block(4), Block(4))
            self.lm_head = nn.Linear(4, 7, bias=False)
            self.lm_head.weight = self.tok.weight

        def forward(self, input_ids):
            return self.lm_head(self.blocks(self.tok(input_ids)))

    m = TiedLM()
    layers = layer_order(m, torch.randint(0, 7, (1, 3)))
    assert ids(layers) == ids([[m.tok.weight], list(m.blocks[0].parameters()), list(m.blocks[1].parameters())])


def test_no_multiplier_underflows():
    m = nn.Sequential(*[nn.Linear(3, 3) for _ in range(40)])  # 40 one-Linear blocks
    with pytest.warns(UserWarning, match="min_mult"):
        mult = discriminative_multipliers(m, decay=2.6)
    expected = [max(2.6 ** -(39 - i // 2), 1e-4) for i in range(80)]
    assert mult == pytest.approx(expected, rel=1e-15) and min(mult) == 1e-4
    with pytest.warns(UserWarning, match="min_mult"):
        assert min(layerwise_lr_decay(m, factor=0.5, min_mult=1e-6)) == 1e-6
    with pytest.warns(UserWarning, match="min_mult"):
        groups = llrd(m, 0.5)
    assert min(g["lr_mult"] for g in groups) == 1e-4
    for bad in (0.0, -1e-3, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="min_mult"):
            discriminative_multipliers(m, min_mult=bad)


def test_llrd_param_groups():
    m = TinyTransformer()
    layers = _transformer_layers(m)
    n = len(layers)
    groups = llrd(m, 0.8, _batch(), lr=1e-3, weight_decay=0.05)
    expected = []
    for i, layer in enumerate(layers):
        lr = 1e-3 * 0.8 ** (n - 1 - i)
        matrices = [p for p in layer if p.dim() >= 2]
        vectors = [p for p in layer if p.dim() < 2]
        expected += [(ids([matrices])[0], lr, 0.05)] if matrices else []
        expected += [(ids([vectors])[0], lr, 0.0)] if vectors else []
    assert [(ids([g["params"]])[0], g["lr"], g["weight_decay"]) for g in groups] == [
        (i, pytest.approx(lr, rel=1e-15), wd) for i, lr, wd in expected]
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in m.parameters())
    assert all("lr_mult" not in g for g in groups)
    # lr=None: multipliers for this package's optimizers, one group per layer, no weight-decay split
    plain = llrd(m, 0.8, _batch())
    assert [ids([g["params"]])[0] for g in plain] == ids(layers)
    assert [g["lr_mult"] for g in plain] == pytest.approx([0.8 ** (n - 1 - i) for i in range(n)], rel=1e-15)
    assert all(set(g) == {"params", "lr_mult"} for g in plain)
    for kw, name in ((dict(decay=1.2), "decay"), (dict(decay=0.0), "decay"), (dict(decay=0.9, lr=-1.0), "lr"),
                     (dict(decay=0.9, weight_decay=-0.1), "weight_decay")):
        with pytest.raises(ValueError, match=name):
            llrd(m, **kw)


def test_llrd_groups_train_as_torch_adamw():
    """torch.optim.AdamW on llrd's lr groups == LayerwiseAdamW on llrd's lr_mult groups (torch's AdamW is the
    reference: it knows nothing of lr_mult)."""
    from torch_layerlr.optim import LayerwiseAdamW

    torch.manual_seed(0)
    a = TinyTransformer().double()
    b = TinyTransformer().double()
    b.load_state_dict(a.state_dict())
    batch = _batch()
    ref = torch.optim.AdamW(llrd(a, 0.7, batch, lr=1e-2, weight_decay=0.1))
    ours = LayerwiseAdamW(llrd(b, 0.7, batch, weight_decay=0.1), lr=1e-2)
    for _ in range(3):
        for model, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            model(**batch).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)
