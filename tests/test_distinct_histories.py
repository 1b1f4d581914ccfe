"""One backbone pass per distinct history: `distinct_rows` in the heads, `HistoryGroupedSampler` for training
batches and the `history` column of ColdRec's one row per target."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from modeling_peterrec import prepare_for_transfer
from modeling_peterrec.data import HISTORY_COLUMN, one_row_per_target
from modeling_peterrec.modeling_utils import distinct_rows
from modeling_peterrec.training.samplers import HistoryGroupedSampler
from tests.test_patching import batch, pretrained_backbone
from tests.test_readouts import randomize_trainable

NUM_TARGETS = 7


def ranking_model():
    model, _ = prepare_for_transfer(
        pretrained_backbone(),
        "peterrec",
        "coldrec",
        "ranking",
        num_target_items=NUM_TARGETS,
        readout="attention",
    )
    randomize_trainable(model)
    return model


def test_distinct_rows_maps_every_row_to_its_own_history():
    ids = torch.tensor([[0, 5, 6], [7, 8, 9], [0, 5, 6], [0, 5, 6], [4, 4, 4]])
    mask = ids.ne(0).long()
    distinct, distinct_mask, inverse = distinct_rows(ids, mask)
    assert distinct.shape[0] == 3 and distinct_mask.dtype == mask.dtype
    assert torch.equal(distinct[inverse], ids) and torch.equal(distinct_mask[inverse], mask)


def test_distinct_rows_gives_a_batch_without_repeats_back_untouched():
    ids = batch(0)["input_ids"]
    mask = ids.ne(0)
    same_ids, same_mask, inverse = distinct_rows(ids, mask)
    assert same_ids is ids and same_mask is mask and inverse is None


def test_rows_that_differ_only_in_their_mask_stay_apart():
    ids = torch.tensor([[5, 6, 7], [5, 6, 7]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    assert distinct_rows(ids, mask)[2] is None


def test_repeated_histories_run_once_and_train_as_if_each_row_ran_alone():
    model = ranking_model()
    model.train()
    base = batch(2)
    order = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    ids, labels = base["input_ids"][order], torch.tensor([1, 4, 0, 2, 5, 6, 3])
    negatives = torch.tensor([[2, 3], [0, 6], [5, 1], [4, 0], [1, 3], [0, 2], [6, 5]])
    rows_seen = []
    hook = model.base_model.register_forward_hook(
        lambda module, args, output: rows_seen.append(args[0].shape[0])
    )
    loss = model(input_ids=ids, labels=labels, negative_ids=negatives).loss
    hook.remove()
    assert rows_seen == [4]
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    grouped = torch.autograd.grad(loss, trainable)

    alone = torch.stack(
        [
            model(input_ids=ids[i : i + 1], labels=labels[i : i + 1], negative_ids=negatives[i : i + 1]).loss
            for i in range(len(order))
        ]
    ).mean()
    torch.testing.assert_close(loss, alone)
    for got, expected in zip(grouped, torch.autograd.grad(alone, trainable), strict=True):
        torch.testing.assert_close(got, expected)
    with torch.no_grad():
        model.eval()
        scores = model.score(ids)
        torch.testing.assert_close(
            scores, torch.cat([model.score(ids[i : i + 1]) for i in range(len(order))])
        )


def test_one_row_per_target_names_each_rows_history():
    users = Dataset.from_dict({"user_id": ["a", "b", "c"], "targets": [[0, 1, 2], [3], [1, 4]]})
    expanded = one_row_per_target(users)
    assert expanded[HISTORY_COLUMN] == [0, 0, 0, 1, 2, 2]
    assert expanded["user_id"] == ["a", "a", "a", "b", "c", "c"]


def grouped_order(histories, lengths, batch_size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return list(HistoryGroupedSampler(histories, lengths, batch_size, generator=generator))


def test_the_sampler_yields_every_row_once_with_each_history_in_one_run():
    histories = [h for h in range(40) for _ in range(1 + h % 3)]
    lengths = [3 + (h * 7) % 11 for h in histories]
    order = grouped_order(histories, lengths, batch_size=8)
    assert sorted(order) == list(range(len(histories)))
    runs = [histories[order[0]]]
    for row in order[1:]:
        if histories[row] != runs[-1]:
            runs.append(histories[row])
    assert sorted(runs) == list(range(40))
    assert order == grouped_order(histories, lengths, batch_size=8)
    assert order != grouped_order(histories, lengths, batch_size=8, seed=1)


def test_the_sampler_sorts_histories_by_length_within_each_megabatch():
    histories = [h for h in range(400) for _ in range(2)]
    lengths = [1 + (h * 37) % 97 for h in histories]
    sampler = HistoryGroupedSampler(
        histories, lengths, batch_size=4, generator=torch.Generator().manual_seed(3)
    )
    # 2 rows per history: 4 rows per batch are 2 histories; megabatches of min(400 // 8, 50) = 50 batches.
    assert sampler.group_batch_size == 2
    row_lengths = [lengths[row] for row in sampler]
    megabatch_rows = 2 * 50 * 2
    for start in range(0, len(row_lengths), megabatch_rows):
        chunk = row_lengths[start : start + megabatch_rows]
        # The longest history of all is swapped to the front (transformers' rule), so skip each first history.
        assert chunk[2:] == sorted(chunk[2:], reverse=True)
    assert row_lengths[0] == max(lengths)


def test_the_sampler_refuses_lengths_that_do_not_match_the_rows():
    with pytest.raises(ValueError, match="3 history indices for 2 row lengths"):
        HistoryGroupedSampler([0, 0, 1], [4, 4], batch_size=2)


@pytest.mark.parametrize("with_history", [True, False])
def test_the_trainer_groups_training_rows_by_history_when_they_name_one(with_history, tmp_path):
    from modeling_peterrec.training import PeterRecTrainer
    from modeling_peterrec.training.arguments import PeterRecTrainingArguments

    columns = {"input_ids": [[4, 5], [4, 5], [6]], "target": [0, 1, 2]}
    if with_history:
        columns[HISTORY_COLUMN] = [0, 0, 1]
    arguments = PeterRecTrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=2,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
    )
    trainer = PeterRecTrainer(model=ranking_model(), args=arguments, train_dataset=Dataset.from_dict(columns))
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, HistoryGroupedSampler) == with_history
    assert sorted(sampler) == [0, 1, 2]
