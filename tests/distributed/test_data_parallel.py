"""Data-parallel training (issue 17): 2 gloo processes under torchrun against the single process.

Each test launches one scenario of ``worker.py`` (about 10-20 s on 2 cores); rank 0 compares its update
with a single-process agent built in the same process on the same global batch.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import PPO
from agents.distributed import World, get_world

LEARNERS = ("ppo", "ppo_k2", "rloo", "reinforce", "a2c", "ppo_micro", "rloo_micro")
LR = 1e-3  # worker.LR
TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}


# ---- the world of one process ------------------------------------------------------------------------------
def test_a_plain_process_is_a_world_of_one_that_runs_no_collective(monkeypatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    world = get_world()
    assert (world.rank, world.size, world.is_main, world.is_distributed) == (0, 1, True, False)
    t = torch.tensor([1.0, 2.0])
    assert world.all_reduce_(t) is t and t.tolist() == [1.0, 2.0]
    assert world.sum([3, 4]) == [3.0, 4.0] and world.any(False) is False and world.any(True) is True
    assert world.broadcast_object({"a": [1]}) == {"a": [1]}
    assert world.slice(8, 2) == slice(0, 8)
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node=1: still no process group
    assert get_world() == World()


def test_a_single_process_run_makes_no_collective_call(monkeypatch, tmp_path) -> None:
    import torch.distributed as dist

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a collective in a single process")

    for name in ("init_process_group", "all_reduce", "all_gather", "broadcast", "barrier"):
        monkeypatch.setattr(dist, name, refuse)
    agent = PPO(
        "transformer", "TextEnv/Reverse-L4-v0", n_envs=4, batch_size=2, policy_kwargs=TINY, device="cpu",
        checkpoint_dir=tmp_path / "run", checkpoint_every=1,
    )  # fmt: skip
    agent.learn(10)
    agent.evaluate(n_episodes=3)
    PPO.load(tmp_path / "run").save(tmp_path / "run")
    state = json.loads((tmp_path / "run" / f"ckpt-{agent.iteration:08d}" / "state.json").read_text())
    assert state["world_size"] == 1


def test_bad_launch_variables_and_batch_sizes_are_named(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        get_world()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="RANK is not set"):
        get_world()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 must be < WORLD_SIZE=2"):
        get_world()
    with pytest.raises(ValueError, match=r"n_envs=12 must be a multiple of world_size × k = 2 × 4 = 8"):
        World(rank=1, size=2).slice(12, 4)
    assert World(rank=1, size=2).slice(16, 4) == slice(8, 16)


# ---- 2 ranks × B/2 == 1 × B --------------------------------------------------------------------------------
@pytest.mark.expensive
def test_every_learner_two_ranks_of_half_the_batch_equal_one_process_of_all_of_it(launch) -> None:
    rank0, rank1 = launch("equivalence")
    for name in LEARNERS:
        got, ref = rank0[name], rank0[name]["ref"]
        # gradients to float32 round-off (their scale is ~0.1-0.3), weights well within one Adam step (lr)
        assert ref["grads_diff"] < 1e-6, (name, ref)
        assert ref["weights_diff"] < 1e-2 * LR, (name, ref)
        assert got["kl_coef"] == pytest.approx(ref["kl_coef"], rel=1e-9)
        assert got["num_timesteps"] == ref["num_timesteps"]  # the global batch's tokens, on every rank
        assert rank1[name]["num_timesteps"] == ref["num_timesteps"]
        for key in ("losses/policy_loss", "losses/entropy", "losses/approx_kl", "charts/episodic_return"):
            assert got["stats"][key] == pytest.approx(ref["stats"][key], rel=1e-4, abs=1e-7), (name, key)
        # the deliberate mistake, a per-rank masked mean (and per-rank whitening), is caught
        naive = rank0[f"{name}_naive"]
        ref_w, ref_g = np.array(rank0[f"_ref_{name}"]["weights"]), np.array(rank0[f"_ref_{name}"]["grads"])
        assert np.abs(np.array(naive["grads"]) - ref_g).max() > 1e-3, name
        # Adam's first step is ~lr·sign(g), blind to a gradient's scale: the naive weights drift where a sign
        # flips, which is still 10x further than the correct scheme's round-off
        naive_w = np.abs(np.array(naive["weights"]) - ref_w).max()
        assert naive_w > max(10 * ref["weights_diff"], 1e-7), (name, naive_w, ref["weights_diff"])


@pytest.mark.expensive
def test_the_hf_policy_full_and_lora_trains_data_parallel(launch) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    rank0, rank1 = launch("hf")
    for name in ("full", "lora"):
        # rank 1 built its policy from another seed: rank 0's weights reached it before the first update
        assert rank0[name]["sha"] == rank1[name]["sha"]
        assert rank0[name]["weights_diff"] < 1e-2 * LR  # one update: 2 ranks x B/2 == 1 x B
        assert rank0[name]["iterations"] == rank1[name]["iterations"] == 3
        assert rank0[name]["sha_after"] == rank1[name]["sha_after"]


@pytest.mark.expensive
def test_sft_on_two_ranks_equals_sft_in_one_process(launch) -> None:
    rank0, rank1 = launch("sft")
    assert rank0["sha"] == rank1["sha"]  # the replicas agree bit for bit
    assert rank0["moved"] > 1e-3  # 6 steps at lr 3e-3 moved the weights
    assert rank0["weights_diff"] < 1e-2 * 3e-3  # ... and the 2 ranks moved them as one process did


# ---- seeds, prompts and replicas ---------------------------------------------------------------------------
@pytest.mark.expensive
def test_ranks_stay_bitwise_equal_draw_the_global_plan_and_sample_their_own_completions(launch) -> None:
    rank0, rank1 = launch("train")
    for name in ("ppo", "rloo"):
        a, b = rank0[name], rank1[name]
        assert a["iterations"] == b["iterations"] == 3
        assert a["weights_sha"] == b["weights_sha"]  # bitwise equal weights after 3 iterations
        assert a["optimizer_sha"] == b["optimizer_sha"]
        assert a["num_timesteps"] == b["num_timesteps"] and a["kl_coef"] == b["kl_coef"]
        assert a["rows"] == [0, 4] and b["rows"] == [4, 8]
        # the union of the ranks' prompts, in rank order, is the single-process plan of every iteration
        assert [pa + pb for pa, pb in zip(a["prompts"], b["prompts"])] == a["plan"]
        # evaluation is sharded over the ranks and summed: the single process's figures, on every rank
        for r in (a, b):
            assert r["eval"]["episodes"] == 9
            for key in ("mean_return", "success_rate", "mean_length"):
                # float32 rewards summed in another order: equal to float32 round-off
                assert r["eval"][key] == pytest.approx(a["eval_ref"][key], rel=1e-6, nan_ok=True), key
    # a one-prompt task: every rank rolls out the same prompt, and must not repeat the other's completions
    assert rank0["one_prompt_completions"] != rank1["one_prompt_completions"]


# ---- checkpoints -------------------------------------------------------------------------------------------
@pytest.mark.expensive
def test_a_resume_under_torchrun_equals_the_run_uninterrupted_and_resumes_at_world_size_one(launch) -> None:
    rank0, rank1 = launch("resume")
    for r in (rank0, rank1):
        assert r["resumed"]["first"] < r["resumed"]["iteration"]  # it did stop and resume
        assert r["resumed"]["iteration"] == r["straight"]["iteration"]
        assert r["resumed"]["num_timesteps"] == r["straight"]["num_timesteps"]
        assert r["resumed"]["sha"] == r["straight"]["sha"]
    run = Path(rank0["run"])
    it = rank0["resumed"]["iteration"]
    # one directory per checkpoint (keep=2: the last two), named by its iteration, and nothing half-written
    assert sorted(
        p.name for p in run.iterdir() if p.name != "logs" and not p.name.startswith(".text-env")
    ) == [
        f"ckpt-{it - 1:08d}",
        f"ckpt-{it:08d}",
        "latest.json",
    ]
    assert json.loads((run / "latest.json").read_text()) == {"checkpoint": f"ckpt-{it:08d}"}
    state = json.loads((run / f"ckpt-{it:08d}" / "state.json").read_text())
    assert state["world_size"] == 2 and state["num_timesteps"] == rank0["resumed"]["num_timesteps"]
    with (run / "logs" / "progress.csv").open() as f:
        steps = [int(row["global_step"]) for row in csv.DictReader(f)]
    assert steps == sorted(steps) and steps[-1] == state["num_timesteps"]  # rank 0 alone logged, once each
    # the world-2 checkpoint goes on in a single process
    agent = PPO.load(run, checkpoint_dir=run, log_dir=run / "logs")
    assert agent.world.size == 1 and agent.env.num_envs == 8
    agent.learn(40, reset_num_timesteps=False)
    assert agent.iteration > it and agent.num_timesteps > state["num_timesteps"]
    agent.save(run)
    latest = json.loads((run / "latest.json").read_text())["checkpoint"]
    assert json.loads((run / latest / "state.json").read_text())["world_size"] == 1


# ---- every rank stops together ----------------------------------------------------------------------------
@pytest.mark.expensive
def test_a_stop_on_one_rank_stops_every_rank_without_a_hang(launch) -> None:
    rank0, rank1 = launch("stops")  # each collective times out after 60 s, the launch after 120 s
    for r in (rank0, rank1):
        assert r["false"]["iteration"] == 2  # rank 1's callback returned False at iteration 2
        assert r["sigterm"]["iteration"] == 2 and r["sigterm"]["saved"] == ["ckpt-00000002"]  # SIGTERM: saved
        assert r["early_stop"]["stopped_early"] == 1.0 and r["early_stop"]["iteration"] == 2
        assert r["nonfinite"]["skipped"] == 1  # rank 1's NaN loss: the step is skipped on both ranks
    assert rank0["nonfinite"]["sha"] == rank1["nonfinite"]["sha"]


# ---- the command line -----------------------------------------------------------------------------------
@pytest.mark.expensive
def test_torchrun_text_env_train_writes_one_run_and_resumes(torchrun, tmp_path) -> None:
    args = [
        "-m", "agents.cli", "train", "--algo", "ppo", "--env", "TextEnv/Reverse-L4-v0", "--n-envs", "8",
        "--batch-size", "4", "--sft-steps", "5", "--policy-kwargs", json.dumps(TINY),
        "--eval-episodes", "9", "--no-progress", "--out", "run", "--checkpoint-every", "2",
    ]  # fmt: skip
    first = torchrun([*args, "--total-timesteps", "100"])
    assert first.stdout.count("trained ") == 1 and "on 2 processes" in first.stdout  # rank 0 alone prints
    assert "(9 prompts, greedy)" in first.stdout
    run = tmp_path / "run"
    ckpts = sorted(p.name for p in run.glob("ckpt-*"))
    assert all(len(name) == len("ckpt-00000000") for name in ckpts) and len(ckpts) <= 2
    latest = json.loads((run / "latest.json").read_text())["checkpoint"]
    state = json.loads((run / latest / "state.json").read_text())
    assert state["world_size"] == 2 and state["num_timesteps"] >= 100
    with (run / "logs" / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    # the budget counts both ranks' tokens: n_envs=8 global episodes per iteration
    tokens = sum(round(float(r["charts/episode_length"]) * 8) for r in rows)
    assert len(rows) == state["iteration"] and tokens == state["num_timesteps"]
    second = torchrun([*args[:-2], "--resume", "--total-timesteps", "200"])
    assert f"resumed run at {state['num_timesteps']} steps" in second.stdout
    latest = json.loads((run / "latest.json").read_text())["checkpoint"]
    state2 = json.loads((run / latest / "state.json").read_text())
    assert state2["num_timesteps"] >= 200 and state2["iteration"] > state["iteration"]
