"""stable-baselines3 and sb3-contrib baselines on TextEnv ids, unmodified.

SB3's default ``MlpPolicy`` flattens the observation; for a window of token ids that would feed raw ids as
floats to an MLP (and a ``MultiDiscrete`` space would be one-hot encoded into ``context_len × vocab``
floats). :class:`TokenEmbeddingExtractor` instead embeds the ids and runs a small sequence encoder, so every
SB3 algorithm that accepts a features extractor (PPO, A2C, DQN, MaskablePPO, RecurrentPPO, QR-DQN, TRPO)
trains on every TextEnv id out of the box:

Which algorithms
    A TextEnv's actions are tokens, ``Discrete(vocab_size)``. Every SB3 / sb3-contrib algorithm whose
    action space admits ``Discrete`` is available (:func:`available_algorithms`: A2C, DQN, PPO; ARS,
    MaskablePPO, QRDQN, RecurrentPPO, TRPO); the continuous-control ones (DDPG, SAC, TD3; CrossQ, TQC) only
    support ``Box`` actions and are left out (:func:`box_only_algorithms`), since a token is not a point in
    a continuous space. Each gets the policy kwargs its policy accepts: ARS's linear/MLP ``ARSPolicy`` takes
    no features extractor, so it reads the raw window of ids (cast to floats) as SB3 ships it.

    >>> model = make_sb3("sb3:PPO", "TextEnv/Reverse-L4-v0", seed=0, n_steps=256)  # doctest: +SKIP
    >>> model.learn(total_timesteps=10_000)                                          # doctest: +SKIP

SB3 steps its single env through its own ``DummyVecEnv``, one token per ``predict``/``step`` call: this is the
per-token way our own agents avoid (they roll out whole batches with a KV cache), and the harness runs it as
SB3 ships it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def _math_attention() -> contextlib.AbstractContextManager:
        return sdpa_kernel(SDPBackend.MATH)

except ImportError:  # pragma: no cover - older torch: its CPU attention has no flash kernel to avoid

    def _math_attention() -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


logger = logging.getLogger(__name__)

# The spec prefixes that name an SB3 library, and the module each one imports.
SB3_LIBRARIES = {"sb3": "stable_baselines3", "sb3_contrib": "sb3_contrib"}
ENCODERS = ("transformer", "flatten")
# Keys of sb3_policy_kwargs(**overrides) that configure the extractor (the rest go to the policy).
_EXTRACTOR_KEYS = {"embed_dim", "features_dim", "n_heads", "encoder", "pad_id"}


class TokenEmbeddingExtractor(BaseFeaturesExtractor):
    """Features of a left-padded window of token ids: embedding → small sequence encoder → pooled vector.

    The observation ``(B, context_len)`` arrives as floats (SB3's ``preprocess_obs`` casts a ``Box`` to
    float32; ids below 2**24 are exact) and is cast back to ids. Each id gets a token embedding plus a learned
    embedding of its window position (the window is right-aligned: the last column is always the newest
    token). The encoder is

    - ``"transformer"`` (default): one pre-norm self-attention block that ignores pad positions, or
    - ``"flatten"``: no mixing; the whole window of embeddings is concatenated (order-aware and cheapest);

    and the features are ``ReLU(W [h_newest ; masked_mean(h)])`` (transformer) or ``ReLU(W flat(h))``
    (flatten) of size ``features_dim``. Pad ids (``pad_id``, 0 for the built-in tokenizers) embed to zero
    and are masked out of attention and pooling.

    Wherever gradients are on, the attention runs on PyTorch's *math* kernel: TRPO's natural-gradient step
    differentiates twice (Hessian-vector products), and the fused CPU flash kernel has no double backward
    ("derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"). At
    these sizes it is no slower (a forward + backward of 64 windows of 19 tokens: 0.8x the flash kernel's
    time here); inference (``torch.no_grad``, SB3's rollouts and ``predict``) keeps the default kernel.

    Args:
        observation_space: The env's ``Box(0, vocab_size - 1, (context_len,), int)``.
        embed_dim: Width of the token/position embeddings and of the encoder.
        features_dim: Size of the output vector fed to SB3's policy/value heads.
        n_heads: Attention heads of the transformer encoder (must divide ``embed_dim``).
        encoder: ``"transformer"`` or ``"flatten"``.
        pad_id: The padding id of the env's tokenizer.

    Example:
        >>> space = spaces.Box(0, 18, shape=(19,), dtype=np.int64)
        >>> ext = TokenEmbeddingExtractor(space, embed_dim=16, features_dim=32, n_heads=2)
        >>> ext(torch.tensor([[0.0] * 17 + [1.0, 5.0]])).shape
        torch.Size([1, 32])
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        embed_dim: int = 32,
        features_dim: int = 64,
        n_heads: int = 2,
        encoder: str = "transformer",
        pad_id: int = 0,
    ) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise TypeError(
                "TokenEmbeddingExtractor needs a 1-D Box observation space of token ids (a TextEnv window), "
                f"got {observation_space!r}"
            )
        if not np.issubdtype(observation_space.dtype, np.integer):
            raise TypeError(
                f"the observation space must hold integer token ids, got dtype {observation_space.dtype}"
            )
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        for name, value in (("embed_dim", embed_dim), ("features_dim", features_dim), ("n_heads", n_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if encoder == "transformer" and embed_dim % n_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by n_heads={n_heads}")
        super().__init__(observation_space, features_dim)
        self.vocab_size = int(np.max(observation_space.high)) + 1
        self.context_len = int(observation_space.shape[0])
        if not 0 <= pad_id < self.vocab_size:
            raise ValueError(f"pad_id must be a token id in [0, {self.vocab_size}), got {pad_id!r}")
        self.pad_id = int(pad_id)
        self.token_emb = nn.Embedding(self.vocab_size, embed_dim, padding_idx=self.pad_id)
        self.pos_emb = nn.Embedding(self.context_len, embed_dim)
        self.encoder_kind = encoder
        self.encoder = (
            nn.TransformerEncoderLayer(
                embed_dim,
                n_heads,
                dim_feedforward=2 * embed_dim,
                dropout=0.0,
                batch_first=True,
                norm_first=True,
            )
            if encoder == "transformer"
            else None
        )
        head_in = 2 * embed_dim if encoder == "transformer" else self.context_len * embed_dim
        self.head = nn.Sequential(nn.Linear(head_in, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        ids = observations.round().long().clamp_(0, self.vocab_size - 1)  # (B, L)
        pad = ids == self.pad_id  # (B, L)
        # a row of padding only (never produced by the env, but SB3 may probe with zeros): attend to the last
        pad[:, -1] &= ~pad.all(dim=1)
        pos = torch.arange(self.context_len, device=ids.device)
        h = self.token_emb(ids) + self.pos_emb(pos)[None]  # (B, L, E)
        if self.encoder is None:  # flatten: padding embeds to zero, so it adds nothing
            h = h * (~pad).unsqueeze(-1).to(h.dtype)
            return self.head(h.flatten(1))  # (B, features_dim)
        # differentiated forwards run the twice-differentiable math kernel (TRPO; see the class docstring)
        with _math_attention() if torch.is_grad_enabled() else contextlib.nullcontext():
            h = self.encoder(h, src_key_padding_mask=pad)  # (B, L, E)
        keep = (~pad).unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)  # (B, E)
        return self.head(torch.cat([h[:, -1], pooled], dim=-1))  # (B, features_dim)


def _base_env(env: Any) -> Any:
    return env.unwrapped if hasattr(env, "unwrapped") else env


def sb3_policy_kwargs(env: Any, **overrides: Any) -> dict[str, Any]:
    """Ready ``policy_kwargs`` for an SB3 algorithm on a TextEnv: the token-embedding extractor.

    Args:
        env: A TextEnv (or anything with ``unwrapped.tokenizer``), used for the pad id; None keeps pad id 0.
        **overrides: Extractor settings (``embed_dim``, ``features_dim``, ``n_heads``, ``encoder``,
            ``pad_id``) go to ``features_extractor_kwargs``; anything else (``net_arch``,
            ``lstm_hidden_size``, ...) is a policy kwarg and is returned at the top level.

    Example:
        >>> kw = sb3_policy_kwargs(None, embed_dim=32, net_arch=[64])
        >>> kw["features_extractor_kwargs"]["embed_dim"], kw["net_arch"]
        (32, [64])
    """
    tokenizer = getattr(_base_env(env), "tokenizer", None) if env is not None else None
    extractor: dict[str, Any] = {"pad_id": int(tokenizer.pad_id) if tokenizer is not None else 0}
    policy: dict[str, Any] = {}
    for key, value in overrides.items():
        (extractor if key in _EXTRACTOR_KEYS else policy)[key] = value
    return {
        "features_extractor_class": TokenEmbeddingExtractor,
        "features_extractor_kwargs": extractor,
        **policy,
    }


def resolve_sb3_class(spec: str) -> type[BaseAlgorithm]:
    """The algorithm class named by ``"sb3:PPO"``, ``"sb3_contrib:MaskablePPO"`` or a bare ``"PPO"``.

    Raises:
        ValueError: the spec names no SB3 / sb3-contrib algorithm (the message lists the available ones).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"an SB3 algorithm spec must be a string like 'sb3:PPO', got {spec!r}")
    prefix, _, name = spec.rpartition(":")
    prefix = prefix or "sb3"
    if prefix not in SB3_LIBRARIES:
        raise ValueError(
            f"unknown SB3 library {prefix!r} in {spec!r}; expected one of {sorted(SB3_LIBRARIES)}"
        )
    try:
        module = importlib.import_module(SB3_LIBRARIES[prefix])
    except ImportError as e:
        raise ImportError(f"{spec!r} needs the {SB3_LIBRARIES[prefix]!r} package: {e}") from e
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseAlgorithm)):
        left_out = box_only_algorithms(prefix)
        raise ValueError(
            f"{spec!r}: {SB3_LIBRARIES[prefix]} has no algorithm {name!r}; available: "
            f"{available_algorithms(prefix)}"
            + (
                f" (left out: {left_out}, which need Box actions; TextEnv actions are Discrete)"
                if left_out
                else ""
            )
        )
    policy_name = _policy_name(cls)
    if policy_name is None:
        raise ValueError(f"{spec!r}: {cls.__name__} has no MLP policy to put the token extractor in")
    if not supports_discrete_actions(cls):
        raise ValueError(
            f"{spec!r}: {cls.__name__} only supports Box (continuous) actions, and a TextEnv's actions are "
            f"Discrete tokens; algorithms that fit: {available_algorithms(prefix)}"
        )
    return cls


def _algorithm_classes(prefix: str) -> dict[str, type[BaseAlgorithm]]:
    module = importlib.import_module(SB3_LIBRARIES[prefix])
    return {
        n: c
        for n in dir(module)
        if isinstance(c := getattr(module, n), type) and issubclass(c, BaseAlgorithm) and _policy_name(c)
    }


def available_algorithms(prefix: str = "sb3") -> list[str]:
    """The algorithms of ``"sb3"`` or ``"sb3_contrib"`` that train on a TextEnv (Discrete actions).

    Example:
        >>> available_algorithms("sb3")
        ['A2C', 'DQN', 'PPO']
    """
    return sorted(n for n, c in _algorithm_classes(prefix).items() if supports_discrete_actions(c))


def box_only_algorithms(prefix: str = "sb3") -> list[str]:
    """The algorithms of ``"sb3"`` or ``"sb3_contrib"`` left out because they need Box actions.

    Example:
        >>> box_only_algorithms("sb3_contrib")
        ['CrossQ', 'TQC']
    """
    return sorted(n for n, c in _algorithm_classes(prefix).items() if not supports_discrete_actions(c))


class _DiscreteProbeEnv(gym.Env):
    """The smallest env with a TextEnv's spaces, to ask an SB3 class whether it accepts them."""

    observation_space = spaces.Box(0, 3, shape=(2,), dtype=np.int64)
    action_space = spaces.Discrete(4)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.int64), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, dtype=np.int64), 0.0, True, False, {}


@functools.cache
def supports_discrete_actions(cls: type[BaseAlgorithm]) -> bool:
    """Whether ``cls`` accepts a ``Discrete`` action space, as SB3 itself decides it.

    SB3 checks the action space against the algorithm's ``supported_action_spaces`` in
    ``BaseAlgorithm.__init__``; the class is built once, without its networks (``_init_setup_model=False``),
    on a two-token probe env.
    """
    policy_name = _policy_name(cls)
    if policy_name is None:
        return False
    try:
        cls(policy_name, _DiscreteProbeEnv(), device="cpu", _init_setup_model=False)  # type: ignore[call-arg]
    except TypeError:  # an algorithm without _init_setup_model: make_sb3 reports a mismatch when it builds it
        return True
    except AssertionError:  # "The algorithm only supports (Box,) as action spaces but Discrete(4) ..."
        return False
    return True


def _accepted_policy_kwargs(
    cls: type[BaseAlgorithm], policy_name: str, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """``kwargs`` without the token extractor when the algorithm's policy takes no features extractor
    (sb3-contrib's ARSPolicy); an extractor setting the user asked for is then an error, not dropped."""
    policy_cls = cls.policy_aliases[policy_name]
    params = inspect.signature(policy_cls.__init__).parameters
    if "features_extractor_class" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    asked = sorted(set(kwargs["features_extractor_kwargs"]) - {"pad_id"})
    if asked:
        raise ValueError(
            f"{cls.__name__}'s {policy_cls.__name__} takes no features extractor, so {asked} cannot be set; "
            "it reads the raw window of token ids"
        )
    logger.info("%s: %s takes no features extractor; it reads the raw token ids", cls.__name__, policy_cls)
    return {
        k: v for k, v in kwargs.items() if k not in ("features_extractor_class", "features_extractor_kwargs")
    }


def _policy_name(cls: type[BaseAlgorithm]) -> str | None:
    aliases = getattr(cls, "policy_aliases", {})
    for name in ("MlpLstmPolicy", "MlpPolicy"):  # RecurrentPPO's LSTM policy wraps the extractor too
        if name in aliases:
            return name
    return None


def make_sb3(
    algo_spec: str | type[BaseAlgorithm],
    env_id: str | gym.Env,
    seed: int = 0,
    *,
    env_kwargs: dict[str, Any] | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
    verbose: int = 0,
    **algo_kwargs: Any,
) -> BaseAlgorithm:
    """An SB3 / sb3-contrib model on a TextEnv, with the token-embedding extractor.

    The env is built with ``gym.make(env_id, **env_kwargs)`` (train split) and SB3 wraps it in its
    ``Monitor`` and ``DummyVecEnv`` as usual. MaskablePPO reads the env's ``action_masks()``; RecurrentPPO
    uses ``MlpLstmPolicy`` with the extractor in front of its LSTM.

    Args:
        algo_spec: ``"sb3:PPO"``, ``"sb3:A2C"``, ``"sb3:DQN"``, ``"sb3_contrib:MaskablePPO"``,
            ``"sb3_contrib:RecurrentPPO"``, ... (or the class itself).
        env_id: A TextEnv id (or an env instance).
        seed: Seeds the model, its env and its action space.
        env_kwargs: Passed to ``gym.make`` (e.g. ``task="file.jsonl"`` for ``TextEnv/Custom-v0``).
        policy_kwargs: Overrides for :func:`sb3_policy_kwargs` (extractor settings or policy kwargs).
        device: Torch device (CPU by default: SB3 runs MLP policies faster there).
        verbose: SB3's verbosity.
        **algo_kwargs: The algorithm's own hyperparameters (``n_steps``, ``learning_rate``, ...); SB3's
            defaults otherwise.

    Example:
        >>> model = make_sb3("sb3:A2C", "TextEnv/Copy-L4-v0", seed=1)
        >>> _ = model.learn(total_timesteps=50)
    """
    cls = resolve_sb3_class(algo_spec) if isinstance(algo_spec, str) else algo_spec
    if not (isinstance(cls, type) and issubclass(cls, BaseAlgorithm)):
        raise TypeError(
            f"algo_spec must be a spec like 'sb3:PPO' or an SB3 algorithm class, got {algo_spec!r}"
        )
    policy_name = _policy_name(cls)
    if policy_name is None:
        raise ValueError(f"{cls.__name__} has no MLP policy to put the token extractor in")
    if isinstance(env_id, str):
        import text_env  # noqa: F401  (registers the TextEnv ids)

        try:
            env = gym.make(env_id, **(env_kwargs or {}))
        except gym.error.Error as e:
            raise ValueError(f"cannot build env {env_id!r}: {e}") from e
    else:
        env = env_id
    if not isinstance(env.action_space, spaces.Discrete):
        raise TypeError(f"expected a Discrete action space (a TextEnv), got {env.action_space!r}")
    kwargs = _accepted_policy_kwargs(cls, policy_name, sb3_policy_kwargs(env, **(policy_kwargs or {})))
    try:
        return cls(
            policy_name, env, seed=seed, policy_kwargs=kwargs, device=device, verbose=verbose, **algo_kwargs
        )
    except AssertionError as e:  # SB3 asserts on unsupported action spaces (e.g. SAC needs Box actions)
        raise ValueError(f"{cls.__name__} cannot train on {env_id!r}: {e}") from e
