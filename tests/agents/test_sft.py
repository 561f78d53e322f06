"""Tests for agents.sft: the demonstration encoding and its loss mask (checked by hand), the loss itself,
that training lowers it and yields a perfect policy on a one-step task, the per-task checkpoint cache (hit,
miss, damaged entry), and how an env argument resolves to a Task."""

from __future__ import annotations

import importlib

import gymnasium as gym
import pytest
import torch
import torch.nn.functional as F

from agents import evaluate_policy, make_rollout_env, sft
from agents.policies import load_policy
from agents.sft import encode_demonstrations, sft_loss, task_of
from text_env.tasks.base import Task
from text_env.tokenizers import never_emitted_ids

# `agents.sft` the attribute is the function (agents/__init__ re-exports it); the module is reached by name
sft_module = importlib.import_module("agents.sft")

FAST = {"warmup": 5, "learning_rate": 3e-3}  # tiny budgets: short warmup, a brisk learning rate
TINY_MODEL_KW = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def test_encode_demonstrations_by_hand():
    rows = [
        {"prompt": "ab=", "reference": "ba", "split": "train"},
        {"prompt": "a=", "reference": "a", "split": "train"},
        {"prompt": "b=", "reference": "b", "split": "validation"},
        {"prompt": "b=", "reference": "b", "split": "test"},
    ]
    task = Task.from_examples(rows, name="hand", max_new_tokens=4)
    assert task.tokenizer.alphabet == ["=", "a", "b"]  # ids: pad 0, bos 1, eos 2, unk 3, '=' 4, 'a' 5, 'b' 6
    ids, attention, loss_mask = encode_demonstrations(task)
    # [BOS] a b = | b a [EOS]        and        [BOS] a = | a [EOS] pad pad
    assert ids.tolist() == [[1, 5, 6, 4, 6, 5, 2], [1, 5, 4, 5, 2, 0, 0]]
    assert attention.tolist() == [[True] * 7, [True] * 5 + [False] * 2]
    # position j predicts token j+1: the targets are the completion and EOS, never the prompt or padding
    assert loss_mask.tolist() == [
        [False, False, False, True, True, True, False],
        [False, False, True, True, False, False, False],
    ]
    assert ids.dtype == torch.long and attention.dtype == loss_mask.dtype == torch.bool
    val_ids, _, _ = encode_demonstrations(task, split="validation")
    assert val_ids.tolist() == [[1, 6, 4, 6, 2]]


def test_sft_loss_is_cross_entropy_on_the_masked_targets(tiny_reverse_task, make_policy):
    policy = make_policy(tiny_reverse_task)
    policy.temperature = 0.5  # the loss is taken under the sampling distribution
    ids, attention, loss_mask = encode_demonstrations(tiny_reverse_task)
    with torch.no_grad():
        loss = sft_loss(policy, ids, attention, loss_mask)
        logits, _ = policy(ids, attention)
    m = loss_mask[:, :-1]
    never = torch.tensor(never_emitted_ids(policy.tokenizer))  # pad/bos/unk: outside the distribution
    scaled = (logits / 0.5).index_fill(-1, never, torch.finfo(logits.dtype).min)
    want = F.cross_entropy(scaled[:, :-1][m], ids[:, 1:][m])
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert int(m.sum()) == sum(len(r) + 1 for _, r in tiny_reverse_task.demonstrations())


def test_sft_lowers_the_loss(tiny_reverse_task, make_policy, isolated_cache):
    policy = make_policy(tiny_reverse_task)
    batch = encode_demonstrations(tiny_reverse_task)
    with torch.no_grad():
        before = sft_loss(policy, *batch).item()
    trained = sft(tiny_reverse_task, steps=60, policy=policy, **FAST)
    with torch.no_grad():
        after = sft_loss(trained, *batch).item()
    assert after < 0.5 * before, (before, after)
    assert not trained.training  # handed back ready to roll out
    assert not (isolated_cache / "sft").exists()  # a given policy is never cached (its weights are not keyed)


def test_sft_makes_a_one_step_policy_perfect(one_step_task, make_policy):
    before = evaluate_policy(make_policy(one_step_task), one_step_task, n_episodes=4)["success_rate"]
    policy = sft(one_step_task, steps=150, policy_kwargs=dict(TINY_MODEL_KW), cache=False, **FAST)
    out = evaluate_policy(policy, one_step_task, n_episodes=4)
    assert before < 1.0 and out["success_rate"] == 1.0 and out["mean_return"] == 1.0


def state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def forbid_training(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("sft trained although its cache holds this checkpoint")

    monkeypatch.setattr(sft_module, "sft_loss", boom)


def test_sft_cache_hit_returns_identical_weights_without_training(one_step_task, isolated_cache, monkeypatch):
    kw = dict(steps=20, policy_kwargs=dict(TINY_MODEL_KW), **FAST)
    first = sft(one_step_task, **kw)
    entries = list((isolated_cache / "sft").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("one-step-")
    assert (entries[0] / "config.json").exists() and (entries[0] / "model.safetensors").exists()
    with monkeypatch.context() as m:
        forbid_training(m)
        second = sft(one_step_task, **kw)
    assert second is not first and state_equal(first, second)
    assert not first.training and not second.training  # a hit is handed back like a fresh result
    # any change of setting is a different entry (and trains)
    sft(one_step_task, **{**kw, "steps": 21})
    assert len(list((isolated_cache / "sft").iterdir())) == 2
    sft(one_step_task, **{**kw, "steps": 22}, cache=False)
    assert len(list((isolated_cache / "sft").iterdir())) == 2


@pytest.mark.parametrize("damage", ["truncate-weights", "garbage-config", "remove-tokenizer"])
def test_a_damaged_sft_cache_entry_is_rebuilt(one_step_task, isolated_cache, damage):
    kw = dict(steps=20, policy_kwargs=dict(TINY_MODEL_KW), **FAST)
    first = sft(one_step_task, **kw)
    (entry,) = (isolated_cache / "sft").iterdir()
    if damage == "truncate-weights":
        data = (entry / "model.safetensors").read_bytes()
        (entry / "model.safetensors").write_bytes(data[: len(data) // 3])
    elif damage == "garbage-config":
        (entry / "config.json").write_text("{not json")
    else:
        (entry / "tokenizer.json").unlink()
    rebuilt = sft(one_step_task, **kw)
    assert state_equal(first, rebuilt)  # retrained from the same seed: the same weights
    assert state_equal(first, load_policy(entry))  # and the entry is whole again


def test_sft_is_seed_deterministic(one_step_task):
    kw = dict(steps=15, policy_kwargs=dict(TINY_MODEL_KW), cache=False, **FAST)
    a, b, c = (
        sft(one_step_task, seed=0, **kw),
        sft(one_step_task, seed=0, **kw),
        sft(one_step_task, seed=1, **kw),
    )
    assert state_equal(a, b) and not state_equal(a, c)


def test_task_of_resolves_ids_names_tasks_and_envs(one_step_task):
    task = task_of("TextEnv/Reverse-L4-v0")
    assert isinstance(task, Task) and task.name == "reverse"
    assert task_of("text_env:TextEnv/Reverse-L4-v0").fingerprint() == task.fingerprint()
    assert task_of("reverse").name == "reverse"
    assert task_of(one_step_task) is one_step_task
    assert task_of(make_rollout_env(one_step_task, 2)) is one_step_task
    assert task_of(gym.make("TextEnv/Reverse-L4-v0")).fingerprint() == task.fingerprint()


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ("TextEnv/Nope-v0", "unknown env id 'TextEnv/Nope-v0'"),
        ("TextEnv/Custom-v0", "no built-in task"),
        ("no-such-task", "unknown task 'no-such-task'"),
    ],
)
def test_task_of_rejects_unknown_envs(env, match):
    with pytest.raises(ValueError, match=match):
        task_of(env)


def test_sft_rejects_bad_arguments(one_step_task):
    with pytest.raises(ValueError, match="steps"):
        sft(one_step_task, steps=-1)
    with pytest.raises(ValueError, match="steps"):
        sft(one_step_task, steps=2.5)
    unlabelled = Task.from_examples(
        [{"prompt": p, "split": s} for s in ("train", "validation", "test") for p in "ab"],
        name="unlabelled",
        reward=lambda prompts, completions, references: [0.0] * len(completions),
    )
    with pytest.raises(ValueError, match="no demonstrations"):
        sft(unlabelled, steps=1, cache=False)
    with pytest.raises(ValueError, match="unknown env id"):
        sft("TextEnv/Nope-v0", steps=1)
