"""What each rank of the data-parallel tests runs (under ``torchrun --nproc_per_node=2``): one scenario, whose
findings each rank writes to ``<out>/rank<r>.json`` for the test to check.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed/worker.py SCENARIO OUT

Rank 0 also builds single-process agents in the same process (``single_process()`` hides the world from
them), so that a data-parallel update and the single-process update of the same global batch are compared
on the same machine and the same weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import agents.on_policy as on_policy
from agents import A2C, PPO, REINFORCE, RLOO
from agents.advantages import masked_mean, masked_whiten
from agents.callbacks import BaseCallback
from agents.distributed import World, get_world
from agents.evaluation import evaluate_policy
from agents.policies import TransformerPolicy
from agents.rollout import RolloutBatch, RolloutCollector, make_rollout_env
from text_env.tasks.base import Task

torch.set_num_threads(1)

ENV = "TextEnv/Reverse-L4-v0"
TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def graded(prompts: list[str], completions: list[str], references: list[Any]) -> list[float]:
    """A reward with a spread from a fresh policy (a task reward is 0 for nearly every episode, and
    zero advantages would hide a wrong normaliser): the length, and the first character right."""
    return [0.25 * len(c) + (1.0 if c[:1] == p[-2:-1] else 0.0) for p, c in zip(prompts, completions)]


LR = 1e-3
BASE = dict(
    n_envs=8, seed=1, device="cpu", lr_warmup=0, learning_rate=LR, policy_kwargs=TINY,
    env_kwargs={"reward": "partial_match"}, kl_coef=0.1, target_kl=0.01, kl_horizon=50,
)  # fmt: skip
GRADED = {**BASE, "env_kwargs": {"reward": graded}}
LEARNERS: dict[str, tuple[type, dict[str, Any]]] = {
    "ppo": (PPO, {"n_epochs": 2, "batch_size": 3}),
    "ppo_k2": (PPO, {"k": 2, "batch_size": 2, "n_epochs": 1}),
    "rloo": (RLOO, {"k": 2}),
    "reinforce": (REINFORCE, {}),
    "a2c": (A2C, {}),
    # micro-batches inside each rank's rows: every chunk divides by the global minibatch's count too
    "ppo_micro": (PPO, {"n_epochs": 2, "batch_size": 3, "micro_batch_size": 1}),
    "rloo_micro": (RLOO, {"k": 2, "micro_batch_size": 3}),
}


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Agents built inside see a world of one process (no collective), as a plain run does."""
    saved = on_policy.get_world
    on_policy.get_world = World
    try:
        yield
    finally:
        on_policy.get_world = saved


def flat(tensors: Any) -> np.ndarray:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors]).numpy()


def sha(agent: Any) -> str:
    """A digest of the policy's weights (equal digests: bitwise equal weights)."""
    return hashlib.sha256(flat(agent.policy.parameters()).tobytes()).hexdigest()


def grads(agent: Any) -> np.ndarray:
    return flat(p.grad if p.grad is not None else torch.zeros_like(p) for p in agent.policy.parameters())


def rows(batch: RolloutBatch, sl: slice) -> RolloutBatch:
    """Rows ``sl`` of a batch (every column kept)."""
    out = {}
    for k, v in batch._asdict().items():
        out[k] = v[sl] if isinstance(v, (torch.Tensor, np.ndarray, list)) else v
    return RolloutBatch(**out)


def global_batch(agent: Any, seed: int = 123) -> RolloutBatch:
    """The same n_envs episodes on every rank: a full-size rollout of the shared initial weights."""
    tok = on_policy.policy_env_tokenizer(agent.policy)  # an HF policy's env speaks its tokenizer
    env = make_rollout_env(ENV, agent.config.n_envs, policy_tokenizer=tok, **agent.config.env_kwargs)
    return RolloutCollector(agent.policy, env, agent.reference, num_threads=1).collect(seed=seed)


def make_naive(agent: Any) -> None:
    """The mistake the equivalence test must catch: each rank averages over its own tokens only."""

    def local_count(rows_: Any = None) -> float:
        lo, hi = agent._shard.start, agent._shard.stop
        glob = agent._global_lengths
        if rows_ is None:
            return float(glob[lo:hi].sum()) * agent.world.size
        r = np.asarray(rows_.cpu() if isinstance(rows_, torch.Tensor) else rows_)
        r = r[(r >= lo) & (r < hi)]
        return float(glob[r].sum()) * agent.world.size

    agent.global_count = local_count
    agent.batch_mean = lambda x, m, rows_=None: masked_mean(x, m)
    agent.whiten = lambda x, m, eps=1e-8: masked_whiten(x, m, eps)


def scenario_equivalence(world: World, out: dict[str, Any]) -> None:
    for name, (cls, kw) in LEARNERS.items():
        for naive in (False, True):
            agent = cls("transformer", ENV, **GRADED, **kw)
            batch = global_batch(agent)
            if naive:
                make_naive(agent)
            stats = agent.update(rows(batch, agent._shard))
            res = {"weights": flat(agent.policy.parameters()), "grads": grads(agent)}
            key = f"{name}{'_naive' if naive else ''}"
            out[key] = {"kl_coef": agent.kl.value, "num_timesteps": agent.num_timesteps, "stats": stats}
            if world.is_main and not naive:
                with single_process():
                    ref = cls("transformer", ENV, **GRADED, **kw)
                    assert ref.world.size == 1
                    ref_stats = ref.update(batch)
                out[key]["ref"] = {
                    "kl_coef": ref.kl.value, "num_timesteps": ref.num_timesteps, "stats": ref_stats,
                    "weights_diff": float(np.abs(flat(ref.policy.parameters()) - res["weights"]).max()),
                    "grads_diff": float(np.abs(grads(ref) - res["grads"]).max()),
                    "grads_scale": float(np.abs(grads(ref)).max()),
                }  # fmt: skip
                out["_ref_" + name] = {
                    "weights": flat(ref.policy.parameters()).tolist(),
                    "grads": grads(ref).tolist(),
                }
            out[key]["weights"] = res["weights"].tolist() if world.is_main else None
            out[key]["grads"] = res["grads"].tolist() if world.is_main else None


def one_prompt_task() -> Task:
    rows_ = [{"prompt": "ab=", "reference": "ba", "split": s} for s in ("train", "validation", "test")]
    return Task.from_examples(rows_, name="one-prompt", max_new_tokens=4)


def scenario_train(world: World, out: dict[str, Any]) -> None:
    """Three iterations: weights on every rank, the prompts each rank drew, the completions of one prompt."""
    for name in ("ppo", "rloo"):
        cls, kw = LEARNERS[name]
        agent = cls("transformer", ENV, **BASE, **kw)
        prompts = []

        def record(locals_: dict[str, Any], globals_: dict[str, Any]) -> bool:
            prompts.append(locals_["batch"].prompt_index.tolist())  # noqa: B023
            return True

        agent.learn(3 * 8 * 4, callback=record)
        out[name] = {
            "iterations": agent.iteration,
            "num_timesteps": agent.num_timesteps,
            "weights_sha": sha(agent),
            "optimizer_sha": hashlib.sha256(
                flat(t for s in agent.optimizer.state.values() for t in s.values() if t.dim()).tobytes()
            ).hexdigest(),
            "prompts": prompts,
            "rows": [agent._shard.start, agent._shard.stop],
            "kl_coef": agent.kl.value,
            "rows_logged": agent.logger.rows[-1] if world.is_main else None,
        }
        out[name]["eval"] = agent.evaluate(n_episodes=9)  # sharded: 5 prompts on rank 0, 4 on rank 1
        if world.is_main:  # the single-process plan of the same seeds, and evaluation of the same weights
            out[name]["eval_ref"] = evaluate_policy(agent.policy, agent.env, n_episodes=9)
            with single_process():
                ref = cls("transformer", ENV, **BASE, **kw)
                plan = []
                for it in range(3):
                    ref.iteration = it
                    plan.append(ref.collect_rollouts().prompt_index.tolist())
            out[name]["plan"] = plan
    agent = PPO("transformer", one_prompt_task(), **{**BASE, "env_kwargs": {}}, n_epochs=1)
    out["one_prompt_completions"] = agent.collect_rollouts().completions


def scenario_resume(world: World, out: dict[str, Any], root: Path) -> None:
    cls, kw = LEARNERS["ppo"]
    budget = 8 * 4  # one iteration's tokens at most: learn(budget) runs about 1-2 iterations
    straight = cls("transformer", ENV, **BASE, **kw)
    straight.learn(4 * budget)
    run = root / "run"
    dirs = {"checkpoint_dir": run, "log_dir": run / "logs"}
    first = cls("transformer", ENV, **BASE, **kw, **dirs, checkpoint_every=1)
    first.learn(2 * budget)
    first.save(run)
    it1 = first.iteration
    del first
    resumed = cls.load(run, **dirs)
    resumed.learn(4 * budget - resumed.num_timesteps, reset_num_timesteps=False)
    resumed.save(run)
    out["straight"] = {
        "iteration": straight.iteration,
        "num_timesteps": straight.num_timesteps,
        "sha": sha(straight),
    }
    out["resumed"] = {"iteration": resumed.iteration, "num_timesteps": resumed.num_timesteps}
    out["resumed"].update(first=it1, sha=sha(resumed))
    out["run"] = str(run)


class StopOnRank(BaseCallback):
    """Returns False on one rank at one iteration; or sends this process SIGTERM there."""

    def __init__(self, rank: int, at: int, how: str) -> None:
        super().__init__()
        self.rank, self.at, self.how = rank, at, how

    def _on_step(self) -> bool:
        if self.model.world.rank == self.rank and self.model.iteration == self.at:
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
                return True
            return False
        return True


def scenario_stops(world: World, out: dict[str, Any], root: Path) -> None:
    cls, kw = LEARNERS["ppo"]
    for how in ("false", "sigterm"):
        ckpt = root / how
        agent = cls("transformer", ENV, **BASE, **kw, checkpoint_dir=ckpt, checkpoint_every=100)
        agent.learn(100 * 8 * 4, callback=StopOnRank(1, 2, how))
        out[how] = {"iteration": agent.iteration, "saved": sorted(p.name for p in ckpt.glob("ckpt-*"))}
    agent = cls("transformer", ENV, **{**BASE, **kw, "max_approx_kl": 1e-12, "n_epochs": 4})
    agent.learn(2 * 8 * 4)
    row = agent.logger.rows[-1]
    out["early_stop"] = {"iteration": agent.iteration, "stopped_early": row["losses/stopped_early"]}
    # a non-finite loss on rank 1 alone: every rank skips that update
    agent = cls("transformer", ENV, **{**BASE, **kw, "n_epochs": 1})
    if world.rank == 1:
        real = agent.forward_batch
        calls = {"n": 0}

        def poisoned(batch: Any, idx: Any = slice(None)) -> Any:
            calls["n"] += 1
            logp, v, e = real(batch, idx)
            return (logp * float("nan"), v, e) if calls["n"] == 1 else (logp, v, e)

        agent.forward_batch = poisoned
    agent.learn(2 * 8 * 4)
    out["nonfinite"] = {"skipped": agent.skipped_updates, "iteration": agent.iteration, "sha": sha(agent)}


def scenario_hf(world: World, out: dict[str, Any]) -> None:
    """The Hugging Face policy path (a tiny random Llama, full and LoRA): one PPO update of a global batch
    against the single process, then 2 iterations with the replicas bitwise equal."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))
    from hf_fixtures import tiny_hf_policy

    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0}
    kw = {**GRADED, "n_envs": 4, "policy_kwargs": {}, "n_epochs": 1, "batch_size": 2}
    for name, extra in (("full", {}), ("lora", {"lora": lora})):
        agent = PPO(tiny_hf_policy(seed=world.rank, **extra), ENV, **kw)  # rank 0's weights are broadcast
        batch = global_batch(agent)
        agent.update(rows(batch, agent._shard))
        res: dict[str, Any] = {"sha": sha(agent)}
        if world.is_main:
            with single_process():
                ref = PPO(tiny_hf_policy(seed=0, **extra), ENV, **kw)
                ref.update(batch)
            res["weights_diff"] = float(
                np.abs(flat(ref.policy.parameters()) - flat(agent.policy.parameters())).max()
            )
        agent.learn(2 * 4 * 4, reset_num_timesteps=False)
        res.update(iterations=agent.iteration, sha_after=sha(agent))
        out[name] = res


def scenario_sft(world: World, out: dict[str, Any]) -> None:
    """A few SFT steps on 2 ranks against the same steps in one process (the cache off: no shortcut)."""
    sft_module = importlib.import_module("agents.sft")  # (``agents.sft`` is also the function)

    kw = dict(steps=6, batch_size=7, learning_rate=3e-3, warmup=2, seed=2, policy_kwargs=TINY, cache=False)
    policy = sft_module.sft(ENV, device="cpu", **kw)
    out["sha"] = hashlib.sha256(flat(policy.parameters()).tobytes()).hexdigest()
    if world.is_main:
        saved = sft_module.get_world
        sft_module.get_world = World
        try:
            ref = sft_module.sft(ENV, device="cpu", **kw)
        finally:
            sft_module.get_world = saved
        out["weights_diff"] = float(np.abs(flat(ref.parameters()) - flat(policy.parameters())).max())
        fresh = TransformerPolicy.for_task(make_rollout_env(ENV, 1).task, seed=2, **TINY)
        out["moved"] = float(np.abs(flat(fresh.parameters()) - flat(ref.parameters())).max())


def main() -> None:
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    world = get_world()
    assert world.size == 2, world
    out: dict[str, Any] = {"rank": world.rank, "size": world.size}
    if scenario == "equivalence":
        scenario_equivalence(world, out)
    elif scenario == "train":
        scenario_train(world, out)
    elif scenario == "sft":
        scenario_sft(world, out)
    elif scenario == "hf":
        scenario_hf(world, out)
    elif scenario in ("resume", "stops"):
        root = out_dir / "shared"  # rank 0 writes here; the other ranks never read it (no shared filesystem)
        (scenario_resume if scenario == "resume" else scenario_stops)(world, out, root)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    world.barrier()
    (out_dir / f"rank{world.rank}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
