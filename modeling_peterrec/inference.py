"""Recommendations and predictions in one call: users' histories (item names) in, item names or class labels out.

`recommend` ranks items for each user with any item-scoring head: the pretraining heads score every item of the
vocabulary as the next one (Eq. 1; the masked head reads a `[MASK]` appended after the history, Eq. 2), and the
cold-start ranking head (ColdRec, Section 3.3) scores its target items. `predict` gives the class probabilities of a
user-profile classification head (GenEst, AgeEst, LifeEst). Both take a task model or a `MultiTaskPeterRec` server
with `task=` (one task for all users, or one per user: different tasks in one batch).

Each kind of head is one record of `HEADS`: how its input is laid out around the items (`[TCL]` as in Figure 2), how it
scores a batch, and what its outputs are called. The exported serving module (`export.py`) runs the same
`HeadServing.scores`, so exported and eager outputs are the same function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from .data.collators import left_pad
from .model_types import model_class
from .registry import MODEL_TYPES, TASK_KINDS, ModelType, require_implemented, tcl_position
from .serving import MultiTaskPeterRec
from .tokenization_peterrec import ItemTokenizer

_NO_LIMIT = 10**6
"""A `model_max_length` at or above this is transformers' "no limit" placeholder, not a length."""


@dataclass
class Recommendations:
    """One user's top-k items, best first, with the head's scores (logits: higher is better)."""

    items: list[str]
    scores: list[float]


@dataclass
class Prediction:
    """One user's predicted class and the probability of every class (in the head's label order)."""

    label: str
    probabilities: dict[str, float]

    @property
    def score(self) -> float:
        """Probability of the predicted class."""
        return self.probabilities[self.label]


@dataclass(frozen=True)
class OutputNames:
    """What a head's output columns are: item names (`first` leading columns are special tokens, never
    recommended) or class names."""

    names: tuple[str, ...]
    first: int = 0
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {name: i for i, name in enumerate(self.names)})

    def columns(self, names: Sequence[str], what: str) -> list[int]:
        """The output columns of `names` (`what` they are, for the error when some are not outputs)."""
        unknown = [name for name in names if name not in self.index]
        if unknown:
            raise ValueError(f"{what} {unknown[:5]} are not items this model scores.")
        return [self.index[name] for name in names]


@dataclass(frozen=True)
class HeadServing:
    """How one head is served.

    Attributes:
        recommends: the head scores items (`recommend`); otherwise it predicts classes (`predict`).
        layout: the token ids placed before and after a user's items (`[TCL]` of Figure 2, `[MASK]` of Eq. 2).
        scores: (batch, outputs) scores of left-padded `input_ids` and `attention_mask`.
        output_names: the names of the output columns.
    """

    recommends: bool
    layout: Callable[[PreTrainedModel, ItemTokenizer], tuple[tuple[int, ...], tuple[int, ...]]]
    scores: Callable[[PreTrainedModel, torch.Tensor, torch.Tensor], torch.Tensor]
    output_names: Callable[[PreTrainedModel, ItemTokenizer], OutputNames]


def _no_specials(model, tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (), ()


def _mask_after(model, tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (), (tokenizer.mask_token_id,)


def _tcl_layout(model, tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    tcl = (tokenizer.tcl_token_id,)
    return (tcl if tcl_position(model.config.is_causal) == "both" else ()), tcl


def _last_position_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids, attention_mask=attention_mask, logits_to_keep=1, return_dict=True).logits[:, -1]


def _ranking_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return model.score(input_ids, attention_mask)


def _class_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids, attention_mask=attention_mask, return_dict=True).logits


def _vocabulary_names(model, tokenizer: ItemTokenizer) -> OutputNames:
    return OutputNames(
        tuple(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))), tokenizer.first_item_id
    )


def _target_names(model, tokenizer) -> OutputNames:
    spec = model.patch_config
    names = spec.target_names if spec is not None and spec.target_names else None
    return OutputNames(tuple(names or map(str, range(model.config.num_target_items))))


def _label_names(model, tokenizer) -> OutputNames:
    spec = model.patch_config
    if spec is not None and spec.label_names:
        return OutputNames(tuple(spec.label_names))
    return OutputNames(tuple(model.config.id2label[i] for i in range(model.config.num_labels)))


HEADS: dict[str, HeadServing] = {
    "next_item": HeadServing(True, _no_specials, _last_position_logits, _vocabulary_names),
    "masked_item": HeadServing(True, _mask_after, _last_position_logits, _vocabulary_names),
    "ranking": HeadServing(True, _tcl_layout, _ranking_scores, _target_names),
    "classification": HeadServing(False, _tcl_layout, _class_logits, _label_names),
}
"""How each kind of head is served (next item, masked item, ColdRec ranking, user-profile classification); a model
type's record says which of its classes is which (`served_heads`)."""
require_implemented(
    {name: kind for name, kind in TASK_KINDS.items() if kind.head is not None}, HEADS, "inference HEADS"
)


def served_heads(record: ModelType) -> dict[str, str]:
    """The class name of each kind of head (`HEADS`) that a model type has: its pretraining models and its transfer
    task heads."""
    names = {
        "next_item": record.pretraining_class,
        "masked_item": record.masked_pretraining_class,
        **record.task_heads,
    }
    return {kind: name for kind, name in names.items() if name is not None}


def head_serving(model: nn.Module) -> HeadServing:
    """The `HEADS` record of a model of any model type of the family."""
    record = MODEL_TYPES.get(getattr(getattr(model, "config", None), "model_type", None))
    if record is not None:
        for kind, name in served_heads(record).items():
            if isinstance(model, model_class(record, name)):
                return HEADS[kind]
    heads = sorted(name for record in MODEL_TYPES.values() for name in served_heads(record).values())
    raise TypeError(
        f"{type(model).__name__} has no recommend/predict head; pass a pretraining model, a task model "
        f"({', '.join(heads)}) or a MultiTaskPeterRec with task=."
    )


def default_max_length(tokenizer: ItemTokenizer) -> int | None:
    """The tokenizer's saved `model_max_length`, or None when it has none (histories are then not truncated)."""
    length = tokenizer.model_max_length
    return length if length < _NO_LIMIT else None


def task_max_length(model: nn.Module, tokenizer: ItemTokenizer) -> int | None:
    """The longest input a task model reads unless told: the length its patch was fine-tuned with
    (`PatchConfig.max_length`), else the tokenizer's `default_max_length` (patch folders that predate the record)."""
    recorded = getattr(getattr(model, "patch_config", None), "max_length", None)
    return recorded if recorded is not None else default_max_length(tokenizer)


class HistoryEncoder:
    """Left-padded `input_ids` and `attention_mask` of item-name histories, laid out for one head: the most recent
    items that fit `max_length` with the head's special tokens (one length for the batch, or one per row: tasks
    fine-tuned on different lengths served in one batch). Unknown items become `[UNK]`."""

    def __init__(
        self,
        tokenizer: ItemTokenizer,
        layout: tuple[tuple[int, ...], tuple[int, ...]],
        max_length: int | None,
    ):
        self.vocab = tokenizer.get_vocab()
        self.unk_token_id = tokenizer.unk_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.prefix, self.suffix = map(list, layout)
        self.max_length = max_length
        self.budget(max_length)

    def budget(self, max_length: int | None) -> int | None:
        """How many items fit `max_length` beside the special tokens (None: every item)."""
        if max_length is None:
            return None
        budget = max_length - len(self.prefix) - len(self.suffix)
        if budget < 1:
            raise ValueError(f"max_length={max_length} leaves no room for items next to the special tokens.")
        return budget

    def __call__(
        self, histories: Sequence[Sequence[str]], max_lengths: Sequence[int | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch; `max_lengths` gives each row its own length instead of the encoder's."""
        if max_lengths is None:
            max_lengths = [self.max_length] * len(histories)
        budgets = {length: self.budget(length) for length in set(max_lengths)}
        rows = []
        for position, (history, length) in enumerate(zip(histories, max_lengths, strict=True)):
            if isinstance(history, str) or len(history) == 0:
                raise ValueError(
                    f"History {position} must be a non-empty list of item names, got {history!r}."
                )
            budget = budgets[length]
            items = history[-budget:] if budget else history
            rows.append(
                self.prefix + [self.vocab.get(str(item), self.unk_token_id) for item in items] + self.suffix
            )
        return left_pad(rows, self.pad_token_id)


@dataclass
class _Task:
    """One task of a call: its model (a task model, or a server's task), record, and output names."""

    name: str | None
    model: PreTrainedModel
    head: HeadServing
    outputs: OutputNames


class Runner:
    """Scores batches of histories with a task model or a `MultiTaskPeterRec` server: the shared loop of
    `recommend`, `predict` and `run_predict`.

    `task` names the server's task (one for all users) or one task per user; it must be None for a task model.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: ItemTokenizer,
        task: str | Sequence[str] | None = None,
        max_length: int | None = None,
        recommends: bool = True,
    ):
        self.model = model
        self.is_server = isinstance(model, MultiTaskPeterRec)
        if self.is_server:
            task = task or model.active_task
            if task is None:
                raise ValueError("No task given and none active on the server; pass task=...")
            names = [task] if isinstance(task, str) else list(dict.fromkeys(task))
            model._check(names)
            models = {name: model.tasks[name] for name in names}
        elif task is not None:
            raise ValueError(
                "task= is for a MultiTaskPeterRec server; a task model serves its own task only."
            )
        else:
            models = {None: model}
        self.task = task
        self.tasks = {
            name: _Task(
                name, member, head_serving(member), head_serving(member).output_names(member, tokenizer)
            )
            for name, member in models.items()
        }
        wrong = [name for name, spec in self.tasks.items() if spec.head.recommends != recommends]
        if wrong:
            needed = "recommend items" if recommends else "predict classes"
            other = "predict" if recommends else "recommend"
            raise TypeError(f"Task(s) {wrong} do not {needed}; use {other}() for them.")
        layouts = {spec.head.layout(spec.model, tokenizer) for spec in self.tasks.values()}
        if len(layouts) > 1:
            raise ValueError(f"Tasks of one call need one input layout, got {layouts}.")
        self.max_lengths = {
            name: max_length if max_length is not None else task_max_length(spec.model, tokenizer)
            for name, spec in self.tasks.items()
        }
        self.encode = HistoryEncoder(tokenizer, layouts.pop(), max_length)
        self.device = next(model.parameters()).device

    def row_tasks(self, start: int, count: int) -> list[str | None]:
        if self.task is None or isinstance(self.task, str):
            return [self.task] * count
        return list(self.task[start : start + count])

    @torch.no_grad()
    def score(
        self, histories: Sequence[Sequence[str]], start: int = 0
    ) -> Iterator[tuple[_Task, list[int], torch.Tensor]]:
        """For each task of the batch: its spec, its rows (positions in `histories`) and their scores."""
        per_row = self.row_tasks(start, len(histories))
        encoded = self.encode(histories, [self.max_lengths[task] for task in per_row])
        input_ids, attention_mask = (tensor.to(self.device) for tensor in encoded)
        if not self.is_server:
            spec = self.tasks[None]
            yield spec, list(range(len(histories))), spec.head.scores(spec.model, input_ids, attention_mask)
            return
        single = self.task if isinstance(self.task, str) else per_row
        outputs = self.model(input_ids, attention_mask=attention_mask, task=single)
        for name in dict.fromkeys(per_row):
            rows = [row for row, task in enumerate(per_row) if task == name]
            scores = (
                outputs[rows]
                if isinstance(outputs, torch.Tensor)
                else torch.stack([outputs[r] for r in rows])
            )
            yield self.tasks[name], rows, scores


def _as_per_user(values, count: int, what: str) -> list[Sequence[str] | None]:
    """One list of names shared by all users, or one list per user."""
    if values is None:
        return [None] * count
    if len(values) and not isinstance(values[0], str) and isinstance(values[0], Sequence):
        if len(values) != count:
            raise ValueError(
                f"{what} has {len(values)} lists for {count} users; give one list per user or one list."
            )
        return list(values)
    return [values] * count


def top_k(
    scores: torch.Tensor,
    outputs: OutputNames,
    histories: Sequence[Sequence[str]],
    k: int,
    exclude_seen: bool,
    candidates: Sequence[Sequence[str] | None],
    exclude: Sequence[Sequence[str] | None],
) -> list[Recommendations]:
    """The `k` best allowed items of each row of `scores`; equal scores are ordered by output id (lower first).

    Allowed: item columns (not special tokens), among the row's `candidates` when given, and neither in the row's
    history (`exclude_seen`) nor in its `exclude` list.
    """
    scores = scores[:, : len(outputs.names)].float()
    allowed = torch.ones(scores.shape, dtype=torch.bool)
    allowed[:, : outputs.first] = False
    for row, history in enumerate(histories):
        if candidates[row] is not None:
            chosen = torch.zeros(scores.shape[1], dtype=torch.bool)
            chosen[outputs.columns(candidates[row], f"Candidates of user {row}")] = True
            allowed[row] &= chosen
        blocked = list(history) if exclude_seen else []
        blocked += list(exclude[row] or [])
        ids = [outputs.index[name] for name in map(str, blocked) if name in outputs.index]
        allowed[row, ids] = False
    allowed = allowed.to(scores.device)
    # A stable descending sort keeps equal scores in id order, which `torch.topk` does not promise.
    ranked, order = torch.sort(
        scores.masked_fill(~allowed, float("-inf")), dim=1, descending=True, stable=True
    )
    keep = min(k, scores.shape[1])
    ranked, order = ranked[:, :keep].cpu(), order[:, :keep].cpu()
    valid = allowed.gather(1, order.to(allowed.device)).cpu()
    return [
        Recommendations(
            items=[outputs.names[i] for i in ids[ok].tolist()],
            scores=values[ok].tolist(),
        )
        for ids, values, ok in zip(order, ranked, valid, strict=True)
    ]


def class_probabilities(scores: torch.Tensor, outputs: OutputNames) -> list[Prediction]:
    """Softmax of class logits; the label is the most probable class (the lower id on a tie)."""
    probabilities = scores.float().softmax(-1).cpu()
    labels = probabilities.argmax(-1).tolist()
    return [
        Prediction(outputs.names[label], dict(zip(outputs.names, row.tolist(), strict=True)))
        for label, row in zip(labels, probabilities, strict=True)
    ]


def recommend(
    model: nn.Module,
    tokenizer: ItemTokenizer,
    histories: Sequence[Sequence[str]],
    k: int = 10,
    exclude_seen: bool = True,
    candidates: Sequence[str] | Sequence[Sequence[str]] | None = None,
    exclude: Sequence[str] | Sequence[Sequence[str]] | None = None,
    batch_size: int = 256,
    task: str | Sequence[str] | None = None,
    max_length: int | None = None,
    allow_unknown_items: bool = False,
) -> list[Recommendations]:
    """Top-`k` items for each user, best first, with their scores.

    Args:
        model: a pretraining model of any model type (next-item prediction, e.g. `PeterRecForNextItemPrediction`,
            `SASRecForNextItemPrediction`, scores the next item over the vocabulary, items added by text included;
            masked-item prediction the item at a `[MASK]` after the history), a ColdRec ranking model (its patch's
            `target_names`), or a `MultiTaskPeterRec` server with `task=`.
        tokenizer: the backbone's `ItemTokenizer` (its vocabulary maps item names to ids).
        histories: per user, item names oldest first. Unknown items are read as `[UNK]` and reported
            (`ItemTokenizer.check_unknown_items`; `allow_unknown_items` turns its error into a warning).
        k: items per user (fewer when fewer are allowed).
        exclude_seen: leave out the items of the user's history.
        candidates: item names to choose from: one list for all users or one per user (default: every item).
        exclude: item names never to recommend: one list for all users or one per user.
        batch_size: users per forward pass.
        task: the server's task for all users, or one task per user.
        max_length: longest input with special tokens; longer histories keep their most recent items (default:
            each task's fine-tuning length, `task_max_length`; a pretraining model, the tokenizer's
            `model_max_length`, if saved).

    Special tokens are never recommended. Equal scores are ordered by item id, lower first, so results are
    deterministic.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    tokenizer.check_unknown_items(histories, allow_unknown_items=allow_unknown_items)
    runner = Runner(model, tokenizer, task, max_length, recommends=True)
    candidates = _as_per_user(candidates, len(histories), "candidates")
    exclude = _as_per_user(exclude, len(histories), "exclude")
    results: list[Recommendations | None] = [None] * len(histories)
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        for spec, rows, scores in runner.score(batch, start):
            picked = top_k(
                scores,
                spec.outputs,
                [batch[row] for row in rows],
                k,
                exclude_seen,
                [candidates[start + row] for row in rows],
                [exclude[start + row] for row in rows],
            )
            for row, recommendations in zip(rows, picked, strict=True):
                results[start + row] = recommendations
    return results


def score(
    model: nn.Module,
    tokenizer: ItemTokenizer,
    histories: Sequence[Sequence[str]],
    items: Sequence[str] | Sequence[Sequence[str]],
    batch_size: int = 256,
    task: str | Sequence[str] | None = None,
    max_length: int | None = None,
    allow_unknown_items: bool = False,
) -> list[list[float]]:
    """The head's score (logit) of each named item for each user, in the order given: `items` is one list for all
    users or one per user. Any item the head scores may be named, a cold item added by `add_item_texts` included;
    an item it does not score is a `ValueError`. The other arguments are those of `recommend`."""
    tokenizer.check_unknown_items(histories, allow_unknown_items=allow_unknown_items)
    runner = Runner(model, tokenizer, task, max_length, recommends=True)
    items = _as_per_user(items, len(histories), "items")
    results: list[list[float] | None] = [None] * len(histories)
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        for spec, rows, scores in runner.score(batch, start):
            for row, row_scores in zip(rows, scores.float().cpu(), strict=True):
                names = [str(item) for item in items[start + row]]
                columns = spec.outputs.columns(names, f"Items of user {start + row}")
                results[start + row] = row_scores[columns].tolist()
    return results


def predict(
    model: nn.Module,
    tokenizer: ItemTokenizer,
    histories: Sequence[Sequence[str]],
    batch_size: int = 256,
    task: str | Sequence[str] | None = None,
    max_length: int | None = None,
    allow_unknown_items: bool = False,
) -> list[Prediction]:
    """Class probabilities and the predicted label of each user, for a user-profile classification model
    (`PeterRecForSequenceClassification`, label names from its patch or `config.id2label`) or a
    `MultiTaskPeterRec` server's classification task(s) (`task=`, one for all or one per user). The other
    arguments are those of `recommend`."""
    tokenizer.check_unknown_items(histories, allow_unknown_items=allow_unknown_items)
    runner = Runner(model, tokenizer, task, max_length, recommends=False)
    results: list[Prediction | None] = [None] * len(histories)
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        for spec, rows, scores in runner.score(batch, start):
            for row, prediction in zip(rows, class_probabilities(scores, spec.outputs), strict=True):
                results[start + row] = prediction
    return results


__all__ = [
    "HEADS",
    "HeadServing",
    "HistoryEncoder",
    "OutputNames",
    "Prediction",
    "Recommendations",
    "Runner",
    "class_probabilities",
    "default_max_length",
    "task_max_length",
    "head_serving",
    "predict",
    "recommend",
    "score",
    "served_heads",
    "top_k",
]
