"""SB3 and sb3-contrib on every TextEnv id, unmodified, through the token-embedding extractor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.sb3 import TokenEmbeddingExtractor, make_sb3, resolve_sb3_class, sb3_policy_kwargs
from text_env.registration import ENTRIES

# The language tasks (BPE vocabularies of thousands of tokens, windows of 50-150 tokens, heavier rewards)
# take several seconds per algorithm: they run with the expensive tests.
SYNTHETIC_TASKS = {"copy", "reverse", "sort", "arithmetic", "keyword", ""}
# The -Dense twins share their tasks with the sparse ids: one of them (an action reward) runs always.
DENSE_ALWAYS = "TextEnv/Reverse-L4-Dense-v0"


def _cheap(e: Any) -> bool:
    return e.task in SYNTHETIC_TASKS and ("-Dense-" not in e.env_id or e.env_id == DENSE_ALWAYS)


ENV_IDS = [pytest.param(e.env_id, marks=() if _cheap(e) else pytest.mark.expensive) for e in ENTRIES]
STEPS = 256
# Small networks and short rollouts so that every algorithm updates several times within STEPS.
TINY_POLICY = {"embed_dim": 16, "features_dim": 32, "n_heads": 2, "net_arch": [32]}
ALGOS: dict[str, dict[str, Any]] = {
    "sb3:PPO": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "sb3:A2C": {"n_steps": 8},
    "sb3:DQN": {"learning_starts": 64, "buffer_size": 1_000, "batch_size": 32, "train_freq": 4},
    "sb3_contrib:MaskablePPO": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "sb3_contrib:RecurrentPPO": {"n_steps": 64, "batch_size": 64, "n_epochs": 1},
}


def _params(model: Any) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.policy.parameters()])


@pytest.mark.parametrize("algo", list(ALGOS))
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_learns_on_every_env(env_id: str, algo: str, make_env: Callable[..., gym.Env]) -> None:
    env = make_env(env_id)  # skips ids whose data package is missing; gives Custom-v0 a task file
    policy_kwargs = dict(TINY_POLICY)
    if algo.endswith("RecurrentPPO"):
        policy_kwargs.update(lstm_hidden_size=16, net_arch=dict(pi=[32], vf=[32]))
    model = make_sb3(algo, env, seed=0, policy_kwargs=policy_kwargs, **ALGOS[algo])
    assert any(isinstance(m, TokenEmbeddingExtractor) for m in model.policy.modules())
    before = _params(model)
    model.learn(total_timesteps=STEPS)
    assert model.num_timesteps >= STEPS
    assert not torch.equal(before, _params(model)), f"{algo} did not update its weights on {env_id}"

    obs, _ = env.reset(seed=1)
    kwargs: dict[str, Any] = {"deterministic": True}
    if algo.endswith("MaskablePPO"):
        mask = env.unwrapped.action_masks()
        kwargs["action_masks"] = mask
    action, _ = model.predict(obs, **kwargs)
    assert env.action_space.contains(int(action))
    if algo.endswith("MaskablePPO"):
        assert mask[int(action)], "MaskablePPO chose a token the task does not allow"
    env.close()


# ---- the extractor ----------------------------------------------------------------------------------------
SPACE = spaces.Box(0, 18, shape=(8,), dtype=np.int64)


def _window(*ids: int) -> torch.Tensor:
    return torch.tensor([[0] * (8 - len(ids)) + list(ids)], dtype=torch.float32)


@pytest.mark.parametrize("encoder", ["transformer", "flatten"])
def test_extractor_shape_and_order_sensitivity(encoder: str) -> None:
    torch.manual_seed(0)
    ext = TokenEmbeddingExtractor(SPACE, embed_dim=8, features_dim=12, n_heads=2, encoder=encoder)
    ab, ba = ext(_window(1, 5, 6)), ext(_window(1, 6, 5))
    assert ab.shape == (1, 12) and ext.features_dim == 12
    assert not torch.allclose(ab, ba), "the features must depend on token order (reverse/sort need it)"
    batch = ext(torch.cat([_window(1, 5, 6), _window(1, 6, 5)]))
    assert torch.allclose(batch[0], ab[0], atol=1e-6) and torch.allclose(batch[1], ba[0], atol=1e-6)


def test_extractor_ignores_padding() -> None:
    """The padding positions carry no information: a longer window of the same tokens gives the same
    transformer features once the positions line up (right-aligned windows)."""
    torch.manual_seed(0)
    ext = TokenEmbeddingExtractor(SPACE, embed_dim=8, features_dim=12, n_heads=2)
    wide = TokenEmbeddingExtractor(
        spaces.Box(0, 18, shape=(12,), dtype=np.int64), embed_dim=8, features_dim=12, n_heads=2
    )
    wide.load_state_dict({k: v for k, v in ext.state_dict().items() if k != "pos_emb.weight"}, strict=False)
    with torch.no_grad():
        wide.pos_emb.weight[4:] = (
            ext.pos_emb.weight
        )  # the last 8 positions of the wide window = the narrow one
    narrow_out = ext(_window(1, 5, 6))
    wide_out = wide(torch.tensor([[0.0] * 9 + [1.0, 5.0, 6.0]]))
    assert torch.allclose(narrow_out, wide_out, atol=1e-5)


def test_extractor_rejects_bad_settings() -> None:
    with pytest.raises(TypeError, match="1-D Box"):
        TokenEmbeddingExtractor(spaces.Discrete(5))
    with pytest.raises(TypeError, match="integer token ids"):
        TokenEmbeddingExtractor(spaces.Box(0.0, 1.0, shape=(4,)))
    with pytest.raises(ValueError, match="encoder must be one of"):
        TokenEmbeddingExtractor(SPACE, encoder="lstm")
    with pytest.raises(ValueError, match="divisible by n_heads"):
        TokenEmbeddingExtractor(SPACE, embed_dim=10, n_heads=4)
    with pytest.raises(ValueError, match="pad_id"):
        TokenEmbeddingExtractor(SPACE, pad_id=19)


def test_policy_kwargs_split_extractor_and_policy_settings() -> None:
    env = gym.make("TextEnv/Copy-L4-v0")
    kw = sb3_policy_kwargs(env, embed_dim=16, net_arch=[8], encoder="flatten")
    assert kw["features_extractor_class"] is TokenEmbeddingExtractor
    assert kw["features_extractor_kwargs"] == {
        "pad_id": env.unwrapped.tokenizer.pad_id,
        "embed_dim": 16,
        "encoder": "flatten",
    }
    assert kw["net_arch"] == [8]


def test_resolve_and_make_errors() -> None:
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    assert resolve_sb3_class("sb3:PPO") is PPO and resolve_sb3_class("PPO") is PPO
    assert resolve_sb3_class("sb3_contrib:MaskablePPO") is MaskablePPO
    with pytest.raises(ValueError, match=r"no algorithm 'Nope'; available: .*'PPO'"):
        resolve_sb3_class("sb3:Nope")
    with pytest.raises(ValueError, match="unknown SB3 library 'rllib'"):
        resolve_sb3_class("rllib:PPO")
    with pytest.raises(ValueError, match="'sb3:SAC': SAC only supports Box"):
        make_sb3("sb3:SAC", "TextEnv/Copy-L4-v0")
    from stable_baselines3 import SAC

    with pytest.raises(ValueError, match="SAC cannot train on 'TextEnv/Copy-L4-v0'"):
        make_sb3(SAC, "TextEnv/Copy-L4-v0")  # a class passed as is: SB3's own check, reported clearly
    with pytest.raises(ValueError, match="cannot build env 'TextEnv/Nope-v0'"):
        make_sb3("sb3:PPO", "TextEnv/Nope-v0")


def test_make_sb3_is_seeded() -> None:
    """SB3 seeds the global RNGs at construction, so runs are reproducible when built and trained in turn."""

    def run(seed: int) -> torch.Tensor:
        model = make_sb3("sb3:A2C", "TextEnv/Arithmetic-D1-v0", seed=seed, policy_kwargs=TINY_POLICY)
        return _params(model.learn(40))

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---- which algorithms, with which policy kwargs (issue 16, item 2) ---------------------------------------
def test_only_algorithms_that_fit_discrete_actions_are_offered() -> None:
    from agents.sb3 import available_algorithms, box_only_algorithms

    assert available_algorithms("sb3") == ["A2C", "DQN", "PPO"]
    assert available_algorithms("sb3_contrib") == ["ARS", "MaskablePPO", "QRDQN", "RecurrentPPO", "TRPO"]
    assert box_only_algorithms("sb3_contrib") == ["CrossQ", "TQC"]
    with pytest.raises(ValueError, match=r"available: \['ARS', .*'TRPO'\] \(left out: \['CrossQ', 'TQC'\]"):
        resolve_sb3_class("sb3_contrib:Nope")
    for spec in ("sb3_contrib:TQC", "sb3_contrib:CrossQ", "sb3:SAC"):
        with pytest.raises(ValueError, match=r"only supports Box .* actions"):
            resolve_sb3_class(spec)


def test_ars_gets_the_policy_kwargs_its_policy_accepts() -> None:
    """ARSPolicy takes no features extractor: ARS reads the raw ids (before: a TypeError at run time)."""
    model = make_sb3("sb3_contrib:ARS", "TextEnv/Copy-L4-v0", seed=0, n_delta=2)
    assert not any(isinstance(m, TokenEmbeddingExtractor) for m in model.policy.modules())
    model.learn(total_timesteps=40)
    # its weights start at zero and move only when candidates' returns differ (sparse reward): count updates
    assert model._n_updates >= 1
    with pytest.raises(ValueError, match=r"takes no features extractor, so \['embed_dim'\] cannot be set"):
        make_sb3("sb3_contrib:ARS", "TextEnv/Copy-L4-v0", policy_kwargs={"embed_dim": 16})


def test_trpo_gets_past_its_first_update() -> None:
    """TRPO's Hessian-vector products differentiate the extractor's attention twice; the CPU flash kernel
    cannot (RuntimeError: derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward)."""
    model = make_sb3(
        "sb3_contrib:TRPO", "TextEnv/Copy-L4-v0", seed=0, policy_kwargs=TINY_POLICY, n_steps=32, batch_size=32
    )
    before = _params(model)
    model.learn(total_timesteps=64)
    assert model._n_updates == 2 and not torch.equal(before, _params(model))


def test_extractor_inference_is_unchanged_by_the_math_kernel() -> None:
    """The twice-differentiable kernel is used where gradients are on; it computes the same features."""
    torch.manual_seed(0)
    ext = TokenEmbeddingExtractor(SPACE, embed_dim=8, features_dim=12, n_heads=2)
    x = torch.cat([_window(1, 5, 6), _window(2, 3)])
    with torch.no_grad():
        inference = ext(x)
    assert torch.allclose(ext(x), inference, atol=1e-6)
