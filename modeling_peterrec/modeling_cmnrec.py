"""CmnRec: a memory-network user model whose memory is accessed at chunk times only.

Qu, Yuan et al., "Sequential Recommendations with Chunk-accelerated Memory Network" (IEEE TKDE 2022, arXiv
2004.13401). The file reads like the paper: the chunk rules (Section 4: PEC, TSC, EXC, and `none`, the per-step
memory network SRMN that the chunks accelerate), the external memory with DNC-style write and read (Section 3,
after Graves et al., Nature 2016), the attention summary of a chunk's cache (Section 4.1), then the user model
(item embedding -> RNN controller -> memory -> feed-forward output) and its heads.

The controller reads items only, so it runs over the whole sequence in one call; the memory is then accessed once
per chunk, with the attention summary of the chunk's controller states, and each position's output combines its own
controller state with the latest read (the previous read is carried between chunk times). Left padding never
changes a user's outputs: pad steps leave the controller and the memory untouched, and the chunk schedule is that of
the user's own length (computed once per length and cached).

Transfer (PeterRec, Section 3.3; `transfer.prepare_for_transfer`): the task heads read the user vector, by default
the output at the last position (the final controller state with the final read, the paper's output layer).
FineCLS: the frozen user model and a new head. FineAll: every weight trained. PeterRec-style patches (insertion
`controller_read`): a model patch (Figure 3(f)) on the controller's output before the memory (what the chunk
attention, the memory's interface and the output read) and one on the read vectors before the output layer, the rest
frozen. The dilated-conv methods that name conv layers (FineLast1/2, the insertions of Figure 3(b)-(e)) have no
counterpart (`registry.MODEL_TYPES["cmnrec"].methods`). Of the other patch types (`registry.PATCH_TYPES`), Houlsby
and Compacter go on the same two places and the soft prompt on the input embeddings; LoRA, the parallel and Pfeiffer
adapters and K-Adapter name weights, sub-layers or blocks that the recurrent controller and the memory do not have.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .adapters import PlaceShape, adapt, insert_prompts
from .configuration_cmnrec import CmnRecConfig
from .modeling_peterrec import (
    ClassificationHead,
    ItemBagTerm,
    ItemPredictionOutput,
    ItemRankingHead,
    PatchedTaskModel,
    SlotPatches,
    UserTask,
)
from .modeling_utils import (
    PRETRAINING_HEAD_KEYS,
    FullAutoMapMixin,
    ItemPredictionMixin,
    check_item_ids,
    init_truncated_normal,
)
from .registry import CHUNK_RULES, require_implemented

AUTO_CLASSES = {
    "AutoModel": "CmnRecModel",
    "AutoModelForCausalLM": "CmnRecForNextItemPrediction",
    "AutoModelForSequenceClassification": "CmnRecForSequenceClassification",
}
"""The Auto class that loads each model of this file (`FullAutoMapMixin` names them all in a saved `auto_map`)."""

# ---------------------------------------------------------------------------------------------------------------
# Chunk rules (Section 4): the chunk times t_1 < ... < t_K = T at which the memory is accessed
# ---------------------------------------------------------------------------------------------------------------


def _every_step(length: int, slots: int) -> tuple[int, ...]:
    """No chunks (SRMN): the memory is accessed at every step."""
    return tuple(range(1, length + 1))


def _periodic(length: int, chunks: int) -> tuple[int, ...]:
    """PEC: period G = floor(T/m), chunk times T-(m-1)G, ..., T-G, T; the first chunk takes the remainder."""
    period = length // chunks
    return tuple(length - (chunks - 1 - k) * period for k in range(chunks))


def _time_sensitive(length: int, chunks: int) -> tuple[int, ...]:
    """TSC: chunk lengths g*m, ..., 2g, g from the first chunk to the last, g = floor(2T / (m(m+1))); the first
    chunk takes the remainder. Where g rounds to 0 (m close to T) every chunk keeps at least one item."""
    step = max(1, 2 * length // (chunks * (chunks + 1)))
    times = [length]
    for k in range(1, chunks):
        times.append(max(times[-1] - k * step, chunks - k))
    return tuple(reversed(times))


def _exclusive(length: int, chunks: int) -> tuple[int, ...]:
    """EXC: the first T-m+1 items form one chunk, each of the last m-1 items its own."""
    return tuple(range(length - chunks + 1, length + 1))


CHUNK_TIMES: dict[str, Callable[[int, int], tuple[int, ...]]] = {
    "none": _every_step,
    "pec": _periodic,
    "tsc": _time_sensitive,
    "exc": _exclusive,
}
"""The code of each chunk rule of `registry.CHUNK_RULES`: (length T, chunks K) -> 1-based chunk times."""
require_implemented(CHUNK_RULES, CHUNK_TIMES, "modeling_cmnrec CHUNK_TIMES")


@functools.lru_cache(maxsize=4096)
def chunk_times(rule: str, length: int, slots: int) -> tuple[int, ...]:
    """The 1-based chunk times of a length-`length` sequence with `slots` memory slots: min(slots, length) of them
    (every step for `none`), increasing, the last one `length`. Computed once per (rule, length, slots)."""
    if length < 1:
        raise ValueError(f"A chunk schedule needs a length >= 1, got {length}.")
    return CHUNK_TIMES[rule](length, min(slots, length))


@functools.lru_cache(maxsize=64)
def chunk_tables(rule: str, slots: int, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lookup tables over every length L <= `max_length` (row L) and position p < L of the user's own items:
    the chunk index of p, and whether p ends its chunk (a memory access). Cached per (rule, slots, max_length)."""
    chunk_index = torch.zeros(max_length + 1, max_length, dtype=torch.long)
    is_end = torch.zeros(max_length + 1, max_length, dtype=torch.bool)
    for length in range(1, max_length + 1):
        times = chunk_times(rule, length, slots)
        chunk_index[length, :length] = torch.tensor([bisect.bisect_left(times, p + 1) for p in range(length)])
        is_end[length, torch.tensor(times) - 1] = True
    return chunk_index, is_end


class ChunkLayout(NamedTuple):
    """Where each row's chunks lie in a left-padded batch (the user's own length decides its schedule).

    Attributes:
        chunk_index: (batch, length) chunk of each position, -1 at pad positions.
        read_index: (batch, length) how many memory accesses precede or end at each position: the read it sees.
        end_position: (batch, accesses) the position that ends each chunk (arbitrary past a row's last chunk).
        active: (batch, accesses) whether the row has that chunk.
    """

    chunk_index: torch.Tensor
    read_index: torch.Tensor
    end_position: torch.Tensor
    active: torch.Tensor


def chunk_layout(rule: str, slots: int, attention_mask: torch.Tensor) -> ChunkLayout:
    """The chunks of every row of a batch, from the cached per-length schedule of each row's own length."""
    batch, length = attention_mask.shape
    device = attention_mask.device
    mask = attention_mask.bool()
    index_table, end_table = (table.to(device) for table in chunk_tables(rule, slots, length))
    lengths = mask.sum(1)
    own_position = (mask.cumsum(1) - 1).clamp(min=0)
    chunk_index = index_table[lengths.unsqueeze(1), own_position].masked_fill(~mask, -1)
    is_end = end_table[lengths.unsqueeze(1), own_position] & mask
    counts = is_end.sum(1)
    accesses = int(counts.max())
    end_position = torch.full((batch, accesses + 1), length - 1, dtype=torch.long, device=device)
    end_position.scatter_(
        1, torch.where(is_end, chunk_index, accesses), torch.arange(length, device=device).expand(batch, -1)
    )
    active = torch.arange(accesses, device=device) < counts.unsqueeze(1)
    return ChunkLayout(chunk_index, is_end.long().cumsum(1), end_position[:, :accesses], active)


# ---------------------------------------------------------------------------------------------------------------
# The external memory (Section 3; the Differentiable Neural Computer of Graves et al., 2016)
# ---------------------------------------------------------------------------------------------------------------


class MemoryState(NamedTuple):
    """The memory and its bookkeeping after an access (DNC notation).

    Attributes:
        memory: (batch, slots, width) the memory matrix M.
        usage: (batch, slots) usage u, in [0, 1].
        precedence: (batch, slots) precedence p: how much each slot was the last one written.
        link: (batch, slots, slots) temporal link matrix L, L[i, j]: slot i was written right after slot j.
        write_weights: (batch, slots) the write weighting w^w, summing to <= 1.
        read_weights: (batch, heads, slots) the read weightings w^r, each summing to <= 1.
        reads: (batch, heads * width) the read vectors of all heads.
    """

    memory: torch.Tensor
    usage: torch.Tensor
    precedence: torch.Tensor
    link: torch.Tensor
    write_weights: torch.Tensor
    read_weights: torch.Tensor
    reads: torch.Tensor


def content_weights(memory: torch.Tensor, keys: torch.Tensor, strengths: torch.Tensor) -> torch.Tensor:
    """Content-based addressing: softmax over slots of the key strength times the cosine similarity.

    memory (batch, slots, width), keys (batch, heads, width), strengths (batch, heads) -> (batch, heads, slots).
    """
    # sqrt(x + eps) instead of a clamped norm: smooth at the all-zero initial memory.
    memory_norm = (memory.pow(2).sum(-1) + 1e-6).sqrt()
    key_norm = (keys.pow(2).sum(-1) + 1e-6).sqrt()
    similarity = torch.einsum("bhw,bsw->bhs", keys, memory) / (
        key_norm.unsqueeze(-1) * memory_norm.unsqueeze(1)
    )
    return torch.softmax(strengths.unsqueeze(-1) * similarity, dim=-1)


def allocation_weights(usage: torch.Tensor) -> torch.Tensor:
    """Allocation weighting: slots sorted by usage, a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i]; sums to <= 1."""
    # Usage is kept off exactly 0 so the product stays informative (as in the DNC's reference code).
    usage = 1e-6 + (1 - 1e-6) * usage
    sorted_usage, order = torch.sort(usage, dim=-1, stable=True)
    before = torch.cumprod(
        torch.cat([torch.ones_like(sorted_usage[:, :1]), sorted_usage[:, :-1]], dim=1), dim=1
    )
    return torch.zeros_like(usage).scatter(1, order, (1 - sorted_usage) * before)


class DNCMemory(nn.Module):
    """An external memory of m slots of width n with one write head and several read heads (Section 3).

    Each access takes the controller's state (at a chunk time: the chunk's attention summary), reads the interface
    vector from it, frees the slots the read heads release, writes by content and by allocation, updates the
    temporal links, and reads by content and along the links (forward/backward read modes).
    """

    def __init__(self, config: CmnRecConfig):
        super().__init__()
        self.slots, self.width, self.heads = config.memory_slots, config.memory_width, config.num_read_heads
        width, heads = self.width, self.heads
        self.sizes = {
            "read_keys": heads * width,
            "read_strengths": heads,
            "write_key": width,
            "write_strength": 1,
            "erase": width,
            "write_vector": width,
            "free_gates": heads,
            "allocation_gate": 1,
            "write_gate": 1,
            "read_modes": 3 * heads,
        }
        self.interface = nn.Linear(config.controller_size, sum(self.sizes.values()))

    def initial_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MemoryState:
        slots, width, heads = self.slots, self.width, self.heads

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(batch, *shape, device=device, dtype=dtype)

        return MemoryState(
            zeros(slots, width),
            zeros(slots),
            zeros(slots),
            zeros(slots, slots),
            zeros(slots),
            zeros(heads, slots),
            zeros(heads * width),
        )

    def forward(self, state: MemoryState, controller_state: torch.Tensor) -> MemoryState:
        batch, heads = controller_state.shape[0], self.heads
        parts = dict(
            zip(
                self.sizes, self.interface(controller_state).split(list(self.sizes.values()), -1), strict=True
            )
        )
        read_keys = parts["read_keys"].view(batch, heads, self.width)
        read_strengths = 1 + F.softplus(parts["read_strengths"])
        write_key = parts["write_key"].unsqueeze(1)
        write_strength = 1 + F.softplus(parts["write_strength"])
        erase = torch.sigmoid(parts["erase"])
        write_vector = parts["write_vector"]
        free_gates = torch.sigmoid(parts["free_gates"])
        allocation_gate = torch.sigmoid(parts["allocation_gate"])
        write_gate = torch.sigmoid(parts["write_gate"])
        read_modes = torch.softmax(parts["read_modes"].view(batch, heads, 3), dim=-1)

        # Dynamic memory allocation: slots read last time and freed by the heads lose their usage.
        retention = torch.prod(1 - free_gates.unsqueeze(-1) * state.read_weights, dim=1)
        usage = (state.usage + state.write_weights - state.usage * state.write_weights) * retention
        write_content = content_weights(state.memory, write_key, write_strength).squeeze(1)
        write_weights = write_gate * (
            allocation_gate * allocation_weights(usage) + (1 - allocation_gate) * write_content
        )
        memory = state.memory * (1 - write_weights.unsqueeze(-1) * erase.unsqueeze(1)) + (
            write_weights.unsqueeze(-1) * write_vector.unsqueeze(1)
        )

        # Temporal links: L[i, j] grows when slot i is written right after slot j.
        link = (1 - write_weights.unsqueeze(2) - write_weights.unsqueeze(1)) * state.link + (
            write_weights.unsqueeze(2) * state.precedence.unsqueeze(1)
        )
        link = link * (1 - torch.eye(self.slots, device=link.device, dtype=link.dtype))
        precedence = (1 - write_weights.sum(-1, keepdim=True)) * state.precedence + write_weights

        forward_weights = torch.einsum("bij,bhj->bhi", link, state.read_weights)
        backward_weights = torch.einsum("bji,bhj->bhi", link, state.read_weights)
        read_content = content_weights(memory, read_keys, read_strengths)
        read_weights = (
            read_modes[..., 0:1] * backward_weights
            + read_modes[..., 1:2] * read_content
            + read_modes[..., 2:3] * forward_weights
        )
        reads = torch.einsum("bhs,bsw->bhw", read_weights, memory).reshape(batch, -1)
        return MemoryState(memory, usage, precedence, link, write_weights, read_weights, reads)


class ChunkAttention(nn.Module):
    """The attention summary of a chunk's cache (Section 4.1): z_j = w^T tanh(W c_j + U r), alpha = softmax(z),
    a = sum_j alpha_j c_j, where c_j are the chunk's controller states and r is the previous read."""

    def __init__(self, config: CmnRecConfig):
        super().__init__()
        self.cache_projection = nn.Linear(config.controller_size, config.attention_size)
        self.read_projection = nn.Linear(config.read_size, config.attention_size, bias=False)
        self.score = nn.Linear(config.attention_size, 1, bias=False)

    def forward(
        self, projected_cache: torch.Tensor, cache: torch.Tensor, in_chunk: torch.Tensor, read: torch.Tensor
    ) -> torch.Tensor:
        """projected_cache: (batch, length, b) W c_j of every position, computed once per sequence; cache
        (batch, length, h); in_chunk (batch, length) marks the chunk's positions; read (batch, heads * width)."""
        scores = self.score(torch.tanh(projected_cache + self.read_projection(read).unsqueeze(1))).squeeze(-1)
        weights = torch.softmax(scores.masked_fill(~in_chunk, torch.finfo(scores.dtype).min), dim=-1)
        return torch.einsum("bt,bth->bh", weights, cache)


# ---------------------------------------------------------------------------------------------------------------
# The user model and its heads
# ---------------------------------------------------------------------------------------------------------------


class CmnRecPreTrainedModel(PatchedTaskModel, FullAutoMapMixin, PreTrainedModel):
    """Base class: configuration, weight initialisation and loading."""

    config_class = CmnRecConfig
    config: CmnRecConfig
    base_model_prefix = "cmnrec"
    main_input_name = "input_ids"
    # forward takes no **kwargs; Trainer must not rescale the loss by the number of processes.
    accepts_loss_kwargs = False
    _keys_to_ignore_on_load_unexpected = PRETRAINING_HEAD_KEYS

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The RNN controller keeps PyTorch's own initialisation (uniform in +-1/sqrt(h)).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init_truncated_normal(module, self.config.initializer_range)
        elif isinstance(module, ItemBagTerm):
            module.reset_parameters()


class CmnRecModel(SlotPatches, CmnRecPreTrainedModel):
    """The user model: item embedding -> RNN controller -> memory accessed at chunk times -> feed-forward output.

    Returns, per position, the output over the controller state and the latest read (`last_hidden_state`), and
    the user vector: the output at the last position, which holds the final read and controller state
    (`pooler_output`; sequences are left-padded, so the last position is the user's latest item).
    """

    def __init__(self, config: CmnRecConfig):
        super().__init__(config)
        self.embed_items = nn.Embedding(config.vocab_size, config.embedding_size)
        rnn = nn.LSTM if config.controller == "lstm" else nn.GRU
        self.controller = rnn(config.embedding_size, config.controller_size, batch_first=True)
        self.memory = DNCMemory(config)
        self.chunk_attention = ChunkAttention(config) if config.chunking != "none" else None
        self.output_projection = nn.Linear(config.controller_size + config.read_size, config.hidden_size)
        self.patches = nn.ModuleDict()
        self._init_patches()
        self.post_init()

    def patch_holders(self) -> list[nn.ModuleDict]:
        """One holder, the model's own `patches`: each task's adapters on the controller output and the memory read
        (`patches.<task>.<place>`) beside its task-wide parts (`patches.<task>.prompt`)."""
        return [self.patches]

    def patch_places(self, block: int) -> dict[str, PlaceShape]:
        """The controller's output (what the chunk attention, the memory's interface and the output read) and the
        read vectors (before the output layer); serial adapters only, so each is as wide as it is."""
        controller, read = self.config.controller_size, self.config.read_size
        return {"controller": PlaceShape(controller, controller), "read": PlaceShape(read, read)}

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_items

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_items = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        patch: str | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """Encodes left-padded item sequences.

        Args:
            input_ids: (batch, length) item ids, left-padded with `[PAD]`.
            attention_mask: (batch, length), 1 on items and 0 on padding; derived from `[PAD]` when omitted.
            inputs_embeds: precomputed item embeddings instead of `input_ids`.
            patch: run with this task's patches (`add_patch`); one task per call.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if inputs_embeds is None:
            check_item_ids(input_ids, self.config.vocab_size)
            inputs_embeds = self.embed_items(input_ids)
        if attention_mask is None:
            attention_mask = (
                input_ids.ne(self.config.pad_token_id)
                if input_ids is not None
                else torch.ones(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device)
            )
        patches = self.task_patches(patch)
        inputs_embeds, attention_mask, prompt_length = insert_prompts(
            inputs_embeds, attention_mask, [(slice(None), patches.get("prompt"))]
        )
        mask = attention_mask.bool()
        controller_states = self._run_controller(inputs_embeds, mask)
        if "controller" in patches:
            # Re-masked: pad steps keep the zero state, so the patch cannot make padding visible.
            controller_states = adapt(
                patches, "controller", inputs_embeds, controller_states
            ) * mask.unsqueeze(-1)
        reads = adapt(patches, "read", controller_states, self._access_memory(controller_states, mask))
        hidden = torch.tanh(self.output_projection(torch.cat([controller_states, reads], dim=-1)))
        # The outputs at soft-prompt positions are dropped: every item is back where the input had it.
        hidden = hidden[:, prompt_length:]
        user = hidden[:, -1]
        if not return_dict:
            return hidden, user
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=user)

    def _run_controller(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Controller states at every position; a pad position repeats the state before it (zeros before the
        first item). The rows are compacted so each user's items run from the zero state, in one RNN call."""
        if bool(mask.all()):
            return self.controller(embeddings)[0]
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
        compact = self.controller(embeddings.gather(1, order.unsqueeze(-1).expand_as(embeddings)))[0]
        own_position = mask.long().cumsum(1) - 1
        states = compact.gather(1, own_position.clamp(min=0).unsqueeze(-1).expand(-1, -1, compact.shape[-1]))
        return states * (own_position >= 0).unsqueeze(-1).to(states.dtype)

    def _access_memory(self, controller_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The read vector each position sees: the memory is accessed at each row's chunk times with the chunk's
        attention summary (the controller state itself for one-item chunks of `none`), and the latest read is
        carried to the positions after it (zeros before the first access)."""
        layout = chunk_layout(self.config.chunking, self.config.memory_slots, mask)
        batch = controller_states.shape[0]
        state = self.memory.initial_state(batch, controller_states.device, controller_states.dtype)
        reads = [state.reads]
        projected_cache = (
            self.chunk_attention.cache_projection(controller_states)
            if self.chunk_attention is not None
            else None
        )
        rows = torch.arange(batch, device=controller_states.device)
        for access in range(layout.active.shape[1]):
            if self.chunk_attention is None:
                summary = controller_states[rows, layout.end_position[:, access]]
            else:
                in_chunk = layout.chunk_index.eq(access)
                summary = self.chunk_attention(projected_cache, controller_states, in_chunk, state.reads)
            new_state = self.memory(state, summary)
            active = layout.active[:, access]
            state = MemoryState(
                *(
                    torch.where(active.view(-1, *[1] * (new.dim() - 1)), new, old)
                    for new, old in zip(new_state, state, strict=True)
                )
            )
            reads.append(state.reads)
        reads = torch.stack(reads, dim=1)
        return reads.gather(1, layout.read_index.unsqueeze(-1).expand(-1, -1, reads.shape[-1]))


class CmnRecForNextItemPrediction(ItemPredictionMixin, CmnRecPreTrainedModel):
    """Next-item pretraining (Section 3, Eq. 6): a softmax over all items at every non-pad position, with its own
    output embedding and bias, through the family's fused output layer (`loss_peterrec`).

    `labels` are aligned with `input_ids` (the model shifts them), -100 marks positions without a target.
    """

    def __init__(self, config: CmnRecConfig):
        super().__init__(config)
        self.cmnrec = CmnRecModel(config)
        self.output_layer = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
    ) -> ItemPredictionOutput | tuple:
        """
        Args:
            labels: target item ids aligned with `input_ids`, -100 where there is none; position t predicts t+1.
            logits_to_keep: without labels, compute logits for the last `logits_to_keep` positions only (0: all).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden = self.cmnrec(input_ids, attention_mask=attention_mask).last_hidden_state
        loss, logits = self._item_prediction(hidden, labels, logits_to_keep)
        if not return_dict:
            return tuple(v for v in (loss, logits) if v is not None)
        return ItemPredictionOutput(loss=loss, logits=logits)


class CmnRecForUserTask(UserTask, CmnRecPreTrainedModel):
    """What the fine-tuning heads on CmnRec share (as `PeterRecForUserTask`): the user model with the task's patch,
    and the task's readout of its outputs (`config.readout`; `"tcl"`, the last position, is the paper's output
    layer over the final controller state and the final read); `UserTask` reads the user vectors."""

    def __init__(self, config: CmnRecConfig, num_outputs: int):
        super().__init__(config)
        self.cmnrec = CmnRecModel(config)
        self._add_head_terms(config, num_outputs)


class CmnRecForSequenceClassification(ClassificationHead, CmnRecForUserTask):
    """User-profile prediction from the CmnRec user vector with a linear layer (and/or the wide term,
    `config.head_terms`), trained with softmax cross-entropy (the downstream tasks of PeterRec, Section 3.3)."""

    def __init__(self, config: CmnRecConfig):
        super().__init__(config, config.num_labels)
        self._add_classifier(config)
        self.post_init()


class CmnRecForItemRanking(ItemRankingHead, CmnRecForUserTask):
    """Cold-start item recommendation (ColdRec, PeterRec Section 3.3) from the CmnRec user vector; see
    `ItemRankingHead`."""

    def __init__(self, config: CmnRecConfig):
        super().__init__(config, config.num_target_items)
        self._add_target_embeddings(config)
        self.post_init()


__all__ = [
    "AUTO_CLASSES",
    "CHUNK_TIMES",
    "ChunkAttention",
    "DNCMemory",
    "MemoryState",
    "CmnRecPreTrainedModel",
    "CmnRecModel",
    "CmnRecForNextItemPrediction",
    "CmnRecForUserTask",
    "CmnRecForSequenceClassification",
    "CmnRecForItemRanking",
    "chunk_layout",
    "chunk_tables",
    "chunk_times",
    "allocation_weights",
    "content_weights",
]
