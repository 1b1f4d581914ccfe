"""Head terms (`registry.HEAD_TERMS`): the wide term over the item bag by hand, a wide & deep head that starts as its
deep head, exactly the declared parameters trained, the wide term in the patch file, per-row serving, and the
wide-only ablation that reads no backbone."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from modeling_peterrec import MultiTaskPeterRec, PeterRecConfig, load_patch, prepare_for_transfer, save_patch
from modeling_peterrec.modeling_peterrec import ItemBagTerm
from modeling_peterrec.patch_config import PATCH_CONFIG_NAME, PATCH_WEIGHTS_NAME
from tests.test_patching import VOCAB, batch, classification, declared_sets, pretrained_backbone, train_steps
from tests.test_readouts import randomize_trainable

WIDE = {"wide.weight", "wide.bias"}


def test_item_bag_term_by_hand():
    term = ItemBagTerm(PeterRecConfig(vocab_size=VOCAB, hidden_size=4, dilations=[1, 2]), num_outputs=2)
    with torch.no_grad():
        term.weight.copy_(torch.arange(2 * VOCAB, dtype=torch.float).view(VOCAB, 2))
        term.bias.copy_(torch.tensor([0.5, -0.5]))
    ids = torch.tensor([[0, 0, 5, 7, 3], [1, 2, 9, 9, 3]])  # pads, [UNK], [MASK] and [TCL] never count
    expected = torch.stack(
        [
            (term.weight[5] + term.weight[7]) / math.sqrt(2),
            2 * term.weight[9] / math.sqrt(2),
        ]
    ) + torch.tensor([0.5, -0.5])
    torch.testing.assert_close(term(ids), expected)
    torch.testing.assert_close(term(torch.tensor([[0, 0, 3]])), term.bias.unsqueeze(0).detach())


@pytest.mark.parametrize("head", ["classification", "ranking"])
def test_wide_and_deep_starts_as_the_deep_head(head):
    kwargs = dict(label_names=["F", "M", "X"]) if head == "classification" else dict(num_target_items=7)
    inputs = batch(3)["input_ids"]
    logits = {}
    for terms in ("deep", "wide_deep"):
        model, _ = prepare_for_transfer(
            pretrained_backbone(), "peterrec", "t", head, head_terms=terms, **kwargs
        )
        model.eval()
        with torch.no_grad():
            logits[terms] = model.task_logits(inputs)
    assert torch.equal(logits["deep"], logits["wide_deep"])


@pytest.mark.parametrize(
    ("terms", "method"), [("wide_deep", "peterrec"), ("wide_deep", "fine_cls"), ("wide", "fine_cls")]
)
def test_exactly_the_declared_parameters_train_and_the_backbone_stays_bit_identical(terms, method):
    backbone = pretrained_backbone()
    pretrained = {name: t.clone() for name, t in backbone.state_dict().items()}
    model, report = classification(backbone, method, head_terms=terms)
    declared = declared_sets(model)
    names = dict(model.named_parameters())
    assert WIDE <= declared
    assert ("classifier.weight" in declared) == (terms == "wide_deep")
    assert any(".patches." in name for name in declared) == (method == "peterrec")
    assert report.trainable_parameters == sum(names[name].numel() for name in declared)
    assert names["wide.weight"].shape == (VOCAB, 3)
    before = {name: p.detach().clone() for name, p in names.items()}
    train_steps(model)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == declared
    state = backbone.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in pretrained.items())


def test_wide_only_reads_no_backbone_and_refuses_methods_that_prepare_one():
    backbone = pretrained_backbone()
    model, _ = classification(backbone, "fine_cls", head_terms="wide")
    assert model.readout is None and model.classifier is None
    randomize_trainable(model)
    ids = batch(1)["input_ids"]
    with torch.no_grad():
        before = model(input_ids=ids).logits
        for parameter in backbone.parameters():
            parameter.normal_()
        assert torch.equal(model(input_ids=ids).logits, before)
    for method in ("peterrec", "fine_all", "peter_zero"):
        with pytest.raises(ValueError, match="reads no backbone"):
            classification(pretrained_backbone(), method, head_terms="wide")
    with pytest.raises(ValueError, match="head terms"):
        classification(pretrained_backbone(), "peterrec", head_terms="wide_and_deep")


def test_ranking_candidates_are_the_full_scores_gathered():
    model, _ = prepare_for_transfer(
        pretrained_backbone(), "peterrec", "coldrec", "ranking", num_target_items=7, head_terms="wide_deep"
    )
    randomize_trainable(model)
    model.eval()
    ids = batch(2)["input_ids"]
    candidates = torch.tensor([[0, 3, 6], [5, 5, 1], [2, 4, 0], [6, 1, 3], [0, 0, 0], [1, 2, 3]])
    with torch.no_grad():
        full = model.score(ids)
        torch.testing.assert_close(model.score(ids, candidates=candidates), full.gather(1, candidates))
        torch.testing.assert_close(
            model(input_ids=ids, candidate_ids=candidates).logits, full.gather(1, candidates)
        )
        assert not torch.equal(full, model.user_vectors(ids) @ model.target_embeddings.weight.T)


def test_wide_term_is_saved_in_the_patch_and_served_per_row(tmp_path):
    tasks = {
        "gender": dict(
            method="peterrec", head="classification", label_names=["F", "M", "X"], head_terms="wide_deep"
        ),
        "age": dict(method="fine_cls", head="classification", label_names=["a", "b"], head_terms="wide"),
        "coldrec": dict(
            method="peterrec", head="ranking", num_target_items=7, head_terms="wide_deep", readout="mean"
        ),
        "plain": dict(
            method="peterrec", head="classification", label_names=["a", "b"], insertion="serial_one"
        ),
    }
    alone = {}
    for task, kwargs in tasks.items():
        model, _ = prepare_for_transfer(pretrained_backbone(), task=task, **kwargs)
        randomize_trainable(model)
        save_patch(model, tmp_path / task)
        config = json.loads((tmp_path / task / PATCH_CONFIG_NAME).read_text())
        assert config["head_terms"] == kwargs.get("head_terms", "deep")
        assert (WIDE <= set(load_file(tmp_path / task / PATCH_WEIGHTS_NAME))) == ("head_terms" in kwargs)
        alone[task] = load_patch(tmp_path / task, pretrained_backbone())
        model.eval()
        with torch.no_grad():
            assert torch.equal(
                model(input_ids=batch(7)["input_ids"]).logits,
                alone[task](input_ids=batch(7)["input_ids"]).logits,
            )
    assert "Head terms | wide_deep" in (tmp_path / "gender" / "README.md").read_text()
    server = MultiTaskPeterRec(pretrained_backbone())
    for task in tasks:
        server.load_patch(tmp_path / task)
    ids = batch(5, size=8)["input_ids"]
    per_row = ["age", "gender", "coldrec", "plain", "gender", "age", "coldrec", "plain"]
    mixed = server(ids, task=per_row)
    with torch.no_grad():
        for row, task in enumerate(per_row):
            own = alone[task](input_ids=ids[row : row + 1]).logits[0]
            torch.testing.assert_close(mixed[row], own, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", ["classification", "ranking"])
def test_head_terms_on_the_cmnrec_user_model(head, tmp_path):
    from tests.test_cmnrec_transfer import batch as cmnrec_batch
    from tests.test_cmnrec_transfer import pretrained as cmnrec_backbone

    kwargs = dict(label_names=["a", "b", "c"]) if head == "classification" else dict(num_target_items=7)
    ids = cmnrec_batch(2)["input_ids"]
    logits = {}
    for terms in ("deep", "wide_deep"):
        model, _ = prepare_for_transfer(cmnrec_backbone(), "peterrec", "t", head, head_terms=terms, **kwargs)
        with torch.no_grad():
            logits[terms] = model.task_logits(ids)
    assert torch.equal(logits["deep"], logits["wide_deep"])
    assert WIDE <= declared_sets(model)
    randomize_trainable(model)
    save_patch(model, tmp_path / "patch")
    loaded = load_patch(tmp_path / "patch", cmnrec_backbone())
    with torch.no_grad():
        assert torch.equal(model.task_logits(ids), loaded.task_logits(ids))
        assert not torch.equal(model.task_logits(ids), logits["deep"])


def test_the_wide_term_trains_at_its_own_learning_rate(tmp_path):
    """`wide_learning_rate`: the wide term's parameters form a group of their own at that rate, every other trained
    parameter stays at `learning_rate`, and Adam's first step moves each part by its own rate."""
    from modeling_peterrec.training import PeterRecTrainingArguments
    from modeling_peterrec.training.trainers import PeterRecTrainer

    model, _ = classification(pretrained_backbone(), head_terms="wide_deep")
    args = PeterRecTrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=1e-3,
        wide_learning_rate=0.1,
        eval_strategy="no",
        load_best_model_at_end=False,
        use_cpu=True,
    )
    optimizer = PeterRecTrainer(model=model, args=args).create_optimizer()
    wide = {id(p) for p in model.wide.parameters()}
    by_rate = {}
    for group in optimizer.param_groups:
        by_rate.setdefault(group["lr"], []).extend(id(p) for p in group["params"])
    assert sorted(by_rate[0.1]) == sorted(wide)
    trained = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(by_rate[0.1] + by_rate[1e-3]) == sorted(trained) and len(by_rate) == 2
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    model(**batch(0)).loss.backward()
    optimizer.step()
    moved = {name: (p.detach() - before[name]).abs().max().item() for name, p in model.named_parameters()}
    assert moved["wide.weight"] == pytest.approx(0.1, rel=1e-3)
    assert moved["classifier.weight"] == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(ValueError, match="--wide_learning_rate must be positive"):
        PeterRecTrainingArguments(output_dir=str(tmp_path), wide_learning_rate=0.0)
