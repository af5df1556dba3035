"""torch.distributed: FSDP2 (DTensor params, uneven and empty shards, Replicate), the one collective of a
trust-ratio step, DDP DALS replicas, ZeRO-1, distributed checkpoints with resharding, FSDP1 refusal.

Multi-process on gloo on 127.0.0.1: each test starts its own ranks (tests/distributed/harness.py) and bounds
their time. The reference is one process on the union batch (the single-process optimizers are checked
against the float64 references of tests/reference elsewhere). Run these alone with ``pytest -m distributed``.
"""

from __future__ import annotations

import pytest
import torch

from distributed import workers
from distributed.harness import run_world
from distributed.setups import ELEMENTWISE, OPTIMIZERS, TRUST

pytestmark = pytest.mark.distributed

ALL = list(OPTIMIZERS)
STEPS = 3
TENSORS = 4  # the model's parameter tensors
SQ_NORM_BYTES = 16  # two float64 squared norms per tensor


def _expected_collectives(name: str) -> list[tuple[str, int]]:
    """What one step adds: nothing for element-wise recipes; one all-reduce of the squared norms of all
    tensors for trust-ratio ones, after DALS's one all-reduce of its loss (8 bytes)."""
    if name in ELEMENTWISE:
        return []
    norms = [("allreduce_", SQ_NORM_BYTES * TENSORS)]
    return [("allreduce_", 8)] + norms if name == "DALS" else norms


def _check_against_one_process(results: list[dict], bound: float) -> None:
    for rank_result in results:
        for name, r in rank_result.items():
            assert r["moved"] > 1e-3, f"{name}: the run does not move the params, the comparison tests nothing"
            assert r["param_rel"] <= bound, f"{name}: FSDP2 vs one process {r['param_rel']:.3g} > {bound}"
            assert r["state_like_params"], f"{name}: optimizer state is not sharded like its params"
            if name in TRUST:
                assert r["n_ratios"] == TENSORS
                assert r["ratio_err"] <= bound, f"{name}: trust ratios are not the global ones"
            assert r["collectives"] == [_expected_collectives(name)] * STEPS, name


def test_fsdp2_three_ranks_uneven_float64(tmp_path):
    """Dim 0 of 7 and of 2 over 3 ranks: shards of 3, 3, 1 rows and 1, 1, 0 (rank 2 holds empty shards)."""
    results = run_world(workers.fsdp2_vs_one_process, 3, tmp_path, "float64", ALL, STEPS)
    assert results[2]["LARS"]["local_numels"] == [5, 1, 0, 0]
    _check_against_one_process(results, 1e-10)


def test_fsdp2_two_ranks_float32(tmp_path):
    _check_against_one_process(run_world(workers.fsdp2_vs_one_process, 2, tmp_path, "float32", ALL, STEPS), 1e-5)


def test_replicated_dtensor_params(tmp_path):
    """Replicate placements: each rank holds the whole tensor, which the norm reduction counts once."""
    names = ["LARS", "LAMB", "DALS", "LayerwiseAdamW"]
    for rank_result in run_world(workers.replicated_params, 2, tmp_path, names, 2):
        for name, r in rank_result.items():
            assert r["param_rel"] <= 1e-12, name
            assert r["collectives"] == [_expected_collectives(name)] * 2, name


def test_ddp_dals_replicas_identical(tmp_path):
    """Each rank feeds DALS its own loss; the loss phase is global, so the replicas stay bit-identical and
    equal one process fed the union loss. With the averaging switched off (global_loss=False) there is no
    collective, and the ranks' phases, hence the replicas, part."""
    result = run_world(workers.ddp_dals, 2, tmp_path, 40)[0]
    on, off = result[True], result[False]
    assert on["replicas"][0] == on["replicas"][1]
    assert on["collectives"] == [("allreduce_", 8)]
    assert on["rel"] <= 1e-10
    assert on["phase"] == on["ref_phase"]
    assert off["collectives"] == []
    assert off["replicas"][0] != off["replicas"][1]


def test_zero_redundancy_optimizer_matches_ddp(tmp_path):
    """ZeRO-1 runs each optimizer on its rank's partition of the params: the same arithmetic on the same
    tensors, so the params equal DDP with the plain optimizer bit for bit."""
    for rank_result in run_world(workers.zero_vs_ddp, 2, tmp_path, ALL, STEPS):
        for name, r in rank_result.items():
            assert r["bitwise"], f"{name}: ZeRO vs DDP {r['rel']:.3g}"


@pytest.mark.parametrize("saved_on,loaded_on", [(2, 1), (1, 2)])
def test_distributed_checkpoint_reshards(tmp_path, saved_on, loaded_on):
    """get_optimizer_state_dict -> dcp.save on ``saved_on`` ranks, dcp.load -> set_optimizer_state_dict on
    ``loaded_on``: the resumed run equals the uninterrupted one (up to the reduction order of the gradients,
    which differs between world sizes), DALS's schedule step included."""
    names = ["LayerwiseAdamW", "LAMB", "LARS", "DALS"]
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    saved = run_world(workers.dcp_round_trip, saved_on, tmp_path, names, str(ckpt), "save")[0]
    loaded = run_world(workers.dcp_round_trip, loaded_on, tmp_path, names, str(ckpt), "load")[0]
    for name in names:
        for a, b in zip(loaded[name]["params"], saved[name]["params"]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=0, msg=name)
    assert loaded["DALS"]["dals_step_at_2"] == saved["DALS"]["dals_step_at_2"] == 2


def test_fsdp1_refused_for_trust_ratios(tmp_path):
    """FSDP1 flat shards (use_orig_params False and True): trust-ratio optimizers refuse, naming FSDP2, with
    nothing changed; element-wise ones step."""
    outcomes = run_world(workers.fsdp1_steps, 2, tmp_path, ["LARS", "LAMB", "DALS", "LayerwiseAdamW"])[0]
    assert len(outcomes) == 8
    for (name, _), outcome in outcomes.items():
        if name in TRUST:
            assert outcome.startswith("refused (params unchanged: True)"), outcome
            assert "FSDP2" in outcome and "fully_shard" in outcome
        else:
            assert outcome == "ok", outcome


def test_training_loop_data_parallel(tmp_path):
    """The training loop (what ``torchrun -m torch_layerlr train --parallel fsdp2`` runs) on the ranks' shares of
    every batch against one process on the whole batches (float32): the same losses up to reduction order, the
    same accuracies. 50 rows over 3 ranks: shares of 17, 17, 16 rows, weighted to the union batch's mean.
    (DDP takes the same path in the loop; the DDP and ZeRO tests above cover its arithmetic.)"""
    mode, world_size, batch_size = "fsdp2", 3, 50
    from torch_layerlr.data import channel_stats
    from torch_layerlr.train.loop import RunSpec, train_run
    from torch_layerlr.train.zoo import strategy

    names = ["lamb", "dals", "adamw"]
    parallel = run_world(workers.train_run_parallel, world_size, tmp_path, mode, names, batch_size)
    data = workers.small_images()
    mean, std = channel_stats(data.train_images)
    for name in names:
        one = train_run(strategy(name), RunSpec(data, "mlp", 2, batch_size=batch_size), 0, mean, std)["epochs"][-1]
        for rank_result in parallel:
            got = rank_result[name]
            for key in ("train_loss", "val_loss", "test_loss"):
                assert got[key] == pytest.approx(one[key], rel=1e-5), (name, key)
            for key in ("train_acc", "val_acc", "test_acc"):
                assert got[key] == one[key], (name, key)
