"""Readouts (Figure 2 and the pooling readouts): pad positions never count, padding does not matter, a task's
attention pooler is its own (trained, saved, loaded and routed per row with the task)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from modeling_peterrec import (
    METHODS,
    READOUTS,
    MultiTaskPeterRec,
    PeterRecConfig,
    PeterRecModel,
    load_patch,
    prepare_for_transfer,
    save_patch,
)
from modeling_peterrec.modeling_peterrec import READOUT_FUNCTIONS, UserReadout
from modeling_peterrec.patch_config import PATCH_CONFIG_NAME, PATCH_WEIGHTS_NAME
from modeling_peterrec.registry import Readout, require_implemented
from tests.test_patching import (
    EXPECTED_TRAINABLE,
    LABELS,
    VOCAB,
    batch,
    classification,
    declared_sets,
    pretrained_backbone,
    train_steps,
)

POOLER = ("readout.pooler.proj.weight", "readout.pooler.proj.bias", "readout.pooler.score.weight")


def randomize_trainable(model) -> None:
    """Moves every trainable weight away from its initial value, as training would (zero-initialised ones too)."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.3)


def user(items: list[int], length: int) -> torch.Tensor:
    """One user's items followed by `[TCL]`, left-padded to `length`."""
    row = [0] * (length - len(items) - 1) + items + [3]
    return torch.tensor([row])


def test_a_readout_without_code_fails_loudly(monkeypatch):
    monkeypatch.setitem(READOUTS, "median", Readout("median", None, "the median of the hidden states", False))
    with pytest.raises(NotImplementedError, match="median"):
        require_implemented(READOUTS, READOUT_FUNCTIONS, "modeling READOUT_FUNCTIONS")
    config = PeterRecConfig(vocab_size=VOCAB, hidden_size=16, dilations=[1, 2], readout="median")
    with pytest.raises(NotImplementedError, match="median"):
        UserReadout(config)


@pytest.mark.parametrize("is_causal", [True, False])
def test_mean_and_attention_by_hand(is_causal):
    config = PeterRecConfig(vocab_size=VOCAB, hidden_size=4, dilations=[1, 2], is_causal=is_causal)
    hidden = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    mean = UserReadout(PeterRecConfig(**{**config.to_dict(), "readout": "mean"}))(hidden, mask)
    torch.testing.assert_close(mean, torch.stack([hidden[0, 2:].mean(0), hidden[1].mean(0)]))
    attention = UserReadout(PeterRecConfig(**{**config.to_dict(), "readout": "attention"}))
    with torch.no_grad():
        attention.pooler.score.weight.zero_()  # equal scores: the attention readout is the mean
        torch.testing.assert_close(attention(hidden, mask), mean)
        attention.pooler.score.weight.normal_()
        scores = attention.pooler.score(torch.tanh(attention.pooler.proj(hidden[0, 2:]))).squeeze(-1)
        expected = (torch.softmax(scores, 0).unsqueeze(-1) * hidden[0, 2:]).sum(0)
        torch.testing.assert_close(attention(hidden, mask)[0], expected)


@pytest.mark.parametrize("readout", list(READOUTS))
@pytest.mark.parametrize("is_causal", [True, False])
def test_pad_positions_never_count(readout, is_causal):
    config = PeterRecConfig(vocab_size=VOCAB, hidden_size=16, dilations=[1, 2, 1, 2], is_causal=is_causal)
    backbone = PeterRecModel(config)
    model, _ = classification(backbone, "fine_cls", readout=readout)
    randomize_trainable(model)
    model.eval()
    ids = batch(2)["input_ids"]
    if not is_causal:
        ids[:, 3] = 3  # [TCL] before the first item of the padded row (row 0 has 3 pads)
    with torch.no_grad():
        before = model(ids).logits
        backbone.embed_items.weight[0].normal_(std=5.0)
        assert torch.equal(model(ids).logits, before)
        hidden = torch.randn(ids.shape[0], ids.shape[1], 16)
        noisy = hidden.clone()
        noisy[ids.eq(0)] = 1e3
        torch.testing.assert_close(model.readout(noisy, ids.ne(0)), model.readout(hidden, ids.ne(0)))


@pytest.mark.parametrize("readout", list(READOUTS))
@pytest.mark.parametrize("is_causal", [True, False])
def test_left_padding_does_not_change_the_user_vector(readout, is_causal):
    config = PeterRecConfig(vocab_size=VOCAB, hidden_size=16, dilations=[1, 2, 1, 2], is_causal=is_causal)
    model, _ = classification(PeterRecModel(config), "peterrec", readout=readout)
    randomize_trainable(model)
    model.eval()
    items = [5, 9, 4, 17, 22, 8]
    prefix = [] if is_causal else [3]
    short, long = user(prefix + items, 9), user(prefix + items, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(short).logits, model(long).logits, rtol=1e-5, atol=1e-6)


def test_pooling_readouts_see_the_whole_history_beyond_the_receptive_field():
    config = PeterRecConfig(vocab_size=VOCAB, hidden_size=16, dilations=[1, 2, 4, 8])
    assert config.receptive_field == 31
    backbone = PeterRecModel(config)
    models = {
        readout: classification(backbone, "fine_cls", task=readout, readout=readout)[0]
        for readout in READOUTS
    }
    ids = torch.randint(4, VOCAB, (1, 80), generator=torch.Generator().manual_seed(4))
    ids[0, -1] = 3
    changed = ids.clone()
    changed[0, 5] = 4 if ids[0, 5] != 4 else 5  # 74 positions before [TCL], far outside the receptive field
    with torch.no_grad():
        for readout, model in models.items():
            randomize_trainable(model)
            same = torch.equal(model(ids).logits, model(changed).logits)
            assert same == (readout == "tcl"), readout


def test_backbone_has_no_weights_for_a_learned_readout():
    config = PeterRecConfig(vocab_size=VOCAB, hidden_size=16, dilations=[1, 2], readout="attention")
    backbone = PeterRecModel(config)
    assert not any("pooler" in name for name in backbone.state_dict())
    with pytest.raises(ValueError, match="task head"):
        backbone.user_representation(torch.zeros(1, 3, 16), torch.ones(1, 3))


def test_default_readout_is_the_backbone_configs():
    model, _ = classification(pretrained_backbone(), "peterrec")
    assert model.patch_config.readout == "tcl" == model.readout.name
    config = PeterRecConfig(vocab_size=VOCAB, hidden_size=16, dilations=[1, 2], readout="mean")
    model, _ = classification(PeterRecModel(config), "peterrec")
    assert model.patch_config.readout == "mean" == model.readout.name


@pytest.mark.parametrize("method", list(METHODS))
def test_attention_readout_trains_with_every_method(method):
    model, report = classification(pretrained_backbone(), method, readout="attention")
    names = dict(model.named_parameters())
    declared = declared_sets(model)
    expected = {name for name in names if EXPECTED_TRAINABLE[method](name) or name.startswith("readout.")}
    assert set(POOLER) <= declared == expected
    before = {name: p.detach().clone() for name, p in names.items()}
    train_steps(model)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == declared
    assert report.trainable_parameters == sum(names[n].numel() for n in declared)


def test_attention_readout_leaves_the_frozen_backbone_bit_identical():
    backbone = pretrained_backbone()
    pretrained = {name: t.clone() for name, t in backbone.state_dict().items()}
    model, _ = classification(backbone, "peterrec", readout="attention", train_tcl_embedding=True)
    train_steps(model)
    state = backbone.state_dict()
    assert not any("pooler" in name for name in state)
    for name, tensor in pretrained.items():
        assert torch.equal(state[name], tensor), name


def test_attention_pooler_is_saved_with_the_patch_and_loads_back(tmp_path):
    model, _ = classification(pretrained_backbone(), "peterrec", readout="attention")
    train_steps(model)
    folder = save_patch(model, tmp_path / "patch")
    names = set(load_file(folder / PATCH_WEIGHTS_NAME))
    assert set(POOLER) <= names and not any("gender" in name for name in names)
    assert json.loads((folder / PATCH_CONFIG_NAME).read_text())["readout"] == "attention"
    inputs = batch(7)
    model.eval()
    for task in (None, "sex"):
        loaded = load_patch(folder, pretrained_backbone(), task=task)
        assert loaded.readout.name == "attention"
        with torch.no_grad():
            assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)


def test_patch_without_a_readout_field_loads_with_the_backbone_configs(tmp_path):
    model, _ = classification(pretrained_backbone(), "peterrec")
    train_steps(model)
    folder = save_patch(model, tmp_path / "patch")
    config = json.loads((folder / PATCH_CONFIG_NAME).read_text())
    del config["readout"]
    config["format_version"] = 2
    (folder / PATCH_CONFIG_NAME).write_text(json.dumps(config))
    loaded = load_patch(folder, pretrained_backbone())
    assert loaded.readout.name == "tcl"
    inputs = batch(2)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)


def test_mixed_batch_reads_each_row_with_its_tasks_readout(tmp_path):
    tasks = {
        "gender": dict(head="classification", label_names=LABELS, readout="mean", insertion="serial_two"),
        "age": dict(
            head="classification", label_names=["a", "b"], readout="attention", insertion="serial_one"
        ),
        "coldrec": dict(head="ranking", num_target_items=7, insertion="parallel_before_ln"),
    }
    alone = {}
    for task, kwargs in tasks.items():
        model, _ = prepare_for_transfer(pretrained_backbone(), "peterrec", task, **kwargs)
        randomize_trainable(model)
        save_patch(model, tmp_path / task)
        alone[task] = load_patch(tmp_path / task, pretrained_backbone())
    assert alone["coldrec"].readout.name == "tcl"
    server = MultiTaskPeterRec(pretrained_backbone())
    for task in tasks:
        server.load_patch(tmp_path / task)
    ids = batch(5, size=7)["input_ids"]
    per_row = ["age", "gender", "coldrec", "gender", "age", "coldrec", "age"]
    mixed = server(ids, task=per_row)
    with torch.no_grad():
        for row, task in enumerate(per_row):
            torch.testing.assert_close(
                mixed[row], server(ids[row : row + 1], task=task)[0], rtol=1e-6, atol=1e-6
            )
            own = alone[task](input_ids=ids[row : row + 1]).logits[0]
            torch.testing.assert_close(mixed[row], own, rtol=1e-5, atol=1e-6)
    no_tcl = ids.clone()
    no_tcl[:, -1] = 5
    server(no_tcl, task="age")  # the pooling readouts do not need [TCL]
    with pytest.raises(ValueError, match=r"\[TCL\]"):
        server(no_tcl, task=per_row)


def long_users(is_causal: bool = True, length: int = 30) -> torch.Tensor:
    """Users with `[TCL]` last (and first, for the non-causal backbone) and 0 to `length - 4` pad positions: some
    longer than the receptive field (13 for these backbones), one with exactly 12 items and `[TCL]` plus one more
    item, some shorter."""
    ids = torch.randint(4, VOCAB, (5, length), generator=torch.Generator().manual_seed(7))
    ids[:, -1] = 3
    for row, pads in enumerate([0, 5, length - 14, length - 13, length - 4]):
        ids[row, :pads] = 0
        if not is_causal:
            ids[row, pads] = 3
    return ids


def backbone_lengths(model, run) -> list[int]:
    """The input lengths the task model's backbone was called with while `run()` ran."""
    lengths = []
    hook = model.base_model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(args[0].shape[1]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            run()
    finally:
        hook.remove()
    return lengths


def backbone(is_causal: bool) -> PeterRecModel:
    if is_causal:
        return pretrained_backbone()
    torch.manual_seed(0)
    config = PeterRecConfig(
        vocab_size=VOCAB, hidden_size=16, dilations=[1, 2, 1, 2], is_causal=False, patch_bottleneck_size=4
    )
    return PeterRecModel(config)


@pytest.mark.parametrize(
    "is_causal, method, options, window",
    [
        (True, "peterrec", {"train_tcl_embedding": True}, 13),  # the receptive field
        (True, "fine_all", {}, 13),
        # The prompt goes right before the first position given, before the window on a long history.
        (True, "peterrec", {"patch_type": "soft_prompt", "prompt_length": 3}, 13),
        (False, "peterrec", {"train_tcl_embedding": True}, 14),  # 7 positions at each end
        (False, "fine_all", {}, 14),
        (False, "peterrec", {"patch_type": "soft_prompt", "prompt_length": 3}, 14),
    ],
)
def test_tcl_backbone_runs_on_the_positions_the_user_vector_reads(is_causal, method, options, window):
    model, _ = classification(backbone(is_causal), method, **options)
    randomize_trainable(model)
    model.eval()
    ids = long_users(is_causal)
    mask = ids.ne(0)
    outputs = {}
    lengths = backbone_lengths(
        model,
        lambda: outputs.update(
            users=model.user_vectors(ids, mask),
            logits=model(input_ids=ids, attention_mask=mask).logits,
            whole=model(input_ids=ids, attention_mask=mask, output_hidden_states=True),
            short=model(input_ids=ids[:, -window:], attention_mask=mask[:, -window:]).logits,
        ),
    )
    # Whole hidden states asked for, or an input no longer than the window: the whole input.
    assert lengths == [window, window, 30, window]
    with torch.no_grad():
        full = model.base_model(ids, attention_mask=mask, patch=model.patch_name).last_hidden_state
        expected = model.readout(full, mask)
    torch.testing.assert_close(outputs["users"], expected)
    torch.testing.assert_close(outputs["logits"], model.classifier(expected))
    torch.testing.assert_close(outputs["whole"].logits, outputs["logits"])
    assert outputs["whole"].hidden_states[-1].shape[1] == 30
    short_users = slice(3, 5)  # wholly inside the window
    torch.testing.assert_close(outputs["short"][short_users], outputs["logits"][short_users])


@pytest.mark.parametrize("is_causal", [True, False])
def test_the_pooling_readouts_read_the_whole_input(is_causal):
    ids = long_users(is_causal)
    for readout in READOUTS:
        if readout != "tcl":
            model, _ = classification(backbone(is_causal), "peterrec", readout=readout)
            assert model.readout_positions(ids.ne(0)) is None
            assert backbone_lengths(model, lambda model=model: model(ids)) == [30]
