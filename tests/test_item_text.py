"""Items from their text (TransRec, SPEC §10): item texts of MovieLens, the item encoder over a tiny BERT end to end
(a training step, save and load through the Auto classes and remote code, `peterrec pretrain`, transfer, export),
the unchanged ID path, and items added by text without training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel, BertTokenizer

from modeling_peterrec import (
    SASRecConfig,
    SASRecForNextItemPrediction,
    SASRecModel,
    load_patch,
    prepare_for_transfer,
    save_patch,
)
from modeling_peterrec.cli import main
from modeling_peterrec.data import movielens_item_texts_from_file, read_item_texts
from modeling_peterrec.export import example_inputs, export_program, max_difference
from modeling_peterrec.inference import recommend, score
from modeling_peterrec.item_text import ITEM_ENCODER_FOLDER, ITEM_TEXTS_NAME
from modeling_peterrec.predict_command import PredictArguments, run_predict
from modeling_peterrec.small_text_encoder import build_small_text_encoder
from modeling_peterrec.training import PretrainArguments, load_backbone
from tests.test_remote_code import BACKBONE_SCRIPT, PATCH_SCRIPT, PROJECT_ROOT, run_clean
from tests.test_training import QUICK_TRAINING, read_metrics, synthetic_tasks
from tokenization import ItemTokenizer

ITEM_TEXTS = {
    "toy": "Toy Story (1995) | Animation Children's Comedy",
    "heat": "Heat (1995) | Action Crime Thriller",
    "jumanji": "Jumanji (1995) | Adventure Children's Fantasy",
    "casino": "Casino (1995) | Drama Thriller",
    "sabrina": "Sabrina (1995) | Comedy Romance",
    "other": "A movie nobody rated (1990) | Documentary",
}
SEQUENCES = [["toy", "heat", "jumanji"], ["casino", "toy", "sabrina", "heat"], ["jumanji", "sabrina"]]
BATCH = [["toy", "heat", "jumanji"], ["casino", "unseen"]]


@pytest.fixture(scope="module")
def text_encoder_folder(tmp_path_factory) -> Path:
    """A tiny BERT item encoder (one layer of width 16) with a word-level vocabulary, as a Hub-style folder."""
    return build_small_text_encoder(
        ITEM_TEXTS.values(),
        tmp_path_factory.mktemp("encoder") / "bert",
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_length=16,
    )


def item_tokenizer() -> ItemTokenizer:
    return ItemTokenizer.from_sequences(SEQUENCES)


def text_model(folder: Path, representation: str = "text", **overrides) -> SASRecForNextItemPrediction:
    fields = dict(hidden_size=8, num_hidden_layers=1, max_position_embeddings=8, hidden_dropout_prob=0.0)
    fields.update(overrides)
    torch.manual_seed(0)
    return SASRecForNextItemPrediction.from_item_encoder(
        folder, item_tokenizer(), ITEM_TEXTS, item_representation=representation, **fields
    )


def batch_of(tokenizer: ItemTokenizer, sequences=BATCH) -> dict[str, torch.Tensor]:
    return tokenizer(sequences, padding=True, return_tensors="pt")


def next_item_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


# ---------------------------------------------------------------------------------------------------------------
# Item texts
# ---------------------------------------------------------------------------------------------------------------


def test_movielens_item_text_is_title_year_and_genres(tmp_path):
    ml1m = tmp_path / "ml-1m.item"
    ml1m.write_text(
        "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\r\n"
        "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\r\n"
        "Heat (1995)\tHeat\t1995\tAction Crime Thriller\r\n",
        newline="",
    )
    assert movielens_item_texts_from_file("ml-1m", ml1m) == {
        "Toy Story (1995)": "Toy Story (1995) | Animation Children's Comedy",
        "Heat (1995)": "Heat (1995) | Action Crime Thriller",
    }
    ml100k = tmp_path / "ml-100k.item"
    ml100k.write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "267\tunknown\tunkonwn\tunknown\n"
    )
    assert movielens_item_texts_from_file("ml-100k", ml100k) == {
        "1": "Toy Story (1995) | Animation Children's Comedy",
        "267": "unknown | unknown",
    }


def test_item_texts_file_must_map_items_to_texts(tmp_path):
    path = tmp_path / "texts.json"
    path.write_text(json.dumps({"1": "Toy Story", "2": "Heat"}))
    assert read_item_texts(path) == {"1": "Toy Story", "2": "Heat"}
    path.write_text(json.dumps(["Toy Story"]))
    with pytest.raises(ValueError, match="one JSON object mapping each item id to its text"):
        read_item_texts(path)


# ---------------------------------------------------------------------------------------------------------------
# Configuration and the ID path
# ---------------------------------------------------------------------------------------------------------------


def test_item_representation_is_validated_with_a_clear_error():
    with pytest.raises(
        ValueError, match=r"item_representation='image' is not supported; choose one of \['id', "
    ):
        SASRecConfig(vocab_size=10, item_representation="image")
    with pytest.raises(ValueError, match="needs item_encoder_config"):
        SASRecConfig(vocab_size=10, item_representation="text")
    with pytest.raises(ValueError, match="item_text_pooling='max'"):
        SASRecConfig(vocab_size=10, item_text_pooling="max")
    with pytest.raises(ValueError, match="--model_type sasrec"):
        PretrainArguments(model_type="peterrec", item_representation="text")


def test_id_representation_builds_and_computes_what_it_did():
    config = dict(vocab_size=12, hidden_size=8, num_hidden_layers=1, max_position_embeddings=8)
    torch.manual_seed(0)
    default = SASRecForNextItemPrediction(SASRecConfig(**config)).eval()
    torch.manual_seed(0)
    explicit = SASRecForNextItemPrediction(SASRecConfig(item_representation="id", **config)).eval()
    assert default.sasrec.item_text is None and default.sasrec.embed_items.num_embeddings == 12
    state, explicit_state = default.state_dict(), explicit.state_dict()
    assert list(state) == list(explicit_state)
    assert all(torch.equal(state[name], explicit_state[name]) for name in state)
    ids = torch.tensor([[0, 5, 6, 7], [4, 11, 9, 3]])
    with torch.no_grad():
        hidden = default.sasrec(
            inputs_embeds=default.sasrec.embed_items(ids), input_ids=ids
        ).last_hidden_state
        expected = default.output_layer(hidden)
        assert torch.equal(default(input_ids=ids).logits, expected)
        assert torch.equal(explicit(input_ids=ids).logits, expected)


# ---------------------------------------------------------------------------------------------------------------
# The item encoder
# ---------------------------------------------------------------------------------------------------------------


def test_special_tokens_keep_id_embeddings_and_items_come_from_text(text_encoder_folder):
    model = text_model(text_encoder_folder).eval()
    backbone = model.sasrec
    assert backbone.embed_items.num_embeddings == 4 and model.output_layer.out_features == 4
    ids = torch.tensor([[0, 3, 4, 5]])
    with torch.no_grad():
        vectors = backbone.item_text.embed(ids, backbone.embed_items)
        matrix = backbone.item_text.item_matrix()
    assert torch.equal(vectors[0, :2], backbone.embed_items.weight[[0, 3]])
    assert torch.equal(vectors[0, 2:], matrix[[0, 1]])
    assert model(**batch_of(item_tokenizer())).logits.shape[-1] == len(item_tokenizer())


def test_a_pretraining_step_trains_the_text_model_end_to_end(text_encoder_folder):
    model = text_model(text_encoder_folder).train()
    batch = batch_of(item_tokenizer(), SEQUENCES)
    loss = model(**batch, labels=next_item_labels(batch)).loss
    loss.backward()
    assert torch.isfinite(loss)
    text_model_ = model.sasrec.item_text.text_model
    assert text_model_.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert text_model_.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert model.sasrec.item_text.projection.weight.grad.abs().sum() > 0


def test_the_catalogue_is_encoded_once_per_step_and_chunks_give_the_same_gradients(text_encoder_folder):
    batch = batch_of(item_tokenizer(), SEQUENCES)
    gradients, calls = [], []
    for chunk in (64, 2):
        model = text_model(text_encoder_folder, item_encoder_batch_size=chunk).train()
        # The same function whatever the chunks: no dropout in the text model.
        text_model_ = model.sasrec.item_text.text_model.eval()
        hook = text_model_.register_forward_hook(lambda *_, size=chunk: calls.append(size))
        model(**batch, labels=next_item_labels(batch)).loss.backward()
        hook.remove()
        gradients.append(text_model_.embeddings.word_embeddings.weight.grad)
    # 5 vocabulary items: one forward pass in one chunk; in chunks of 2, three forward passes, then three again as
    # the backward pass recomputes them.
    assert calls.count(64) == 1 and calls.count(2) == 6
    torch.testing.assert_close(gradients[0], gradients[1])


@pytest.mark.parametrize("representation", ["text", "text_id"])
def test_saved_model_loads_through_the_auto_classes_with_identical_outputs(
    text_encoder_folder, tmp_path, representation
):
    model = text_model(text_encoder_folder, representation, item_text_pooling="mean").eval()
    tokenizer = item_tokenizer()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / ITEM_TEXTS_NAME).is_file()
    assert (tmp_path / "model" / ITEM_ENCODER_FOLDER / "tokenizer.json").is_file()
    batch = batch_of(tokenizer)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert type(reloaded) is SASRecForNextItemPrediction
    assert reloaded.sasrec.item_text.texts == model.sasrec.item_text.texts
    assert torch.equal(logits(reloaded, batch), logits(model, batch))
    backbone = AutoModel.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(backbone(**batch).last_hidden_state, model.sasrec(**batch).last_hidden_state)


@pytest.mark.slow
def test_text_item_model_loads_with_remote_code_in_a_clean_environment(text_encoder_folder, tmp_path):
    model = text_model(text_encoder_folder).eval()
    tokenizer = item_tokenizer()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    batch = batch_of(tokenizer)
    expected = {"input_ids": batch["input_ids"], "AutoModelForCausalLM": logits(model, batch)}
    with torch.no_grad():
        expected["AutoModel"] = model.sasrec(**batch).last_hidden_state
    save_file(expected, tmp_path / "expected.safetensors")
    config = {"item_representation": "text", "vocab_size": len(tokenizer)}
    stdout = run_clean(
        tmp_path,
        BACKBONE_SCRIPT,
        str(folder),
        str(tmp_path / "expected.safetensors"),
        "AutoModel,AutoModelForCausalLM",
        json.dumps({"config": config, "batch": BATCH, "seed": 0}),
    )
    assert stdout.count("remote code ok") == 2


@pytest.mark.parametrize("representation", ["text", "text_id"])
def test_adding_an_item_by_text_scores_it_without_changing_any_parameter(
    text_encoder_folder, tmp_path, representation
):
    model = text_model(text_encoder_folder, representation).eval()
    tokenizer = item_tokenizer()
    batch = batch_of(tokenizer)
    before, state = logits(model, batch), {k: v.clone() for k, v in model.state_dict().items()}
    (new_id,) = model.add_item_texts({"brand new": "Brand New (2026) | Animation Comedy"}, tokenizer)
    assert new_id == len(tokenizer) - 1 == model.config.vocab_size - 1 == 9
    assert tokenizer.encode_items(["brand new"]) == [new_id]
    after = logits(model, batch)
    assert after.shape[-1] == before.shape[-1] + 1
    torch.testing.assert_close(after[..., :-1], before)
    with torch.no_grad():
        hidden = model.sasrec(**batch).last_hidden_state
        text_vector = model.sasrec.item_text.item_matrix()[new_id - 4]
    torch.testing.assert_close(after[..., -1], hidden @ text_vector)
    new_state = model.state_dict()
    for name, tensor in state.items():  # "text_id": the new item's ID rows and output bias are zero
        assert torch.equal(new_state[name][: len(tensor)], tensor), name
        assert not new_state[name][len(tensor) :].any(), name
    # The new item is an input too, and travels with the saved model.
    with_new = batch_of(tokenizer, [["toy", "brand new"]])
    model.save_pretrained(tmp_path / "model")
    reloaded = SASRecForNextItemPrediction.from_pretrained(tmp_path / "model")
    assert reloaded.sasrec.item_text.items[-1] == "brand new"
    assert torch.equal(logits(reloaded, with_new), logits(model, with_new))


@pytest.mark.parametrize("representation", ["text", "text_id"])
def test_a_cold_item_added_by_text_is_recommended_and_scored_by_its_logit(
    text_encoder_folder, tmp_path, representation
):
    model, tokenizer = text_model(text_encoder_folder, representation).eval(), item_tokenizer()
    (cold_id,) = model.add_item_texts({"brand new": "Brand New (2026) | Animation Comedy"}, tokenizer)
    histories = [["toy", "heat"], ["casino"]]
    everything = recommend(model, tokenizer, histories, k=len(tokenizer))
    chosen = recommend(model, tokenizer, histories, k=1, candidates=["brand new", "heat"])
    for row, history in enumerate(histories):
        with torch.no_grad():
            row_logits = model(torch.tensor([tokenizer.encode_items(history)])).logits[0, -1]
        cold_logit = float(row_logits[cold_id])
        assert "brand new" in everything[row].items
        allowed = [name for name in ("brand new", "heat") if name not in history]
        best = max(allowed, key=lambda name: float(row_logits[tokenizer.convert_tokens_to_ids(name)]))
        assert chosen[row].items == [best]
        (scored,) = score(model, tokenizer, [history], ["brand new"])
        assert scored == pytest.approx([cold_logit], abs=1e-5)
    # `peterrec predict` serves the saved folder, cold item included.
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "users.csv").write_text("user,item,timestamp\nu1,toy,1\nu1,heat,2\nu2,casino,1\n")
    args = PredictArguments(str(tmp_path / "model"), str(tmp_path / "users.csv"), str(tmp_path / "out.jsonl"))
    args.top_k, args.progress = len(tokenizer), False
    run_predict(args)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["item"] for row in rows if row["user"] == "u1"] == everything[0].items


def test_item_texts_must_cover_the_vocabulary(text_encoder_folder, tmp_path):
    with pytest.raises(ValueError, match=r"1 of the 5 vocabulary items have no text, e\.g\. \['sabrina'\]"):
        SASRecForNextItemPrediction.from_item_encoder(
            text_encoder_folder,
            item_tokenizer(),
            {k: v for k, v in ITEM_TEXTS.items() if k != "sabrina"},
            hidden_size=8,
        )
    model = text_model(text_encoder_folder)
    with pytest.raises(ValueError, match="tokenizer has 10 ids, the model 9"):
        grown = item_tokenizer()
        grown.add_items(["x"])
        model.add_item_texts({"y": "why"}, grown)
    model.save_pretrained(tmp_path / "model")
    texts_file = tmp_path / "model" / ITEM_TEXTS_NAME
    payload = json.loads(texts_file.read_text())
    payload["items"] = payload["items"][:-1]
    texts_file.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="holds texts of 4 items, but the model has 5"):
        SASRecForNextItemPrediction.from_pretrained(tmp_path / "model")


def test_a_hub_style_bert_folder_is_an_item_encoder(tmp_path):
    """The Hub path (`--item_encoder <model id>`) with what a BERT repository holds: `BertModel` weights and a
    WordPiece `BertTokenizer`, here tiny and randomly initialised."""
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "toy",
        "story",
        "heat",
        "(",
        ")",
        "1995",
        "|",
        "drama",
    ]
    folder = tmp_path / "tiny-random-bert"
    BertTokenizer(vocab={word: i for i, word in enumerate(words)}).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(config).save_pretrained(folder)
    model = text_model(folder, "text_id", item_text_pooling="mean").train()
    assert model.config.item_encoder_config["model_type"] == "bert"
    encoder = model.sasrec.item_text
    assert encoder.items[0] == "heat"  # id 4, the first item
    assert encoder.text_input_ids[0, :5].tolist() == [2, 7, 8, 10, 9]  # [CLS] heat ( 1995 )
    batch = batch_of(item_tokenizer(), SEQUENCES)
    model(**batch, labels=next_item_labels(batch)).loss.backward()
    assert encoder.text_model.embeddings.word_embeddings.weight.grad[7].abs().sum() > 0
    model.save_pretrained(tmp_path / "model")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert type(reloaded.sasrec.item_text.text_tokenizer).__name__ == "BertTokenizer"
    assert torch.equal(logits(reloaded, batch), logits(model, batch))


def test_small_text_encoder_loads_like_any_hub_model(text_encoder_folder):
    tokenizer = AutoTokenizer.from_pretrained(text_encoder_folder)
    encoder = AutoModel.from_pretrained(text_encoder_folder)
    assert (encoder.config.model_type, encoder.config.hidden_size, encoder.config.num_hidden_layers) == (
        "bert",
        16,
        1,
    )
    assert tokenizer.tokenize("Toy Story (1995) | Western") == [
        "toy",
        "story",
        "(",
        "1995",
        ")",
        "|",
        "[UNK]",
    ]
    assert tokenizer("Heat")["input_ids"][0] == tokenizer.cls_token_id


# ---------------------------------------------------------------------------------------------------------------
# `peterrec pretrain --model_type sasrec --item_representation text`
# ---------------------------------------------------------------------------------------------------------------


def test_pretrain_and_finetune_commands_train_items_from_their_text(tmp_path):
    data = synthetic_tasks(tmp_path / "data", num_users=24)
    texts = {f"i{n}": f"item {n} | {'Comedy' if n < 20 else 'Drama'}" for n in range(40)}
    texts["cold"] = "an item of the target domain | Musical"  # in no training sequence
    texts.update({f"t{n}": f"target {n} | {'Animation' if n < 20 else 'Musical'}" for n in range(40)})
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    main(
        ["pretrain", "--model_type", "sasrec", "--item_representation", "text"]
        + ["--item_texts", str(tmp_path / "texts.json"), "--data_dir", data["pretrain"]]
        + ["--config_overrides", "num_hidden_layers=1,num_attention_heads=2,max_text_length=8"]
        + ["--hidden_size", "16", "--max_length", "12", "--num_train_epochs", "1"]
        + ["--output_dir", str(tmp_path / "pretrain"), *QUICK_TRAINING]
    )
    # No --item_encoder: the small text encoder was built over every item text of the catalogue.
    encoder_folder = tmp_path / "pretrain" / "small_text_encoder"
    assert AutoModel.from_pretrained(encoder_folder).config.hidden_size == 64
    assert AutoTokenizer.from_pretrained(encoder_folder).tokenize("Comedy Musical") == ["comedy", "musical"]
    model, tokenizer = load_backbone(tmp_path / "pretrain" / "backbone")
    assert model.config.item_representation == "text"
    assert model.config.item_encoder == str(encoder_folder)
    items = tokenizer.convert_ids_to_tokens(list(range(4, len(tokenizer))))
    assert model.sasrec.item_text.texts == [texts[item] for item in items]
    initial = AutoModel.from_pretrained(encoder_folder).embeddings.word_embeddings.weight
    assert not torch.equal(model.sasrec.item_text.text_model.embeddings.word_embeddings.weight, initial)
    metrics = read_metrics(tmp_path / "pretrain")
    assert metrics["config"]["item_representation"] == "text"
    assert 0 <= metrics["test"]["ndcg@10"] <= metrics["test"]["hr@10"] <= 1
    # ColdRec on it: the ranking head encodes the target items from the texts of --item_texts.
    main(
        ["finetune", "--backbone", str(tmp_path / "pretrain" / "backbone"), "--data_dir", data["coldrec"]]
        + ["--task", "coldrec", "--method", "peterrec", "--item_texts", str(tmp_path / "texts.json")]
        + ["--max_length", "12", "--num_eval_negatives", "5", "--num_train_epochs", "1"]
        + ["--output_dir", str(tmp_path / "coldrec"), *QUICK_TRAINING]
    )
    patch = json.loads((tmp_path / "coldrec" / "patch" / "patch_config.json").read_text())
    assert patch["target_texts"] == [texts[name] for name in patch["target_names"]]
    finetuned = read_metrics(tmp_path / "coldrec")
    assert finetuned["test"]["cold_rows"] == finetuned["test_full_ranking"]["cold_rows"] >= 0
    with pytest.raises(SystemExit):
        main(
            [
                "pretrain",
                "--model_type",
                "sasrec",
                "--item_representation",
                "text",
                "--data_dir",
                data["pretrain"],
            ]
            + ["--output_dir", str(tmp_path / "no_texts")]
        )


@pytest.mark.parametrize("method", ["peterrec", "fine_all"])
def test_a_text_item_backbone_transfers_and_its_patch_reloads(text_encoder_folder, tmp_path, method):
    text_model(text_encoder_folder).save_pretrained(tmp_path / "backbone")
    model, report = prepare_for_transfer(
        SASRecModel.from_pretrained(tmp_path / "backbone"),
        method=method,
        task="gender",
        head="classification",
        label_names=["f", "m"],
    )
    batch = batch_of(item_tokenizer())
    model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    text_gradient = model.sasrec.item_text.projection.weight.grad
    assert (text_gradient is not None) == (method == "fine_all")
    save_patch(model, tmp_path / "patch")
    reloaded = load_patch(tmp_path / "patch", SASRecModel.from_pretrained(tmp_path / "backbone"))
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch))


@pytest.mark.slow
def test_a_patch_loads_onto_a_text_item_backbone_from_remote_code_with_its_texts(
    text_encoder_folder, tmp_path
):
    folder = tmp_path / "backbone"
    text_model(text_encoder_folder).save_pretrained(folder)
    tokenizer = item_tokenizer()
    tokenizer.save_pretrained(folder)
    model, _ = prepare_for_transfer(
        SASRecModel.from_pretrained(folder),
        method="fine_cls",
        task="gender",
        head="classification",
        label_names=["f", "m"],
    )
    save_patch(model, tmp_path / "patch")
    batch = batch_of(tokenizer)
    with torch.no_grad():
        expected = {"input_ids": batch["input_ids"], "patch": model.eval()(**batch).logits}
    save_file(expected, tmp_path / "expected.safetensors")
    config = {"item_representation": "text", "vocab_size": len(tokenizer)}
    # The backbone comes from the folder's own code (a class that is not this package's); `load_patch` rebuilds it
    # as the package's, item texts included.
    stdout = run_clean(
        tmp_path,
        PATCH_SCRIPT,
        str(folder),
        str(tmp_path / "expected.safetensors"),
        "AutoModel",
        json.dumps({"config": config, "batch": BATCH, "seed": 0}),
        str(tmp_path / "patch"),
        str(PROJECT_ROOT),
    )
    assert stdout.count("remote code ok") == 1


TARGET_TEXTS = {
    "toy2": "Toy Story 2 (1999) | Animation Children's Comedy",
    "heat2": "Heat 2 (2026) | Action Crime Thriller",
    "brand new": "Brand New (2026) | Fantasy Musical",  # in no training pair below
}


@pytest.mark.parametrize(("representation", "method"), [("text", "peterrec"), ("text_id", "fine_all")])
def test_a_ranking_head_over_text_items_ranks_target_items_by_their_text(
    text_encoder_folder, tmp_path, representation, method
):
    text_model(text_encoder_folder, representation).save_pretrained(tmp_path / "backbone")
    arguments = dict(
        method=method, task="coldrec", head="ranking", num_target_items=3, target_names=list(TARGET_TEXTS)
    )
    with pytest.raises(ValueError, match="target_texts"):
        prepare_for_transfer(SASRecModel.from_pretrained(tmp_path / "backbone"), **arguments)
    model, _ = prepare_for_transfer(
        SASRecModel.from_pretrained(tmp_path / "backbone"),
        **arguments,
        target_texts=list(TARGET_TEXTS.values()),
    )
    assert (model.target_embeddings is None) == (representation == "text")  # "text_id" keeps the ID table
    batch = batch_of(item_tokenizer())
    model.train()(**batch, labels=torch.tensor([0, 1])).loss.backward()
    assert (model.sasrec.item_text.projection.weight.grad is not None) == (method == "fine_all")
    model.eval()
    encoder = model.sasrec.item_text
    with torch.no_grad():
        users = model.user_vectors(batch["input_ids"], batch["attention_mask"])
        vectors = encoder.encode_tokens(*encoder.tokenize(list(TARGET_TEXTS.values())))
        if model.target_embeddings is not None:
            vectors = vectors + model.target_embeddings.weight
        scores = model.score(batch["input_ids"], batch["attention_mask"])
        candidates = torch.tensor([[2, 0], [1, 2]])
        candidate_scores = model.score(batch["input_ids"], batch["attention_mask"], candidates)
    torch.testing.assert_close(scores, users @ vectors.T)  # "brand new" too: ranked by its text alone
    torch.testing.assert_close(candidate_scores, scores.gather(1, candidates))
    # The target texts travel in the patch, which reloads onto the backbone with the same scores.
    save_patch(model, tmp_path / "patch")
    assert json.loads((tmp_path / "patch" / "patch_config.json").read_text())["target_texts"] == list(
        TARGET_TEXTS.values()
    )
    reloaded = load_patch(tmp_path / "patch", SASRecModel.from_pretrained(tmp_path / "backbone"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.score(batch["input_ids"], batch["attention_mask"]), scores)


@pytest.mark.parametrize("method", ["peterrec", "fine_cls", "fine_all"])
def test_a_frozen_item_encoder_is_encoded_once_without_dropout_and_a_trained_one_every_step(
    text_encoder_folder, tmp_path, method
):
    text_model(text_encoder_folder, "text_id").save_pretrained(tmp_path / "backbone")
    model, _ = prepare_for_transfer(
        SASRecModel.from_pretrained(tmp_path / "backbone"),
        method=method,
        task="coldrec",
        head="ranking",
        num_target_items=3,
        target_names=list(TARGET_TEXTS),
        target_texts=list(TARGET_TEXTS.values()),
        readout="attention",
    )
    encoder = model.sasrec.item_text
    assert encoder.text_model.config.hidden_dropout_prob > 0  # dropout would make each encoding differ
    calls = []
    encoder.text_model.register_forward_hook(lambda *_: calls.append(encoder.training))
    batch = batch_of(item_tokenizer())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    per_step = []
    for _ in range(3):
        model.train()(**batch, labels=torch.tensor([0, 1])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        per_step.append(len(calls))
    if method == "fine_all":
        assert per_step[2] - per_step[1] == per_step[1] - per_step[0] > 0 and all(calls)
        return
    # Frozen: the catalogue (input items) and the targets once each, in eval mode, then nothing.
    assert per_step == [2, 2, 2] and not any(calls)
    kept = encoder.item_matrix()
    with torch.no_grad():
        encoder.eval()
        fresh = encoder.encode(torch.arange(encoder.num_items))
    torch.testing.assert_close(kept, fresh, rtol=0, atol=0)
    assert not kept.requires_grad


@pytest.mark.parametrize("fused", [True, False])
def test_the_kept_item_matrix_follows_every_optimizer_step_fused_ones_too(text_encoder_folder, fused):
    # Fused AdamW (the Trainer's default) updates weights without bumping their version counters: an evaluation
    # after a training step must still see the new weights, not the item matrix kept by the one before.
    model = text_model(text_encoder_folder, "text_id")
    encoder = model.sasrec.item_text
    batch = batch_of(item_tokenizer())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=fused, foreach=False)
    for _ in range(2):
        with torch.no_grad():
            kept = encoder.item_matrix(), model.eval()(**batch).logits
        model.train()(**batch, labels=next_item_labels(batch)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.eval()
        with torch.no_grad():
            fresh = encoder.encode(torch.arange(encoder.num_items))
            torch.testing.assert_close(encoder.item_matrix(), fresh, rtol=0, atol=0)
            assert not torch.equal(fresh, kept[0])
            assert not torch.equal(model(**batch).logits, kept[1])


@pytest.mark.parametrize(("representation", "head"), [("text", "next_item"), ("text_id", "ranking")])
def test_a_text_item_model_exports_its_item_matrix_and_none_of_its_text_model(
    text_encoder_folder, tmp_path, representation, head
):
    model = text_model(text_encoder_folder, representation, max_position_embeddings=16)
    tokenizer = item_tokenizer()
    if head == "ranking":
        model.save_pretrained(tmp_path / "backbone")
        model, _ = prepare_for_transfer(
            SASRecModel.from_pretrained(tmp_path / "backbone"),
            method="peterrec",
            patch_target="both",  # LoRA (PEFT) in the text model too
            task="coldrec",
            head="ranking",
            num_target_items=len(TARGET_TEXTS),
            target_names=list(TARGET_TEXTS),
            target_texts=list(TARGET_TEXTS.values()),
        )
    model.eval()
    program = export_program(model, tokenizer)
    # Equal to eager at batch sizes and lengths other than the traced (2, 8), up to the position embeddings.
    assert max_difference(model, tokenizer, program.module(), ((1, 6), (3, 16))) <= 1e-5
    assert not [name for name in program.graph_signature.parameters if ".item_text." in name]
    assert (head == "ranking") == any(".lora_" in name for name, _ in model.named_parameters())
    assert model.sasrec.item_text.text_model.training is False  # the text model is back in place afterwards
    with pytest.raises(AssertionError, match="Guard failed"):  # longer than the position embeddings
        program.module()(*example_inputs(model, tokenizer, 2, 17))


def test_texts_are_encoded_sorted_by_length_in_groups_cut_to_their_longest(text_encoder_folder, monkeypatch):
    encoder = text_model(text_encoder_folder).sasrec.item_text.eval()
    texts = list(ITEM_TEXTS.values())
    input_ids, attention_mask = encoder.tokenize(texts)
    with torch.no_grad():
        alone = torch.cat(
            [encoder.encode_tokens(input_ids[[row]], attention_mask[[row]]) for row in range(6)]
        )
    widths = []
    hook = encoder.text_model.register_forward_hook(
        lambda _, args, kwargs, out: widths.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    monkeypatch.setattr("modeling_peterrec.item_text.TEXT_GROUP_SIZE", 2)
    with torch.no_grad():
        grouped = encoder.encode_tokens(input_ids, attention_mask)
    hook.remove()
    torch.testing.assert_close(grouped, alone)  # in the input order, each text as if encoded alone
    lengths = sorted(attention_mask.sum(1).tolist())
    assert len(set(lengths)) >= 3 and widths == [(2, lengths[1]), (2, lengths[3]), (2, lengths[5])]
