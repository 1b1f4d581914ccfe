"""Configuration of CmnRec (Qu, Yuan et al., "Sequential Recommendations with Chunk-accelerated Memory Network",
IEEE TKDE 2022, arXiv 2004.13401)."""

from __future__ import annotations

from transformers import PreTrainedConfig

from .configuration_peterrec import PRETRAINING_LOSSES, check_task_fields
from .configuration_utils import FieldChecks
from .registry import CHUNK_RULES

CONTROLLERS = ("lstm", "gru")
"""The RNN controllers of Section 3 (a one-layer LSTM or GRU)."""


class CmnRecConfig(FieldChecks, PreTrainedConfig):
    r"""
    Configuration of a CmnRec user model: item embedding -> RNN controller -> external memory of `memory_slots`
    slots, written and read DNC-style at the chunk times of `chunking` -> a feed-forward output (Section 3-4).

    Args:
        vocab_size (`int`, defaults to 10674):
            Size of the item vocabulary, special tokens included (ml-10M's 10,670 items and four special tokens).
        embedding_size (`int`, defaults to 128):
            Size of the item embedding, the controller's input (Section 5.1).
        controller (`str`, defaults to `"lstm"`):
            The RNN controller, `"lstm"` or `"gru"` (one layer).
        controller_size (`int`, defaults to 256):
            Hidden size `h` of the controller.
        memory_slots (`int`, defaults to 4):
            Number `m` of memory slots, which is also the number of chunks (Section 4): the memory is accessed at
            `min(m, T)` chunk times of a length-T sequence (at every step with `chunking="none"`).
        memory_width (`int`, defaults to 256):
            Width `n` of one memory slot.
        num_read_heads (`int`, defaults to 3):
            Read heads of the memory (the authors' code uses 3).
        attention_size (`int`, defaults to 64):
            Size `b` of the attention that summarises a chunk's cached controller states (Section 4.1).
        chunking (`str`, defaults to `"tsc"`):
            Where the memory is accessed: `"none"` (every step, the per-step SRMN baseline), `"pec"` (periodic
            chunks), `"tsc"` (time-sensitive chunks, the paper's best) or `"exc"` (`registry.CHUNK_RULES`).
        hidden_size (`int`, defaults to 256):
            Size of the output at each position, the feed-forward layer over the controller state and the read
            vectors; the output layer over items and the task heads read it (the user vector).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the truncated normal initialisation of linear and embedding layers.
        pad_token_id, unk_token_id, mask_token_id, tcl_token_id (`int`, defaults to 0, 1, 2, 3):
            Ids of the special tokens of the family's `ItemTokenizer`, each distinct.
        pretraining_loss (`str`, defaults to `"full_softmax"`):
            Next-item objective: `"full_softmax"` (computed in chunks of rows) or `"sampled_softmax"`.
        num_sampled (`int`, defaults to 8192):
            Negatives drawn per step by the sampled softmax.
        loss_chunk_size (`int`, defaults to 4096):
            Rows per chunk of the fused output projection and cross-entropy.
        num_labels (`int`, defaults to 2):
            Number of classes of [`CmnRecForSequenceClassification`].
        readout (`str`, defaults to `"tcl"`):
            How a task reads the user vector from the outputs (`registry.READOUTS`): `"tcl"` is the last position,
            the final controller state with the final read (the paper's output layer); each task may choose its own
            at transfer (`prepare_for_transfer(..., readout=...)`).
        head_terms (`str`, defaults to `"deep"`):
            What a task head adds up (`registry.HEAD_TERMS`): the user vector through the output layer, a linear
            term over the bag of the user's items, or both (`PeterRecConfig.head_terms`). Chosen per task at
            transfer.
        num_target_items, ranking_loss, num_negatives (`int`, `str`, `int`, defaults to 0, `"bpr"`, 1):
            The cold-start ranking head ([`CmnRecForItemRanking`]), as in `PeterRecConfig`.
        patch_bottleneck_size (`int`, *optional*):
            Inner width of a task's model patches (PeterRec's Figure 3(f)) on the controller output and on the
            memory read; defaults to `controller_size // 8`.
        patch_activation (`str`, defaults to `"gelu"`):
            Activation inside the model patches.
    """

    model_type = "cmnrec"

    def __init__(
        self,
        vocab_size: int = 10_674,
        embedding_size: int = 128,
        controller: str = "lstm",
        controller_size: int = 256,
        memory_slots: int = 4,
        memory_width: int = 256,
        num_read_heads: int = 3,
        attention_size: int = 64,
        chunking: str = "tsc",
        hidden_size: int = 256,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        unk_token_id: int = 1,
        mask_token_id: int = 2,
        tcl_token_id: int = 3,
        pretraining_loss: str = "full_softmax",
        num_sampled: int = 8192,
        loss_chunk_size: int = 4096,
        readout: str = "tcl",
        head_terms: str = "deep",
        num_target_items: int = 0,
        ranking_loss: str = "bpr",
        num_negatives: int = 1,
        patch_bottleneck_size: int | None = None,
        patch_activation: str = "gelu",
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.controller = controller
        self.controller_size = controller_size
        self.memory_slots = memory_slots
        self.memory_width = memory_width
        self.num_read_heads = num_read_heads
        self.attention_size = attention_size
        self.chunking = chunking
        self.hidden_size = hidden_size
        self.initializer_range = initializer_range
        self.unk_token_id = unk_token_id
        self.mask_token_id = mask_token_id
        self.tcl_token_id = tcl_token_id
        self.pretraining_loss = pretraining_loss
        self.num_sampled = num_sampled
        self.loss_chunk_size = loss_chunk_size
        self.readout = readout
        self.head_terms = head_terms
        self.num_target_items = num_target_items
        self.ranking_loss = ranking_loss
        self.num_negatives = num_negatives
        self.patch_bottleneck_size = patch_bottleneck_size or max(1, controller_size // 8)
        self.patch_activation = patch_activation
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.check_fields()

    @property
    def read_size(self) -> int:
        """Size of the read vectors of all heads together."""
        return self.num_read_heads * self.memory_width

    @property
    def is_causal(self) -> bool:
        """The controller reads left to right: position t sees items up to t (next-item pretraining)."""
        return True

    def architecture_rows(self) -> list[tuple[str, str]]:
        """The architecture, one (name, value) row each, for the backbone card."""
        return [
            ("Item embedding", str(self.embedding_size)),
            ("Controller", f"1-layer {self.controller.upper()}, hidden {self.controller_size}"),
            (
                "Memory",
                f"{self.memory_slots} slots of width {self.memory_width}, {self.num_read_heads} read heads",
            ),
            ("Chunking", f"{self.chunking} (attention size {self.attention_size})"),
            ("Output (user vector) size", str(self.hidden_size)),
        ]

    def check_fields(self) -> None:
        """Checks every field once; each error names the field, the value and what is allowed."""
        self._check_positive_integers(
            (
                "vocab_size",
                "embedding_size",
                "controller_size",
                "memory_slots",
                "memory_width",
                "num_read_heads",
                "attention_size",
                "hidden_size",
                "num_sampled",
                "loss_chunk_size",
            )
        )
        check_task_fields(self)
        self._check_choice("controller", self.controller, CONTROLLERS)
        self._check_choice("chunking", self.chunking, tuple(CHUNK_RULES))
        self._check_choice("pretraining_loss", self.pretraining_loss, PRETRAINING_LOSSES)
        self._check_special_token_ids()


__all__ = ["CONTROLLERS", "CmnRecConfig"]
