"""Configuration of PeterRec (Yuan et al., "Parameter-Efficient Transfer from Sequential Behaviors for User
Modeling and Recommendation", SIGIR 2020)."""

from __future__ import annotations

from transformers import PreTrainedConfig

from .configuration_utils import FieldChecks
from .registry import HEAD_TERMS, READOUTS, insertions_of

INSERTION_MODES = tuple(insertions_of("peterrec"))
"""Names of the model-patch insertions of Figure 3 (`registry.INSERTIONS` holds what each one is)."""

PAPER_DILATIONS = [1, 2, 4, 8] * 4
"""Dilations of the paper's 16-layer backbone (Section 4.1, following NextItNet)."""

PATCH_ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
PRETRAINING_LOSSES = ("full_softmax", "sampled_softmax")
RANKING_LOSSES = ("bpr", "binary", "full_softmax")


def check_task_fields(config: FieldChecks) -> None:
    """Checks the fields every model type of the family has for its task heads and patches: `readout`,
    `head_terms`, `num_target_items`, `ranking_loss`, `num_negatives`, `patch_bottleneck_size`, `patch_activation`."""
    config._check_positive_integers(("patch_bottleneck_size", "num_negatives"))
    if config.num_target_items < 0:
        raise ValueError(
            f"{type(config).__name__}.num_target_items must be >= 0, got {config.num_target_items!r}."
        )
    config._check_choice("readout", config.readout, tuple(READOUTS))
    config._check_choice("head_terms", config.head_terms, tuple(HEAD_TERMS))
    config._check_choice("ranking_loss", config.ranking_loss, RANKING_LOSSES)
    config._check_choice("patch_activation", config.patch_activation, PATCH_ACTIVATIONS)


class PeterRecConfig(FieldChecks, PreTrainedConfig):
    r"""
    Configuration of a PeterRec backbone (a NextItNet-style stack of dilated residual blocks) and of its task heads.

    Args:
        vocab_size (`int`, defaults to 645984):
            Size of the item vocabulary, special tokens included (the paper's ColdRec-2 source domain has 645,980
            items; four special tokens come first).
        hidden_size (`int`, defaults to 256):
            Embedding and channel size `k` of every dilated convolution (Section 4.1 of the paper).
        kernel_size (`int`, defaults to 3):
            Width of every dilated convolution.
        dilations (`list[int]`, defaults to `[1, 2, 4, 8] * 4`):
            Dilation of each convolution layer, in order. Two consecutive layers form one residual block, so the
            count must be even. The dilations fix the receptive field (`receptive_field`, see below), hence which
            histories a position sees whole.
        is_causal (`bool`, defaults to `True`):
            `True` builds the causal NextItNet encoder (left padding, position t sees only positions <= t);
            `False` builds the non-causal GRec encoder (symmetric padding).
        layer_norm_eps (`float`, defaults to 1e-8):
            Epsilon of every LayerNorm (the original code's value).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the truncated normal initialisation.
        pad_token_id, unk_token_id, mask_token_id, tcl_token_id (`int`, defaults to 0, 1, 2, 3):
            Ids of the special tokens `[PAD]`, `[UNK]`, `[MASK]` and `[TCL]`, each distinct.
        readout (`str`, defaults to `"tcl"`):
            How a user representation is read from the hidden states (`registry.READOUTS`): `"tcl"` reads the
            `[TCL]` position (the last position for the causal encoder, Figure 2(a); the sum of the first and last
            for the non-causal one, Figure 2(c)); `"sum"` sums all non-pad positions (Figure 2(d)); `"mean"`
            averages them; `"attention"` pools them with learned weights of the task head. A task chooses its own
            readout at transfer (`prepare_for_transfer(..., readout=...)`); this field is the default.
        head_terms (`str`, defaults to `"deep"`):
            What a task head adds up (`registry.HEAD_TERMS`): `"deep"`, the user vector through the output layer
            (the paper's); `"wide_deep"`, that plus a linear term over the bag of the user's items (wide & deep);
            `"wide"`, the linear term alone (an ablation that reads no backbone). Chosen per task at transfer.
        patch_insertion (`str` or `None`, defaults to `None`):
            Where model patches are inserted (Figure 3): one of `"serial_one"` (b), `"serial_two"` (c),
            `"parallel_before_ln"` (d), `"parallel_after_act"` (e), or `None` for no patch.
        patch_bottleneck_size (`int`, *optional*):
            Bottleneck size `d` of a model patch; defaults to `hidden_size // 8` (the paper's k = 8d; the
            original code later used `hidden_size // 4`).
        patch_activation (`str`, defaults to `"gelu"`):
            Activation inside a model patch, one of `"gelu"`, `"gelu_tanh"`, `"relu"`.
        patch_task (`str`, defaults to `"default"`):
            Name under which the patch described by the `patch_*` fields is registered.
        num_labels (`int`, defaults to 2):
            Number of classes of [`PeterRecForSequenceClassification`].
        num_target_items (`int`, defaults to 0):
            Size of the target-item table of [`PeterRecForItemRanking`] (cold-start recommendation).
        ranking_loss (`str`, defaults to `"bpr"`):
            Loss of [`PeterRecForItemRanking`]: `"bpr"` (the paper), `"binary"` (the original code's logistic loss
            with sampled negatives) or `"full_softmax"` over all target items.
        num_negatives (`int`, defaults to 1):
            Sampled negatives per positive for the `"bpr"` and `"binary"` ranking losses.
        pretraining_loss (`str`, defaults to `"full_softmax"`):
            Pretraining objective over the item vocabulary: `"full_softmax"` (computed in chunks, never
            materialising all logits) or `"sampled_softmax"` (the original code's option).
        num_sampled (`int`, defaults to 8192):
            Negatives drawn per step by the sampled softmax.
        loss_chunk_size (`int`, defaults to 4096):
            Tokens per chunk of the fused output projection and cross-entropy (on CPU at most as many as keep a
            chunk's logits in cache, see `loss_peterrec.chunk_rows`).

    Receptive field: one output sees `receptive_field = 1 + (kernel_size - 1) * sum(dilations)` positions, the
    causal encoder's output at position t the positions `t - receptive_field + 1 ... t`, the non-causal one's a
    window of that width centred on t. With the causal `"tcl"` readout a user vector therefore sees the last
    `receptive_field - 1` items and nothing before them (in practice it depends mostly on the last few); only a
    history of at most that many items is seen whole, and the task heads run the backbone on those positions alone
    (`PeterRecForUserTask.readout_positions`; the non-causal `"tcl"` readout: half a field at each end). The readouts
    that pool every position (`"sum"`, `"mean"`, `"attention"`) see histories of any length. For `kernel_size=3`:

    | `dilations`                   | layers | receptive field | history the [TCL] state sees whole |
    |-------------------------------|--------|-----------------|------------------------------------|
    | `[1, 2, 4, 8] * 2`            | 8      | 61              | 60 items                           |
    | `[1, 2, 4, 8] * 4` (paper)    | 16     | 121             | 120 items                          |
    | `[1, 2, 4, 8, 16, 32] * 2`    | 12     | 253             | 252 items                          |
    | `[1, 2, 4, 8, 16, 32, 64] * 2`| 14     | 509             | 508 items                          |
    """

    model_type = "peterrec"

    def __init__(
        self,
        vocab_size: int = 645_984,
        hidden_size: int = 256,
        kernel_size: int = 3,
        dilations: list[int] | None = None,
        is_causal: bool = True,
        layer_norm_eps: float = 1e-8,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        unk_token_id: int = 1,
        mask_token_id: int = 2,
        tcl_token_id: int = 3,
        readout: str = "tcl",
        head_terms: str = "deep",
        patch_insertion: str | None = None,
        patch_bottleneck_size: int | None = None,
        patch_activation: str = "gelu",
        patch_task: str = "default",
        num_target_items: int = 0,
        ranking_loss: str = "bpr",
        num_negatives: int = 1,
        pretraining_loss: str = "full_softmax",
        num_sampled: int = 8192,
        loss_chunk_size: int = 4096,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.kernel_size = kernel_size
        self.dilations = list(dilations) if dilations is not None else list(PAPER_DILATIONS)
        self.is_causal = is_causal
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.unk_token_id = unk_token_id
        self.mask_token_id = mask_token_id
        self.tcl_token_id = tcl_token_id
        self.readout = readout
        self.head_terms = head_terms
        self.patch_insertion = patch_insertion
        self.patch_bottleneck_size = patch_bottleneck_size or max(1, hidden_size // 8)
        self.patch_activation = patch_activation
        self.patch_task = patch_task
        self.num_target_items = num_target_items
        self.ranking_loss = ranking_loss
        self.num_negatives = num_negatives
        self.pretraining_loss = pretraining_loss
        self.num_sampled = num_sampled
        self.loss_chunk_size = loss_chunk_size
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.check_fields()

    @property
    def num_layers(self) -> int:
        """Number of dilated convolution layers (two per residual block)."""
        return len(self.dilations)

    @property
    def receptive_field(self) -> int:
        """Width of the window of positions one output sees, itself included: 1 + (k - 1) * sum(dilations)
        (Section 3.2, NextItNet). Causal: the output at t sees t - receptive_field + 1 ... t."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)

    @property
    def reach(self) -> int:
        """Positions the non-causal encoder's output at t sees on either side, itself included: each layer sees
        ceil((k - 1) * d / 2) positions to the right, as many or one more than to the left."""
        return 1 + sum(((self.kernel_size - 1) * d + 1) // 2 for d in self.dilations)

    def architecture_rows(self) -> list[tuple[str, str]]:
        """The architecture, one (name, value) row each, for the backbone card."""
        return [
            ("Hidden size", str(self.hidden_size)),
            ("Residual blocks", str(self.num_layers // 2)),
            ("Dilated convolution layers", str(self.num_layers)),
            ("Dilations", ", ".join(str(d) for d in self.dilations)),
            ("Kernel size", str(self.kernel_size)),
        ]

    def check_fields(self) -> None:
        """Checks every field once; each error names the field, the value and what is allowed."""
        self._check_positive_integers(
            (
                "vocab_size",
                "hidden_size",
                "kernel_size",
                "num_sampled",
                "loss_chunk_size",
            )
        )
        check_task_fields(self)
        if not self.dilations or any(not isinstance(d, int) or d <= 0 for d in self.dilations):
            raise ValueError(
                f"PeterRecConfig.dilations must be a non-empty list of positive integers, got "
                f"{self.dilations!r}."
            )
        if len(self.dilations) % 2:
            raise ValueError(
                f"PeterRecConfig.dilations must list an even number of conv layers (two per residual "
                f"block), got {len(self.dilations)}: {self.dilations!r}."
            )
        self._check_choice("patch_insertion", self.patch_insertion, (None, *INSERTION_MODES))
        self._check_choice("pretraining_loss", self.pretraining_loss, PRETRAINING_LOSSES)
        self._check_special_token_ids()


__all__ = ["PeterRecConfig", "INSERTION_MODES", "PAPER_DILATIONS", "check_task_fields"]
