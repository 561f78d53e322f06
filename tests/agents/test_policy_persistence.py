"""Policy persistence through text_env.persistence (issues 13 and 14): every saved policy carries a manifest
verified on load, a format-1 directory is refused until migrated, a tampered number cannot make a load build
or allocate a huge model, no path read from a file leaves the directory, config.json is refused rather than
coerced, and a policy with non-finite weights is never written.

Tampering that the manifest would catch first is repeated behind a rewritten manifest (``remanifest``): the
manifest proves integrity, not authorship, so the checks behind it must hold on their own.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from agents.policies import TransformerConfig, TransformerLM, TransformerPolicy, load_policy
from text_env.persistence import write_manifest
from text_env.tokenizers import CharTokenizer, load_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOK = CharTokenizer("abcdefgh")  # 12 ids
V = TOK.vocab_size

try:
    import transformers  # noqa: F401

    HAVE_TRANSFORMERS = True
except ImportError:
    HAVE_TRANSFORMERS = False
needs_transformers = pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers is not installed")


def make_policy(seed: int = 0, **kwargs) -> TransformerPolicy:
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=V, n_layer=2, n_head=2, n_embd=16, max_seq_len=16)
    return TransformerPolicy(TransformerLM(config), TOK, **kwargs).eval()


def make_hf_policy(seed: int = 0, **kwargs):
    """A tiny random GPT-2 with a character-level fast tokenizer built in memory (no files, no hub)."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as RustTokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from agents.policies.hf import HFPolicy

    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *"abcdefgh"])}
    rust = RustTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    rust.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    rust.decoder = decoders.Fuse()
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=rust, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2, n_head=2, n_embd=16, vocab_size=len(vocab), n_positions=16, bos_token_id=1, eos_token_id=2
    )
    return HFPolicy(GPT2LMHeadModel(config).eval(), hf_tok, **kwargs).eval()


def remanifest(directory: Path) -> None:
    """Rewrite a policy directory's manifest over its current files, as a tamperer could."""
    write_manifest(directory, "policy", 2)


def edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def flip_a_byte(path: Path, at: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def same_logits(a, b) -> bool:
    ids = torch.tensor([[1, 4, 5, 6]])
    with torch.no_grad():
        return torch.equal(a.eval()(ids)[0], b.eval()(ids)[0])


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    make_policy().save(tmp_path / "p")
    return tmp_path / "p"


@pytest.fixture
def saved_hf(tmp_path: Path) -> Path:
    make_hf_policy().save(tmp_path / "hf")
    return tmp_path / "hf"


def as_format_1(directory: Path) -> Path:
    """Turn a saved directory into what text-env < 0.2 wrote: no manifest, format_version 1."""
    (directory / "manifest.json").unlink()
    edit_json(directory / "config.json", lambda d: d.update(format_version=1))
    return directory


# ---- B.1: the manifest -------------------------------------------------------------------------------------
TAMPERING = [
    ("bit flip in the weights", "model.safetensors", lambda p: flip_a_byte(p)),
    (
        "tokenizer of another alphabet, same size",
        "tokenizer.json",
        lambda p: CharTokenizer("hgfedcba").save(p),
    ),
    ("edited config", "config.json", lambda p: edit_json(p, lambda d: d.update(temperature=2.0))),
    ("emptied weights", "model.safetensors", lambda p: p.write_bytes(b"")),
    ("removed config", "config.json", lambda p: p.unlink()),
    (
        "weights swapped from another policy of the same shapes",
        "model.safetensors",
        lambda p: shutil.copyfile(p.parent.parent / "other" / "model.safetensors", p),
    ),
]


@pytest.mark.parametrize(("case", "name", "damage"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_a_tampered_policy_file_raises_value_error_naming_it(saved: Path, case, name, damage):
    make_policy(seed=1).save(saved.parent / "other")
    damage(saved / name)
    with pytest.raises(ValueError, match=str(saved / name).replace(".", r"\.")):
        load_policy(saved)


@needs_transformers
@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("model/model.safetensors", flip_a_byte),
        ("value_head.safetensors", flip_a_byte),
        ("model/config.json", lambda p: edit_json(p, lambda d: d.update(n_embd=32))),
        ("config.json", lambda p: edit_json(p, lambda d: d.update(temperature=0.5))),
    ],
)
def test_a_tampered_hf_policy_file_raises_value_error_naming_it(saved_hf: Path, name, damage):
    damage(saved_hf / name)
    with pytest.raises(ValueError, match=str(saved_hf / name).replace(".", r"\.")):
        load_policy(saved_hf)


def test_an_unlisted_file_is_refused(saved: Path):
    (saved / "notes.json").write_text("{}")
    with pytest.raises(ValueError, match=r"does not list.*notes\.json"):
        load_policy(saved)


def test_a_format_1_policy_is_refused_with_the_migration_command(saved: Path):
    as_format_1(saved)
    for load in (load_policy, TransformerPolicy.load):
        with pytest.raises(ValueError, match=rf"format_version 1.*text-env migrate '{saved}'"):
            load(saved)


def test_migrate_policy_adds_the_manifest_in_place_and_keeps_the_weights(saved: Path):
    from agents.policies import migrate_policy
    from text_env.persistence import verify_manifest

    before = load_policy(saved)
    weights = (saved / "model.safetensors").read_bytes()
    as_format_1(saved)
    assert migrate_policy(saved) == saved
    assert verify_manifest(saved, kind="policy")["format_version"] == 2
    assert json.loads((saved / "config.json").read_text())["format_version"] == 2
    assert (saved / "model.safetensors").read_bytes() == weights
    assert same_logits(before, load_policy(saved))
    assert sorted(p.name for p in saved.parent.iterdir()) == ["p"]  # no temporary directory left
    migrate_policy(saved)  # a second run verifies and changes nothing
    assert (saved / "model.safetensors").read_bytes() == weights


def test_migrate_policy_refuses_what_does_not_load_and_leaves_it_untouched(saved: Path):
    from agents.policies import migrate_policy

    as_format_1(saved)
    edit_json(saved / "config.json", lambda d: d["config"].update(n_layer=100000))
    config = (saved / "config.json").read_bytes()
    with pytest.raises(ValueError, match=r"config\.json.*n_layer"):
        migrate_policy(saved)
    assert (saved / "config.json").read_bytes() == config and not (saved / "manifest.json").exists()
    assert sorted(p.name for p in saved.parent.iterdir()) == ["p"]


def test_migrate_policy_does_not_launder_a_tampered_manifested_directory(saved: Path):
    from agents.policies import migrate_policy

    flip_a_byte(saved / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        migrate_policy(saved)


@needs_transformers
def test_migrate_policy_handles_an_hf_policy(saved_hf: Path):
    from agents.policies import migrate_policy

    before = load_policy(saved_hf)
    as_format_1(saved_hf)
    migrate_policy(saved_hf)
    assert same_logits(before, load_policy(saved_hf))


def test_a_damaged_or_old_sft_cache_entry_is_rebuilt(one_step_task, isolated_cache):
    from agents import sft

    kw = dict(steps=5, policy_kwargs={"n_layer": 1, "n_embd": 16, "n_head": 2}, device="cpu", warmup=2)
    first = sft(one_step_task, **kw)
    (entry,) = (isolated_cache / "sft").iterdir()
    for damage in (lambda: flip_a_byte(entry / "model.safetensors"), lambda: as_format_1(entry)):
        damage()
        rebuilt = sft(one_step_task, **kw)
        assert same_logits(first, rebuilt) and same_logits(first, load_policy(entry))  # whole again


# ---- B.2: nothing huge is built from one edited number -----------------------------------------------------
@pytest.fixture
def nothing_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a load builds the model or reads the weights (both come after the checks)."""
    import agents.policies.transformer as tp

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built or its weights read before the config was checked")

    monkeypatch.setattr(tp.TransformerLM, "__init__", refuse)
    monkeypatch.setattr(tp, "read_safetensors", refuse)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("n_layer", 100000, r"config\.json.*n_layer must be .* at most 256, got 100000"),  # from the config
        ("n_layer", 200, r"model\.safetensors.*missing model\.h\.\d+\."),  # within the limit: from the header
        ("vocab_size", 1_000_000, r"model\.safetensors.*wte\.weight has shape \(12, 16\)"),
        ("max_seq_len", 1 << 20, r"model\.safetensors.*wpe\.weight has shape \(16, 16\)"),
    ],
)
def test_a_huge_config_fails_before_anything_is_built(saved: Path, nothing_built, field, value, match):
    edit_json(saved / "config.json", lambda d: d["config"].update({field: value}))
    remanifest(saved)
    with pytest.raises(ValueError, match=match):
        TransformerPolicy.load(saved)


def test_config_values_are_range_checked_on_construction():
    with pytest.raises(ValueError, match="n_layer must be a positive int of at most 256, got 100000"):
        TransformerConfig(vocab_size=10, n_layer=100000)
    with pytest.raises(ValueError, match="vocab_size"):
        TransformerConfig(vocab_size=1 << 21)


@needs_transformers
def test_a_huge_hf_config_fails_before_the_model_is_built(saved_hf: Path, monkeypatch: pytest.MonkeyPatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained ran before the sizes were checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    model_config = saved_hf / "model" / "config.json"
    edit_json(model_config, lambda d: d.update(n_layer=100000))
    remanifest(saved_hf)
    with pytest.raises(ValueError, match=r"model/config\.json.*num_hidden_layers.*256"):
        load_policy(saved_hf)
    edit_json(model_config, lambda d: d.update(n_layer=200))  # within the bound, but not in the weights
    remanifest(saved_hf)
    with pytest.raises(ValueError, match=r"model/config\.json.*at least"):
        load_policy(saved_hf)


@needs_transformers
def test_an_hf_value_head_of_the_wrong_shape_fails_before_the_model_is_built(
    saved_hf: Path, monkeypatch: pytest.MonkeyPatch
):
    import transformers

    from text_env.persistence import write_safetensors

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", None)  # calling it fails
    write_safetensors(
        saved_hf / "value_head.safetensors",
        {"value_head.weight": torch.zeros(1, 4096), "value_head.bias": torch.zeros(1)},
    )
    remanifest(saved_hf)
    with pytest.raises(ValueError, match=r"value_head\.safetensors.*value_head\.weight"):
        load_policy(saved_hf)


@needs_transformers
def test_hf_weights_missing_from_the_files_are_refused(saved_hf: Path):
    from safetensors.torch import load_file

    from text_env.persistence import write_safetensors

    weights = saved_hf / "model" / "model.safetensors"
    tensors = load_file(weights)
    dropped = sorted(k for k in tensors if ".h.1." in k)
    write_safetensors(weights, {k: v for k, v in tensors.items() if k not in dropped})
    remanifest(saved_hf)
    with pytest.raises(ValueError, match=r"do not match its config\.json.*h\.1\."):
        load_policy(saved_hf)


# ---- B.3: no path read from a file leaves the directory ----------------------------------------------------
def test_a_symlinked_weights_file_is_refused(saved: Path, tmp_path: Path):
    outside = tmp_path / "outside.safetensors"
    shutil.move(saved / "model.safetensors", outside)
    (saved / "model.safetensors").symlink_to(outside)
    with pytest.raises(ValueError, match=r"model\.safetensors.*symlink|symlink.*model\.safetensors"):
        load_policy(saved)


def test_a_symlinked_policy_directory_is_refused(saved: Path, tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "policy").symlink_to(saved, target_is_directory=True)
    with pytest.raises(ValueError, match="symlink"):
        load_policy(tmp_path / "run" / "policy")
    with pytest.raises(ValueError, match="symlink"):
        TransformerPolicy.load(tmp_path / "run" / "policy")


@needs_transformers
@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_an_hf_model_dir_outside_the_policy_is_refused(saved_hf: Path, tmp_path: Path, where):
    elsewhere = tmp_path / "elsewhere"
    make_hf_policy(seed=1).save(elsewhere)
    if where == "symlink":
        (saved_hf / "linked").symlink_to(elsewhere / "model", target_is_directory=True)
        value = "linked"
    else:
        value = str(elsewhere / "model") if where == "absolute" else "../elsewhere/model"
    edit_json(saved_hf / "config.json", lambda d: d.update(model_dir=value))
    if where != "symlink":  # the manifest refuses symlinks itself; the other two it would take
        remanifest(saved_hf)
    with pytest.raises(ValueError, match=r"model_dir|symlink"):
        load_policy(saved_hf)


@needs_transformers
@pytest.mark.parametrize("directory", ["../elsewhere.hf", "/tmp", "linked.hf"])
def test_an_hf_tokenizer_directory_outside_is_refused(saved_hf: Path, tmp_path: Path, directory):
    tokenizer_json = saved_hf / "tokenizer.json"
    shutil.copytree(saved_hf / "tokenizer.hf", tmp_path / "elsewhere.hf")
    if directory == "linked.hf":
        (saved_hf / "linked.hf").symlink_to(tmp_path / "elsewhere.hf", target_is_directory=True)
    tokenizer_json.write_text(json.dumps({"type": "hf", "directory": directory}))
    with pytest.raises(ValueError, match=r"tokenizer\.json.*hf tokenizer directory"):
        load_tokenizer(tokenizer_json)


@needs_transformers
def test_an_hf_tokenizer_directory_inside_still_loads(saved_hf: Path):
    tok = load_tokenizer(saved_hf / "tokenizer.json")
    assert tok.encode("hag") == [11, 4, 10]


# ---- B.4: config.json is refused, never coerced ------------------------------------------------------------
REFUSED = [
    ("bias a bool-like string", lambda d: d["config"].update(bias="false"), "bias"),
    ("dropout a string", lambda d: d["config"].update(dropout="0.1"), "dropout"),
    ("n_layer a float", lambda d: d["config"].update(n_layer=2.0), "n_layer"),
    ("n_embd a bool", lambda d: d["config"].update(n_embd=True), "n_embd"),
    ("temperature a string", lambda d: d.update(temperature="0.5"), "temperature"),
    ("temperature a bool", lambda d: d.update(temperature=True), "temperature"),
    ("temperature zero", lambda d: d.update(temperature=0), "temperature"),
    ("temperature missing", lambda d: d.pop("temperature"), "temperature"),
    ("has_action_mask a string", lambda d: d.update(has_action_mask="false"), "has_action_mask"),
    ("has_action_mask an int", lambda d: d.update(has_action_mask=0), "has_action_mask"),
    ("format_version from the future", lambda d: d.update(format_version=3), "format_version 3"),
    ("format_version a string", lambda d: d.update(format_version="2"), "format_version"),
    ("format_version unlike the manifest's", lambda d: d.update(format_version=1), "format_version 1"),
    ("an unknown field", lambda d: d.update(use_cuda_graphs=True), "use_cuda_graphs"),
    ("config not an object", lambda d: d.update(config=[1, 2]), "config"),
]


@pytest.mark.parametrize(("case", "edit", "field"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_bad_config_json_value_is_refused_naming_the_file(saved: Path, case, edit, field):
    edit_json(saved / "config.json", edit)
    remanifest(saved)
    with pytest.raises(ValueError, match=rf"config\.json.*{field}"):
        TransformerPolicy.load(saved)


def test_a_manifest_from_the_future_is_refused(saved: Path):
    edit_json(saved / "config.json", lambda d: d.update(format_version=3))
    write_manifest(saved, "policy", 3)
    with pytest.raises(ValueError, match=r"format_version 3.*newer"):
        load_policy(saved)


@needs_transformers
def test_a_bad_hf_config_json_value_is_refused(saved_hf: Path):
    edit_json(saved_hf / "config.json", lambda d: d.update(model_dir=["model"]))
    remanifest(saved_hf)
    with pytest.raises(ValueError, match=r"config\.json.*model_dir"):
        load_policy(saved_hf)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bias": "false"}, "bias"),
        ({"dropout": "0.1"}, "dropout"),
        ({"dropout": float("nan")}, "dropout"),
        ({"n_head": 2.0}, "n_head"),
        ({"vocab_size": True}, "vocab_size"),
    ],
)
def test_transformer_config_refuses_rather_than_coerces(kwargs, field):
    with pytest.raises(ValueError, match=f"TransformerConfig.{field}"):
        TransformerConfig(**{"vocab_size": 10, **kwargs})


# ---- B.5: non-finite weights are never saved ---------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_policy_with_non_finite_weights_is_not_saved(tmp_path: Path, value):
    policy = make_policy()
    with torch.no_grad():
        policy.model.h[1].mlp.c_fc.weight[0, 0] = value
    with pytest.raises(ValueError, match=r"model\.h\.1\.mlp\.c_fc\.weight"):
        policy.save(tmp_path / "p")
    assert not (tmp_path / "p").exists() and list(tmp_path.iterdir()) == []


def test_saving_non_finite_weights_leaves_an_earlier_save_as_it_was(saved: Path):
    weights = (saved / "model.safetensors").read_bytes()
    policy = load_policy(saved)
    with torch.no_grad():
        policy.model.value_head.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"value_head\.bias"):
        policy.save(saved)
    assert (saved / "model.safetensors").read_bytes() == weights
    load_policy(saved)


@needs_transformers
def test_an_hf_policy_with_non_finite_weights_is_not_saved(tmp_path: Path):
    policy = make_hf_policy()
    with torch.no_grad():
        policy.value_head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"value_head\.weight"):
        policy.save(tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# ---- saving: what else it promises -------------------------------------------------------------------------
def test_save_replaces_an_older_save_but_not_a_directory_of_other_files(tmp_path: Path):
    make_policy(seed=0).save(tmp_path / "p")
    make_policy(seed=1).save(tmp_path / "p")  # an older save is replaced whole
    assert same_logits(make_policy(seed=1), load_policy(tmp_path / "p"))
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        make_policy().save(tmp_path / "project")
    assert (tmp_path / "project" / "notes.txt").read_text() == "mine"


def test_extra_json_is_covered_by_the_manifest(tmp_path: Path):
    from text_env.persistence import verify_manifest

    make_policy().save(tmp_path / "p", extra_json={"report.json": {"ppl": 3.5}})
    assert "report.json" in verify_manifest(tmp_path / "p")["files"]
    assert json.loads((tmp_path / "p" / "report.json").read_text()) == {"ppl": 3.5}
    load_policy(tmp_path / "p")
    for name in ("config.json", "../x.json", "w.safetensors"):
        with pytest.raises(ValueError, match="extra_json"):
            make_policy().save(tmp_path / "q", extra_json={name: {}})


def test_a_saved_policy_round_trips_exactly_in_a_new_process_layout(saved: Path):
    policy = load_policy(saved)
    assert isinstance(policy, TransformerPolicy) and same_logits(make_policy(), policy)
    assert sorted(p.name for p in saved.iterdir()) == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "tokenizer.json",
    ]
