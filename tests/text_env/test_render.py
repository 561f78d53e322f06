"""Issue 16, item 1: ``render_mode="rgb_array"`` frames of an episode's text."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from text_env import TextGenEnv, TextGenVectorEnv
from text_env.render import COMPLETION_BG, COMPLETION_FG, PROMPT_FG, UnsupportedRenderMode


def _has_colour(frame: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    return bool((frame == np.asarray(rgb, dtype=np.uint8)).all(axis=-1).any())


def _near(frame: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels within ``tol`` of ``rgb`` (glyph cores; their edges are blended with the background)."""
    return int((np.abs(frame.astype(int) - np.asarray(rgb)).max(axis=-1) <= tol).sum())


def _episode_frames(env: gym.Env, actions: list[int], seed: int = 0) -> list[np.ndarray]:
    env.reset(seed=seed)
    frames = [env.render()]
    for a in actions:
        env.step(a)
        frames.append(env.render())
    return frames


def test_rgb_array_frames_show_prompt_and_completion_apart() -> None:
    env = gym.make("TextEnv/Reverse-L4-v0", render_mode="rgb_array")
    tok = env.unwrapped.tokenizer
    a, b = tok.encode("a")[0], tok.encode("b")[0]
    frames = _episode_frames(env, [a, b, tok.eos_id])
    first = frames[0]
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    assert first.shape[0] % 16 == 0 and first.shape[1] % 16 == 0  # what video encoders want
    assert {f.shape for f in frames} == {first.shape}  # recorders need one size per env
    # the prompt is drawn in the prompt colour; before any action nothing is in the completion colour
    assert _near(first, PROMPT_FG) > 20 and _near(first, COMPLETION_FG) == 0
    # each token adds completion-coloured glyphs on the completion band
    counts = [_near(f, COMPLETION_FG) for f in frames[:3]]
    assert counts[0] < counts[1] < counts[2]
    assert _has_colour(frames[2], COMPLETION_BG)
    assert not np.array_equal(frames[2], frames[3])  # the status line shows the end (and the return)


def test_rgb_array_is_deterministic_and_follows_the_text() -> None:
    def run(seed: int) -> list[np.ndarray]:
        env = TextGenEnv("reverse", length=4, render_mode="rgb_array")
        return _episode_frames(env, [5, 6, 7], seed=seed)

    one, two = run(0), run(0)
    assert all(np.array_equal(x, y) for x, y in zip(one, two, strict=True))
    other = run(3)  # another prompt
    assert not np.array_equal(one[0], other[0])


def test_blank_frame_before_reset_and_long_text_keeps_its_end() -> None:
    env = TextGenEnv("reverse", length=4, render_mode="rgb_array")
    blank = env.render()
    assert blank.shape[2] == 3 and (blank == 255).all()
    # a pinned prompt far longer than the frame: its end (and the completion) stays in view
    env.reset(seed=0, options={"prompt": "ab" * 2000})
    frame = env.render()
    assert frame.shape == blank.shape and _near(frame, PROMPT_FG) > 0


def test_unsupported_render_mode_is_a_type_error_for_sb3_and_a_value_error() -> None:
    for make in (
        lambda: TextGenEnv("reverse", render_mode="video"),
        lambda: TextGenVectorEnv(render_mode="x"),
    ):
        with pytest.raises(UnsupportedRenderMode, match=r"render_mode '(video|x)' is not supported") as info:
            make()
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_vector_env_renders_one_frame_per_slot() -> None:
    envs = TextGenVectorEnv("reverse", num_envs=3, length=4, render_mode="rgb_array")
    envs.reset(seed=0)
    envs.step(np.array([5, 6, 7]))
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 3
    assert {f.shape for f in frames} == {frames[0].shape} and frames[0].dtype == np.uint8
    single = TextGenEnv("reverse", length=4, render_mode="rgb_array").render()
    assert frames[0].shape == single.shape
    assert not np.array_equal(frames[0], frames[1])  # different prompts and tokens
    assert all(_near(f, COMPLETION_FG) > 0 for f in frames)
