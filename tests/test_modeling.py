"""Properties of the PeterRec model family: shapes, causality, receptive field, patches, save/load, bad input."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from modeling_peterrec import (
    INSERTION_MODES,
    ModelPatch,
    PeterRecConfig,
    PeterRecForItemRanking,
    PeterRecForMaskedItemPrediction,
    PeterRecForNextItemPrediction,
    PeterRecForSequenceClassification,
    PeterRecModel,
)

ALL_CLASSES = (
    PeterRecModel,
    PeterRecForNextItemPrediction,
    PeterRecForMaskedItemPrediction,
    PeterRecForSequenceClassification,
    PeterRecForItemRanking,
)


class PeterRecModelTester:
    """Builds tiny configurations and inputs, like transformers' ModelTester helpers."""

    vocab_size = 40
    hidden_size = 16
    batch_size = 3
    length = 12

    def config(self, **overrides) -> PeterRecConfig:
        fields = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            dilations=[1, 2, 1, 2],
            num_labels=3,
            num_target_items=9,
        )
        fields.update(overrides)
        return PeterRecConfig(**fields)

    def input_ids(self, seed: int = 0, length: int | None = None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(4, self.vocab_size, (self.batch_size, length or self.length), generator=generator)
        ids[0, :3] = 0  # one left-padded row
        return ids


tester = PeterRecModelTester()


def inputs_for(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Training inputs that every head accepts, so one round-trip test covers all classes."""
    if isinstance(model, PeterRecForSequenceClassification):
        return {"input_ids": ids, "labels": torch.tensor([0, 2, 1])}
    if isinstance(model, PeterRecForItemRanking):
        return {
            "input_ids": ids,
            "labels": torch.tensor([0, 8, 4]),
            "negative_ids": torch.tensor([[1], [2], [3]]),
        }
    if isinstance(model, (PeterRecForNextItemPrediction, PeterRecForMaskedItemPrediction)):
        return {"input_ids": ids, "labels": ids.masked_fill(ids.eq(0), -100)}
    return {"input_ids": ids}


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_save_load_round_trip_is_exact(model_class, tmp_path):
    is_causal = model_class is not PeterRecForMaskedItemPrediction
    config = tester.config(is_causal=is_causal, patch_insertion="serial_two")
    model = model_class(config).eval()
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path).eval()
    assert model.state_dict().keys() == loaded.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    inputs = inputs_for(model, tester.input_ids())
    torch.manual_seed(0)
    first = model(**inputs)
    torch.manual_seed(0)
    second = loaded(**inputs)
    assert torch.equal(first[0], second[0])


@pytest.mark.parametrize(
    ("auto_class", "expected"),
    [
        (AutoModel, PeterRecModel),
        (AutoModelForMaskedLM, PeterRecForMaskedItemPrediction),
        (AutoModelForSequenceClassification, PeterRecForSequenceClassification),
    ],
)
def test_auto_classes_load_the_saved_model(auto_class, expected, tmp_path):
    model = expected(tester.config(is_causal=expected is not PeterRecForMaskedItemPrediction)).eval()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PeterRecConfig)
    loaded = auto_class.from_pretrained(tmp_path)
    assert type(loaded) is expected
    ids = tester.input_ids()
    assert torch.equal(model(ids)[0], loaded.eval()(ids)[0])


def test_causal_outputs_ignore_future():
    model = PeterRecModel(tester.config(is_causal=True)).eval()
    rng = random.Random(0)
    for trial in range(20):
        ids = tester.input_ids(seed=trial)
        t = rng.randrange(3, tester.length - 1)
        changed = ids.clone()
        changed[:, t + 1 :] = torch.randint(4, tester.vocab_size, changed[:, t + 1 :].shape)
        with torch.no_grad():
            before = model(ids).last_hidden_state
            after = model(changed).last_hidden_state
        assert torch.equal(before[:, : t + 1], after[:, : t + 1]), f"position {t} saw the future"
        assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])


def test_non_causal_outputs_see_future():
    model = PeterRecModel(tester.config(is_causal=False)).eval()
    ids = tester.input_ids()
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1 - 4) % (tester.vocab_size - 4) + 4
    with torch.no_grad():
        before, after = model(ids).last_hidden_state, model(changed).last_hidden_state
    assert not torch.allclose(before[:, -4], after[:, -4])


def test_receptive_field_matches_dilations():
    config = tester.config(dilations=[1, 2, 4, 8], is_causal=True)
    field = config.receptive_field  # 1 + 2 * (1 + 2 + 4 + 8) = 31 positions
    assert field == 31
    length = field + 4
    model = PeterRecModel(config).eval()
    ids = torch.randint(4, tester.vocab_size, (1, length), generator=torch.Generator().manual_seed(1))
    last = length - 1
    with torch.no_grad():
        base = model(ids).last_hidden_state[0, last]
        inside, outside = ids.clone(), ids.clone()
        inside[0, last - field + 1] = 4 if ids[0, last - field + 1] != 4 else 5
        outside[0, last - field] = 4 if ids[0, last - field] != 4 else 5
        assert not torch.allclose(model(inside).last_hidden_state[0, last], base)
        assert torch.equal(model(outside).last_hidden_state[0, last], base)


@pytest.mark.parametrize(
    ("dilations", "field", "sees_200_back"),
    [([1, 2, 4, 8, 16, 32] * 2, 253, True), ([1, 2, 4, 8] * 4, 121, False)],
)
def test_deep_dilation_stack_sees_an_item_200_positions_back(dilations, field, sees_200_back):
    config = tester.config(dilations=dilations, is_causal=True)
    assert config.receptive_field == field
    model = PeterRecModel(config).eval()
    ids = torch.randint(4, tester.vocab_size, (1, 230), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, -201] = 4 if ids[0, -201] != 4 else 5  # 200 positions before the last one
    with torch.no_grad():
        same = torch.equal(model(ids).last_hidden_state[0, -1], model(changed).last_hidden_state[0, -1])
    assert same != sees_200_back


@pytest.mark.parametrize("is_causal", [True, False])
@pytest.mark.parametrize("logits_to_keep", [1, 2])
def test_last_position_logits_read_only_the_positions_they_depend_on(is_causal, logits_to_keep):
    """Ranking the next item runs the backbone on the last positions alone (`last_positions`): the same logits as
    the whole input's, for rows left-padded into or past the window, and a window one position narrower would
    not give them."""
    config = tester.config(dilations=[1, 2, 4, 1, 2, 4], is_causal=is_causal)
    model_class = PeterRecForNextItemPrediction if is_causal else PeterRecForMaskedItemPrediction
    model = model_class(config).eval()
    ids = tester.input_ids(seed=3, length=60)
    ids[1, :50] = 0  # a row shorter than the window
    mask = ids.ne(0).long()
    window = (config.receptive_field if is_causal else config.reach) + logits_to_keep - 1
    assert window == (29 if is_causal else 15) + logits_to_keep - 1
    kept, kept_mask = model.last_positions(ids, mask, logits_to_keep)
    assert torch.equal(kept, ids[:, -window:]) and torch.equal(kept_mask, mask[:, -window:])
    with torch.no_grad():
        whole = model(ids, attention_mask=mask).logits[:, -logits_to_keep:]
        cropped = model(ids, attention_mask=mask, logits_to_keep=logits_to_keep).logits
        narrower = model(ids[:, 1 - window :], attention_mask=mask[:, 1 - window :]).logits[
            :, -logits_to_keep:
        ]
    torch.testing.assert_close(cropped, whole, rtol=0, atol=1e-5)
    assert not torch.allclose(narrower, whole, rtol=0, atol=1e-3)


def test_left_padding_does_not_change_outputs():
    model = PeterRecModel(tester.config()).eval()
    ids = torch.randint(4, tester.vocab_size, (1, 8), generator=torch.Generator().manual_seed(2))
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], dim=1)
    with torch.no_grad():
        plain = model(ids).last_hidden_state
        with_pad = model(padded).last_hidden_state
    torch.testing.assert_close(with_pad[:, 5:], plain, rtol=0, atol=1e-6)


def test_patch_has_under_ten_percent_of_a_conv_layer():
    config = PeterRecConfig(
        vocab_size=100, hidden_size=256, patch_insertion="serial_two", patch_bottleneck_size=32
    )
    model = PeterRecModel(config)
    block = model.blocks[0]
    conv_params = sum(p.numel() for p in block.conv1.parameters())
    patch_params = sum(p.numel() for p in block.patches["default"]["conv1"].parameters())
    assert conv_params == 256 * 256 * 3 + 256
    assert patch_params == 2 * 256 * 32 + 32 + 256
    assert patch_params < 0.10 * conv_params


@pytest.mark.parametrize("insertion", INSERTION_MODES)
def test_patch_placement_follows_figure_3(insertion):
    model = PeterRecModel(tester.config(patch_insertion=insertion))
    slots = set(model.blocks[0].patches["default"].keys())
    assert slots == ({"conv2"} if insertion == "serial_one" else {"conv1", "conv2"})
    patches = [m for m in model.modules() if isinstance(m, ModelPatch)]
    assert len(patches) == len(slots) * len(model.blocks)


def test_model_without_patch_config_has_no_patches():
    model = PeterRecModel(tester.config())
    assert not any(isinstance(m, ModelPatch) for m in model.modules())


@pytest.mark.parametrize("insertion", ["serial_one", "serial_two"])
def test_serial_patch_with_zero_up_projection_is_identity(insertion):
    plain = PeterRecModel(tester.config()).eval()
    patched = PeterRecModel(tester.config(patch_insertion=insertion)).eval()
    patched.load_state_dict(plain.state_dict(), strict=False)
    ids = tester.input_ids()
    with torch.no_grad():
        torch.testing.assert_close(
            patched(ids).last_hidden_state, plain(ids).last_hidden_state, rtol=0, atol=0
        )


def test_parallel_patch_starts_as_conv_plus_input():
    """With a zero up-projection a parallel patch is the identity map, so insertion (d) adds the layer input to
    the conv output: the patched model differs from the plain one from the start (documented behaviour)."""
    plain = PeterRecModel(tester.config()).eval()
    patched = PeterRecModel(tester.config(patch_insertion="parallel_before_ln")).eval()
    patched.load_state_dict(plain.state_dict(), strict=False)
    ids = tester.input_ids()
    with torch.no_grad():
        assert not torch.allclose(patched(ids).last_hidden_state, plain(ids).last_hidden_state)


def test_mixed_task_batch_equals_rows_alone():
    model = PeterRecModel(tester.config()).eval()
    model.add_patch("gender", "serial_two", tcl_embedding=True)
    model.add_patch("age", "serial_two", layer_norms=["norm2"])  # same kind as gender: one batched group
    model.add_patch("life", "parallel_before_ln", bottleneck_size=4)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name != "embed_items.weight":
                parameter.add_(torch.randn_like(parameter) * 0.1)
    ids = torch.randint(4, tester.vocab_size, (6, tester.length), generator=torch.Generator().manual_seed(3))
    ids[:, -1] = 3
    ids[2, :4] = 0
    tasks = ["age", "gender", "life", None, "gender", "age"]
    with torch.no_grad():
        mixed = model(ids, patch=tasks).last_hidden_state
        for row, task in enumerate(tasks):
            alone = model(ids[row : row + 1], patch=task).last_hidden_state
            torch.testing.assert_close(mixed[row : row + 1], alone, rtol=1e-6, atol=1e-6)


def test_readouts_read_tcl_positions():
    ids = torch.tensor([[0, 0, 5, 6, 3], [3, 7, 8, 9, 3]])
    hidden = torch.arange(2 * 5 * 2, dtype=torch.float).reshape(2, 5, 2)
    mask = ids.ne(0)
    causal = PeterRecModel(tester.config(is_causal=True))
    torch.testing.assert_close(causal.user_representation(hidden, mask), hidden[:, -1])
    non_causal = PeterRecModel(tester.config(is_causal=False))
    expected = torch.stack([hidden[0, 2] + hidden[0, 4], hidden[1, 0] + hidden[1, 4]])
    torch.testing.assert_close(non_causal.user_representation(hidden, mask), expected)
    summed = PeterRecModel(tester.config(readout="sum"))
    torch.testing.assert_close(summed.user_representation(hidden, mask), (hidden * mask.unsqueeze(-1)).sum(1))


def test_next_item_loss_ignores_pad_positions():
    model = PeterRecForNextItemPrediction(tester.config()).eval()
    ids = tester.input_ids()
    labels = ids.masked_fill(ids.eq(0), -100)
    with torch.no_grad():
        loss = model(ids, labels=labels).loss
        hidden = model.peterrec(ids).last_hidden_state[:, :-1]
        logits = model.output_layer(hidden)
        expected = torch.nn.functional.cross_entropy(
            logits.reshape(-1, tester.vocab_size), labels[:, 1:].reshape(-1)
        )
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("is_causal", [True, False])
@pytest.mark.parametrize("dilation", [1, 4, 16])
def test_cpu_channels_last_convolution_equals_conv1d(is_causal, dilation):
    # On CPU the dilated convolution runs as one matmul over (batch, length, channels); it must equal nn.Conv1d on
    # the transposed, padded input, outputs and gradients, to fp32 rounding (lengths shorter than the dilation too).
    from modeling_peterrec.modeling_peterrec import DilatedConv1d

    torch.manual_seed(0)
    layer = DilatedConv1d(8, 3, dilation, is_causal)
    for length in (5, 40):
        hidden = torch.randn(3, length, 8, requires_grad=True)
        output = layer(hidden)
        grads = torch.autograd.grad(output.square().sum(), (hidden, layer.conv.weight, layer.conv.bias))
        expected = layer.conv(torch.nn.functional.pad(hidden.transpose(1, 2), layer.padding)).transpose(1, 2)
        expected_grads = torch.autograd.grad(
            expected.square().sum(), (hidden, layer.conv.weight, layer.conv.bias)
        )
        torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
        for grad, expected_grad in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-4)


def full_logits_loss_and_grads(model, ids, labels, bf16=False):
    """The plain computation: the backbone, every position's logits, `F.cross_entropy`."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = model.peterrec(ids).last_hidden_state[:, :-1]
        logits = model.output_layer(hidden).float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def model_loss_and_grads(model, ids, labels, bf16=False):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(ids, labels=labels).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("bf16", [False, True])
def test_next_item_training_step_matches_full_logits_cross_entropy(bf16):
    # The fused output layer against the logits of every position and `F.cross_entropy`, both in fp32 or both
    # under the CPU's bf16 autocast: the loss and the gradient of every parameter, to 1e-5 in fp32 and to 2% of
    # each gradient's norm in bf16 (the plain path rounds its logits to bf16, the fused one keeps them in fp32).
    torch.manual_seed(0)
    model = PeterRecForNextItemPrediction(tester.config(vocab_size=300)).train()
    ids = torch.randint(4, 300, (4, 20), generator=torch.Generator().manual_seed(1))
    ids[0, :5] = 0
    labels = ids.masked_fill(ids.eq(0), -100)
    expected_loss, expected_grads = full_logits_loss_and_grads(model, ids, labels, bf16=bf16)
    loss, grads = model_loss_and_grads(model, ids, labels, bf16=bf16)
    if not bf16:
        torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
        for name, expected in expected_grads.items():
            torch.testing.assert_close(grads[name], expected, rtol=1e-4, atol=1e-6, msg=name)
        return
    torch.testing.assert_close(loss, expected_loss, rtol=2e-2, atol=2e-2)
    for name, expected in expected_grads.items():
        error = (grads[name] - expected).norm() / expected.norm().clamp(min=1e-12)
        assert error < 2e-2, (name, float(error))


@pytest.mark.slow
def test_compiled_backbone_matches_eager_on_cpu():
    # `torch.compile` of the backbone (benchmarks/cpu_pretraining.py --compile) against the eager model: the same
    # training loss and gradients, to fp32 rounding.
    torch.manual_seed(0)
    model = PeterRecForNextItemPrediction(tester.config(vocab_size=300)).train()
    ids = torch.randint(4, 300, (4, 20), generator=torch.Generator().manual_seed(1))
    labels = ids.masked_fill(ids.eq(0), -100)
    expected_loss, expected_grads = model_loss_and_grads(model, ids, labels)
    model.peterrec = torch.compile(model.peterrec)
    loss, grads = model_loss_and_grads(model, ids, labels)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    for name, expected in expected_grads.items():
        compiled_name = name.replace("peterrec.", "peterrec._orig_mod.", 1)
        torch.testing.assert_close(grads[compiled_name], expected, rtol=1e-4, atol=1e-6, msg=name)


def test_item_ranking_bpr_loss_by_hand():
    model = PeterRecForItemRanking(tester.config()).eval()
    ids = tester.input_ids()
    labels, negatives = torch.tensor([0, 8, 4]), torch.tensor([[1, 2], [2, 3], [3, 5]])
    with torch.no_grad():
        loss = model(ids, labels=labels, negative_ids=negatives).loss
        scores = model.score(ids)
        positive = scores.gather(1, labels[:, None])
        negative = scores.gather(1, negatives)
        expected = -torch.nn.functional.logsigmoid(positive - negative).mean()
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(model.score(ids, candidates=negatives), negative)


def test_sampled_negatives_never_hit_the_positive():
    model = PeterRecForItemRanking(tester.config())
    labels = torch.arange(9).repeat(200)
    negatives = model.sample_negatives(labels, 5)
    assert negatives.min() >= 0 and negatives.max() < 9
    assert not negatives.eq(labels[:, None]).any()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("patch_insertion", "sideways", "patch_insertion"),
        ("dilations", [1, 2, 4], "even number"),
        ("hidden_size", 0, "hidden_size"),
        ("kernel_size", -1, "kernel_size"),
        ("vocab_size", 0, "vocab_size"),
        ("readout", "median", "readout"),
        ("tcl_token_id", 0, "distinct"),
    ],
)
def test_config_rejects_bad_fields(field, value, message):
    with pytest.raises(ValueError, match=message):
        tester.config(**{field: value})


def test_label_outside_label_set_is_rejected():
    model = PeterRecForSequenceClassification(tester.config())
    with pytest.raises(ValueError, match="labels must lie in"):
        model(tester.input_ids(), labels=torch.tensor([0, 1, 3]))


def test_target_outside_target_table_is_rejected():
    model = PeterRecForItemRanking(tester.config())
    with pytest.raises(ValueError, match="target-item indices"):
        model(tester.input_ids(), labels=torch.tensor([0, 1, 9]))


def test_unknown_patch_name_is_a_clear_error():
    model = PeterRecModel(tester.config())
    with pytest.raises(KeyError, match="No patch named"):
        model(tester.input_ids(), patch="gender")


def test_ids_outside_vocabulary_are_rejected():
    model = PeterRecModel(tester.config())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[4, 5, tester.vocab_size]]))


def test_empty_input_is_rejected():
    model = PeterRecModel(tester.config())
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(2, 0, dtype=torch.long))


def test_next_item_prediction_needs_a_causal_backbone():
    with pytest.raises(ValueError, match="causal backbone"):
        PeterRecForNextItemPrediction(tester.config(is_causal=False))


def test_backbone_loads_from_a_pretraining_folder_without_a_load_report(tmp_path):
    """The pretraining head's output layer stays behind on purpose: no unexpected keys to alarm a user."""
    PeterRecForNextItemPrediction(tester.config()).save_pretrained(tmp_path)
    _, info = PeterRecModel.from_pretrained(tmp_path, output_loading_info=True)
    assert set(info["unexpected_keys"]) == set() and set(info["missing_keys"]) == set()
