"""Whole PPO iterations (rollout + update): our PPO against stable-baselines3's PPO on the same env, with a
features extractor of the same transformer (2 layers × 128, 4 heads: our own ``TransformerLM`` trunk).

SB3 runs the way RL4LMs had to run it: a ``DummyVecEnv`` of single :class:`~text_env.TextGenEnv` s stepped
one token at a time, the policy re-encoding each slot's whole observation window (``context_len`` tokens,
left-padded) at every step and again for every sample of every update epoch. Ours rolls out all slots
through the native vector env with a KV cache and trains on one full-sequence forward per episode.

Both sides use the same batch (64 slots), epochs, minibatch count (4 per epoch), learning rate, clip range,
γ = 1 and λ = 0.95, and run whole iterations in alternating rounds; tokens/s = env steps ÷ seconds. Ours
keeps its KL leash to a frozen reference (β = 0.05: an extra reference forward per rollout that SB3 does
not pay) and runs every epoch (no early stop). SB3's env slots are bare ``TextGenEnv`` (no wrappers), and
its policy heads are single linear layers on the trunk's last hidden state (``net_arch=[]``), like ours.

Usage::

    python -m benchmarks.train_loop [--quick] [--device auto]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.policies.transformer import TransformerConfig, TransformerLM
from agents.ppo import PPO
from benchmarks.machine import sync
from benchmarks.profiling import op_table
from benchmarks.workloads import ENV_ID, alternate, mask_stop_tokens, med, run_cli
from text_env import TextGenEnv

BAR = 30.0  # issue 7: our PPO iteration ÷ SB3-style per-token PPO >= 30x


class TransformerWindowExtractor(BaseFeaturesExtractor):
    """SB3 features of a left-padded window of token ids: our ``TransformerLM`` trunk run over the whole
    window, the last position's hidden state (``n_embd`` features).

    Args:
        observation_space: The env's ``Box(0, vocab_size - 1, (context_len,), int64)``.
        config: The trunk's :class:`TransformerConfig` fields (same as the policy it is compared with).
        pad_id: The tokenizer's padding id (masked out of attention).
    """

    def __init__(self, observation_space: spaces.Box, config: dict[str, Any], pad_id: int) -> None:
        super().__init__(observation_space, features_dim=int(config["n_embd"]))
        self.trunk = TransformerLM(TransformerConfig(**config))
        self.pad_id = pad_id

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        ids = observations.round().long()  # SB3 hands a Box observation over as float32
        mask = ids != self.pad_id
        mask[:, -1] = True  # the newest token is always real (guards SB3's all-zero probe observations)
        return self.trunk.hidden_states(ids, mask)[:, -1]  # (B, n_embd)


@dataclass
class LoopShape:
    name: str
    max_new_tokens: int | None  # None: the registered budget
    sb3_n_steps: int  # steps per slot per SB3 rollout: about our tokens per slot per iteration
    n_epochs: int
    eos_masked: bool = False  # our policy may not emit EOS: every episode runs the whole budget

    def env_kwargs(self) -> dict[str, Any]:
        return {} if self.max_new_tokens is None else {"max_new_tokens": self.max_new_tokens}


REGISTERED = LoopShape("registered", None, sb3_n_steps=9, n_epochs=4)
LONG = LoopShape("long", 64, sb3_n_steps=20, n_epochs=1)
# every episode 64 tokens (RLHF-length completions): SB3's cost per token does not depend on where its
# episodes end (it re-encodes the 82-token window per step either way), so only ours is masked
LONG_FULL = LoopShape("long-full", 64, sb3_n_steps=64, n_epochs=1, eos_masked=True)


def make_ours(shape: LoopShape, device: torch.device) -> PPO:
    agent = PPO(
        "transformer", ENV_ID, n_envs=64, n_epochs=shape.n_epochs, batch_size=16, max_approx_kl=None,
        kl_coef=0.05, learning_rate=1e-4, seed=0, device=str(device), env_kwargs=shape.env_kwargs(),
    )  # fmt: skip
    if shape.eos_masked:
        mask_stop_tokens(agent.policy, agent.env.task)
        mask_stop_tokens(agent.reference, agent.env.task)
    return agent


def make_sb3(shape: LoopShape, device: torch.device, n_envs: int, ours: PPO) -> SB3PPO:
    spec = gym.spec(ENV_ID)
    kwargs = {**spec.kwargs, **shape.env_kwargs()}
    venv = DummyVecEnv([lambda: TextGenEnv(**kwargs)] * n_envs)
    cfg = ours.policy.config.to_dict()
    n_steps = shape.sb3_n_steps if n_envs > 1 else shape.sb3_n_steps * 64
    return SB3PPO(
        "MlpPolicy", venv, n_steps=n_steps, batch_size=n_steps * n_envs // 4, n_epochs=shape.n_epochs,
        learning_rate=1e-4, gamma=1.0, gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2, max_grad_norm=1.0,
        seed=0, device=device,
        policy_kwargs={
            "features_extractor_class": TransformerWindowExtractor,
            "features_extractor_kwargs": {"config": cfg, "pad_id": ours.env.tokenizer.pad_id},
            "net_arch": [],
        },
    )  # fmt: skip


def _sb3_phase_timers(model: SB3PPO, device: torch.device) -> dict[str, float]:
    totals = {"rollout": 0.0, "update": 0.0}
    for attr, key in (("collect_rollouts", "rollout"), ("train", "update")):
        fn = getattr(model, attr)

        def timed(*args: Any, _fn: Any = fn, _key: str = key, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = _fn(*args, **kwargs)
            sync(device)
            totals[_key] += time.perf_counter() - start
            return out

        setattr(model, attr, timed)
    return totals


def measure(shape: LoopShape, device: torch.device, rounds: int, sb3_envs: list[int]) -> dict[str, Any]:
    ours = make_ours(shape, device)
    sb3 = {n: make_sb3(shape, device, n, ours) for n in sb3_envs}
    sb3_phases = {n: _sb3_phase_timers(m, device) for n, m in sb3.items()}
    counts: dict[str, list[int]] = {"ours": []} | {f"sb3_{n}env": [] for n in sb3_envs}
    rollout_fraction: list[float] = []

    def ours_iteration(r: int) -> float:
        before = ours.num_timesteps
        sync(device)
        start = time.perf_counter()
        ours.learn(total_timesteps=1, reset_num_timesteps=False)  # exactly one iteration
        sync(device)
        seconds = time.perf_counter() - start
        if r >= 0:
            counts["ours"].append(ours.num_timesteps - before)
            rollout_fraction.append(ours.logger.rows[-1]["charts/rollout_fraction"])
        return seconds

    def sb3_iteration(n: int):
        model = sb3[n]

        def it(r: int) -> float:
            steps = model.n_steps * model.n_envs
            if r < 0:
                model.learn(total_timesteps=steps, reset_num_timesteps=False)
                sb3_phases[n].update(rollout=0.0, update=0.0)
                return 0.0
            sync(device)
            start = time.perf_counter()
            model.learn(total_timesteps=steps, reset_num_timesteps=False)
            sync(device)
            counts[f"sb3_{n}env"].append(steps)
            return time.perf_counter() - start

        return it

    fns = {"ours": ours_iteration} | {f"sb3_{n}env": sb3_iteration(n) for n in sb3_envs}
    times = alternate(fns, rounds)
    rates = {k: [c / t for c, t in zip(counts[k], times[k])] for k in fns}
    budget = "registered budget (9)" if shape.max_new_tokens is None else f"{shape.max_new_tokens} new tokens"
    if shape.eos_masked:
        budget += " (ours: EOS masked, every episode runs them all)"
    out: dict[str, Any] = {
        "describe": f"{ENV_ID}, {budget}, batch 64, {shape.n_epochs} epoch(s) x 4 minibatches",
        "context_len": ours.env.context_len,
        "n_epochs": shape.n_epochs,
        "rounds": rounds,
        "ours_tokens_per_s": med(rates["ours"]),
        "ours_tokens_per_iteration": med(counts["ours"]),
        "ours_rollout_fraction": med(rollout_fraction),
        "sb3": {},
    }
    for n in sb3_envs:
        k = f"sb3_{n}env"
        total = sum(sb3_phases[n].values()) or 1.0
        ratios = [o / s for o, s in zip(rates["ours"], rates[k])]
        out["sb3"][k] = {
            "n_envs": n,
            "n_steps": sb3[n].n_steps,
            "tokens_per_s": med(rates[k]),
            "tokens_per_iteration": med(counts[k]),
            "rollout_fraction": sb3_phases[n]["rollout"] / total,
            "ratio": med(ratios),
            "ratio_rounds": ratios,
        }
    return out


def update_profile(device: torch.device) -> dict[str, Any]:
    """torch.profiler of one PPO update (4 epochs x 4 minibatches) on a registered-shape batch."""
    agent = make_ours(REGISTERED, device)
    batch = agent.collect_rollouts()
    agent.policy.train()
    agent.train(batch)  # warm-up: AdamW state, first-touch allocations
    return op_table(lambda: agent.train(batch), device)


def run(device: torch.device, quick: bool = False) -> dict[str, Any]:
    shapes = [(REGISTERED, [64])] if quick else [(REGISTERED, [64, 1]), (LONG, [64]), (LONG_FULL, [64])]
    rounds = 2 if quick else 3
    res: dict[str, Any] = {"bar": BAR, "shapes": {}}
    for shape, envs in shapes:
        res["shapes"][shape.name] = measure(shape, device, rounds if shape is REGISTERED else 2, envs)
    res["profile_update"] = update_profile(device)
    head = res["shapes"]["registered"]["sb3"]["sb3_64env"]
    res["headline_ratio"] = head["ratio"]
    res["meets_bar"] = head["ratio"] >= BAR
    return res


def print_result(res: dict[str, Any]) -> None:
    for name, s in res["shapes"].items():
        print(f"[{name}] {s['describe']}, window {s['context_len']} tokens")
        print(
            f"  ours (KV-cached, native vector env)  {s['ours_tokens_per_s']:>9,.0f} tokens/s  "
            f"(rollout {100 * s['ours_rollout_fraction']:.0f}% of the iteration)"
        )
        for v in s["sb3"].values():
            print(
                f"  SB3 PPO, DummyVecEnv x{v['n_envs']:<3}          {v['tokens_per_s']:>9,.0f} tokens/s  "
                f"(rollout {100 * v['rollout_fraction']:.0f}%)  ratio {v['ratio']:.1f}x (bar >= {BAR:.0f}x)"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli("train_loop", __doc__, run, print_result, argv)


if __name__ == "__main__":
    main()
