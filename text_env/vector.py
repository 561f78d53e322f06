"""TextGenVectorEnv: N text-generation slots stepped together in numpy.

Registered as every TextEnv id's ``vector_entry_point``, so
``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` builds it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from text_env.action_space import TokenBatchSpace, TokenSpace
from text_env.core import TextGenEnv
from text_env.engine import GenerationState, check_seed, check_state_size, pinned_index, resolve_env_args
from text_env.render import TextRenderer, check_render_mode
from text_env.tasks.base import Task
from text_env.tokenizers import never_emitted_ids
from text_env.validate import positive_int

LOCKSTEP = AutoresetMode.DISABLED


class TextGenVectorEnv(VectorEnv):
    """N copies of :class:`~text_env.core.TextGenEnv` with the same semantics, natively batched.

    For the same seed and actions it produces what ``SyncVectorEnv`` over N single envs produces (slot ``i``
    is seeded with ``seed + i``), but each step is a handful of numpy operations over all slots, and rewards
    are computed once per step for the whole batch.

    Autoreset modes (``autoreset_mode``), as Gymnasium defines them:

    - ``NEXT_STEP`` (default): a slot that finished on step t returns its final observation; on step t+1 its
      action is ignored, it resets and returns the first observation of the new episode with reward 0.
    - ``SAME_STEP``: a finishing slot resets in the same step; its final observation and info are in
      ``info["final_obs"]`` / ``info["final_info"]``.
    - ``DISABLED`` ("lockstep", for batched language-model rollouts): no autoreset. Finished slots ignore
      their actions and get reward 0 with ``terminated = truncated = False``; ``self.finished`` tells which
      slots are done, and ``reset()`` restarts every slot together (``options={"reset_mask": m}`` restarts
      some). All slots then share one position in the token stream, which a shared KV cache wants.

    Infos are dicts of arrays with ``_key`` masks: ``reward_parts`` (a nested dict, one entry per reward),
    and for slots whose episode ended this step ``prompt``, ``completion``, ``reference``, ``is_success``.

    Example:
        >>> envs = TextGenVectorEnv("reverse", num_envs=4)
        >>> obs, info = envs.reset(seed=0)
        >>> obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        task: Task | str | Any = "reverse",
        num_envs: int = 1,
        reward: Any = None,
        split: str = "train",
        max_new_tokens: int | None = None,
        context_len: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        **task_kwargs: Any,
    ) -> None:
        num_envs = positive_int(num_envs, "num_envs")
        check_render_mode(render_mode, self.metadata["render_modes"])
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            modes = [m.value for m in AutoresetMode]
            raise ValueError(f"unknown autoreset_mode {autoreset_mode!r}; expected one of {modes}") from None
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        if max_episode_steps is not None and max_new_tokens is None:
            max_new_tokens = max_episode_steps  # gym.make_vec passes the registered limit under this name
        self.task, self.reward, self.max_new_tokens, self.context_len = resolve_env_args(
            task, reward, max_new_tokens, context_len, task_kwargs
        )
        self.num_envs = int(num_envs)
        check_state_size(self.num_envs, self.context_len, self.max_new_tokens)
        self.split = split
        self.render_mode = render_mode
        self.tokenizer = self.task.tokenizer
        self._state = GenerationState(
            self.task, split, self.num_envs, self.reward, self.context_len, self.max_new_tokens
        )
        v = self.tokenizer.vocab_size
        never = never_emitted_ids(self.tokenizer)
        self.single_action_space = TokenSpace(v, never=never)
        self.single_observation_space = spaces.Box(0, v - 1, shape=(self.context_len,), dtype=np.int64)
        self.action_space = TokenBatchSpace(v, self.num_envs, never=never)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._all_slots = np.arange(self.num_envs)
        self._renderer: TextRenderer | None = None

    # ---- gymnasium API ------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        st = self._state
        n = self.num_envs
        if seed is not None:
            if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
                base = int(seed)
                check_seed(base)
                seeds: list[int | None] = [base + i for i in range(n)]
            elif isinstance(seed, (list, tuple, np.ndarray)):
                seeds = [check_seed(s, f"seed[{i}]") for i, s in enumerate(seed)]
            else:
                raise TypeError(
                    f"seed must be None, an int ≥ 0 or a list of {n} of them, got "
                    f"{type(seed).__name__}: {seed!r}"
                )
            if len(seeds) != n:
                raise ValueError(f"reset got {len(seeds)} seeds for {n} envs; expected {n}")
            for i, s in enumerate(seeds):
                st.set_generator(i, seeding.np_random(s)[0])
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
        for i in range(n):
            if st.generators[i] is None:
                st.set_generator(i, seeding.np_random(None)[0])
        if options and not isinstance(options, dict):
            raise TypeError(f"options must be a dict, got {type(options).__name__}: {options!r}")
        mask = np.ones(n, dtype=bool)
        if options and "reset_mask" in options:
            try:
                mask = np.asarray(options["reset_mask"])
            except (TypeError, ValueError):  # e.g. a ragged list
                mask = np.asarray(None)
            if mask.dtype != bool or mask.shape != (n,):
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({n},), got {mask!r}")
        slots = np.flatnonzero(mask)
        pinned = pinned_index(st, options, n)
        st.reset_slots(slots, None if pinned is None else pinned[slots])
        self._autoreset[slots] = False
        info = self._reset_info(slots)
        return st.obs.copy(), info

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        st = self._state
        n = self.num_envs
        acts = st.validate_actions(actions, (n,))
        mode = self.autoreset_mode
        if mode == AutoresetMode.NEXT_STEP:
            resetting = self._autoreset
            active = ~resetting & ~st.finished
        else:
            resetting = None
            active = ~st.finished
        if not active.any() and (resetting is None or not resetting.any()):
            raise RuntimeError(
                "every slot has finished (or reset() was never called); call reset() before step()"
            )

        out = st.step(acts, active)
        reward = out["reward"]
        terminated, truncated, done = out["terminated"], out["truncated"], out["done"]
        info = self._step_info(out)

        if resetting is not None:  # AutoresetMode.NEXT_STEP
            r = np.flatnonzero(resetting)
            if len(r):
                st.reset_slots(r)
                info = _merge_infos(info, self._reset_info(r))
            self._autoreset = done.copy()
        elif mode == AutoresetMode.SAME_STEP:
            d = np.flatnonzero(done)
            if len(d):
                final_obs = np.full(n, None, dtype=object)
                for i in d:  # gymnasium keeps each slot's final observation as its own object
                    final_obs[i] = st.obs[i].copy()
                final_info = _restrict(info, done)
                st.reset_slots(d)
                info = _merge_infos(_restrict(info, ~done), self._reset_info(d))
                info["final_obs"], info["_final_obs"] = final_obs, done.copy()
                info["final_info"], info["_final_info"] = final_info, done.copy()
        return st.obs.copy(), reward.astype(np.float64), terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Bool ``(num_envs, vocab_size)``: the tokens the task allows, per slot."""
        return np.broadcast_to(
            self.task.action_mask.astype(bool), (self.num_envs, self.tokenizer.vocab_size)
        ).copy()

    def render(self) -> tuple[str, ...] | tuple[np.ndarray, ...] | None:
        """Per slot: ``"ansi"`` the text (prompt│completion); ``"rgb_array"`` an ``(H, W, 3)`` uint8 image
        of it like :meth:`TextGenEnv.render` (status: the step, or "done"); else None."""
        if self.render_mode not in ("ansi", "rgb_array"):
            return None
        st = self._state
        texts = st.completions_text(self._all_slots)
        if self.render_mode == "ansi":
            return tuple(f"{st.prompts[st.example[i]]}\u2502{t}" for i, t in enumerate(texts))
        if self._renderer is None:
            self._renderer = TextRenderer.for_state(st)
        frames = []
        for i, t in enumerate(texts):
            done = bool(st.finished[i])
            status = f"step {int(st.steps[i])}/{self.max_new_tokens}" + ("  done" if done else "")
            frames.append(self._renderer.render(str(st.prompts[st.example[i]]), t, status, cursor=not done))
        return tuple(frames)

    # ---- extras for batched rollouts ----------------------------------------------------------------
    @property
    def finished(self) -> np.ndarray:
        """Bool ``(num_envs,)``: slots whose episode has ended and not restarted."""
        return self._state.finished.copy()

    @property
    def prompt_index(self) -> np.ndarray:
        """The split index of each slot's current prompt."""
        return self._state.example.copy()

    def completions(self) -> list[str]:
        """Each slot's completion text so far."""
        return self._state.completions_text(self._all_slots)

    def single_env(self, **overrides: Any) -> TextGenEnv:
        """A single env with the same task, reward and limits (for evaluation or SB3)."""
        kwargs: dict[str, Any] = dict(
            task=self.task,
            reward=self.reward,
            split=self.split,
            max_new_tokens=self.max_new_tokens,
            context_len=self.context_len,
        )
        kwargs.update(overrides)
        return TextGenEnv(**kwargs)

    # ---- infos ----------------------------------------------------------------------------------------
    def _reset_info(self, slots: np.ndarray) -> dict[str, Any]:
        n = self.num_envs
        st = self._state
        mask = np.zeros(n, dtype=bool)
        mask[slots] = True
        prompt = np.full(n, None, dtype=object)
        prompt[slots] = st.prompts[st.example[slots]]
        idx = np.zeros(n, dtype=np.int64)
        idx[slots] = st.example[slots]
        return {"prompt": prompt, "_prompt": mask, "prompt_index": idx, "_prompt_index": mask.copy()}

    def _step_info(self, out: dict[str, Any]) -> dict[str, Any]:
        n = self.num_envs
        st = self._state
        info: dict[str, Any] = {}
        if out["parts"]:
            parts: dict[str, Any] = {}
            any_mask = np.zeros(n, dtype=bool)
            for name, v in out["parts"].items():
                parts[name] = v
                parts[f"_{name}"] = out["parts_mask"][name]
                any_mask |= out["parts_mask"][name]
            info["reward_parts"], info["_reward_parts"] = parts, any_mask
        done = out["done"]
        d = np.flatnonzero(done)
        if len(d):
            batch = out["batch"]
            completion = np.full(n, None, dtype=object)
            completion[d] = batch.completions
            prompt = np.full(n, None, dtype=object)
            prompt[d] = st.prompts[st.example[d]]
            ref = np.full(n, None, dtype=object)
            ref[d] = [None if r is None else r[0] for r in st.references[st.example[d]]]
            info.update(
                prompt=prompt,
                _prompt=done.copy(),
                completion=completion,
                _completion=done.copy(),
                reference=ref,
                _reference=done.copy(),
            )
            idx = np.zeros(n, dtype=np.int64)
            idx[d] = st.example[d]
            info["prompt_index"], info["_prompt_index"] = idx, done.copy()
            if self.task.success is not None:
                info["is_success"], info["_is_success"] = out["success"].copy(), done.copy()
        return info


def _restrict(info: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    """The entries of a masked info dict for the slots in ``keep`` only (keys left with no slot vanish)."""
    out: dict[str, Any] = {}
    for k, v in info.items():
        if k.startswith("_"):
            continue
        m = info[f"_{k}"] & keep
        if not m.any():
            continue
        out[k] = _restrict(v, keep) if isinstance(v, dict) else v
        out[f"_{k}"] = m
    return out


def _merge_infos(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Merge two masked info dicts: where ``b``'s mask is set, ``b``'s value wins."""
    out = dict(a)
    for k, v in b.items():
        if k.startswith("_"):
            continue
        m = b[f"_{k}"]
        if k in a:
            av, am = a[k], a[f"_{k}"]
            if isinstance(v, dict):
                out[k] = _merge_infos(av, v)
            else:
                merged = av.copy() if av.dtype == v.dtype else av.astype(object)
                merged[m] = v[m]
                out[k] = merged
            out[f"_{k}"] = am | m
        else:
            out[k], out[f"_{k}"] = v, m.copy()
    return out
