"""recommend() and predict(): the top-k of a brute-force score-and-sort, exclusions, candidates, ties, class
probabilities, and a server's mixed-task calls."""

from __future__ import annotations

import pytest
import torch

from modeling_peterrec import (
    MultiTaskPeterRec,
    PeterRecConfig,
    PeterRecForMaskedItemPrediction,
    PeterRecForNextItemPrediction,
    prepare_for_transfer,
    save_patch,
)
from modeling_peterrec.inference import HistoryEncoder, predict, recommend, score
from modeling_peterrec.model_types import config_class, pretraining_model_class
from modeling_peterrec.registry import MODEL_TYPES
from modeling_peterrec.tokenization_peterrec import ItemTokenizer

ITEMS = [f"item{i}" for i in range(20)]
TARGETS = [f"target{i}" for i in range(7)]
LABELS = ["F", "M", "X"]
HISTORIES = [ITEMS[3:9], ITEMS[:2], ITEMS[10:19], [ITEMS[5]], ITEMS[::3]]
TINY_FIELDS = {
    "peterrec": {"hidden_size": 16, "dilations": [1, 2]},
    "cmnrec": {"hidden_size": 16, "embedding_size": 8, "controller_size": 16, "memory_width": 8},
    "sasrec": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2},
}
"""A tiny configuration of each model type of `registry.MODEL_TYPES`."""


def tokenizer() -> ItemTokenizer:
    return ItemTokenizer.from_sequences([ITEMS])


def next_item_model(seed: int = 0, is_causal: bool = True):
    torch.manual_seed(seed)
    config = PeterRecConfig(
        vocab_size=len(tokenizer()),
        hidden_size=16,
        dilations=[1, 2, 1, 2],
        patch_bottleneck_size=4,
        is_causal=is_causal,
    )
    model_class = PeterRecForNextItemPrediction if is_causal else PeterRecForMaskedItemPrediction
    return model_class(config).eval()


def randomize_trainable(model) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.3)


def classification_model(backbone=None, task="gender", labels=LABELS, insertion="serial_two"):
    model, _ = prepare_for_transfer(
        backbone or next_item_model(),
        "peterrec",
        task,
        "classification",
        label_names=labels,
        insertion=insertion,
    )
    randomize_trainable(model)
    return model.eval()


def ranking_model(backbone=None, task="coldrec", insertion="serial_one"):
    model, _ = prepare_for_transfer(
        backbone or next_item_model(),
        "peterrec",
        task,
        "ranking",
        num_target_items=len(TARGETS),
        target_names=TARGETS,
        insertion=insertion,
    )
    randomize_trainable(model)
    return model.eval()


def brute_force(scores: torch.Tensor, names: list[str], blocked: set[str], k: int) -> list[str]:
    pairs = [(-float(s), i) for i, s in enumerate(scores) if names[i] not in blocked]
    return [names[i] for _, i in sorted(pairs)[:k]]


def test_next_item_recommendations_equal_a_brute_force_sort():
    model, tok = next_item_model(), tokenizer()
    results = recommend(model, tok, HISTORIES, k=5, batch_size=2)
    names = tok.convert_ids_to_tokens(list(range(len(tok))))
    specials = set(names[: tok.first_item_id])
    for history, result in zip(HISTORIES, results, strict=True):
        ids = torch.tensor([tok.encode_items(history)])
        with torch.no_grad():
            scores = model(ids).logits[0, -1]
        assert result.items == brute_force(scores, names, specials | set(history), 5)
        torch.testing.assert_close(
            torch.tensor(result.scores), scores[torch.tensor(tok.convert_tokens_to_ids(result.items))]
        )
        assert not set(result.items) & set(history)


@pytest.mark.parametrize("model_type", list(MODEL_TYPES))
def test_the_next_item_model_of_every_model_type_recommends_its_top_logits(model_type):
    torch.manual_seed(0)
    config = config_class(MODEL_TYPES[model_type])(vocab_size=len(tokenizer()), **TINY_FIELDS[model_type])
    model, tok = pretraining_model_class(config)(config).eval(), tokenizer()
    results = recommend(model, tok, HISTORIES, k=6)
    names = tok.convert_ids_to_tokens(list(range(len(tok))))
    for history, result in zip(HISTORIES, results, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([tok.encode_items(history)])).logits[0, -1]
        assert result.items == brute_force(logits, names, set(names[: tok.first_item_id]) | set(history), 6)
        assert not set(result.items) & set(history)
        expected = logits[tok.convert_tokens_to_ids(result.items)]
        torch.testing.assert_close(torch.tensor(result.scores), expected)
        torch.testing.assert_close(torch.tensor(score(model, tok, [history], result.items)[0]), expected)


def test_seen_items_are_kept_when_asked_and_special_tokens_never_appear():
    model, tok = next_item_model(), tokenizer()
    results = recommend(model, tok, HISTORIES, k=len(tok), exclude_seen=False)
    for result in results:
        assert sorted(result.items) == sorted(ITEMS)
        assert result.scores == sorted(result.scores, reverse=True)


def test_candidates_and_exclusions_are_honoured():
    model, tok = next_item_model(), tokenizer()
    candidates = ITEMS[4:12]
    results = recommend(model, tok, HISTORIES, k=3, candidates=candidates, exclude=[ITEMS[10]])
    for history, result in zip(HISTORIES, results, strict=True):
        allowed = set(candidates) - set(history) - {ITEMS[10]}
        assert set(result.items) <= allowed
        assert len(result.items) == min(3, len(allowed))
    per_user = recommend(model, tok, HISTORIES[:2], k=4, candidates=[[ITEMS[3], ITEMS[19]], [ITEMS[5]]])
    assert [result.items for result in per_user] == [[ITEMS[19]], [ITEMS[5]]]  # item3 is in user 0's history
    with pytest.raises(ValueError, match="not items this model scores"):
        recommend(model, tok, HISTORIES, candidates=["nope"])


def test_ties_are_broken_by_the_lower_item_id():
    model, tok = next_item_model(), tokenizer()
    with torch.no_grad():
        model.output_layer.weight.zero_()
        model.output_layer.bias.zero_()
    result = recommend(model, tok, [[ITEMS[0]]], k=4)[0]
    expected = [tok.convert_ids_to_tokens(i) for i in range(tok.first_item_id, len(tok))]
    assert result.items == [name for name in expected if name != ITEMS[0]][:4]


def test_masked_head_scores_the_mask_after_the_history():
    model, tok = next_item_model(is_causal=False), tokenizer()
    result = recommend(model, tok, [ITEMS[:4]], k=3, exclude_seen=False)[0]
    ids = torch.tensor([tok.encode_items(ITEMS[:4]) + [tok.mask_token_id]])
    with torch.no_grad():
        scores = model(ids).logits[0, -1]
    names = tok.convert_ids_to_tokens(list(range(len(tok))))
    assert result.items == brute_force(scores, names, set(names[:4]), 3)


def test_ranking_model_recommends_target_names():
    model, tok = ranking_model(), tokenizer()
    results = recommend(model, tok, HISTORIES, k=4, exclude=[TARGETS[0]])
    for history, result in zip(HISTORIES, results, strict=True):
        ids = torch.tensor([tok.encode_items(history) + [tok.tcl_token_id]])
        with torch.no_grad():
            scores = model.score(ids)[0]
        assert result.items == brute_force(scores, TARGETS, {TARGETS[0]}, 4)


def test_predict_probabilities_match_the_head():
    model, tok = classification_model(), tokenizer()
    predictions = predict(model, tok, HISTORIES, batch_size=2)
    for history, prediction in zip(HISTORIES, predictions, strict=True):
        ids = torch.tensor([tok.encode_items(history) + [tok.tcl_token_id]])
        with torch.no_grad():
            logits = model(ids).logits[0]
        probabilities = torch.tensor([prediction.probabilities[name] for name in LABELS])
        torch.testing.assert_close(probabilities, logits.softmax(-1))
        assert abs(sum(prediction.probabilities.values()) - 1) < 1e-6
        assert prediction.label == LABELS[int(logits.argmax())]
        assert prediction.score == max(prediction.probabilities.values())


def test_each_call_refuses_the_other_kind_of_head():
    tok = tokenizer()
    with pytest.raises(TypeError, match="use recommend"):
        predict(next_item_model(), tok, HISTORIES)
    with pytest.raises(TypeError, match="use predict"):
        recommend(classification_model(), tok, HISTORIES)


def test_encoder_keeps_the_most_recent_items():
    tok = tokenizer()
    encode = HistoryEncoder(tok, ((), (tok.tcl_token_id,)), max_length=3)
    ids, mask = encode([ITEMS[:5], ITEMS[:1]])
    assert ids.tolist() == [
        tok.convert_tokens_to_ids(ITEMS[3:5]) + [3],
        [0] + tok.convert_tokens_to_ids(ITEMS[:1]) + [3],
    ]
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]


def test_server_mixed_task_calls_equal_single_task_calls(tmp_path):
    tok = tokenizer()
    save_patch(classification_model(next_item_model(), "gender"), tmp_path / "gender")
    save_patch(
        classification_model(next_item_model(), "age", ["a", "b"], "parallel_before_ln"), tmp_path / "age"
    )
    save_patch(ranking_model(next_item_model(), "coldrec"), tmp_path / "coldrec")
    save_patch(ranking_model(next_item_model(), "other", "serial_two"), tmp_path / "other")
    server = MultiTaskPeterRec(next_item_model())
    for task in ("gender", "age", "coldrec", "other"):
        server.load_patch(tmp_path / task)
    classes = ["age", "gender", "gender", "age", "age"]
    mixed = predict(server, tok, HISTORIES, task=classes, batch_size=3)
    for row, task in enumerate(classes):
        alone = predict(server, tok, [HISTORIES[row]], task=task)[0]
        assert mixed[row].label == alone.label
        for name, value in alone.probabilities.items():
            assert mixed[row].probabilities[name] == pytest.approx(value, abs=1e-6)
    rankers = ["coldrec", "other", "coldrec", "coldrec", "other"]
    mixed = recommend(server, tok, HISTORIES, k=3, task=rankers, batch_size=2)
    for row, task in enumerate(rankers):
        alone = recommend(server, tok, [HISTORIES[row]], k=3, task=task)[0]
        assert mixed[row].items == alone.items
        torch.testing.assert_close(
            torch.tensor(mixed[row].scores), torch.tensor(alone.scores), atol=1e-6, rtol=1e-6
        )
    with pytest.raises(TypeError, match="use predict"):
        recommend(server, tok, HISTORIES, task="gender")


def test_encoder_gives_each_row_its_own_length():
    tok = tokenizer()
    encode = HistoryEncoder(tok, ((), (tok.tcl_token_id,)), max_length=None)
    ids, mask = encode([ITEMS[:5], ITEMS[:5]], max_lengths=[3, None])
    assert ids.tolist() == [
        [0, 0, 0] + tok.convert_tokens_to_ids(ITEMS[3:5]) + [3],
        tok.convert_tokens_to_ids(ITEMS[:5]) + [3],
    ]
    assert mask.tolist() == [[0, 0, 0, 1, 1, 1], [1] * 6]


def test_tasks_read_the_length_they_were_fine_tuned_with(tmp_path):
    """A patch records its fine-tuning length: served alone or in a mixed batch beside a task of another length,
    each task reads that many most recent items, unless `max_length` says otherwise for the whole call."""
    tok = tokenizer()
    short, long = (
        classification_model(next_item_model(), "short"),
        classification_model(next_item_model(), "long"),
    )
    short.patch_config.max_length, long.patch_config.max_length = 4, None  # None: the tokenizer's length
    save_patch(short, tmp_path / "short")
    save_patch(long, tmp_path / "long")
    server = MultiTaskPeterRec(next_item_model())
    for task in ("short", "long"):
        server.load_patch(tmp_path / task)
    assert server.tasks["short"].patch_config.max_length == 4
    truncated = [history[-3:] for history in HISTORIES]  # 4 with [TCL]
    tasks = ["short", "long", "short", "long", "short"]
    mixed = predict(server, tok, HISTORIES, task=tasks)
    for row, task in enumerate(tasks):
        read = truncated[row] if task == "short" else HISTORIES[row]
        expected = predict(server, tok, [read], task=task, max_length=100)[0]
        for name, value in expected.probabilities.items():
            assert mixed[row].probabilities[name] == pytest.approx(value, abs=1e-6)
    assert predict(short, tok, HISTORIES) == predict(short, tok, truncated, max_length=100)
    whole = predict(server, tok, HISTORIES, task="short", max_length=100)
    assert whole != predict(server, tok, HISTORIES, task="short")  # HISTORIES[2] has 9 items
