"""TextGenEnv: one episode is one prompt and its completion, generated one token per step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from text_env.action_space import TokenSpace
from text_env.engine import GenerationState, check_seed, pinned_index, resolve_env_args
from text_env.render import TextRenderer, check_render_mode
from text_env.tasks.base import Task
from text_env.tokenizers import never_emitted_ids


class TextGenEnv(gym.Env):
    """Text generation as a Gymnasium environment: the agent writes a completion for a prompt, one token at
    a time.

    ## Description
    Each episode samples a prompt from a :class:`~text_env.tasks.Task` split and asks the agent to continue
    it. The agent emits token ids; the episode ends when it emits EOS (or a task stop token) or exhausts its
    token budget. The finished completion is scored by the task's *state* reward (exact match, ROUGE, a
    learned reward model, ...); *action* rewards (e.g. a repetition penalty) score every token.

    ## Action Space
    ``Discrete(vocab_size)``: the id of the next token. ``action_masks()`` gives the tokens the task allows
    (for MaskablePPO; never ``pad``, ``bos`` or ``unk``); other tokens are legal actions but never correct.
    ``action_space.sample()`` leaves out ``pad``, ``bos`` and ``unk`` (a
    :class:`~text_env.action_space.TokenSpace`, a ``Discrete`` in every other respect).

    ## Observation Space
    ``Box(0, vocab_size - 1, (context_len,), int64)``: the last ``context_len`` tokens of
    ``[BOS] + prompt + completion``, left-padded with ``pad_id``. Text is in ``info``, never in the
    observation. (Not ``MultiDiscrete``: SB3 would one-hot encode it into context_len × vocab floats.)

    ## Starting State
    ``[BOS] + prompt`` for a prompt drawn uniformly from the split with ``self.np_random``.

    ## Rewards
    On every step: the weighted sum of the action rewards (0 if there are none). On the step that ends the
    episode, terminated or truncated: plus the weighted sum of the state rewards. ``info["reward_parts"]``
    holds each reward's unweighted value.

    ## Episode End
    - Termination: the action is EOS or one of the task's stop tokens (the token is not part of the
      completion).
    - Truncation: ``max_new_tokens`` actions were taken without a stop token. The env truncates itself
      (the registered ids carry no ``TimeLimit``), so a stop token as the last budget action terminates
      without truncating, as in the vector env.

    ## Information
    Every step: ``prompt``, ``completion`` (text so far), ``prompt_index``, ``reward_parts``. At the end also
    ``is_success`` (the task's success test) and ``reference`` (the first reference, if any). ``reset`` gives
    ``prompt``, ``prompt_index`` and ``completion`` (empty).

    ## Arguments
    - ``task``: a registered task name (``"reverse"``), a Task, or a path to a JSONL/CSV file.
    - ``reward``: a reward spec overriding the task's default (name, ``{name: weight}``, callable, Reward).
    - ``split``: ``"train"``, ``"validation"`` or ``"test"``.
    - ``max_new_tokens``: the token budget (default: the task's).
    - ``context_len``: observation width (default: room for BOS + the longest prompt + the budget).
    - ``render_mode``: ``"ansi"`` (``render()`` returns the text), ``"human"`` (prints it) or
      ``"rgb_array"`` (``render()`` returns an ``(H, W, 3)`` uint8 image of the text: the prompt in blue,
      the completion in red on a yellow band, a status line with the step and, at the end, the return; see
      :mod:`text_env.render`). Another mode raises :class:`~text_env.render.UnsupportedRenderMode`, a
      ``ValueError`` that is also a ``TypeError`` (SB3's ``make_vec_env`` retries without
      ``render_mode`` only on ``TypeError``).
    - ``**task_kwargs``: passed to the task factory, e.g. ``length=4`` for reverse.

    ``reset(options=...)`` accepts ``{"prompt_index": i}`` or ``{"prompt": "text"}`` to pin a prompt.

    ## Version History
    - v0: initial release. Amended without a version bump (the default-budget episodes, rewards and
      observations are unchanged): the ids are registered without a ``TimeLimit``, so the env's own budget
      governs. Before, a larger ``max_new_tokens`` passed to ``gym.make`` was cut at the registered limit
      without the state reward, and an EOS on the last budget token came back ``terminated`` *and*
      ``truncated`` from ``gym.make`` (``terminated`` only from the vector env); ``spec.max_episode_steps``
      is now ``None``.

    Example:
        >>> env = TextGenEnv("reverse", length=4)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    """

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        task: Task | str | Any = "reverse",
        reward: Any = None,
        split: str = "train",
        max_new_tokens: int | None = None,
        context_len: int | None = None,
        render_mode: str | None = None,
        **task_kwargs: Any,
    ) -> None:
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.task, self.reward, self.max_new_tokens, self.context_len = resolve_env_args(
            task, reward, max_new_tokens, context_len, task_kwargs
        )
        self.split = split
        self.tokenizer = self.task.tokenizer
        self.render_mode = render_mode
        self._state = GenerationState(self.task, split, 1, self.reward, self.context_len, self.max_new_tokens)
        v = self.tokenizer.vocab_size
        self.action_space = TokenSpace(v, never=never_emitted_ids(self.tokenizer))
        self.observation_space = spaces.Box(0, v - 1, shape=(self.context_len,), dtype=np.int64)
        self._all = np.ones(1, dtype=bool)
        self._slot0 = np.zeros(1, dtype=np.int64)
        self._last_info: dict[str, Any] = {}
        self._return = 0.0
        self._renderer: TextRenderer | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=check_seed(seed))
        st = self._state
        if seed is not None or st.generators[0] is not self.np_random:
            st.set_generator(0, self.np_random)
        st.reset_slots(self._slot0, pinned_index(st, options))
        info = {"prompt": self._prompt(), "prompt_index": int(st.example[0]), "completion": ""}
        self._last_info = info
        self._return = 0.0
        return st.obs[0].copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        st = self._state
        if st.finished[0]:
            raise RuntimeError(
                "the episode has ended (or reset() was never called); call reset() before step()"
            )
        act = st.validate_actions(action, ())
        out = st.step(act, self._all)
        done = bool(out["done"][0])
        info: dict[str, Any] = {
            "prompt": self._prompt(),
            "prompt_index": int(st.example[0]),
            "completion": st.completions_text(self._slot0)[0],
            "reward_parts": {k: float(v[0]) for k, v in out["parts"].items()},
        }
        if done:
            ref = st.references[st.example[0]]
            info["reference"] = None if ref is None else ref[0]
            if self.task.success is not None:
                info["is_success"] = bool(out["success"][0])
        self._last_info = info
        self._return += float(out["reward"][0])
        if self.render_mode == "human":
            print(self.render_text())
        return (
            st.obs[0].copy(),
            float(out["reward"][0]),
            bool(out["terminated"][0]),
            bool(out["truncated"][0]),
            info,
        )

    def action_masks(self) -> np.ndarray:
        """Bool ``(vocab_size,)``: the tokens the task allows (sb3-contrib's MaskablePPO reads this)."""
        return self.task.action_mask.astype(bool)

    def render_text(self) -> str:
        info = self._last_info
        if not info:
            return ""
        return f"{info['prompt']}\u2502{info.get('completion', '')}"

    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "ansi":
            return self.render_text()
        if self.render_mode == "human":
            print(self.render_text())
        if self.render_mode == "rgb_array":
            return self.render_rgb()
        return None

    def render_rgb(self) -> np.ndarray:
        """The current episode as an ``(H, W, 3)`` uint8 image (the ``rgb_array`` frame; the size is fixed
        per env). Before the first reset: a blank frame."""
        if self._renderer is None:
            self._renderer = TextRenderer.for_state(self._state)
        info = self._last_info
        if not info:
            return self._renderer.render("", "")
        st = self._state
        steps = int(st.steps[0])
        done = bool(st.finished[0])
        status = f"step {steps}/{self.max_new_tokens}"
        if done:
            status += f"  return {self._return:.3g}"
            if "is_success" in info:
                status += "  solved" if info["is_success"] else "  not solved"
        return self._renderer.render(info["prompt"], info.get("completion", ""), status, cursor=not done)

    def _prompt(self) -> str:
        return str(self._state.prompts[self._state.example[0]])
