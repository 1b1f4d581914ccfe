"""Backbone and patch cards render, load back with the same metadata, and pass the Hub's metadata check."""

import pytest
from huggingface_hub import ModelCard, create_repo, model_info

from hub_cards.cards import render_backbone_card, render_patch_card, retarget_card

BACKBONE_ID = "peterrec/nextitnet-ml1m"
PATCH_ID = "peterrec/genest-patch"


def backbone_card() -> ModelCard:
    return render_backbone_card(
        BACKBONE_ID,
        is_causal=True,
        hidden_size=256,
        dilations=[1, 2, 4, 8] * 4,
        vocab_size=3319,
        num_parameters=4_012_345,
        dataset="ml-1m",
        dataset_name="MovieLens-1M (source domain)",
        metrics={"mrr@5": 0.0812, "hr@5": 0.1493},
    )


def patch_card(**overrides) -> ModelCard:
    arguments = {
        "base_model": BACKBONE_ID,
        "base_model_revision": "a" * 40,
        "task": "GenEst",
        "task_kind": "classification",
        "method": "PeterRec",
        "insertion": "serial_two",
        "trainable_parameters": 50_000,
        "backbone_parameters": 4_000_000,
        "dataset": "ml-1m",
        "dataset_name": "MovieLens-1M GenEst",
        "metrics": {"accuracy": 0.7512, "macro_f1": 0.6633},
        "label_names": ["F", "M"],
        "bottleneck_size": 32,
    }
    return render_patch_card(PATCH_ID, **{**arguments, **overrides})


def eval_values(card: ModelCard) -> dict[tuple[str, str | None], float]:
    return {(r.metric_type, r.metric_config): r.metric_value for r in card.data.eval_results}


def test_backbone_card_round_trips_metadata_and_metrics():
    card = backbone_card()
    loaded = ModelCard(str(card))
    assert loaded.data.library_name == "transformers"
    assert loaded.data.tags == ["peterrec", "sequential-recommendation", "next-item-prediction"]
    assert loaded.data.datasets == ["ml-1m"]
    assert loaded.data.model_name == "nextitnet-ml1m"
    assert eval_values(loaded) == {("mrr@5", None): 0.0812, ("hr@5", None): 0.1493}
    assert {r.dataset_split for r in loaded.data.eval_results} == {"test"}


def test_backbone_card_text_states_sizes_objective_and_loading():
    text = backbone_card().text
    assert text.lstrip().startswith(f"# {BACKBONE_ID}\n")
    assert "| Hidden size | 256 |" in text
    assert "| Residual blocks | 8 |" in text
    assert "| Dilated convolution layers | 16 |" in text
    assert "| Parameters | 4,012,345 |" in text
    assert "causal next-item prediction" in text
    assert "| MRR@5 | 0.0812 |" in text
    assert f'AutoModel.from_pretrained("{BACKBONE_ID}", trust_remote_code=True)' in text
    assert "AutoModelForCausalLM" in text


def test_masked_item_backbone_card_names_its_objective():
    card = render_backbone_card(
        BACKBONE_ID,
        is_causal=False,
        hidden_size=64,
        dilations=[1, 4],
        vocab_size=100,
        num_parameters=10,
        dataset="d",
    )
    assert "masked-item prediction" in card.text
    assert "AutoModelForMaskedLM" in card.text
    assert "This backbone has not been evaluated." in card.text
    assert ModelCard(str(card)).data.eval_results is None


def test_patch_card_round_trips_base_model_relation_and_metrics():
    loaded = ModelCard(str(patch_card()))
    assert loaded.data.library_name == "peterrec"
    assert loaded.data.base_model == BACKBONE_ID
    assert loaded.data.base_model_relation == "adapter"
    assert eval_values(loaded) == {("accuracy", None): 0.7512, ("macro_f1", None): 0.6633}
    assert loaded.data.eval_results[0].task_type == "user-profile-classification"


def test_patch_card_text_states_labels_method_and_share():
    text = patch_card().text
    assert text.lstrip().startswith(f"# {PATCH_ID}\n")
    assert "- **Labels:** F, M" in text
    assert "| Fine-tuning method | PeterRec |" in text
    assert "Figure 3(c)" in text
    assert "| User readout | the [TCL] position" in text
    assert "| Trainable parameters | 50,000 |" in text
    assert "| Trainable share of the backbone | 1.25% |" in text
    assert f'model = load_patch("{PATCH_ID}", backbone)' in text
    assert f'revision="{"a" * 40}"' in text


def test_ranking_patch_card_keeps_sampled_and_full_metrics_apart():
    card = patch_card(
        task="ColdRec",
        task_kind="ranking",
        label_names=None,
        metrics={"hr@5": 0.41, "mrr@5": 0.25},
        full_ranking_metrics={"hr@5": 0.12, "ndcg@10": 0.09},
    )
    loaded = ModelCard(str(card))
    assert eval_values(loaded) == {
        ("hr@5", None): 0.41,
        ("mrr@5", None): 0.25,
        ("hr@5", "full-ranking"): 0.12,
        ("ndcg@10", "full-ranking"): 0.09,
    }
    assert "| HR@5 (99 sampled negatives) | 0.4100 |" in card.text
    assert "| NDCG@10 (full ranking) | 0.0900 |" in card.text


def test_patch_card_rejects_bad_arguments_with_the_fix():
    with pytest.raises(ValueError, match="label_names"):
        patch_card(label_names=None)
    with pytest.raises(ValueError, match="Unknown insertion"):
        patch_card(insertion="serial_three")
    with pytest.raises(TypeError, match="plain floats"):
        patch_card(metrics={"accuracy": "high"})
    with pytest.raises(ValueError, match="trainable_parameters"):
        patch_card(trainable_parameters=0)


def test_patch_card_without_dataset_has_no_datasets_metadata():
    card = ModelCard(str(patch_card(dataset=None, dataset_name=None)))
    assert card.data.datasets is None
    assert "datasets:" not in str(card)
    assert "custom" not in str(card)
    assert eval_values(card) == {("accuracy", None): 0.7512, ("macro_f1", None): 0.6633}


def test_retarget_card_names_the_repositories_and_keeps_the_rest():
    local = str(patch_card(base_model="/runs/backbone")).replace("- ml-1m", "- custom")
    card = retarget_card(ModelCard(local), "team/gender", base_model=BACKBONE_ID)
    assert card.data.base_model == BACKBONE_ID
    assert card.data.datasets is None  # the placeholder of earlier versions
    assert card.text.startswith("\n# team/gender\n")
    assert "/runs/backbone" not in str(card)
    assert f'AutoModel.from_pretrained("{BACKBONE_ID}"' in card.text
    assert 'load_patch("team/gender", backbone)' in card.text
    assert eval_values(card) == eval_values(patch_card())
    assert card.text.split("## Task")[1] == patch_card().text.split("## Task")[1].replace(
        PATCH_ID, "team/gender"
    )


def test_cards_validate_against_hub_metadata_check(local_hub):
    cards = (backbone_card(), patch_card(), patch_card(task_kind="ranking", metrics={"hr@5": 0.4}))
    for card in (*cards, patch_card(dataset=None)):
        card.validate()


def test_pushed_patch_card_is_read_by_model_info(local_hub):
    create_repo(PATCH_ID)
    patch_card().push_to_hub(PATCH_ID)
    info = model_info(PATCH_ID)
    assert info.card_data.base_model == BACKBONE_ID
    assert info.card_data.base_model_relation == "adapter"
    assert info.library_name == "peterrec"
    assert {r.metric_type: r.metric_value for r in info.card_data.eval_results} == {
        "accuracy": 0.7512,
        "macro_f1": 0.6633,
    }
