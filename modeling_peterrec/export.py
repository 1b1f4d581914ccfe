"""Export a task model for serving: `torch.export` (and ONNX where its exporter handles the model), with a dynamic
batch size and sequence length, checked against eager outputs.

What is exported is `ServingModule`: (input_ids, attention_mask) in, one score vector per user out (the head's
`HeadServing.scores` of `inference.py`: next-item logits, target-item scores or class logits). The exported folder
also holds the item vocabulary and `serving_config.json` (input layout and output names), so a serving system maps
item names to ids with a dictionary lookup and needs neither this package nor a tokenizer (docs/serving.md).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from torch import nn

from ._io import atomic_folder
from .inference import HistoryEncoder, head_serving
from .item_text import ItemTextEncoder
from .tokenization_peterrec import ItemTokenizer

logger = logging.getLogger(__name__)

EXPORTED_PROGRAM_NAME = "model.pt2"
ONNX_NAME = "model.onnx"
SERVING_CONFIG_NAME = "serving_config.json"
INPUT_NAMES = ("input_ids", "attention_mask")


class ServingModule(nn.Module):
    """A task model reduced to its serving function, `scores(input_ids, attention_mask)`, for exporters.

    The task models' own `forward` takes optional arguments and returns `ModelOutput`s; exporters want plain
    tensors in and out. The wrapped model's weights are shared, not copied.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._scores = head_serving(model).scores

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._scores(self.model, input_ids, attention_mask)


def _dynamic_shapes(model: nn.Module) -> dict[str, dict[int, torch.export.Dim]]:
    """Batch size and length are dynamic; the length up to the model's position embeddings when it has them
    (SASRec), else to 65,536."""
    longest = getattr(model.config, "max_position_embeddings", None) or 1 << 16
    batch, length = (
        torch.export.Dim("batch", min=1, max=1 << 16),
        torch.export.Dim("length", min=2, max=longest),
    )
    return {name: {0: batch, 1: length} for name in INPUT_NAMES}


def example_inputs(
    model: nn.Module, tokenizer: ItemTokenizer, batch_size: int = 2, length: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of `batch_size` random histories laid out for the head (`HistoryEncoder`), `length` ids long, the
    first row left-padded: to trace with and to check exported outputs against eager ones."""
    head = head_serving(model)
    encode = HistoryEncoder(tokenizer, head.layout(model, tokenizer), max_length=None)
    specials = len(encode.prefix) + len(encode.suffix)
    if length <= specials + 1:
        raise ValueError(
            f"length={length} leaves room for no more than one item; use at least {specials + 2}."
        )
    generator = torch.Generator().manual_seed(batch_size * 1000 + length)
    items = tokenizer.convert_ids_to_tokens(list(range(tokenizer.first_item_id, len(tokenizer))))
    draws = torch.randint(len(items), (batch_size, length - specials), generator=generator).tolist()
    histories = [[items[i] for i in row] for row in draws]
    histories[0] = histories[0][: max(1, len(histories[0]) // 2)]
    device = next(model.parameters()).device
    return tuple(tensor.to(device) for tensor in encode(histories))


@contextmanager
def traceable(module: ServingModule, inputs: tuple[torch.Tensor, ...]) -> Iterator[None]:
    """Lets exporters trace `module` (in eval mode, without gradients). A model whose items come from their text
    (docs/text_items.md) encodes its catalogue and target items once, eagerly, and keeps them as constants while
    tracing (`ItemTextEncoder.kept_as_constants`): the exported program scores with that item matrix and holds no
    text model, so a changed catalogue (`add_item_texts`) needs a new export."""
    encoders = [part for part in module.modules() if isinstance(part, ItemTextEncoder)]
    with torch.no_grad(), ExitStack() as stack:
        if encoders:
            module(*inputs)
        for encoder in encoders:
            stack.enter_context(encoder.kept_as_constants())
        yield


def export_program(model: nn.Module, tokenizer: ItemTokenizer) -> torch.export.ExportedProgram:
    """`torch.export` of the task model's serving function, dynamic in batch size and length."""
    module = ServingModule(model).eval()
    inputs = example_inputs(model, tokenizer)
    with traceable(module, inputs):
        return torch.export.export(module, inputs, dynamic_shapes=_dynamic_shapes(model))


def export_onnx(model: nn.Module, tokenizer: ItemTokenizer, path: str | os.PathLike) -> Path:
    """ONNX of the task model's serving function through the dynamo exporter (needs `onnx` and `onnxscript`),
    dynamic in batch size and length."""
    module = ServingModule(model).eval()
    inputs = example_inputs(model, tokenizer)
    with traceable(module, inputs):
        torch.onnx.export(
            module,
            inputs,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=["scores"],
            dynamic_shapes=_dynamic_shapes(model),
            dynamo=True,
            external_data=False,
        )
    return Path(path)


def serving_config(model: nn.Module, tokenizer: ItemTokenizer, max_length: int | None) -> dict:
    """What a serving system needs besides the weights: how to lay out the input ids and what the outputs are."""
    head = head_serving(model)
    prefix, suffix = head.layout(model, tokenizer)
    outputs = head.output_names(model, tokenizer)
    config = {
        "task": "recommend" if head.recommends else "predict",
        "inputs": list(INPUT_NAMES),
        "pad_token_id": tokenizer.pad_token_id,
        "unk_token_id": tokenizer.unk_token_id,
        "prefix_ids": list(prefix),
        "suffix_ids": list(suffix),
        "padding_side": "left",
        "max_length": max_length,
        "output": "scores",
    }
    if outputs.first:
        # The output columns are the vocabulary's ids: the vocabulary file names them.
        config["output_names"] = "vocabulary"
        config["first_item_id"] = outputs.first
    else:
        config["output_names"] = list(outputs.names)
    return config


def save_for_serving(
    model: nn.Module,
    tokenizer: ItemTokenizer,
    folder: str | os.PathLike,
    onnx: bool = True,
    max_length: int | None = None,
) -> dict[str, str]:
    """Writes `model.pt2` (the `torch.export` program), `model.onnx` when `onnx` and the exporter can, the item
    vocabulary (`tokenizer.json`, whose `model.vocab` maps item names to ids) and `serving_config.json`.

    Returns the files written, by role; an ONNX export that cannot run (exporter packages missing or a failure)
    is logged and left out, never fatal.
    """
    folder = Path(folder)
    written = {}
    with atomic_folder(folder) as staging:
        torch.export.save(export_program(model, tokenizer), staging / EXPORTED_PROGRAM_NAME)
        written["exported_program"] = EXPORTED_PROGRAM_NAME
        if onnx:
            try:
                export_onnx(model, tokenizer, staging / ONNX_NAME)
                written["onnx"] = ONNX_NAME
            except ImportError as error:
                logger.warning(f"ONNX export skipped: {error}. Install onnx and onnxscript to export ONNX.")
            except Exception as error:  # the ONNX exporter's failures have no common type
                logger.warning(f"ONNX export skipped: the exporter failed ({type(error).__name__}: {error}).")
        tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
        written["vocabulary"] = "tokenizer.json"
        config = serving_config(model, tokenizer, max_length)
        (staging / SERVING_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        written["config"] = SERVING_CONFIG_NAME
    return written


def max_difference(
    model: nn.Module,
    tokenizer: ItemTokenizer,
    exported,
    shapes: Sequence[tuple[int, int]] = ((1, 6), (7, 12)),
) -> float:
    """Largest absolute difference between eager and exported outputs over inputs of the given (batch, length)."""
    module = ServingModule(model).eval()
    worst = 0.0
    with torch.no_grad():
        for batch_size, length in shapes:
            inputs = example_inputs(model, tokenizer, batch_size, length)
            worst = max(worst, float((module(*inputs) - exported(*inputs)).abs().max()))
    return worst


__all__ = [
    "EXPORTED_PROGRAM_NAME",
    "ONNX_NAME",
    "SERVING_CONFIG_NAME",
    "ServingModule",
    "example_inputs",
    "export_onnx",
    "export_program",
    "max_difference",
    "save_for_serving",
    "serving_config",
    "traceable",
]
