"""Output-layer losses for PeterRec pretraining that never materialise the full logits.

Causal pretraining (NextItNet, Section 3.2 of the paper) predicts the next item at every position
with a softmax over the whole item vocabulary. At the paper's scale (hidden size 256, 645,980 items,
sequence length 100) the batch x length x items logits tensor is 15 GiB per copy at batch 64, which
is why the paper trained with batch 32. The functions here compute the output projection and the
loss together:

- [`linear_cross_entropy`]: the exact full-softmax cross-entropy. On GPU, two Triton kernels keep each
  tile of logits in registers, as FlashAttention does (optional: Triton is not a dependency). Everywhere
  else, a pure-PyTorch path works chunk by chunk over the tokens and computes the gradients inside the
  forward pass, so the backward pass only scales them. See docs/performance.md for measurements.
- [`sampled_softmax_loss`]: the original code's alternative objective, a sampled softmax with the
  usual logQ correction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_REDUCTIONS = ("mean", "sum")
_BACKENDS = ("auto", "torch", "triton")
_SAMPLERS = ("log_uniform", "uniform")


def _check_output_layer_inputs(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor) -> None:
    if hidden.dim() != 2:
        raise ValueError(
            f"hidden must have shape (num_tokens, hidden_size), got {tuple(hidden.shape)}; "
            "flatten the batch and sequence dimensions first."
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"weight must have shape (vocab_size, {hidden.shape[1]}) to match hidden, got {tuple(weight.shape)}."
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}.")
    if labels.dim() != 1 or labels.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"labels must have shape ({hidden.shape[0]},) to match hidden, got {tuple(labels.shape)}."
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be an integer tensor (torch.long), got {labels.dtype}.")


def _select_valid_rows(labels: Tensor, ignore_index: int, vocab_size: int) -> Tensor | None:
    """Indices of the rows that count in the loss, or None when every row counts."""
    valid = labels != ignore_index
    valid_labels = labels[valid]
    if valid_labels.numel() > 0:
        low, high = int(valid_labels.min()), int(valid_labels.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"labels must lie in [0, {vocab_size}) or equal ignore_index={ignore_index}, "
                f"found values in [{low}, {high}]; check that the output layer covers the whole vocabulary."
            )
    if valid_labels.numel() == labels.numel():
        return None
    return valid.nonzero().squeeze(1)


def _use_triton(backend: str, hidden: Tensor, compute_dtype: torch.dtype) -> bool:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}.")
    hidden_size = hidden.shape[1]
    applies = (
        hidden.device.type == "cuda"
        and compute_dtype in (torch.bfloat16, torch.float16)
        and hidden_size >= 16
        and hidden_size & (hidden_size - 1) == 0
    )
    if backend == "triton" and triton is None:
        raise ValueError("backend='triton' needs the `triton` package; install it or use backend='torch'.")
    return backend == "triton" or (backend == "auto" and triton is not None and applies)


def _compute_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


try:
    import triton
    import triton.language as tl
except ImportError:  # Triton is optional: the pure-PyTorch path runs everywhere.
    triton = None

if triton is not None:

    @triton.jit
    def _softmax_forward_kernel(
        hidden_ptr,
        weight_ptr,
        bias_ptr,
        max_ptr,
        sumexp_ptr,
        acc_ptr,
        num_tokens,
        v_per_split,
        HIDDEN: tl.constexpr,
        WITH_GRAD: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        """Online softmax of one block of rows over one split of the vocabulary, in base 2.

        Like FlashAttention's forward pass with queries = hidden states and keys = values = item embeddings:
        it keeps the running max, the running sum of exponentials and, for the gradient of the hidden
        states, the running softmax-weighted sum of the item embeddings.
        """
        pid_n, split = tl.program_id(0), tl.program_id(1)
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < num_tokens
        k = tl.arange(0, HIDDEN)
        h = tl.load(hidden_ptr + rows[:, None] * HIDDEN + k[None, :], mask=row_ok[:, None], other=0.0)
        row_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
        row_sum = tl.zeros((BLOCK_N,), tl.float32)
        acc = tl.zeros((BLOCK_N, HIDDEN), tl.float32)
        v_start = split * v_per_split
        for v0 in range(v_start, v_start + v_per_split, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            w = tl.load(weight_ptr + cols[:, None] * HIDDEN + k[None, :])
            # The bias is pre-scaled by log2(e) and is -inf on the padding columns past the vocabulary.
            logits = tl.dot(h, tl.trans(w)) * 1.4426950408889634 + tl.load(bias_ptr + cols)[None, :]
            new_max = tl.maximum(row_max, tl.max(logits, 1))
            alpha = tl.exp2(row_max - new_max)
            probs = tl.exp2(logits - new_max[:, None])
            row_sum = row_sum * alpha + tl.sum(probs, 1)
            if WITH_GRAD:
                acc = tl.dot(probs.to(w.dtype), w, acc * alpha[:, None])
            row_max = new_max
        out = split * num_tokens + rows
        tl.store(max_ptr + out, row_max, mask=row_ok)
        tl.store(sumexp_ptr + out, row_sum, mask=row_ok)
        if WITH_GRAD:
            acc_out = acc_ptr + out[:, None] * HIDDEN + k[None, :]
            tl.store(acc_out, acc, mask=row_ok[:, None])

    @triton.jit
    def _grad_weight_kernel(
        hidden_ptr,
        weight_ptr,
        bias_ptr,
        lse_ptr,
        grad_weight_ptr,
        grad_bias_ptr,
        num_tokens,
        scale,
        HIDDEN: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        """scale * softmax^T @ hidden and scale * the column sums of softmax, for one block of items."""
        pid_v = tl.program_id(0)
        cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        k = tl.arange(0, HIDDEN)
        w = tl.load(weight_ptr + cols[:, None] * HIDDEN + k[None, :])
        bias = tl.load(bias_ptr + cols)
        acc = tl.zeros((BLOCK_V, HIDDEN), tl.float32)
        bias_acc = tl.zeros((BLOCK_V,), tl.float32)
        for n0 in range(0, num_tokens, BLOCK_N):
            rows = n0 + tl.arange(0, BLOCK_N)
            row_ok = rows < num_tokens
            h = tl.load(hidden_ptr + rows[:, None] * HIDDEN + k[None, :], mask=row_ok[:, None], other=0.0)
            # lse is in base 2; +inf on rows past the end makes their probabilities 0.
            lse = tl.load(lse_ptr + rows, mask=row_ok, other=float("inf"))
            logits = tl.dot(w, tl.trans(h)) * 1.4426950408889634 + bias[:, None]
            probs = tl.exp2(logits - lse[None, :]) * scale
            bias_acc += tl.sum(probs, 1)
            acc = tl.dot(probs.to(h.dtype), h, acc)
        tl.store(grad_weight_ptr + cols[:, None] * HIDDEN + k[None, :], acc)
        tl.store(grad_bias_ptr + cols, bias_acc)


TRITON_BLOCKS = {"forward": (128, 64, 8, 3), "grad_weight": (64, 128, 8, 3)}
"""(BLOCK_N, BLOCK_V, num_warps, num_stages) of each Triton kernel (measured on an H100 at hidden size 256)."""


def _triton_loss_and_grads(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    scale: float,
    chunk_size: int,
    need_hidden: bool,
    need_weight: bool,
    need_bias: bool,
    acc_dtype: torch.dtype,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Fused path on GPU: like FlashAttention, logits live only in registers, one tile at a time.

    Two kernels, 8 * tokens * hidden * items FLOPs in all: an online softmax over the items that also
    accumulates softmax @ weight (the gradient of the hidden states), then, items in parallel,
    softmax^T @ hidden (the gradient of the weight). The one-hot part of d loss / d logits is applied
    outside the kernels as row gathers and scatters. `chunk_size` is unused.
    """
    num_tokens, hidden_size = hidden.shape
    vocab_size = weight.shape[0]
    device = hidden.device
    log2e = 1.0 / math.log(2.0)
    forward_blocks, weight_blocks = TRITON_BLOCKS["forward"], TRITON_BLOCKS["grad_weight"]
    hidden, labels = hidden.contiguous(), labels.contiguous()
    with_grad = need_hidden or need_weight or need_bias

    block_n, block_v, warps, stages = forward_blocks
    row_blocks = triton.cdiv(num_tokens, block_n)
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    # Split the items across programs when there are too few row blocks to fill the GPU (small batches).
    unit = max(forward_blocks[1], weight_blocks[1])  # block sizes are powers of two
    units = triton.cdiv(vocab_size, unit)
    splits = max(1, min(triton.cdiv(2 * sms, max(row_blocks, 1)), units // 8))
    v_per_split = triton.cdiv(units, splits) * unit
    splits = triton.cdiv(units * unit, v_per_split)
    # Pad the items to whole blocks: zero embeddings with a -inf bias contribute nothing.
    padded_weight = torch.zeros(splits * v_per_split, hidden_size, dtype=hidden.dtype, device=device)
    padded_weight[:vocab_size] = weight
    padded_bias = torch.full((splits * v_per_split,), -math.inf, dtype=torch.float32, device=device)
    padded_bias[:vocab_size] = 0.0 if bias is None else bias.float() * log2e
    partial = torch.empty(2, splits, num_tokens, dtype=torch.float32, device=device)
    partial_acc = torch.empty(
        splits, num_tokens, hidden_size if with_grad else 1, dtype=torch.float32, device=device
    )
    if num_tokens > 0:
        _softmax_forward_kernel[(row_blocks, splits)](
            hidden,
            padded_weight,
            padded_bias,
            partial[0],
            partial[1],
            partial_acc,
            num_tokens,
            v_per_split,
            HIDDEN=hidden_size,
            WITH_GRAD=with_grad,
            BLOCK_N=block_n,
            BLOCK_V=block_v,
            num_warps=warps,
            num_stages=stages,
        )
    # Combine the splits; lse2 is the base-2 logsumexp of each row.
    row_max = partial[0].amax(0)
    split_weights = torch.exp2(partial[0] - row_max)
    row_sum = (partial[1] * split_weights).sum(0)
    lse2 = row_max + torch.log2(row_sum)
    target_weight = weight.index_select(0, labels).float()
    target = (hidden.float() * target_weight).sum(1)
    if bias is not None:
        target += bias.float().index_select(0, labels)
    total = (lse2 / log2e - target).sum().to(acc_dtype)

    grad_hidden = grad_weight = grad_bias = None
    if need_hidden:
        softmax_weighted = (partial_acc * split_weights.unsqueeze(2)).sum(0) / row_sum.unsqueeze(1)
        grad_hidden = (softmax_weighted - target_weight).mul_(scale)
    if need_weight or need_bias:
        block_n, block_v, warps, stages = weight_blocks
        grad_weight = torch.empty(padded_weight.shape, dtype=torch.float32, device=device)
        grad_bias = torch.empty(padded_weight.shape[0], dtype=torch.float32, device=device)
        _grad_weight_kernel[(padded_weight.shape[0] // block_v,)](
            hidden,
            padded_weight,
            padded_bias,
            lse2,
            grad_weight,
            grad_bias,
            num_tokens,
            scale,
            HIDDEN=hidden_size,
            BLOCK_N=block_n,
            BLOCK_V=block_v,
            num_warps=warps,
            num_stages=stages,
        )
        grad_weight = grad_weight[:vocab_size].index_add_(0, labels, hidden.float(), alpha=-scale)
        grad_bias = grad_bias[:vocab_size].index_add_(
            0, labels, torch.full_like(labels, -scale, dtype=torch.float32)
        )
        grad_weight = grad_weight if need_weight else None
        grad_bias = grad_bias if need_bias else None
    return total, grad_hidden, grad_weight, grad_bias


CPU_CHUNK_ELEMENTS = 1 << 19
"""Logits per chunk on CPU (2 MiB in fp32, about one core's L2 cache): each chunk makes five passes over its
logits, which run several times faster from cache than from memory (docs/performance.md, CPU section)."""
CPU_MIN_CHUNK_ROWS = 32
"""Fewest rows per chunk on CPU, so that the matrix products stay efficient over very large vocabularies."""


def chunk_rows(chunk_size: int, vocab_size: int, device: torch.device) -> int:
    """Rows of logits per chunk: `chunk_size`, and on CPU no more than fit `CPU_CHUNK_ELEMENTS`."""
    if device.type != "cpu":
        return chunk_size
    return min(chunk_size, max(CPU_MIN_CHUNK_ROWS, CPU_CHUNK_ELEMENTS // vocab_size))


def _chunked_loss_and_grads(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    scale: float,
    chunk_size: int,
    need_hidden: bool,
    need_weight: bool,
    need_bias: bool,
    acc_dtype: torch.dtype,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Pure-PyTorch path: summed loss and the scaled gradients, at most `chunk_size` rows of logits at a time.

    As in the Triton path, each chunk only exponentiates its logits once: the unnormalised softmax
    `exp(logits - max)` feeds the matrix products, whose (rows, hidden) results are divided by the row sums
    instead of the (rows, items) chunk, and the one-hot part of `softmax - one_hot(label)` is applied once at the
    end as row gathers and scatters. Fewer passes over the logits than `F.cross_entropy`'s backward.
    """
    num_tokens, hidden_size = hidden.shape
    device = hidden.device
    rows = chunk_rows(chunk_size, weight.shape[0], device)
    total = torch.zeros((), dtype=acc_dtype, device=device)
    grad_hidden = (
        torch.empty(num_tokens, hidden_size, dtype=acc_dtype, device=device) if need_hidden else None
    )
    grad_weight = torch.zeros(weight.shape, dtype=acc_dtype, device=device) if need_weight else None
    grad_bias = torch.zeros(weight.shape[0], dtype=acc_dtype, device=device) if need_bias else None
    for start in range(0, num_tokens, rows):
        end = min(start + rows, num_tokens)
        h, y = hidden[start:end], labels[start:end]
        # The matmul accumulates in fp32; the softmax and its sums run in fp32 (or fp64).
        logits = (h @ weight.T).to(acc_dtype)
        if bias is not None:
            logits += bias
        row_max = logits.amax(1, keepdim=True)
        target = logits.gather(1, y.unsqueeze(1))
        exp = logits.sub_(row_max).exp_()
        row_sum = exp.sum(1, keepdim=True)
        total += (row_max + row_sum.log() - target).sum()
        if not (need_hidden or need_weight or need_bias):
            continue
        inverse_sum = row_sum.reciprocal()
        if need_bias:
            grad_bias.addmv_(exp.T, inverse_sum.squeeze(1))
        exp = exp.to(hidden.dtype)
        if need_hidden:
            grad_hidden[start:end] = (exp @ weight).to(acc_dtype).mul_(inverse_sum)
        if need_weight:
            normalized_h = (h.to(acc_dtype) * inverse_sum).to(hidden.dtype)
            grad_weight += exp.T @ normalized_h
    # The one-hot part of d loss / d logits, then the reduction's scale, on the (tokens or items, hidden) results.
    if need_hidden:
        grad_hidden.sub_(weight.index_select(0, labels)).mul_(scale)
    if need_weight:
        grad_weight.index_add_(0, labels, hidden.to(acc_dtype), alpha=-1.0).mul_(scale)
    if need_bias:
        ones = torch.ones(num_tokens, dtype=acc_dtype, device=device)
        grad_bias.index_add_(0, labels, ones, alpha=-1.0).mul_(scale)
    return total, grad_hidden, grad_weight, grad_bias


class _LinearCrossEntropyFunction(torch.autograd.Function):
    """Cross-entropy of `hidden @ weight.T + bias`, with the gradients computed during the forward pass."""

    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        labels: Tensor,
        ignore_index: int,
        chunk_size: int,
        reduction: str,
        compute_dtype: torch.dtype,
        use_triton: bool,
    ) -> Tensor:
        num_tokens, hidden_size = hidden.shape
        rows = _select_valid_rows(labels, ignore_index, weight.shape[0])
        valid_hidden = hidden if rows is None else hidden.index_select(0, rows)
        valid_labels = labels if rows is None else labels.index_select(0, rows)
        num_valid = valid_labels.shape[0]
        scale = 1.0 / max(num_valid, 1) if reduction == "mean" else 1.0

        needs_grad = ctx.needs_input_grad
        need_hidden, need_weight = needs_grad[0], needs_grad[1]
        need_bias = bias is not None and needs_grad[2]
        device = hidden.device
        # fp32 accumulation, or fp64 when the inputs are fp64.
        acc_dtype = torch.promote_types(compute_dtype, torch.float32)

        with torch.autocast(device.type, enabled=False):
            w = weight.to(compute_dtype)
            b = None if bias is None else bias.to(acc_dtype)
            h = valid_hidden.to(compute_dtype)
            compute = _triton_loss_and_grads if use_triton else _chunked_loss_and_grads
            total, grad_valid_hidden, grad_weight, grad_bias = compute(
                h, w, b, valid_labels, scale, chunk_size, need_hidden, need_weight, need_bias, acc_dtype
            )

        grad_hidden = None
        if need_hidden:
            if rows is None:
                grad_hidden = grad_valid_hidden
            else:
                grad_hidden = torch.zeros(num_tokens, hidden_size, dtype=acc_dtype, device=device)
                grad_hidden.index_copy_(0, rows, grad_valid_hidden)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.input_dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total * scale

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        saved = ctx.saved_tensors
        grads = [
            None if grad is None else (grad * grad_loss).to(dtype)
            for grad, dtype in zip(saved, ctx.input_dtypes, strict=True)
        ]
        return (*grads, None, None, None, None, None, None)


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    chunk_size: int = 4096,
    reduction: str = "mean",
    backend: str = "auto",
) -> Tensor:
    """Softmax cross-entropy of `hidden @ weight.T + bias` without materialising the full logits.

    Equal, in loss and in the gradients with respect to `hidden`, `weight` and `bias`, to
    `F.cross_entropy(hidden @ weight.T + bias, labels, ignore_index=ignore_index, reduction=reduction)`,
    except that a batch whose labels are all `ignore_index` gives a zero loss and zero gradients
    (where the plain computation gives NaN). Only `chunk_size` rows of logits exist at any time.

    Under autocast the matrix products run in the autocast dtype (bf16 on GPU) with fp32
    accumulation; the logsumexp, the softmax and the gradient accumulators are always fp32
    (fp64 for fp64 inputs).

    Args:
        hidden (`torch.Tensor` of shape `(num_tokens, hidden_size)`): final hidden states.
        weight (`torch.Tensor` of shape `(vocab_size, hidden_size)`): output item embeddings.
        bias (`torch.Tensor` of shape `(vocab_size,)`, *optional*): output bias.
        labels (`torch.LongTensor` of shape `(num_tokens,)`): target item ids.
        ignore_index (`int`, defaults to -100): label value of rows that do not count.
        chunk_size (`int`, defaults to 4096): rows of logits computed at once; memory grows as
            about `chunk_size * vocab_size * 8` bytes in bf16 (4 in fp32). On CPU, fewer rows where their
            logits would outgrow the cache (`chunk_rows`). Unused by the Triton backend.
        reduction (`str`, defaults to `"mean"`): `"mean"` over the counted rows, or `"sum"`.
        backend (`str`, defaults to `"auto"`): `"torch"` (chunked, any device), `"triton"` (fused
            kernels that keep each tile of logits in registers; CUDA, bf16/fp16 compute, hidden size a
            power of two), or `"auto"`: Triton where it applies and is installed, else torch.

    Returns:
        `torch.Tensor`: the scalar loss, in fp32 (fp64 for fp64 inputs).
    """
    _check_output_layer_inputs(hidden, weight, bias, labels)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    compute_dtype = _compute_dtype(hidden.device.type, hidden.dtype)
    use_triton = _use_triton(backend, hidden, compute_dtype)
    if not torch.is_grad_enabled():
        # Evaluation: detached inputs tell the function to skip the gradient work.
        hidden, weight = hidden.detach(), weight.detach()
        bias = None if bias is None else bias.detach()
    return _LinearCrossEntropyFunction.apply(
        hidden, weight, bias, labels, ignore_index, chunk_size, reduction, compute_dtype, use_triton
    )


def _sample_candidates(
    num_sampled: int, vocab_size: int, sampler: str, device: torch.device, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Draw candidate ids with replacement; return them with log(expected count of each draw)."""
    sample_device = generator.device if generator is not None else device
    if sampler == "uniform":
        candidates = torch.randint(vocab_size, (num_sampled,), generator=generator, device=sample_device)
        candidates = candidates.to(device)
        log_q = torch.full((num_sampled,), -math.log(vocab_size), device=device)
    else:
        # Log-uniform (Zipfian) over ids: P(k) = log((k + 2) / (k + 1)) / log(V + 1), by inverse CDF.
        uniform = torch.rand(num_sampled, generator=generator, device=sample_device, dtype=torch.float64)
        candidates = (torch.exp(uniform * math.log(vocab_size + 1)).floor().long() - 1).clamp_(
            0, vocab_size - 1
        )
        candidates = candidates.to(device)
        log_q = _log_uniform_log_prob(candidates, vocab_size)
    return candidates, log_q + math.log(num_sampled)


def _log_uniform_log_prob(ids: Tensor, vocab_size: int) -> Tensor:
    ids = ids.double()
    return (torch.log1p(1.0 / (ids + 1.0)) / math.log(vocab_size + 1)).log().float()


def sampled_softmax_loss(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    num_sampled: int,
    generator: torch.Generator | None = None,
    *,
    ignore_index: int = -100,
    sampler: str = "log_uniform",
    remove_accidental_hits: bool = True,
) -> Tensor:
    """Sampled softmax loss, the original code's alternative pretraining objective.

    One set of `num_sampled` candidate items is drawn with replacement for the whole batch, from
    a log-uniform (Zipfian) distribution over item ids (the original code's sampler, which
    assumes that lower ids are more frequent) or a uniform one. Each row scores its true item
    against the candidates, and every logit is corrected by subtracting the log of the item's
    expected count among the draws (logQ correction), so that the loss is an estimate of the full
    softmax cross-entropy. Candidates equal to a row's true item are removed from that row.

    Args:
        hidden (`torch.Tensor` of shape `(num_tokens, hidden_size)`): final hidden states.
        weight (`torch.Tensor` of shape `(vocab_size, hidden_size)`): output item embeddings.
        bias (`torch.Tensor` of shape `(vocab_size,)`, *optional*): output bias.
        labels (`torch.LongTensor` of shape `(num_tokens,)`): target item ids.
        num_sampled (`int`): number of candidates drawn per step.
        generator (`torch.Generator`, *optional*): random generator for the draws.
        ignore_index (`int`, defaults to -100): label value of rows that do not count.
        sampler (`str`, defaults to `"log_uniform"`): `"log_uniform"` or `"uniform"`.
        remove_accidental_hits (`bool`, defaults to `True`): mask candidates equal to the true item.

    Returns:
        `torch.Tensor`: the scalar mean loss over the counted rows (0 when no row counts).
    """
    _check_output_layer_inputs(hidden, weight, bias, labels)
    vocab_size = weight.shape[0]
    if num_sampled < 1:
        raise ValueError(f"num_sampled must be a positive integer, got {num_sampled}.")
    if sampler not in _SAMPLERS:
        raise ValueError(f"sampler must be one of {_SAMPLERS}, got {sampler!r}.")
    rows = _select_valid_rows(labels, ignore_index, vocab_size)
    if rows is not None:
        hidden, labels = hidden.index_select(0, rows), labels.index_select(0, rows)

    candidates, log_expected = _sample_candidates(num_sampled, vocab_size, sampler, hidden.device, generator)
    if sampler == "uniform":
        true_log_expected = torch.full_like(labels, -math.log(vocab_size), dtype=torch.float32)
    else:
        true_log_expected = _log_uniform_log_prob(labels, vocab_size)
    true_log_expected = true_log_expected + math.log(num_sampled)

    # Rows are gathered with index_select: its backward sums repeated ids in a fixed order, whereas indexing's
    # (index_put_ with accumulate) sums them in thread order on CPU, so that two runs would differ.
    true_logits = (hidden * weight.index_select(0, labels)).sum(-1).float() - true_log_expected
    sampled_logits = (hidden @ weight.index_select(0, candidates).T).float() - log_expected
    if bias is not None:
        true_logits = true_logits + bias.index_select(0, labels).float()
        sampled_logits = sampled_logits + bias.index_select(0, candidates).float()
    if remove_accidental_hits:
        hits = labels.unsqueeze(1) == candidates.unsqueeze(0)
        sampled_logits = sampled_logits.masked_fill(hits, torch.finfo(sampled_logits.dtype).min)
    logits = torch.cat([true_logits.unsqueeze(1), sampled_logits], dim=1)
    target = torch.zeros_like(labels)
    return F.cross_entropy(logits, target, reduction="sum") / max(labels.shape[0], 1)


__all__ = ["linear_cross_entropy", "sampled_softmax_loss"]
