"""Every patch type of `registry.PATCH_TYPES` on every backbone it fits (PeterRec's dilated convolutions, SASRec's
Transformer, CmnRec's memory network): identity at initialisation, a frozen backbone that stays bit-identical, exactly
the declared parameters training, the one patch format (save, fingerprint, load), mixed batches of several types,
and the properties of each type (LoRA's merged kernel, Compacter's shared factors, the soft prompt's padding
invariance), export for serving; then `peterrec finetune --patch_type`."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from modeling_peterrec import (
    MultiTaskPeterRec,
    PeterRecForNextItemPrediction,
    SASRecConfig,
    SASRecForNextItemPrediction,
    load_patch,
    prepare_for_transfer,
    save_patch,
)
from modeling_peterrec.adapters import LoRA, PHMLinear, insert_prompts
from modeling_peterrec.cli import main
from modeling_peterrec.data import classification_dataset
from modeling_peterrec.export import export_program, max_difference
from modeling_peterrec.patch_config import PATCH_CONFIG_NAME
from modeling_peterrec.registry import PATCH_TYPES
from modeling_peterrec.transfer import backbone_of
from tests.test_cmnrec_transfer import pretrained as pretrained_cmnrec
from tests.test_examples import tiny_backbone
from tests.test_export import SHAPES
from tests.test_inference import LABELS as INFERENCE_LABELS
from tests.test_inference import next_item_model, randomize_trainable, tokenizer
from tests.test_patching import pretrained_backbone
from tests.test_training import QUICK_TRAINING

VOCAB = 30
TCL = 3
LABELS = ["a", "b", "c"]
BACKBONES = ("peterrec", "sasrec", "cmnrec")
SUPPORTED = [(t, m) for t in PATCH_TYPES for m in BACKBONES if m in PATCH_TYPES[t].places]
UNSUPPORTED = [(t, m) for t in PATCH_TYPES for m in BACKBONES if m not in PATCH_TYPES[t].places]


def pretrained(model_type: str, seed: int = 0):
    """A tiny backbone of `model_type` (inside its pretraining model, except PeterRec's); every patch width is
    divisible by Compacter's default phm_dim (4)."""
    if model_type == "peterrec":
        return pretrained_backbone(seed)
    if model_type == "cmnrec":
        model = pretrained_cmnrec(seed=seed)
        model.config.patch_bottleneck_size = 4
        return model
    torch.manual_seed(seed)
    config = SASRecConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        patch_bottleneck_size=4,
    )
    return SASRecForNextItemPrediction(config).eval()


def batch(seed: int = 0, size: int = 6, length: int = 9) -> dict[str, torch.Tensor]:
    """Rows ending in [TCL] (the causal readout), two of them left-padded."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (size, length), generator=generator)
    ids[:, -1] = TCL
    ids[0, :4] = 0
    ids[1, :2] = 0
    return {
        "input_ids": ids,
        "attention_mask": ids.ne(0).long(),
        "labels": torch.randint(0, len(LABELS), (size,), generator=generator),
    }


def classification(backbone, patch_type: str, task: str = "gender", **kwargs):
    return prepare_for_transfer(
        backbone, "peterrec", task, "classification", label_names=LABELS, patch_type=patch_type, **kwargs
    )


def train_steps(model, steps: int = 4) -> None:
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        optimizer.zero_grad()
        model(**batch(step)).loss.backward()
        optimizer.step()
    model.eval()


def hidden_states(model, inputs: dict[str, torch.Tensor], patch: str | None) -> torch.Tensor:
    with torch.no_grad():
        return model.base_model(inputs["input_ids"], inputs["attention_mask"], patch=patch).last_hidden_state


def expected_patch_prefixes(model, patch_type: str) -> set[str]:
    """Where the type's trainable weights must live in the task model, from its record alone: each default place of
    every block (one holder on CmnRec), and the task-wide modules under the backbone's own `patches.gender.`."""
    record, model_type = PATCH_TYPES[patch_type], model.config.model_type
    prefix = model.base_model_prefix
    wide = f"{prefix}.patches.gender."
    places = record.default_places[model_type]
    if places == ("input",):
        return {wide + "prompt."}
    if places == ("hidden_states",):
        return {wide + "side."}
    holders = [wide] if model_type == "cmnrec" else [f"{prefix}.blocks.{i}.patches.gender." for i in range(2)]
    prefixes = {holder + place + "." for holder in holders for place in places}
    return prefixes | ({wide + "phm_rule."} if patch_type == "compacter" else set())


@pytest.mark.parametrize("patch_type, model_type", SUPPORTED)
def test_patch_starts_as_the_identity_where_its_type_allows(patch_type, model_type):
    backbone = pretrained(model_type)
    inputs = batch()
    frozen = hidden_states(backbone, inputs, None)
    model, _ = classification(backbone, patch_type)
    patched = hidden_states(model, inputs, "gender")
    assert patched.shape == frozen.shape
    assert torch.equal(patched, frozen) == PATCH_TYPES[patch_type].identity_at_init
    # With every patch weight drawn, the patch is on the path: the outputs move.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".patches.gender." in name:
                parameter.normal_(std=0.3)
    assert not torch.allclose(hidden_states(model, inputs, "gender"), frozen)


@pytest.mark.parametrize("patch_type, model_type", SUPPORTED)
def test_exactly_the_patch_and_head_train_and_the_backbone_stays_bit_identical(patch_type, model_type):
    backbone = pretrained(model_type)
    before = {name: tensor.clone() for name, tensor in backbone.base_model.state_dict().items()}
    model, report = classification(backbone, patch_type)
    names = {name for name, _ in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    head = {name for name in names if not name.startswith(f"{model.base_model_prefix}.")}
    prefixes = expected_patch_prefixes(model, patch_type)
    patch = {name for name in names if name.startswith(tuple(prefixes))}
    assert trainable == head | patch
    assert all(any(name.startswith(prefix) for name in patch) for prefix in prefixes)
    assert report.trainable_parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert set(model.patch_config.trainable_parameters) == {n.replace(".gender.", ".") for n in trainable}
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, initial[name])}
    assert changed == trainable
    after = backbone.base_model.state_dict()
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())


@pytest.mark.parametrize("patch_type, model_type", SUPPORTED)
def test_save_then_load_gives_identical_outputs_and_checks_the_backbone(patch_type, model_type, tmp_path):
    model, _ = classification(pretrained(model_type), patch_type)
    train_steps(model)
    folder = save_patch(model, tmp_path / "patch")
    recorded = json.loads((folder / PATCH_CONFIG_NAME).read_text())
    assert recorded["format_version"] == 6 and recorded["patch_type"] == patch_type
    assert recorded["places"] == list(PATCH_TYPES[patch_type].default_places[model_type])
    assert PATCH_TYPES[patch_type].title in (folder / "README.md").read_text()
    loaded = load_patch(folder, pretrained(model_type))
    inputs = batch(7)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    with pytest.raises(ValueError, match="fingerprint"):
        load_patch(folder, pretrained(model_type, seed=1))


@pytest.mark.parametrize("model_type", BACKBONES)
def test_mixed_batch_of_every_type_equals_each_row_run_alone(model_type, tmp_path):
    """One server, one patch of every type that fits, and a second one of two types (two model patches of one kind,
    which PeterRec's backbone runs as one batched group; two Houlsby adapters of one kind, which it runs one task at
    a time); each row of a mixed batch gets what it gets alone, within 1e-6."""
    types = [t for t, m in SUPPORTED if m == model_type]
    server = MultiTaskPeterRec(pretrained(model_type).base_model)
    tasks = []
    for index, patch_type in enumerate([*types, "model_patch", "houlsby"]):
        task = f"{patch_type}{index}"
        model, _ = classification(pretrained(model_type), patch_type, task=task, seed=index)
        train_steps(model, steps=2)
        tasks.append(server.load_patch(save_patch(model, tmp_path / task)))
    inputs = batch(3, size=2 * len(tasks))
    per_row = [tasks[row % len(tasks)] for row in range(len(inputs["input_ids"]))][::-1]
    mixed = server(inputs["input_ids"], inputs["attention_mask"], task=per_row)
    for row, task in enumerate(per_row):
        alone = server(inputs["input_ids"][row : row + 1], inputs["attention_mask"][row : row + 1], task=task)
        torch.testing.assert_close(mixed[row], alone[0], rtol=0, atol=1e-6)


def test_lora_on_a_dilated_convolution_equals_the_dense_convolution_with_the_merged_kernel():
    backbone = pretrained("peterrec")
    model, _ = classification(backbone, "lora", lora_rank=3, lora_alpha=6.0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.2)
    merged = copy.deepcopy(backbone)
    merged.remove_patch("gender")
    with torch.no_grad():
        for block, merged_block in zip(backbone.blocks, merged.blocks, strict=True):
            for slot in ("conv1", "conv2"):
                lora = block.patches["gender"][slot]
                assert isinstance(lora, LoRA) and lora.scaling == 2.0
                conv = getattr(merged_block, slot).conv
                # The update is one of the (out, k*in) kernel: back to nn.Conv1d's (out, in, k).
                update = lora.delta_weight().view(conv.out_channels, conv.kernel_size[0], conv.in_channels)
                conv.weight += update.permute(0, 2, 1)
    inputs = batch()
    patched = hidden_states(model, inputs, "gender")
    torch.testing.assert_close(hidden_states(merged, inputs, None), patched, rtol=0, atol=1e-5)
    # And one layer against torch's own dilated conv1d with the merged weight.
    conv, lora = backbone.blocks[1].conv2, backbone.blocks[1].patches["gender"]["conv2"]
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        weight = conv.conv.weight + lora.delta_weight().view(16, 3, 16).permute(0, 2, 1)
        dense = F.conv1d(F.pad(x.transpose(1, 2), conv.padding), weight, conv.conv.bias, dilation=2)
        torch.testing.assert_close(lora(x, conv(x)), dense.transpose(1, 2), rtol=0, atol=1e-5)


def test_lora_on_sasrec_updates_the_chosen_projections_only():
    backbone = pretrained("sasrec").sasrec
    model, _ = classification(backbone, "lora", places=["key", "dense_out"])
    block = backbone.blocks[0].patches["gender"]
    assert set(block) == {"key", "dense_out"}
    assert block["dense_out"].lora_A.in_features == 24 and block["dense_out"].lora_B.out_features == 16
    with pytest.raises(ValueError, match="lora.*sasrec.*'conv1'"):
        classification(pretrained("sasrec"), "lora", places=["conv1"])


def test_compacter_shares_one_factor_tensor_across_all_layers_of_the_task():
    backbone = pretrained("sasrec").sasrec
    model, _ = classification(backbone, "compacter", phm_dim=2, phm_rank=0)
    layers = [module for module in backbone.modules() if isinstance(module, PHMLinear)]
    rule = backbone.patches["gender"]["phm_rule"]
    assert len(layers) == 2 * 2 * 2  # blocks x sub-layers x (down, up)
    assert all(layer.rule is rule for layer in layers)
    stored = [name for name in model.patch_config.trainable_parameters if "phm_rule" in name]
    assert stored == ["sasrec.patches.phm_rule.weight"]
    assert all(
        hasattr(layer, "weight") and not hasattr(layer, "weight_left") for layer in layers
    )  # rank 0: full
    train_steps(model, steps=2)
    assert all(layer.rule.weight.data_ptr() == rule.weight.data_ptr() for layer in layers)
    # A second task owns its own rule.
    classification(backbone, "compacter", task="age")
    assert backbone.patches["age"]["phm_rule"] is not rule


@pytest.mark.parametrize("model_type", BACKBONES)
def test_soft_prompt_outputs_do_not_depend_on_padding(model_type):
    model, _ = classification(pretrained(model_type), "soft_prompt", prompt_length=3)
    with torch.no_grad():
        model.base_model.patches["gender"]["prompt"].embeddings.normal_()
    ids = batch()["input_ids"][2:3]
    users = model.user_vectors(ids)
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], dim=1)
    torch.testing.assert_close(model.user_vectors(padded), users, rtol=0, atol=1e-6)
    longer = torch.randint(4, VOCAB, (1, padded.shape[1]))
    torch.testing.assert_close(model.user_vectors(torch.cat([padded, longer]))[:1], users, rtol=0, atol=1e-6)
    hidden = model.base_model(padded, padded.ne(0)).last_hidden_state
    assert hidden.shape[1] == padded.shape[1]  # the prompt positions are dropped from the outputs
    if (
        model_type == "sasrec"
    ):  # the prompt takes no position: a full-length user still fits the position table
        model.user_vectors(torch.randint(4, VOCAB, (1, model.config.max_position_embeddings)))


def test_prompts_go_right_before_each_rows_first_item():
    hidden = torch.arange(2 * 4, dtype=torch.float).view(2, 4, 1) + 10
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    prompt = torch.nn.Module()
    prompt.embeddings = torch.nn.Parameter(torch.tensor([[-1.0], [-2.0]]))
    out, out_mask, length = insert_prompts(hidden, mask, [(slice(0, 1), prompt), (slice(1, 2), None)])
    assert length == 2
    # Row 0: its pads first, then the prompt, then its items; row 1 (no prompt): two more pads.
    assert out[..., 0].tolist() == [[10.0, 11.0, -1.0, -2.0, 12.0, 13.0], [0.0, 0.0, 14.0, 15.0, 16.0, 17.0]]
    assert out_mask.tolist() == [[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]


@pytest.mark.parametrize("model_type", ["peterrec", "sasrec"])
@pytest.mark.parametrize("blocks, expected", [("first", [0]), ("last", [1]), ("all", [0, 1])])
def test_blocks_setting_chooses_where_per_block_types_go(model_type, blocks, expected):
    backbone = pretrained(model_type).base_model
    classification(backbone, "houlsby", blocks=blocks)
    assert [i for i, block in enumerate(backbone.blocks) if len(block.patches["gender"])] == expected
    classification(backbone, "k_adapter", task="side", blocks=blocks)
    assert list(backbone.patches["side"]["side"].block_indices) == expected


def test_layer_norm_tuning_on_sasrec_trains_task_owned_copies():
    backbone = pretrained("sasrec").sasrec
    shared = {name: p.clone() for name, p in backbone.named_parameters() if "norm" in name}
    model, _ = classification(backbone, "pfeiffer", train_layer_norms=["attention_norm", "final_norm"])
    trainable = {name for name, p in model.named_parameters() if p.requires_grad and "norm" in name}
    assert trainable == {
        *(
            f"sasrec.blocks.{i}.patches.gender.attention_norm.{w}"
            for i in range(2)
            for w in ("weight", "bias")
        ),
        "sasrec.patches.gender.final_norm.weight",
        "sasrec.patches.gender.final_norm.bias",
    }
    train_steps(model)
    assert all(torch.equal(p, shared[name]) for name, p in backbone.named_parameters() if name in shared)
    copies = dict(model.named_parameters())
    assert not torch.equal(
        copies["sasrec.patches.gender.final_norm.weight"], shared["final_layer_norm.weight"]
    )


@pytest.mark.parametrize(
    "model_type, expected",
    [("peterrec", ["norm1", "norm2"]), ("sasrec", ["attention_norm", "feed_forward_norm", "final_norm"])],
)
def test_tuning_all_layer_norms_names_every_one_the_backbone_has(model_type, expected, tmp_path):
    backbone = pretrained(model_type).base_model
    model, _ = classification(backbone, "houlsby", train_layer_norms=["all"])
    assert model.patch_config.train_layer_norms == expected  # recorded by name, so the patch reloads the same
    tuned = {
        name.split(".")[-2] for name, p in model.named_parameters() if p.requires_grad and "norm" in name
    }
    assert tuned == set(expected)
    with pytest.raises(ValueError, match="or 'all'"):
        classification(pretrained(model_type).base_model, "houlsby", train_layer_norms=["nonexistent"])


@pytest.mark.parametrize("patch_type, model_type", UNSUPPORTED)
def test_unsupported_pairs_raise_naming_the_type_the_model_type_and_the_allowed_types(patch_type, model_type):
    allowed = [name for name, record in PATCH_TYPES.items() if model_type in record.places]
    with pytest.raises(ValueError, match=rf"{patch_type}.*{model_type}.*{allowed[-1]}"):
        classification(pretrained(model_type), patch_type)


def test_settings_of_another_type_and_patch_types_without_patching_method_are_refused():
    with pytest.raises(ValueError, match="lora_rank.*houlsby"):
        classification(pretrained("peterrec"), "houlsby", lora_rank=4)
    with pytest.raises(ValueError, match="needs a patching method"):
        prepare_for_transfer(
            pretrained("peterrec"),
            "fine_cls",
            "gender",
            "classification",
            label_names=LABELS,
            patch_type="lora",
        )
    with pytest.raises(ValueError, match="blocks"):
        classification(pretrained("peterrec"), "soft_prompt", blocks="first")


def test_command_line_finetunes_a_patch_type(tmp_path):
    histories = [[f"i{(3 * user + step) % 12}" for step in range(4 + user % 5)] for user in range(24)]
    users = [f"u{i}" for i in range(24)]
    classification_dataset(users, histories, [i % 2 for i in range(24)], ["a", "b"]).save_to_disk(
        str(tmp_path / "data")
    )
    tiny_backbone(tmp_path / "backbone", histories)
    main(
        ["finetune", "--backbone", str(tmp_path / "backbone"), "--data_dir", str(tmp_path / "data")]
        + ["--task", "gender", "--patch_type", "lora", "--lora_rank", "2", "--max_length", "12"]
        + ["--output_dir", str(tmp_path / "ft"), "--num_train_epochs", "1", *QUICK_TRAINING]
    )
    summary = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert summary["patch_type"] == "lora"
    backbone = PeterRecForNextItemPrediction.from_pretrained(tmp_path / "backbone")
    patch = load_patch(tmp_path / "ft" / "patch", backbone)
    assert patch.patch_config.patch_type == "lora" and patch.patch_config.lora_rank == 2
    # One block of two dilated convolutions, each with A (2, k*16) and B (16, 2), besides the head.
    kernel_in = 16 * backbone_of(patch).config.kernel_size
    head = sum(p.numel() for n, p in patch.named_parameters() if not n.startswith("peterrec."))
    assert summary["trainable_parameters"] == head + 2 * (2 * kernel_in + 16 * 2)


@pytest.mark.parametrize("patch_type", ["lora", "compacter", "k_adapter", "soft_prompt"])
def test_patched_task_models_export_for_serving(patch_type):
    """The types that add graph of their own (im2col, Kronecker products, a side network, the prompt's row sort)
    export with `torch.export` and give the eager outputs for other batch sizes and lengths than the traced ones."""
    model, _ = prepare_for_transfer(
        next_item_model(),
        "peterrec",
        "gender",
        "classification",
        label_names=INFERENCE_LABELS,
        patch_type=patch_type,
    )
    randomize_trainable(model)
    program = export_program(model.eval(), tokenizer())
    assert max_difference(model, tokenizer(), program.module(), SHAPES) <= 1e-5
