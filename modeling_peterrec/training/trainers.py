"""The `Trainer`s of the pipeline and the glue to the metrics: evaluation batches from their own collator, the
held-out-item evaluation of pretraining (Section 4.1), and the full ranking of the cold-start test split, with the
rows whose target item is cold reported apart."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.data import SequentialSampler
from transformers import (
    EarlyStoppingCallback,
    EvalPrediction,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from ..data import HISTORY_COLUMN
from ..metrics import (
    cold_item_metrics,
    exclusion_mask,
    full_rank_of_positive,
    full_ranking_metrics,
    ranking_metrics,
    sampled_ranking_metrics,
)
from .arguments import AUTO_METRIC
from .samplers import HistoryGroupedSampler

RANKING_CUTOFFS = (5, 10)
"""The k of HR@k, MRR@k and NDCG@k (Section 4.1)."""


class ProgressBars(ProgressCallback):
    """Trainer's progress bars without the raw log dictionaries it prints under them: the same numbers go to
    `metrics.json` and the learning curve, and a person reads the bars and the final table."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


class PeterRecTrainer(Trainer):
    """A `Trainer` whose evaluation batches may come from their own collator (`eval_data_collator`): masked
    pretraining is evaluated on unmasked histories, and the ranking head on fixed sampled candidates."""

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(ProgressBars)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """Trainer's optimizer; with `wide_learning_rate`, the wide term of a wide & deep head (`ItemBagTerm`) in a
        parameter group of its own at that rate. Wide & deep (Cheng et al., DLRS 2016, Section 3.2) trains its
        wide part with an optimizer of its own: a linear model of thousands of sparse item weights wants a far
        larger step than the deep part's patches."""
        optimizer = super().create_optimizer(model)
        rate = getattr(self.args, "wide_learning_rate", None)
        wide = getattr(self.model if model is None else model, "wide", None)
        if rate is None or wide is None:
            return optimizer
        moved = {id(parameter) for parameter in wide.parameters() if parameter.requires_grad}
        for group in optimizer.param_groups:
            group["params"] = [parameter for parameter in group["params"] if id(parameter) not in moved]
        optimizer.add_param_group(
            {"params": [p for p in wide.parameters() if id(p) in moved], "lr": rate, "weight_decay": 0.0}
        )
        return optimizer

    def _with_eval_collator(self, make_loader, *args):
        if self.eval_data_collator is None:
            return make_loader(*args)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return make_loader(*args)
        finally:
            self.data_collator = train_collator

    def _get_train_sampler(self, train_dataset=None):
        """`group_by_length` over whole histories when the rows name theirs (`HISTORY_COLUMN`: ColdRec's one row
        per target), so that a user's rows share a batch and the backbone reads their history once."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        columns = getattr(dataset, "column_names", None) or ()
        if self.args.train_sampling_strategy != "group_by_length" or HISTORY_COLUMN not in columns:
            return super()._get_train_sampler(train_dataset)
        return HistoryGroupedSampler(
            dataset[HISTORY_COLUMN],
            [len(ids) for ids in dataset["input_ids"]],
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
        )

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation keeps the dataset's row order (only training batches are grouped by length): full-ranking
        metrics pair each prediction with its row's targets by position."""
        if eval_dataset is None or self.args.world_size > 1:
            return None
        return SequentialSampler(eval_dataset)

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)


def held_out_item_ranks(logits: torch.Tensor, targets: torch.Tensor, first_item_id: int) -> torch.Tensor:
    """0-based rank of each held-out item over the whole item pool (special tokens never compete; a target that
    is not in the vocabulary, i.e. `[UNK]`, ranks last)."""
    scores = logits.float().clone()
    scores[:, :first_item_id] = float("-inf")
    return full_rank_of_positive(scores, targets)


class PretrainingTrainer(PeterRecTrainer):
    """Evaluates a pretraining model as in Section 4.1: the last item of each evaluation history is held out and
    ranked over the whole item pool; the evaluation loss is its cross-entropy. The causal model predicts it from
    the position before it; the masked model from a `[MASK]` put in its place."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        targets = input_ids[:, -1]
        config = self.accelerator.unwrap_model(model).config
        with torch.no_grad():
            if config.is_causal:
                logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=2).logits[
                    :, 0
                ]
            else:
                masked = input_ids.clone()
                masked[:, -1] = config.mask_token_id
                logits = model(input_ids=masked, attention_mask=attention_mask, logits_to_keep=1).logits[:, 0]
            loss = F.cross_entropy(logits.float(), targets)
            if prediction_loss_only:
                return loss, None, None
            ranks = held_out_item_ranks(logits, targets, self.processing_class.first_item_id)
        return loss, ranks, targets


def compute_pretraining_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`ranking_metrics` of the held-out-item ranks that `PretrainingTrainer` returns as predictions."""
    return ranking_metrics(prediction.predictions, RANKING_CUTOFFS)


def _ranking_scores(trainer: PeterRecTrainer, dataset, with_candidates: bool) -> torch.Tensor:
    """The ranking head's scores of each row of `dataset`: of its sampled candidates, or of every target item."""
    collator = replace(trainer.eval_data_collator, with_candidates=with_candidates)
    trainer.eval_data_collator, kept = collator, trainer.eval_data_collator
    try:
        scores = trainer.predict(dataset, metric_key_prefix="scores").predictions
    finally:
        trainer.eval_data_collator = kept
    return torch.as_tensor(scores[0] if isinstance(scores, tuple) else scores)


def full_ranking_test_metrics(trainer: PeterRecTrainer, test) -> dict[str, float]:
    """HR@k, MRR@k and NDCG@k of each true target item ranked over all target items, the user's other targets
    excluded (they are not wrong answers); also on the rows whose target is cold (`cold_item_metrics`)."""
    scores = _ranking_scores(trainer, test, with_candidates=False)
    mask = exclusion_mask(test["positives"], scores.shape[1])
    targets = torch.as_tensor(test["target"])

    def metrics_of(rows: torch.Tensor | slice) -> dict[str, float]:
        return full_ranking_metrics(scores[rows], targets[rows], mask[rows], RANKING_CUTOFFS)

    return {**metrics_of(slice(None)), **cold_item_metrics(metrics_of, test["cold_target"])}


def cold_target_test_metrics(trainer: PeterRecTrainer, test) -> dict[str, float]:
    """The sampled-candidate measures (the paper's protocol) of the rows of `test` whose target item is cold, as
    `cold_<measure>`, with their count `cold_rows`."""

    def metrics_of(rows: torch.Tensor) -> dict[str, float]:
        scores = _ranking_scores(trainer, test.select(rows.tolist()), with_candidates=True)
        return sampled_ranking_metrics(scores, RANKING_CUTOFFS)

    return cold_item_metrics(metrics_of, test["cold_target"])


def pipeline_trainer(
    trainer_class: type[PeterRecTrainer],
    training_args: TrainingArguments,
    metric: str,
    callbacks: list[TrainerCallback] | None = None,
    **trainer_kwargs,
) -> PeterRecTrainer:
    """The Trainer of a pipeline, with the pipelines' policies in one place:

    - `metric_for_best_model="auto"` becomes the task kind's own selection `metric` (all of them: higher is better);
    - early stopping on it when `training_args.early_stopping_patience` asks for it (trained to convergence);
    - no Trainer pushes: `--push_to_hub` would upload a full model at every save, with no code files, card or
      patch, which nothing can load; the pipelines push their finished folder instead (`push_finished_folder`).
    """
    changes = {"push_to_hub": False}
    if training_args.metric_for_best_model == AUTO_METRIC:
        changes.update(metric_for_best_model=metric, greater_is_better=True)
    callbacks = list(callbacks or [])
    patience = getattr(training_args, "early_stopping_patience", 0)
    if patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    return trainer_class(args=replace(training_args, **changes), callbacks=callbacks, **trainer_kwargs)


__all__ = [
    "RANKING_CUTOFFS",
    "PeterRecTrainer",
    "cold_target_test_metrics",
    "PretrainingTrainer",
    "compute_pretraining_metrics",
    "full_ranking_test_metrics",
    "held_out_item_ranks",
    "pipeline_trainer",
]
