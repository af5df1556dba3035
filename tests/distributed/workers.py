"""Per-rank workers of tests/test_distributed.py (run by harness.run_world; return picklable results)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Replicate, distribute_tensor
from torch.nn.parallel import DistributedDataParallel as DDP

from distributed.setups import (OPTIMIZERS, loss_of, make_batch, make_model, make_optimizer, rank_rows,
                                step_with_loss)
from torch_layerlr.distributed.comms import CollectiveLog
from torch_layerlr.optim import DALS


def _sharded_model(dtype: torch.dtype, mesh) -> torch.nn.Module:
    model = make_model(dtype)
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _train(model, opt, rank: int, world_size: int, steps: range, dtype: torch.dtype, log=None) -> None:
    """Steps ``steps`` of the shared run, this rank on its rows of each union batch (all rows for one rank)."""
    for k in steps:
        x, y = make_batch(k, dtype)
        rows = rank_rows(rank, world_size)
        opt.zero_grad()
        loss = loss_of(model, x[rows], y[rows])
        loss.backward()
        with CollectiveLog() as collectives:
            step_with_loss(opt, loss)
        if log is not None:
            log.append([(c.op, c.bytes) for c in collectives.collectives])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def fsdp2_vs_one_process(rank: int, world_size: int, dtype_name: str, names: list[str], steps: int) -> dict:
    """Each optimizer under FSDP2 and in one process on the union batch: parameter error, trust-ratio error,
    the collectives of each step, how the state is sharded."""
    dtype = getattr(torch, dtype_name)
    mesh = init_device_mesh("cpu", (world_size,))
    out = {}
    for name in names:
        ref_model = make_model(dtype)
        ref_opt = make_optimizer(name, list(ref_model.parameters()))
        _train(ref_model, ref_opt, 0, 1, range(steps), dtype)
        model = _sharded_model(dtype, mesh)
        opt = make_optimizer(name, list(model.parameters()))
        log: list = []
        _train(model, opt, rank, world_size, range(steps), dtype, log)
        params, ref_params = list(model.parameters()), list(ref_model.parameters())
        ratios, ref_ratios = opt.trust_ratios(), ref_opt.trust_ratios()
        out[name] = dict(
            param_rel=max(_rel(p.full_tensor(), r) for p, r in zip(params, ref_params)),
            moved=min(_rel(r, r0) for r, r0 in zip(ref_params, make_model(dtype).parameters())),
            ratio_err=max((abs(ratios[p] - ref_ratios[r]) / abs(ref_ratios[r])
                           for p, r in zip(params, ref_params) if r in ref_ratios), default=0.0),
            n_ratios=len(ratios),
            collectives=log,
            local_numels=[p.to_local().numel() for p in params],
            state_like_params=all(isinstance(v, DTensor) and v.placements == p.placements and v.shape == p.shape
                                  for p in params for k, v in opt.state[p].items() if k != "step"),
        )
    return out


def replicated_params(rank: int, world_size: int, names: list[str], steps: int) -> dict:
    """Params as DTensors replicated over the mesh (Replicate placements): the optimizer against one process."""
    mesh = init_device_mesh("cpu", (world_size,))
    out = {}
    for name in names:
        ref_model = make_model(torch.float64)
        ref_opt = make_optimizer(name, list(ref_model.parameters()))
        model = make_model(torch.float64)
        params = [torch.nn.Parameter(distribute_tensor(p.detach(), mesh, [Replicate()])) for p in model.parameters()]
        opt = make_optimizer(name, params)
        log = []
        for k in range(steps):
            x, y = make_batch(k, torch.float64)
            ref_opt.zero_grad()
            loss = loss_of(ref_model, x, y)
            loss.backward()
            # copied before the reference steps: LAMB leaves its direction in the grads
            for p, r in zip(params, ref_model.parameters()):
                p.grad = distribute_tensor(r.grad.detach().clone(), mesh, [Replicate()])
            step_with_loss(ref_opt, loss)
            with CollectiveLog() as collectives:
                step_with_loss(opt, loss)
            log.append([(c.op, c.bytes) for c in collectives.collectives])
        out[name] = dict(param_rel=max(_rel(p.full_tensor(), r) for p, r in zip(params, ref_model.parameters())),
                         collectives=log)
    return out


def ddp_dals(rank: int, world_size: int, steps: int) -> dict:
    """DALS on a DDP model, each rank stepping with its own loss, with the loss averaging on and off: the
    replicas' params, the last step's collectives, and one process on the union batch fed the union loss."""
    ref_model = make_model(torch.float64)
    ref_opt = make_optimizer("DALS", list(ref_model.parameters()))
    _train(ref_model, ref_opt, 0, 1, range(steps), torch.float64)
    ref_flat = torch.cat([p.detach().reshape(-1) for p in ref_model.parameters()])
    out = {}
    for global_loss in (True, False):
        model = DDP(make_model(torch.float64))
        opt = make_optimizer("DALS", list(model.parameters()), global_loss=global_loss)
        log: list = []
        _train(model, opt, rank, world_size, range(steps), torch.float64, log)
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world_size)]
        dist.all_gather(gathered, flat)
        out[global_loss] = dict(replicas=[g.tolist() for g in gathered], rel=_rel(flat, ref_flat),
                                collectives=log[-1], phase=opt.phase, ref_phase=ref_opt.phase)
    return out


ZERO_GROUPS = {"LayerwiseSGD": dict(lr=0.05, momentum=0.9, weight_decay=1e-3)}


def zero_vs_ddp(rank: int, world_size: int, names: list[str], steps: int) -> dict:
    """ZeroRedundancyOptimizer(optimizer_class=...) against DDP with the plain optimizer, per optimizer.

    Per-parameter lists (lr_mult, DALS depth_ratio) do not survive ZeRO's partitioning of a group, so the
    layers are param groups here (one depth each for DALS)."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    out = {}
    for name in names:
        cls, kwargs = OPTIMIZERS[name]
        kwargs = {**kwargs, **ZERO_GROUPS.get(name, {})}
        kwargs.pop("lr_mult", None)
        results = []
        for zero in (False, True):
            model = DDP(make_model(torch.float64))
            layers = [list(model.module[0].parameters()), list(model.module[2].parameters())]
            groups = [{"params": ps, **({"depth_ratio": float(d)} if cls is DALS else {})}
                      for d, ps in enumerate(layers)]
            if zero:
                opt = ZeroRedundancyOptimizer(groups, optimizer_class=cls, **kwargs)
            else:
                opt = cls(groups, **kwargs)
            _train(model, opt, rank, world_size, range(steps), torch.float64)
            results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
        out[name] = dict(rel=_rel(results[1], results[0]), bitwise=torch.equal(results[0], results[1]))
    return out


def dcp_round_trip(rank: int, world_size: int, names: list[str], ckpt: str, mode: str) -> dict:
    """mode "save": steps 0-1, save model and optimizer with DCP, steps 2-3. mode "load": a fresh model and
    optimizer, load the checkpoint, steps 2-3. Returns the final full params and the optimizer's global state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)

    mesh = init_device_mesh("cpu", (world_size,))
    out = {}
    for name in names:
        model = _sharded_model(torch.float64, mesh)
        opt = make_optimizer(name, list(model.parameters()))
        path = str(Path(ckpt) / name)
        if mode == "save":
            _train(model, opt, rank, world_size, range(2), torch.float64)
            dcp.save({"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
                     checkpoint_id=path)
        else:
            state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
            dcp.load(state, checkpoint_id=path)
            set_model_state_dict(model, state["model"])
            set_optimizer_state_dict(model, opt, state["optim"])
        loaded = opt.state_dict().get("dals")
        _train(model, opt, rank, world_size, range(2, 4), torch.float64)
        out[name] = dict(params=[p.full_tensor() for p in model.parameters()],
                         dals_step_at_2=None if loaded is None else loaded["step"])
    return out


def fsdp1_steps(rank: int, world_size: int, names: list[str]) -> dict[tuple[str, bool], str]:
    """One step of each optimizer on an FSDP1 model (use_orig_params False and True): "ok", or the error."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    out = {}
    for use_orig_params in (False, True):
        for name in names:
            model = FSDP(make_model(torch.float64), use_orig_params=use_orig_params, device_id=torch.device("cpu"))
            params = list(model.parameters())
            cls, kwargs = OPTIMIZERS[name]
            kwargs = {k: v for k, v in kwargs.items() if k != "lr_mult"}
            opt = cls([{"params": params, "depth_ratio": 0.5}] if cls is DALS else params, **kwargs)
            before = [p.detach().clone() for p in params]
            try:
                _train(model, opt, rank, world_size, range(1), torch.float64)
                out[name, use_orig_params] = "ok"
            except RuntimeError as exc:
                unchanged = all(torch.equal(a, p) for a, p in zip(before, params))
                out[name, use_orig_params] = f"refused (params unchanged: {unchanged}): {exc}"
    return out


def small_images():
    from torch_layerlr.data import split_train, synthetic_images

    return split_train(synthetic_images(num_train=320, num_test=80, image_size=8, seed=0), 0.25, seed=0)


def train_run_parallel(rank: int, world_size: int, mode: str, names: list[str], batch_size: int) -> dict:
    """One epoch of the training loop (torch_layerlr.train.train_run) data-parallel: each rank its share of
    every batch. Returns each strategy's last epoch record."""
    from torch_layerlr.data import channel_stats
    from torch_layerlr.train.loop import RunSpec, train_run
    from torch_layerlr.train.zoo import strategy

    data = small_images()
    mean, std = channel_stats(data.train_images)
    spec = RunSpec(data, "mlp", 2, batch_size=batch_size, parallel=mode)
    return {name: train_run(strategy(name), spec, 0, mean, std)["epochs"][-1] for name in names}
