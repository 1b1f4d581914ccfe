"""Configuration of SASRec (Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018, arXiv
1808.09781)."""

from __future__ import annotations

from transformers import PreTrainedConfig

from .configuration_item_text import check_item_text_fields
from .configuration_peterrec import PRETRAINING_LOSSES, check_task_fields
from .configuration_utils import FieldChecks

FEED_FORWARD_ACTIVATIONS = ("relu", "gelu")
"""Activations of the point-wise feed-forward network: the paper's ReLU (Section III-B), or GELU."""


class SASRecConfig(FieldChecks, PreTrainedConfig):
    r"""
    Configuration of a SASRec user model: item and learned position embeddings -> `num_hidden_layers` blocks of
    causal self-attention and a point-wise feed-forward network -> one hidden state per position (Section III).

    Args:
        vocab_size (`int`, defaults to 3710):
            Size of the item vocabulary, special tokens included (ML-1M's 3,706 items and four special tokens).
        hidden_size (`int`, defaults to 64):
            Latent dimensionality `d` of the embeddings and of every block (the paper uses 50; 64 divides evenly
            among heads).
        num_hidden_layers (`int`, defaults to 2):
            Number `b` of self-attention blocks (the paper's best, Section IV-E).
        num_attention_heads (`int`, defaults to 1):
            Heads of each self-attention layer (the paper: one; Section III-G found more did not help); must
            divide `hidden_size`.
        intermediate_size (`int`, *optional*):
            Inner size of the point-wise feed-forward network; defaults to `hidden_size` (the paper's d x d
            weights W(1), W(2)).
        hidden_act (`str`, defaults to `"relu"`):
            Activation of the feed-forward network, `"relu"` (the paper) or `"gelu"`.
        hidden_dropout_prob (`float`, defaults to 0.2):
            Dropout on the embeddings and on each sub-layer's output (Section III-C; 0.2 on ML-1M).
        attention_probs_dropout_prob (`float`, defaults to 0.0):
            Dropout on the attention weights. The paper drops the embeddings and the sub-layers' outputs only
            (Section III-C); the authors' code also drops attention weights, which takes `scaled_dot_product_attention`
            off its fused kernels (on CPU about ten times slower).
        max_position_embeddings (`int`, defaults to 200):
            Number `n` of learned position embeddings (Section III-A; n = 200 on ML-1M): the longest input,
            `[TCL]` included. Positions count from a user's first item, so left padding never shifts them.
        is_causal (`bool`, defaults to `True`):
            `True`: position t attends to positions <= t only (Section III-B, "Causality"); `False`: every position
            attends to every item of the sequence (a bidirectional encoder).
        layer_norm_eps (`float`, defaults to 1e-8):
            Epsilon of every LayerNorm (the authors' code's value).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the truncated normal initialisation of linear and embedding layers.
        pad_token_id, unk_token_id, mask_token_id, tcl_token_id (`int`, defaults to 0, 1, 2, 3):
            Ids of the special tokens of the family's `ItemTokenizer`, each distinct.
        readout (`str`, defaults to `"tcl"`):
            How a user vector is read from the hidden states (`registry.READOUTS`): `"tcl"` reads the last position
            (the `[TCL]` a task input ends with; for the causal model the state that has attended to every item).
            Each task may choose its own at transfer (`prepare_for_transfer(..., readout=...)`).
        head_terms, num_target_items, ranking_loss, num_negatives (`str`, `int`, `str`, `int`; defaults to
            `"deep"`, 0, `"bpr"`, 1):
            The task heads' fields, as in `PeterRecConfig`: what a head adds up (`registry.HEAD_TERMS`) and the
            cold-start ranking head ([`SASRecForItemRanking`]); each task chooses its own at transfer.
        patch_bottleneck_size (`int`, *optional*):
            Inner width of a task's model patches (PeterRec's Figure 3(f)) after each sub-layer of every block
            (insertion `"sublayers"`); defaults to `hidden_size // 8`.
        patch_activation (`str`, defaults to `"gelu"`):
            Activation inside the model patches, one of `"gelu"`, `"gelu_tanh"`, `"relu"`.
        pretraining_loss (`str`, defaults to `"full_softmax"`):
            Next-item objective: `"full_softmax"` (computed in chunks of rows) or `"sampled_softmax"`.
        num_sampled (`int`, defaults to 8192):
            Negatives drawn per step by the sampled softmax.
        loss_chunk_size (`int`, defaults to 4096):
            Rows per chunk of the fused output projection and cross-entropy.
        num_labels (`int`, defaults to 2):
            Number of classes of [`SASRecForSequenceClassification`].
        item_representation (`str`, defaults to `"id"`):
            How items become vectors, in the input and in the output layer (`ITEM_REPRESENTATIONS`): `"id"` an ID
            embedding per item (the paper); `"text"` an item encoder over the item's text (Adapter4Rec's TransRec,
            `item_text.ItemTextEncoder`); `"text_id"` the sum of both. The special tokens always keep ID embeddings.
        item_encoder (`str`, *optional*):
            The Hub id or folder the item encoder's text model came from (a record; the weights are saved with the
            model).
        item_encoder_config (`dict`, *optional*):
            The text model's configuration (`AutoConfig.from_pretrained(item_encoder).to_dict()`); required by the
            text representations.
        item_text_pooling (`str`, defaults to `"first"`):
            How a text's token states become one vector: `"first"` (the [CLS] state) or `"mean"` (masked mean).
        max_text_length (`int`, defaults to 32):
            Text tokens kept per item (longer texts are truncated).
        item_encoder_batch_size (`int`, defaults to 256):
            Texts encoded at once: the catalogue is encoded in chunks of this many items, each recomputed in the
            backward pass, so that the text model's activations of one chunk at a time are kept.
    """

    model_type = "sasrec"

    def __init__(
        self,
        vocab_size: int = 3_710,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 1,
        intermediate_size: int | None = None,
        hidden_act: str = "relu",
        hidden_dropout_prob: float = 0.2,
        attention_probs_dropout_prob: float = 0.0,
        max_position_embeddings: int = 200,
        is_causal: bool = True,
        layer_norm_eps: float = 1e-8,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        unk_token_id: int = 1,
        mask_token_id: int = 2,
        tcl_token_id: int = 3,
        readout: str = "tcl",
        head_terms: str = "deep",
        num_target_items: int = 0,
        ranking_loss: str = "bpr",
        num_negatives: int = 1,
        patch_bottleneck_size: int | None = None,
        patch_activation: str = "gelu",
        pretraining_loss: str = "full_softmax",
        num_sampled: int = 8192,
        loss_chunk_size: int = 4096,
        item_representation: str = "id",
        item_encoder: str | None = None,
        item_encoder_config: dict | None = None,
        item_text_pooling: str = "first",
        max_text_length: int = 32,
        item_encoder_batch_size: int = 256,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size or hidden_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.is_causal = is_causal
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.unk_token_id = unk_token_id
        self.mask_token_id = mask_token_id
        self.tcl_token_id = tcl_token_id
        self.readout = readout
        self.head_terms = head_terms
        self.num_target_items = num_target_items
        self.ranking_loss = ranking_loss
        self.num_negatives = num_negatives
        self.patch_bottleneck_size = patch_bottleneck_size or max(1, hidden_size // 8)
        self.patch_activation = patch_activation
        self.pretraining_loss = pretraining_loss
        self.num_sampled = num_sampled
        self.loss_chunk_size = loss_chunk_size
        self.item_representation = item_representation
        self.item_encoder = item_encoder
        self.item_encoder_config = item_encoder_config
        self.item_text_pooling = item_text_pooling
        self.max_text_length = max_text_length
        self.item_encoder_batch_size = item_encoder_batch_size
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.check_fields()

    def architecture_rows(self) -> list[tuple[str, str]]:
        """The architecture, one (name, value) row each, for the backbone card."""
        rows = [
            (
                "Blocks",
                f"{self.num_hidden_layers} of {self.num_attention_heads}-head self-attention and feed-forward",
            ),
            ("Hidden size", f"{self.hidden_size} (feed-forward {self.intermediate_size}, {self.hidden_act})"),
            ("Attention", "causal" if self.is_causal else "bidirectional"),
            ("Learned positions", str(self.max_position_embeddings)),
        ]
        if self.item_representation != "id":
            rows.append(
                ("Items", f"{self.item_representation}, item encoder {self.item_encoder or 'from config'}")
            )
        return rows

    def check_fields(self) -> None:
        """Checks every field once; each error names the field, the value and what is allowed."""
        self._check_positive_integers(
            (
                "vocab_size",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "max_position_embeddings",
                "num_sampled",
                "loss_chunk_size",
            )
        )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"SASRecConfig.num_attention_heads={self.num_attention_heads} must divide "
                f"hidden_size={self.hidden_size}."
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"SASRecConfig.{name} must be a probability in [0, 1), got {value!r}.")
        self._check_choice("is_causal", self.is_causal, (True, False))
        self._check_choice("hidden_act", self.hidden_act, FEED_FORWARD_ACTIVATIONS)
        check_task_fields(self)
        self._check_choice("pretraining_loss", self.pretraining_loss, PRETRAINING_LOSSES)
        self._check_special_token_ids()
        check_item_text_fields(self)


__all__ = ["FEED_FORWARD_ACTIVATIONS", "SASRecConfig"]
