"""Issue 16, item 1: SB3, sb3-contrib and Gymnasium's own tools on TextEnv ids, by id, unmodified.

SB3 builds an env from an id with ``render_mode="rgb_array"`` (and retries without it only on TypeError), so
these all rest on the env's ``rgb_array`` frames (see tests/text_env/test_render.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import text_env  # noqa: F401  (registers the ids)

ENV_ID = "TextEnv/Reverse-L4-v0"
ROOT = Path(__file__).resolve().parents[2]


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.policy.parameters()])


def test_ppo_by_env_id_learns() -> None:
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", "TextEnv/Reverse-v0", n_steps=128, batch_size=64, n_epochs=2, seed=0)
    assert model.env.render_mode == "rgb_array"
    before = _params(model)
    model.learn(total_timesteps=384)
    assert model.num_timesteps == 384
    assert not torch.equal(before, _params(model))
    frame = model.env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


@pytest.mark.parametrize("vec_env", ["dummy", "subproc"])
def test_make_vec_env_by_id(vec_env: str) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    cls = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}[vec_env]
    # SubprocVecEnv's default start method (forkserver) starts fresh workers that import the main module
    # (a user's script), never pytest's test module: "text_env:" has Gymnasium import text_env there first
    env_id = f"text_env:{ENV_ID}" if vec_env == "subproc" else ENV_ID
    venv = make_vec_env(env_id, n_envs=2, seed=0, vec_env_cls=cls)
    try:
        assert venv.get_attr("render_mode") == ["rgb_array", "rgb_array"]
        model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0)
        model.learn(total_timesteps=256)
        assert model.num_timesteps == 256
        frames = venv.get_images()
        assert len(frames) == 2 and {f.shape for f in frames} == {frames[0].shape}
    finally:
        venv.close()


SCRIPT = """
import text_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

if __name__ == "__main__":
    venv = make_vec_env("TextEnv/Reverse-L4-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0).learn(64)
    print("timesteps", model.num_timesteps, venv.get_attr("render_mode"))
    venv.close()
"""


def test_a_users_script_runs_subproc_vec_env_by_the_bare_id(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "timesteps 64 ['rgb_array', 'rgb_array']" in out.stdout


@pytest.mark.parametrize("algo", ["QRDQN", "TRPO"])
def test_sb3_contrib_by_env_id(algo: str) -> None:
    import sb3_contrib

    cls = getattr(sb3_contrib, algo)
    kwargs = (
        {"learning_starts": 32, "buffer_size": 500, "batch_size": 32}
        if algo == "QRDQN"
        else {"n_steps": 64, "batch_size": 64}
    )
    model = cls("MlpPolicy", ENV_ID, seed=0, **kwargs)
    before = _params(model)
    model.learn(total_timesteps=192)  # TRPO: three updates, past its first (it needs a double backward)
    assert model.num_timesteps == 192
    assert not torch.equal(before, _params(model))


def test_gymnasium_async_vector_env_by_id() -> None:
    # "text_env:" as for SubprocVecEnv: under a spawn/forkserver context the workers import it themselves
    envs = gym.make_vec(f"text_env:{ENV_ID}", num_envs=2, vectorization_mode="async")
    try:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (2, *envs.single_observation_space.shape)
        ended = np.zeros(2, dtype=bool)
        for _ in range(12):  # past the end of every episode (budget 5): autoreset across processes
            obs, rewards, terminated, truncated, _ = envs.step(envs.action_space.sample())
            ended |= terminated | truncated
        assert obs.shape[0] == 2 and rewards.shape == (2,) and ended.all()
    finally:
        envs.close()


def _episodes(env: gym.Env, n: int, seed: int = 0) -> None:
    for i in range(n):
        env.reset(seed=seed + i)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated


def test_render_collection_gives_one_frame_per_step() -> None:
    """What RecordVideo writes: every frame the same size, distinct as the completion grows."""
    env = gym.wrappers.RenderCollection(gym.make(ENV_ID, render_mode="rgb_array"))
    env.reset(seed=0)
    env.step(5)
    env.step(6)
    frames = env.render()
    assert len(frames) == 3  # reset + 2 steps
    assert {f.shape for f in frames} == {frames[0].shape} and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])


def test_record_video_writes_a_video(tmp_path: Path) -> None:
    pytest.importorskip("moviepy", reason="gymnasium's RecordVideo needs moviepy (pip install moviepy)")
    env = gym.wrappers.RecordVideo(
        gym.make(ENV_ID, render_mode="rgb_array"), str(tmp_path), episode_trigger=lambda i: True
    )
    _episodes(env, 2)
    env.close()
    videos = sorted(tmp_path.glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos)
    _assert_decodes_to_text_frames(videos[0], env.unwrapped.render().shape)


def test_vec_video_recorder_writes_a_video(tmp_path: Path) -> None:
    pytest.importorskip("moviepy", reason="SB3's VecVideoRecorder needs moviepy (pip install moviepy)")
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecVideoRecorder

    venv = VecVideoRecorder(
        make_vec_env(ENV_ID, n_envs=2, seed=0), str(tmp_path), record_video_trigger=lambda s: s == 0,
        video_length=12,
    )  # fmt: skip
    venv.reset()
    for _ in range(14):
        venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
    venv.close()
    videos = sorted(tmp_path.glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    _assert_decodes_to_text_frames(videos[0])


def _assert_decodes_to_text_frames(path: Path, shape: tuple[int, ...] | None = None) -> None:
    """The file is a real video: it decodes (imageio-ffmpeg, moviepy's reader) to several RGB frames of the
    rendered size that are not all alike (the completion grows from frame to frame)."""
    import imageio.v2 as imageio

    with imageio.get_reader(str(path)) as reader:
        frames = [np.asarray(f) for f in reader]
    assert len(frames) >= 2 and frames[0].ndim == 3 and frames[0].shape[2] == 3
    if shape is not None:
        assert frames[0].shape == shape
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])
