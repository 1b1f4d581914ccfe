"""CmnRec: chunk schedules, memory access counts, causality, padding, the DNC memory's invariants, gradients,
save/load, Auto classes and remote code."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

import modeling_peterrec
from modeling_peterrec import (
    CHUNK_RULES,
    INSERTIONS,
    MODEL_TYPES,
    TASK_KINDS,
    CmnRecConfig,
    CmnRecForNextItemPrediction,
    CmnRecForSequenceClassification,
    CmnRecModel,
)
from modeling_peterrec.model_types import config_class, pretraining_model_class
from modeling_peterrec.modeling_cmnrec import (
    DNCMemory,
    allocation_weights,
    chunk_layout,
    chunk_tables,
    chunk_times,
    content_weights,
)
from modeling_peterrec.training import PretrainArguments
from tests.test_remote_code import check_classifier_folder_loads_remotely

RULES = tuple(CHUNK_RULES)


class CmnRecModelTester:
    """Builds tiny configurations and inputs, like transformers' ModelTester helpers."""

    vocab_size = 30
    batch_size = 3
    length = 10

    def config(self, **overrides) -> CmnRecConfig:
        fields = dict(
            vocab_size=self.vocab_size,
            embedding_size=8,
            controller_size=12,
            memory_slots=3,
            memory_width=6,
            num_read_heads=2,
            attention_size=5,
            hidden_size=10,
            num_labels=3,
        )
        fields.update(overrides)
        return CmnRecConfig(**fields)

    def input_ids(self, seed: int = 0, pad: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(4, self.vocab_size, (self.batch_size, self.length), generator=generator)
        ids[0, :pad] = 0
        return ids


tester = CmnRecModelTester()
GENERATOR = torch.Generator().manual_seed(0)


class MemoryAccesses:
    """Records every access of a model's memory (a forward hook on `DNCMemory`)."""

    def __init__(self, model: torch.nn.Module):
        memory = next(module for module in model.modules() if isinstance(module, DNCMemory))
        self.states = []
        self.handle = memory.register_forward_hook(lambda module, args, output: self.states.append(output))

    def __enter__(self) -> MemoryAccesses:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


# ---------------------------------------------------------------------------------------------------------------
# Chunk schedules (Section 4)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("pec", (5, 10, 15, 20)),  # x1:5, x6:10, x11:15, x16:20
        ("tsc", (8, 14, 18, 20)),  # x1:8, x9:14, x15:18, x19:20
        ("exc", (17, 18, 19, 20)),  # x1:17, then one item each
        ("none", tuple(range(1, 21))),
    ],
)
def test_worked_examples_of_the_reference(rule, expected):
    assert chunk_times(rule, 20, 4) == expected


def test_uneven_lengths_give_the_remainder_to_the_first_chunk():
    assert chunk_times("pec", 22, 4) == (7, 12, 17, 22)
    # g = floor(44 / 20) = 2: the last chunks keep lengths 2, 4, 6; the first takes 10.
    assert chunk_times("tsc", 22, 4) == (10, 16, 20, 22)


@pytest.mark.parametrize("rule", RULES)
def test_edge_cases_one_slot_and_as_many_slots_as_steps(rule):
    every_step = tuple(range(1, 13))
    assert chunk_times(rule, 12, 1) == ((12,) if rule != "none" else every_step)
    assert chunk_times(rule, 12, 12) == every_step
    assert chunk_times(rule, 5, 9) == tuple(range(1, 6))  # fewer steps than slots: every step


@pytest.mark.parametrize("rule", RULES)
def test_every_schedule_is_increasing_ends_at_T_and_has_min_m_T_chunks(rule):
    for length in range(1, 41):
        for slots in range(1, 13):
            times = chunk_times(rule, length, slots)
            assert times[-1] == length and times[0] >= 1
            assert all(a < b for a, b in zip(times, times[1:], strict=False))
            assert len(times) == (length if rule == "none" else min(slots, length))


def test_tsc_chunks_shrink_towards_the_end():
    for length, slots in ((20, 4), (50, 4), (50, 8), (100, 10)):
        times = (0, *chunk_times("tsc", length, slots))
        sizes = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1], sizes


def test_schedule_is_computed_once_per_length():
    chunk_times.cache_clear()
    chunk_tables.cache_clear()
    config = tester.config(chunking="tsc")
    model = CmnRecModel(config).eval()
    with torch.no_grad():
        for _ in range(3):
            model(tester.input_ids())
    info = chunk_times.cache_info()
    assert info.misses == tester.length  # one per length 1..T, the first time only
    assert info.hits == 0


def test_layout_of_a_left_padded_batch_follows_each_rows_own_length():
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, :8] = False  # a user with 12 items
    layout = chunk_layout("pec", 4, mask)
    assert layout.end_position[0].tolist() == [4, 9, 14, 19]
    assert layout.end_position[1].tolist() == [8 + 2, 8 + 5, 8 + 8, 8 + 11]
    assert layout.chunk_index[1, :8].eq(-1).all()
    assert layout.read_index[0].tolist() == [0] * 4 + [1] * 5 + [2] * 5 + [3] * 5 + [4]


# ---------------------------------------------------------------------------------------------------------------
# The model: memory accesses, causality, padding
# ---------------------------------------------------------------------------------------------------------------


def test_none_accesses_memory_at_every_step_and_tsc_m_times():
    ids = tester.input_ids()
    for rule, expected in (("none", tester.length), ("tsc", 3), ("pec", 3), ("exc", 3)):
        model = CmnRecModel(tester.config(chunking=rule)).eval()
        with MemoryAccesses(model) as accesses, torch.no_grad():
            model(ids)
        assert len(accesses.states) == expected, rule
    # A left-padded batch: `none` accesses the memory once per step of its longest user.
    model = CmnRecModel(tester.config(chunking="none")).eval()
    padded = tester.input_ids(pad=4)
    padded[1:, :2] = 0
    with MemoryAccesses(model) as accesses, torch.no_grad():
        model(padded)
    assert len(accesses.states) == tester.length - 2


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("controller", ["lstm", "gru"])
def test_outputs_at_step_t_do_not_depend_on_later_items(rule, controller):
    model = CmnRecModel(tester.config(chunking=rule, controller=controller)).eval()
    ids = tester.input_ids(pad=2)
    changed = ids.clone()
    step = 5
    changed[:, step + 1 :] = torch.randint(4, tester.vocab_size, changed[:, step + 1 :].shape)
    with torch.no_grad():
        before = model(ids).last_hidden_state
        after = model(changed).last_hidden_state
    torch.testing.assert_close(before[:, : step + 1], after[:, : step + 1], rtol=0, atol=0)
    assert not torch.allclose(before[:, -1], after[:, -1])


@pytest.mark.parametrize("rule", RULES)
def test_left_padding_does_not_change_a_users_outputs(rule):
    model = CmnRecModel(tester.config(chunking=rule)).double().eval()
    ids = tester.input_ids()
    padded = torch.cat([torch.zeros(tester.batch_size, 7, dtype=torch.long), ids], dim=1)
    with torch.no_grad():
        plain = model(ids)
        with_pads = model(padded)
        # In a batch with a longer user, too: the short user's schedule stays its own.
        mixed = model(torch.cat([padded[:1], torch.randint(4, tester.vocab_size, (1, padded.shape[1]))]))
    torch.testing.assert_close(with_pads.last_hidden_state[:, 7:], plain.last_hidden_state)
    torch.testing.assert_close(with_pads.pooler_output, plain.pooler_output)
    torch.testing.assert_close(mixed.last_hidden_state[0, 7:], plain.last_hidden_state[0])


def test_one_item_chunks_are_the_per_step_network():
    """With m = T every rule makes one-item chunks, whose attention summary is the controller state itself."""
    ids = tester.input_ids(pad=3)
    per_step = CmnRecModel(tester.config(chunking="none", memory_slots=tester.length)).eval()
    chunked = CmnRecModel(tester.config(chunking="tsc", memory_slots=tester.length)).eval()
    missing = chunked.load_state_dict(per_step.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("chunk_attention.") for key in missing)
    with torch.no_grad():
        torch.testing.assert_close(chunked(ids).last_hidden_state, per_step(ids).last_hidden_state)


def test_user_vector_is_the_last_positions_output():
    model = CmnRecModel(tester.config()).eval()
    with torch.no_grad():
        output = model(tester.input_ids(pad=2))
    assert output.pooler_output.shape == (tester.batch_size, 10)
    torch.testing.assert_close(output.pooler_output, output.last_hidden_state[:, -1], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# The DNC memory's invariants and gradients
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["none", "tsc"])
def test_memory_weightings_are_distributions_and_usage_stays_in_unit_interval(rule):
    model = CmnRecModel(tester.config(chunking=rule, memory_slots=4)).eval()
    memory = model.memory
    with torch.no_grad():  # large interface outputs push the gates and the weightings to their extremes
        memory.interface.weight.mul_(200)
        memory.interface.bias.copy_(torch.randn(memory.interface.bias.shape, generator=GENERATOR) * 5)
        write_gate = list(memory.sizes).index("write_gate")
        memory.interface.bias[sum(list(memory.sizes.values())[:write_gate])] = 10.0
    with MemoryAccesses(model) as accesses, torch.no_grad():
        model(tester.input_ids(pad=3))
    assert accesses.states
    tolerance = 1e-6
    for state in accesses.states:
        assert state.write_weights.min() >= 0 and state.write_weights.sum(-1).max() <= 1 + tolerance
        assert state.read_weights.min() >= 0 and state.read_weights.sum(-1).max() <= 1 + tolerance
        assert state.usage.min() >= 0 and state.usage.max() <= 1 + tolerance
        assert state.link.min() >= 0 and state.link.diagonal(dim1=1, dim2=2).abs().max() == 0
        assert state.link.sum(1).max() <= 1 + tolerance and state.link.sum(2).max() <= 1 + tolerance
        assert state.precedence.min() >= 0 and state.precedence.sum(-1).max() <= 1 + tolerance
    assert max(float(state.write_weights.sum(-1).max()) for state in accesses.states) > 0.5


def test_content_weights_sum_to_one_and_allocation_to_at_most_one():
    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(4, 5, 3, generator=generator)
    keys = torch.randn(4, 2, 3, generator=generator)
    weights = content_weights(memory, keys, torch.full((4, 2), 3.0))
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 2))
    usage = torch.rand(4, 5, generator=generator)
    allocation = allocation_weights(usage)
    assert allocation.min() >= 0 and allocation.sum(-1).max() <= 1
    # The least used slot gets the largest share; a fully used memory allocates (almost) nothing.
    assert torch.equal(allocation.argmax(-1), usage.argmin(-1))
    assert allocation_weights(torch.ones(1, 5)).sum() < 1e-5


@pytest.mark.parametrize("rule", ["none", "tsc"])
def test_gradients_match_finite_differences(rule):
    config = tester.config(
        chunking=rule,
        embedding_size=3,
        controller_size=3,
        memory_slots=2,
        memory_width=2,
        num_read_heads=2,
        attention_size=2,
        hidden_size=2,
    )
    torch.manual_seed(0)
    model = CmnRecModel(config).double().eval()
    with torch.no_grad():  # away from the flat initial range, so the memory's gradients are not negligible
        for parameter in model.parameters():
            parameter.mul_(10 if parameter.dim() > 1 else 1)
    embeddings = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, :2] = False

    def hidden(inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs_embeds=inputs, attention_mask=mask).last_hidden_state

    assert torch.autograd.gradcheck(hidden, (embeddings,), eps=1e-6, atol=1e-5, fast_mode=True)


# ---------------------------------------------------------------------------------------------------------------
# Heads, configuration, save/load, Auto classes, remote code
# ---------------------------------------------------------------------------------------------------------------


def test_next_item_loss_is_the_shifted_cross_entropy_over_all_items():
    model = CmnRecForNextItemPrediction(tester.config()).eval()
    ids = tester.input_ids(pad=3)
    labels = ids.masked_fill(ids.eq(0), -100)
    with torch.no_grad():
        loss = model(ids, labels=labels).loss
        logits = model(ids).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, tester.vocab_size), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_classification_reads_the_user_vector():
    model = CmnRecForSequenceClassification(tester.config()).eval()
    ids = tester.input_ids(pad=2)
    with torch.no_grad():
        output = model(ids, labels=torch.tensor([0, 2, 1]))
        users = model.cmnrec(ids).pooler_output
    torch.testing.assert_close(output.logits, model.classifier(users))
    with pytest.raises(ValueError, match="labels must lie in"):
        model(ids, labels=torch.tensor([0, 3, 1]))


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("chunking", "daily", "'none', 'pec', 'tsc', 'exc'"),
        ("controller", "rnn", "'lstm', 'gru'"),
        ("pretraining_loss", "bpr", "'full_softmax', 'sampled_softmax'"),
        ("memory_slots", 0, "positive integer"),
        ("num_read_heads", 1.5, "positive integer"),
    ],
)
def test_config_errors_name_the_field_and_the_allowed_values(field, value, allowed):
    with pytest.raises(ValueError, match=rf"CmnRecConfig\.{field}") as error:
        tester.config(**{field: value})
    assert allowed in str(error.value)


@pytest.mark.parametrize(
    "model_class", [CmnRecModel, CmnRecForNextItemPrediction, CmnRecForSequenceClassification]
)
def test_save_load_round_trip_is_exact(model_class, tmp_path):
    model = model_class(tester.config(chunking="pec", controller="gru")).eval()
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path).eval()
    ids = tester.input_ids(pad=2)
    with torch.no_grad():
        for expected, actual in zip(model(ids).values(), loaded(ids).values(), strict=True):
            assert torch.equal(expected, actual)
    assert loaded.config.chunking == "pec" and loaded.config.controller == "gru"


def test_auto_classes_load_a_saved_folder(tmp_path):
    model = CmnRecForNextItemPrediction(tester.config()).eval()
    model.save_pretrained(tmp_path)
    auto_map = AutoConfig.from_pretrained(tmp_path).auto_map
    assert set(auto_map) >= {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
    }
    assert type(AutoConfig.from_pretrained(tmp_path)) is CmnRecConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is CmnRecModel
    causal = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(causal) is CmnRecForNextItemPrediction
    ids = tester.input_ids()
    with torch.no_grad():
        assert torch.equal(causal(ids).logits, model(ids).logits)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(classifier) is CmnRecForSequenceClassification
    assert torch.equal(classifier.cmnrec.controller.weight_hh_l0, model.cmnrec.controller.weight_hh_l0)


@pytest.mark.slow
def test_saved_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    model = CmnRecForSequenceClassification(tester.config(num_labels=2))
    check_classifier_folder_loads_remotely(
        tmp_path, model, CmnRecModel, ("vocab_size", "chunking", "memory_slots")
    )


def test_model_type_records_name_real_classes_and_files():
    for model_type in MODEL_TYPES.values():
        config_class = getattr(modeling_peterrec, model_type.config_class)
        assert config_class.model_type == model_type.name
        module = importlib.import_module(f"modeling_peterrec.{model_type.modeling_file}")
        assert getattr(module, model_type.pretraining_class).config_class is config_class
        assert getattr(module, model_type.backbone_class).config_class is config_class
        for head in (*model_type.task_heads.values(), model_type.masked_pretraining_class):
            assert head is None or getattr(module, head).config_class is config_class
        if model_type.task_heads:  # a model type transfers to every task kind with a head, or not yet at all
            assert set(model_type.task_heads) == {kind.name for kind in TASK_KINDS.values() if kind.head}
            assert INSERTIONS[model_type.default_insertion].model_type == model_type.name
        else:
            assert model_type.default_insertion is None


def test_pretrain_options_build_a_cmnrec_of_the_given_sizes():
    """`pretrain --model_type cmnrec`: controller, memory width and embedding follow --hidden_size unless given."""
    args = PretrainArguments(
        model_type="cmnrec", hidden_size=16, chunking="exc", memory_slots=2, num_read_heads=1
    )
    record = MODEL_TYPES["cmnrec"]
    config = config_class(record)(
        vocab_size=50, **{name: getattr(args, name) for name in record.pretraining_fields}
    )
    model = pretraining_model_class(config)(config)
    assert isinstance(model, CmnRecForNextItemPrediction)
    assert (config.controller_size, config.memory_width, config.embedding_size) == (16, 16, 8)
    assert config.chunking == "exc" and config.num_read_heads == 1
    ids = torch.randint(4, 50, (2, 7))
    assert torch.isfinite(model(ids, labels=ids).loss)
