"""``micro_batch_size``: the update runs a minibatch in chunks whose gradients accumulate into its one
optimizer step, every loss term divided by the whole minibatch's token count. The same update as the whole
minibatch at once (to float round-off) for every learner, the HF policy with prompt sharing included; and the
fused AdamW every learner now steps with."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents import A2C, PPO, REINFORCE, RLOO
from agents.checkpoint import load_optimizer, save_optimizer
from agents.optim import make_adamw
from agents.rollout import RolloutCollector, make_rollout_env

ENV = "TextEnv/Reverse-L4-v0"
TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}
LR = 1e-3


def graded(prompts, completions, references):
    """A reward with a spread from a fresh policy, so the advantages (and the gradients) are not zero."""
    return [0.25 * len(c) + (1.0 if c[:1] == p[-2:-1] else 0.0) for p, c in zip(prompts, completions)]


BASE = dict(
    n_envs=8, seed=1, device="cpu", lr_warmup=0, learning_rate=LR, policy_kwargs=TINY,
    env_kwargs={"reward": graded}, kl_coef=0.1,
)  # fmt: skip
LEARNERS = {
    "ppo": (PPO, {"n_epochs": 2, "batch_size": 5}),  # minibatches of 5 and 3 rows, chunks of 2
    "ppo_k2": (PPO, {"k": 2, "batch_size": 4, "n_epochs": 1}),
    "rloo": (RLOO, {"k": 2}),
    "reinforce": (REINFORCE, {}),
    "a2c": (A2C, {}),
}


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


def grads(agent) -> torch.Tensor:
    return flat(p.grad if p.grad is not None else torch.zeros_like(p) for p in agent.policy.parameters())


def one_update(cls, kw, micro, batch=None, wrap=None):
    agent = cls("transformer", ENV, **BASE, **kw, micro_batch_size=micro)
    if batch is None:
        env = make_rollout_env(ENV, agent.config.n_envs, **agent.config.env_kwargs)
        batch = RolloutCollector(agent.policy, env, agent.reference, num_threads=1).collect(seed=123)
    calls = []
    forward = agent.forward_batch

    def counted(b, idx=slice(None)):
        calls.append(b.actions[idx].shape[0])
        return forward(b, idx)

    agent.forward_batch = counted
    if wrap is not None:
        wrap(agent)
    stats = agent.update(batch)
    return agent, batch, stats, calls


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_micro_batches_give_the_update_of_the_whole_minibatch(name):
    cls, kw = LEARNERS[name]
    whole, batch, stats, calls_whole = one_update(cls, kw, None)
    micro, _, stats_micro, calls = one_update(cls, kw, 2, batch)
    assert max(calls) <= 2 < max(calls_whole)  # the chunks really ran, 2 rows at a time
    assert sum(calls) == sum(calls_whole)  # every row once per epoch, as the whole minibatch
    g, g_micro = grads(whole), grads(micro)
    assert g.abs().max() > 1e-3  # a real gradient, so the comparison below can fail
    assert (g - g_micro).abs().max() < 1e-6
    assert (flat(whole.policy.parameters()) - flat(micro.policy.parameters())).abs().max() < 1e-2 * LR
    for key in ("losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/grad_norm"):
        if key not in stats:  # (PPO logs no gradient norm)
            continue
        assert stats_micro[key] == pytest.approx(stats[key], rel=1e-4, abs=1e-7), key
    assert whole.kl.value == micro.kl.value and whole.num_timesteps == micro.num_timesteps


def test_a_micro_batch_left_out_or_divided_by_its_own_count_is_caught(monkeypatch):
    """The comparison above discriminates: each chunk's share of the gradient matters, and a per-chunk mean
    (the mistake the fixed minibatch count prevents) moves the gradient too."""
    import agents.on_policy as on_policy

    cls, kw = LEARNERS["reinforce"]
    whole, batch, _, _ = one_update(cls, kw, None)

    def drop_last(agent):
        split = agent.micro_batches
        agent.micro_batches = lambda rows, n: split(rows, n)[:-1]

    dropped, _, _, _ = one_update(cls, kw, 3, batch, wrap=drop_last)
    assert (grads(whole) - grads(dropped)).abs().max() > 1e-3
    real = on_policy.masked_mean
    monkeypatch.setattr(on_policy, "masked_mean", lambda x, m, count=None: real(x, m))
    naive, _, _, _ = one_update(cls, kw, 3, batch)
    assert (grads(whole) - grads(naive)).abs().max() > 1e-3


def test_hf_rloo_micro_batches_share_prompts_and_equal_the_whole_batch():
    pytest.importorskip("transformers")
    from hf_fixtures import tiny_hf_policy

    def agent(micro):
        return RLOO(
            tiny_hf_policy(seed=3), ENV, n_envs=8, k=4, seed=2, device="cpu", lr_warmup=0, learning_rate=LR,
            env_kwargs={"reward": graded}, kl_coef=0.05, micro_batch_size=micro,
        )  # fmt: skip

    whole = agent(None)
    batch = whole.collect_rollouts()  # the learner's own plan: 2 prompts, 4 completions each
    whole.update(batch)
    micro = agent(4)  # one group of 4 completions of one prompt per chunk: its prompt still runs once
    shared = []
    real = micro.policy.shared_prompt_hidden

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        shared.append(out is not None)
        return out

    micro.policy.shared_prompt_hidden = spy
    micro.update(batch)
    assert shared == [True, True]
    g = grads(whole)
    assert g.abs().max() > 1e-4
    assert (g - grads(micro)).abs().max() < 1e-5


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_a_bad_micro_batch_size_is_named(bad):
    with pytest.raises(ValueError, match=r"micro_batch_size must be a positive int or None, got"):
        REINFORCE("transformer", ENV, **BASE, micro_batch_size=bad)


def test_micro_batch_size_is_a_cli_switch_and_is_checkpointed(tmp_path):
    import json

    from agents.cli import main

    out = tmp_path / "run"
    code = main([
        "train", "--env", ENV, "--algo", "rloo", "--k", "2", "--n-envs", "4", "--micro-batch-size", "2",
        "--sft-steps", "0", "--policy-kwargs", json.dumps(TINY),
        "--total-timesteps", "8", "--eval-episodes", "2", "--no-progress", "--out", str(out),
        "--device", "cpu",
    ])  # fmt: skip
    assert code == 0
    states = sorted(out.glob("ckpt-*/state.json"))
    assert states, sorted(p.name for p in out.iterdir())
    assert json.loads(states[-1].read_text())["config"]["micro_batch_size"] == 2


def test_the_micro_batches_benchmark_runs_and_agrees_on_a_tiny_model(tmp_path):
    pytest.importorskip("transformers")
    import json

    from benchmarks import micro_batches

    out = tmp_path / "micro_batches.json"
    res = micro_batches.main([
        "--tiny", "--episodes", "8", "--micro", "4", "--iterations", "1", "--max-new-tokens", "3",
        "--scratch", str(tmp_path / "s"),
        "--out", str(out),
    ])  # fmt: skip
    assert json.loads(out.read_text())["micro_batch_size"] == 4
    assert [r["micro_batch_size"] for r in (*res["runs"]["whole"], *res["runs"]["micro"])] == [None, 4]
    assert all(v > 0 for v in res["peak_rss_mb"].values())
    assert res["peak_rss_micro_vs_whole"] == pytest.approx(
        res["peak_rss_mb"]["micro"] / res["peak_rss_mb"]["whole"]
    )
    # the same rollout on both sides (same seed), so the same update
    diff = res["first_update_absolute_difference"]
    assert diff["losses/grad_norm"] < 1e-5 * max(1.0, res["runs"]["whole"][0]["stats"][0]["losses/grad_norm"])
    assert diff["losses/policy_loss"] < 1e-6 and diff["charts/episodic_return"] == 0.0


# ---- the optimizer -----------------------------------------------------------------------------------------
def test_learners_step_with_fused_adamw_on_cpu_and_it_matches_the_loop():
    agent = REINFORCE("transformer", ENV, **BASE)
    assert agent.optimizer.param_groups[0]["fused"] is True
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(7, 5)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused, loop = make_adamw(a, lr=1e-2, weight_decay=0.01), torch.optim.AdamW(b, lr=1e-2, weight_decay=0.01)
    for step in range(5):
        for pa, pb in zip(a, b):
            g = torch.randn(7, 5, generator=torch.Generator().manual_seed(step))
            pa.grad, pb.grad = g.clone(), g.clone()
        fused.step()
        loop.step()
    assert max(float((pa - pb).detach().abs().max()) for pa, pb in zip(a, b)) < 1e-6


def test_make_adamw_falls_back_where_no_fused_kernel_applies():
    doubles = [torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))]
    assert make_adamw(doubles, lr=1e-3).param_groups[0]["fused"] is True  # float64 is fine
    meta = [torch.nn.Parameter(torch.zeros(3, device="meta"))]
    assert not make_adamw(meta, lr=1e-3).param_groups[0].get("fused")


def test_an_optimizer_state_resumes_with_this_process_kernel_whatever_the_file_says(tmp_path):
    params = [torch.nn.Parameter(torch.randn(4, 3))]
    loop = torch.optim.AdamW(params, lr=1e-3)  # a checkpoint from before the fused optimizer
    params[0].grad = torch.ones(4, 3)
    loop.step()
    save_optimizer(loop, tmp_path)
    fused = make_adamw(params, lr=1e-3)
    load_optimizer(fused, tmp_path)
    assert fused.param_groups[0]["fused"] is True
    assert int(fused.state[params[0]]["step"]) == 1
    fused.step()  # the loaded state steps on the fused kernel
    # a tampered file cannot switch a kernel on
    import json

    meta = json.loads((tmp_path / "optimizer.json").read_text())
    meta["param_groups"][0].update(fused=True, capturable=True, foreach=True)
    (tmp_path / "optimizer.json").write_text(json.dumps(meta))
    plain = torch.optim.AdamW(params, lr=1e-3, foreach=False)
    load_optimizer(plain, tmp_path)
    group = plain.param_groups[0]
    assert not group["fused"] and not group["capturable"] and group["foreach"] is False
    plain.step()
    assert all(math.isfinite(float(v)) for v in np.asarray(params[0].detach()).ravel())
