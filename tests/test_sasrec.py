"""SASRec: configuration checks, causality, left-padding invariance, sub-layer names, heads, a training step,
save/load, Auto classes, remote code and `peterrec pretrain --model_type sasrec`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from modeling_peterrec import (
    SASRecConfig,
    SASRecForNextItemPrediction,
    SASRecForSequenceClassification,
    SASRecModel,
)
from modeling_peterrec.cli import main
from modeling_peterrec.modeling_sasrec import PointWiseFeedForward, SelfAttention
from modeling_peterrec.training import PretrainArguments, load_backbone
from modeling_peterrec.training.pipelines import pretraining_config
from tests.test_remote_code import check_classifier_folder_loads_remotely
from tests.test_training import QUICK_TRAINING, read_metrics, synthetic_tasks
from tokenization import ItemTokenizer


class SASRecModelTester:
    """Builds tiny configurations and inputs, like transformers' ModelTester helpers."""

    vocab_size = 30
    batch_size = 3
    length = 10

    def config(self, **overrides) -> SASRecConfig:
        fields = dict(
            vocab_size=self.vocab_size,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=24,
            num_labels=3,
        )
        fields.update(overrides)
        return SASRecConfig(**fields)

    def input_ids(self, seed: int = 0, pad: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(4, self.vocab_size, (self.batch_size, self.length), generator=generator)
        ids[0, :pad] = 0
        return ids


tester = SASRecModelTester()


def encoder(**overrides) -> SASRecModel:
    torch.manual_seed(0)
    return SASRecModel(tester.config(**overrides)).eval()


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("hidden_act", "tanh", "'relu', 'gelu'"),
        ("readout", "max", "'tcl', 'sum', 'mean', 'attention'"),
        ("pretraining_loss", "bpr", "'full_softmax', 'sampled_softmax'"),
        ("is_causal", "yes", "True, False"),
        ("num_hidden_layers", 0, "positive integer"),
        ("max_position_embeddings", 2.5, "positive integer"),
        ("hidden_dropout_prob", 1.0, "probability in [0, 1)"),
        ("num_attention_heads", 3, "must divide hidden_size=16"),
    ],
)
def test_config_errors_name_the_field_and_the_allowed_values(field, value, allowed):
    with pytest.raises(ValueError, match=rf"SASRecConfig\.{field}") as error:
        tester.config(**{field: value})
    assert allowed in str(error.value)


def test_config_shares_the_tokenizers_special_tokens():
    with pytest.raises(ValueError, match="distinct"):
        tester.config(tcl_token_id=0)
    tokenizer = ItemTokenizer.from_sequences([["a", "b"]])
    config = tester.config()
    assert (config.pad_token_id, config.unk_token_id, config.mask_token_id, config.tcl_token_id) == (
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.mask_token_id,
        tokenizer.tcl_token_id,
    )


# ---------------------------------------------------------------------------------------------------------------
# Causality and padding
# ---------------------------------------------------------------------------------------------------------------


def test_causal_outputs_at_step_t_do_not_depend_on_later_items():
    model = encoder()
    ids = tester.input_ids(pad=2)
    changed = ids.clone()
    step = 5
    changed[:, step + 1 :] = torch.randint(4, tester.vocab_size, changed[:, step + 1 :].shape)
    with torch.no_grad():
        before = model(ids).last_hidden_state
        after = model(changed).last_hidden_state
    torch.testing.assert_close(before[:, : step + 1], after[:, : step + 1], rtol=0, atol=0)
    assert not torch.allclose(before[:, -1], after[:, -1])


def test_non_causal_outputs_see_later_items():
    model = encoder(is_causal=False)
    ids = tester.input_ids()
    changed = ids.clone()
    changed[:, -1] = (ids[:, -1] - 4 + 1) % (tester.vocab_size - 4) + 4
    with torch.no_grad():
        assert not torch.allclose(model(ids).last_hidden_state[:, 0], model(changed).last_hidden_state[:, 0])


@pytest.mark.parametrize("is_causal", [True, False], ids=["causal", "bidirectional"])
def test_left_padding_does_not_change_a_users_outputs(is_causal):
    model = encoder(is_causal=is_causal).double()
    ids = tester.input_ids()
    padded = torch.cat([torch.zeros(tester.batch_size, 7, dtype=torch.long), ids], dim=1)
    with torch.no_grad():
        plain = model(ids).last_hidden_state
        with_pads = model(padded).last_hidden_state
        # In a batch with a longer user, too.
        longer = torch.randint(4, tester.vocab_size, (1, padded.shape[1]))
        mixed = model(torch.cat([padded[:1], longer])).last_hidden_state
    torch.testing.assert_close(with_pads[:, 7:], plain)
    torch.testing.assert_close(mixed[0, 7:], plain[0])
    assert torch.isfinite(with_pads).all()


def test_masked_positions_are_never_attended_to():
    model = encoder()
    ids = tester.input_ids()
    mask = torch.ones_like(ids)
    mask[:, :4] = 0
    other = ids.clone()
    other[:, :4] = torch.randint(4, tester.vocab_size, (tester.batch_size, 4))
    with torch.no_grad():
        first = model(ids, attention_mask=mask).last_hidden_state
        second = model(other, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(first[:, 4:], second[:, 4:], rtol=0, atol=0)


def test_sequences_longer_than_the_position_table_are_refused():
    model = encoder(max_position_embeddings=8)
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        model(tester.input_ids())
    padded = tester.input_ids(pad=3)
    padded[:, :3] = 0  # 7 items in 10 positions fit
    assert model(padded).last_hidden_state.shape == (tester.batch_size, tester.length, 16)


# ---------------------------------------------------------------------------------------------------------------
# Structure, heads and training
# ---------------------------------------------------------------------------------------------------------------


def test_blocks_name_their_sub_layers_for_adapters():
    model = encoder()
    block = model.blocks[1]
    assert isinstance(block.attention.layer, SelfAttention)
    assert isinstance(block.feed_forward.layer, PointWiseFeedForward)
    names = dict(model.named_parameters())
    for name in (
        "blocks.0.attention.layer_norm.weight",
        "blocks.0.attention.layer.query.weight",
        "blocks.0.attention.layer.value.bias",
        "blocks.1.feed_forward.layer.dense_in.weight",
        "blocks.1.feed_forward.layer_norm.bias",
        "embeddings.position_embeddings.weight",
        "final_layer_norm.weight",
    ):
        assert name in names, name


def test_next_item_loss_is_the_shifted_cross_entropy_over_all_items():
    torch.manual_seed(0)
    model = SASRecForNextItemPrediction(tester.config()).eval()
    ids = tester.input_ids(pad=3)
    labels = ids.masked_fill(ids.eq(0), -100)
    with torch.no_grad():
        loss = model(ids, labels=labels).loss
        logits = model(ids).logits
        last = model(ids, logits_to_keep=1).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, tester.vocab_size), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(last, logits[:, -1:])
    assert model.output_layer.weight.data_ptr() != model.sasrec.embed_items.weight.data_ptr()


def test_next_item_prediction_needs_the_causal_model():
    with pytest.raises(ValueError, match="is_causal=True"):
        SASRecForNextItemPrediction(tester.config(is_causal=False))


def test_classification_reads_the_user_vector_like_peterrec_heads():
    torch.manual_seed(0)
    model = SASRecForSequenceClassification(tester.config()).eval()
    ids = tester.input_ids(pad=2)
    with torch.no_grad():
        output = model(ids, labels=torch.tensor([0, 2, 1]))
        hidden = model.sasrec(ids).last_hidden_state
        users = model.user_vectors(ids)
    torch.testing.assert_close(users, hidden[:, -1], rtol=0, atol=0)
    torch.testing.assert_close(users, model.sasrec.user_representation(hidden, ids.ne(0)), rtol=0, atol=0)
    torch.testing.assert_close(output.logits, model.logits_from_user_vectors(users))
    with pytest.raises(ValueError, match="labels must lie in"):
        model(ids, labels=torch.tensor([0, 3, 1]))


def test_a_few_training_steps_lower_the_loss_on_a_tiny_fixture():
    torch.manual_seed(0)
    model = SASRecForNextItemPrediction(
        tester.config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    )
    ids = tester.input_ids(pad=3)
    labels = ids.masked_fill(ids.eq(0), -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------------------------------------------------------
# Save/load, Auto classes, remote code
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_class", [SASRecModel, SASRecForNextItemPrediction, SASRecForSequenceClassification]
)
def test_save_load_round_trip_is_exact(model_class, tmp_path):
    model = model_class(tester.config(hidden_act="gelu", num_hidden_layers=3)).eval()
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path).eval()
    ids = tester.input_ids(pad=2)
    with torch.no_grad():
        for expected, actual in zip(model(ids).values(), loaded(ids).values(), strict=True):
            assert torch.equal(expected, actual)
    for (name, expected), (_, actual) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(expected, actual), name
    assert loaded.config.hidden_act == "gelu" and loaded.config.num_hidden_layers == 3


def test_auto_classes_load_a_saved_folder(tmp_path):
    model = SASRecForNextItemPrediction(tester.config()).eval()
    model.save_pretrained(tmp_path)
    auto_map = AutoConfig.from_pretrained(tmp_path).auto_map
    assert set(auto_map) >= {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
    }
    assert type(AutoConfig.from_pretrained(tmp_path)) is SASRecConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is SASRecModel
    causal = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(causal) is SASRecForNextItemPrediction
    ids = tester.input_ids()
    with torch.no_grad():
        assert torch.equal(causal(ids).logits, model(ids).logits)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(classifier) is SASRecForSequenceClassification
    assert torch.equal(
        classifier.sasrec.blocks[0].attention.layer.query.weight,
        model.sasrec.blocks[0].attention.layer.query.weight,
    )


@pytest.mark.slow
def test_saved_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    model = SASRecForSequenceClassification(tester.config(num_labels=2))
    check_classifier_folder_loads_remotely(
        tmp_path, model, SASRecModel, ("vocab_size", "num_hidden_layers", "is_causal")
    )


# ---------------------------------------------------------------------------------------------------------------
# `peterrec pretrain --model_type sasrec`
# ---------------------------------------------------------------------------------------------------------------


def test_pretraining_config_follows_the_model_type_and_its_overrides():
    args = PretrainArguments(
        model_type="sasrec",
        config_overrides="num_hidden_layers=3,num_attention_heads=4,hidden_dropout_prob=0.5",
        hidden_size=32,
        max_length=50,
    )
    config = pretraining_config(args, vocab_size=100)
    assert type(config) is SASRecConfig
    assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_dropout_prob) == (3, 4, 0.5)
    assert (config.hidden_size, config.max_position_embeddings, config.vocab_size) == (32, 50, 100)
    with pytest.raises(ValueError, match=r"SASRecConfig\.num_attention_heads=5 must divide"):
        pretraining_config(
            PretrainArguments(model_type="sasrec", config_overrides="num_attention_heads=5"), 100
        )
    with pytest.raises(ValueError, match="Unknown model type 'bert4rec'"):
        PretrainArguments(model_type="bert4rec")


def test_masked_pretraining_of_sasrec_is_refused():
    with pytest.raises(ValueError, match="--objective causal"):
        PretrainArguments(model_type="sasrec", objective="masked")
    from modeling_peterrec.model_types import pretraining_model_class

    with pytest.raises(ValueError, match="causal objective"):
        pretraining_model_class(SASRecConfig(vocab_size=100, is_causal=False))


@pytest.mark.slow
def test_pretrain_command_trains_and_evaluates_a_sasrec_backbone(tmp_path: Path):
    data = synthetic_tasks(tmp_path / "data")
    main(
        [
            "pretrain",
            "--model_type",
            "sasrec",
            "--config_overrides",
            "num_hidden_layers=1,num_attention_heads=2",
        ]
        + ["--data_dir", data["pretrain"], "--hidden_size", "16", "--max_length", "12"]
        + ["--num_train_epochs", "2", "--output_dir", str(tmp_path / "pretrain"), *QUICK_TRAINING]
    )
    backbone = tmp_path / "pretrain" / "backbone"
    model, tokenizer = load_backbone(backbone)
    assert type(model) is SASRecForNextItemPrediction
    assert (model.config.num_hidden_layers, model.config.max_position_embeddings) == (1, 12)
    assert model.config.vocab_size == len(tokenizer)
    metrics = read_metrics(tmp_path / "pretrain")
    assert metrics["config"]["model_type"] == "sasrec"
    assert 0 <= metrics["test"]["ndcg@10"] <= metrics["test"]["hr@10"] <= 1
    main(
        ["evaluate", "--backbone", str(backbone), "--data_dir", data["pretrain"], "--max_length", "12"]
        + ["--output_dir", str(tmp_path / "evaluate")]
    )
    assert read_metrics(tmp_path / "evaluate")["metrics"] == pytest.approx(metrics["test"])
