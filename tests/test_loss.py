import math

import pytest
import torch
import torch.nn.functional as F

from modeling_peterrec import loss_peterrec
from modeling_peterrec.loss_peterrec import (
    _log_uniform_log_prob,
    _sample_candidates,
    chunk_rows,
    linear_cross_entropy,
    sampled_softmax_loss,
)

# fp32 tolerances: the chunked and the plain computation sum the same terms in a different order.
FP32_TOL = {"rtol": 1e-5, "atol": 1e-6}
FP64_TOL = {"rtol": 1e-12, "atol": 1e-12}


def make_inputs(num_tokens=37, hidden_size=8, vocab_size=23, dtype=torch.float32, seed=0, with_bias=True):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(num_tokens, hidden_size, generator=generator, dtype=dtype, requires_grad=True)
    weight = torch.randn(vocab_size, hidden_size, generator=generator, dtype=dtype, requires_grad=True)
    bias = (
        torch.randn(vocab_size, generator=generator, dtype=dtype, requires_grad=True) if with_bias else None
    )
    labels = torch.randint(vocab_size, (num_tokens,), generator=generator)
    return hidden, weight, bias, labels


def plain_loss(hidden, weight, bias, labels, **kwargs):
    logits = hidden @ weight.T
    if bias is not None:
        logits = logits + bias
    return F.cross_entropy(logits, labels, **kwargs)


def loss_and_grads(loss_fn, hidden, weight, bias, labels, **kwargs):
    params = [t for t in (hidden, weight, bias) if t is not None]
    loss = loss_fn(hidden, weight, bias, labels, **kwargs)
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), grads


def assert_matches_plain(inputs, tol, chunk_size=4096, **kwargs):
    expected_loss, expected_grads = loss_and_grads(plain_loss, *inputs, **kwargs)
    loss, grads = loss_and_grads(linear_cross_entropy, *inputs, chunk_size=chunk_size, **kwargs)
    torch.testing.assert_close(loss, expected_loss.to(loss.dtype), **tol)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert grad.dtype == expected.dtype
        torch.testing.assert_close(grad, expected, **tol)


def test_hand_computed_loss_and_bias_gradient():
    # logits = bias = [0, ln 3] for every row: loss = ln(1 + 3) - 0, softmax = [1/4, 3/4].
    hidden = torch.zeros(2, 4, requires_grad=True)
    weight = torch.zeros(2, 4, requires_grad=True)
    bias = torch.tensor([0.0, math.log(3.0)], requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, bias, torch.tensor([0, 0]))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(4.0), abs=1e-6)
    torch.testing.assert_close(bias.grad, torch.tensor([-0.75, 0.75]))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, FP64_TOL), (torch.float32, FP32_TOL)])
def test_loss_and_all_gradients_equal_plain_cross_entropy(dtype, tol):
    assert_matches_plain(make_inputs(dtype=dtype), tol)


@pytest.mark.parametrize("chunk_size", [1, 5, 36, 37, 38])
def test_chunk_boundaries_do_not_change_the_result(chunk_size):
    assert_matches_plain(make_inputs(num_tokens=37, dtype=torch.float64), FP64_TOL, chunk_size=chunk_size)


def test_cpu_chunks_are_capped_to_the_cache_budget_and_keep_at_least_the_minimum_rows():
    cpu = torch.device("cpu")
    assert chunk_rows(4096, 3710, cpu) == loss_peterrec.CPU_CHUNK_ELEMENTS // 3710
    assert chunk_rows(64, 3710, cpu) == 64
    assert chunk_rows(4096, 10**8, cpu) == loss_peterrec.CPU_MIN_CHUNK_ROWS
    assert chunk_rows(4096, 3710, torch.device("meta")) == 4096


def test_cpu_chunk_cap_does_not_change_the_result(monkeypatch):
    # 23 items: a budget of 69 logits leaves 3 rows per chunk, so 37 tokens make 13 chunks, the last one short.
    monkeypatch.setattr(loss_peterrec, "CPU_CHUNK_ELEMENTS", 69)
    monkeypatch.setattr(loss_peterrec, "CPU_MIN_CHUNK_ROWS", 1)
    assert chunk_rows(4096, 23, torch.device("cpu")) == 3
    assert_matches_plain(make_inputs(num_tokens=37, dtype=torch.float64), FP64_TOL)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, FP64_TOL), (torch.float32, FP32_TOL)])
def test_logits_far_apart_keep_the_loss_and_gradients_exact(dtype, tol):
    # Logits spread over hundreds of units, as a trained model's are: the softmax underflows for most items.
    hidden, weight, bias, labels = make_inputs(dtype=dtype)
    with torch.no_grad():
        hidden.mul_(30.0)
    assert_matches_plain((hidden, weight, bias, labels), tol, chunk_size=10)


def test_sum_reduction_equals_plain_sum():
    assert_matches_plain(make_inputs(dtype=torch.float64), FP64_TOL, chunk_size=10, reduction="sum")


def test_without_bias_equals_plain_cross_entropy():
    assert_matches_plain(make_inputs(dtype=torch.float64, with_bias=False), FP64_TOL, chunk_size=10)


def test_ignored_rows_are_excluded_from_loss_and_gradients():
    hidden, weight, bias, labels = make_inputs(dtype=torch.float64)
    labels[::3] = -100
    assert_matches_plain((hidden, weight, bias, labels), FP64_TOL, chunk_size=7, ignore_index=-100)
    _, (grad_hidden, _, _) = loss_and_grads(linear_cross_entropy, hidden, weight, bias, labels, chunk_size=7)
    assert torch.count_nonzero(grad_hidden[::3]) == 0
    assert torch.count_nonzero(grad_hidden[1::3]) == grad_hidden[1::3].numel()


def test_custom_ignore_index():
    hidden, weight, bias, labels = make_inputs(dtype=torch.float64)
    labels[:5] = 0
    assert_matches_plain((hidden, weight, bias, labels), FP64_TOL, chunk_size=8, ignore_index=0)


def test_all_ignored_batch_gives_zero_loss_and_zero_gradients():
    hidden, weight, bias, labels = make_inputs()
    labels = torch.full_like(labels, -100)
    loss, grads = loss_and_grads(linear_cross_entropy, hidden, weight, bias, labels)
    assert loss.item() == 0.0
    for grad in grads:
        assert torch.isfinite(grad).all()
        assert torch.count_nonzero(grad) == 0


def test_upstream_gradient_scales_all_gradients():
    hidden, weight, bias, labels = make_inputs(dtype=torch.float64)
    _, grads = loss_and_grads(linear_cross_entropy, hidden, weight, bias, labels)
    scaled = 2.5 * linear_cross_entropy(hidden, weight, bias, labels)
    for grad, scaled_grad in zip(grads, torch.autograd.grad(scaled, (hidden, weight, bias)), strict=True):
        torch.testing.assert_close(scaled_grad, 2.5 * grad, **FP64_TOL)


def test_only_inputs_that_require_grad_get_gradients():
    hidden, weight, bias, labels = make_inputs(dtype=torch.float64)
    frozen_weight = weight.detach()
    loss = linear_cross_entropy(hidden, frozen_weight, bias, labels)
    loss.backward()
    expected = plain_loss(hidden.detach().requires_grad_(), frozen_weight, bias.detach(), labels)
    torch.testing.assert_close(loss, expected, **FP64_TOL)
    assert hidden.grad is not None and frozen_weight.grad is None


def test_loss_under_no_grad_equals_loss_with_grad():
    hidden, weight, bias, labels = make_inputs(dtype=torch.float64)
    with torch.no_grad():
        evaluated = linear_cross_entropy(hidden, weight, bias, labels, chunk_size=5)
    assert not evaluated.requires_grad
    torch.testing.assert_close(evaluated, plain_loss(hidden, weight, bias, labels).detach(), **FP64_TOL)


def test_bf16_autocast_keeps_fp32_gradients_close_to_fp32():
    hidden, weight, bias, labels = make_inputs(num_tokens=64, hidden_size=32, vocab_size=50)
    expected_loss, expected_grads = loss_and_grads(plain_loss, hidden, weight, bias, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grads = loss_and_grads(linear_cross_entropy, hidden, weight, bias, labels, chunk_size=16)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected_loss, rtol=2e-2, atol=2e-2)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert grad.dtype == torch.float32
        assert (grad - expected).norm() / expected.norm() < 2e-2


@pytest.mark.parametrize(
    "change,message",
    [
        ({"labels": torch.tensor([0, 23])}, "labels must lie in"),
        ({"labels": torch.tensor([0, -1])}, "labels must lie in"),
        ({"labels": torch.tensor([0])}, "labels must have shape"),
        ({"weight": torch.zeros(23, 5)}, "weight must have shape"),
        ({"bias": torch.zeros(22)}, "bias must have shape"),
        ({"reduction": "none"}, "reduction must be one of"),
        ({"chunk_size": 0}, "chunk_size must be"),
    ],
)
def test_bad_input_is_a_clear_error(change, message):
    kwargs = {
        "hidden": torch.zeros(2, 8),
        "weight": torch.zeros(23, 8),
        "bias": torch.zeros(23),
        "labels": torch.tensor([0, 1]),
    }
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        linear_cross_entropy(**kwargs)


def test_log_uniform_probabilities_sum_to_one_and_match_draws():
    vocab_size = 10
    probs = _log_uniform_log_prob(torch.arange(vocab_size), vocab_size).double().exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert probs[0].item() == pytest.approx(math.log(2) / math.log(11), abs=1e-6)
    draws, log_expected = _sample_candidates(
        200_000, vocab_size, "log_uniform", torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    frequencies = torch.bincount(draws, minlength=vocab_size).double() / draws.numel()
    torch.testing.assert_close(frequencies, probs, rtol=0, atol=5e-3)
    torch.testing.assert_close(log_expected[:3], (probs[draws[:3]] * 200_000).log().float())


def test_uniform_sampled_softmax_equals_cross_entropy_over_true_and_sampled_items():
    # With a uniform sampler the logQ correction shifts every logit equally, so it cancels.
    hidden, weight, bias, labels = make_inputs(dtype=torch.float32)
    loss = sampled_softmax_loss(
        hidden, weight, bias, labels, 6, torch.Generator().manual_seed(3), sampler="uniform"
    )
    candidates = torch.randint(23, (6,), generator=torch.Generator().manual_seed(3))
    logits = hidden @ weight.T + bias
    sampled = logits[:, candidates].masked_fill(labels[:, None] == candidates[None, :], -math.inf)
    expected = (torch.logsumexp(torch.cat([logits.gather(1, labels[:, None]), sampled], 1), 1)).mean() - (
        logits.gather(1, labels[:, None]).mean()
    )
    torch.testing.assert_close(loss, expected, **FP32_TOL)


@pytest.mark.parametrize("sampler", ["log_uniform", "uniform"])
def test_sampled_softmax_is_finite_and_its_gradient_flows(sampler):
    hidden, weight, bias, labels = make_inputs()
    labels[:4] = -100
    loss = sampled_softmax_loss(
        hidden, weight, bias, labels, 5, torch.Generator().manual_seed(0), sampler=sampler
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert loss.item() > 0
    for param in (hidden, weight, bias):
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
    assert torch.count_nonzero(hidden.grad[:4]) == 0


def test_sampled_softmax_gradients_are_equal_run_to_run_with_two_threads():
    # Many tokens share each label: summing their rows in thread order made two identical steps differ.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        hidden, weight, bias, _ = make_inputs(num_tokens=3200, hidden_size=64, vocab_size=3400)
        labels = torch.randint(400, (3200,), generator=torch.Generator().manual_seed(1))
        gradients = []
        for _ in range(10):
            weight.grad = bias.grad = None
            sampled_softmax_loss(
                hidden, weight, bias, labels, 512, torch.Generator().manual_seed(0)
            ).backward()
            gradients.append((weight.grad.clone(), bias.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    for weight_grad, bias_grad in gradients[1:]:
        assert torch.equal(weight_grad, gradients[0][0]) and torch.equal(bias_grad, gradients[0][1])


def test_sampled_softmax_of_an_all_ignored_batch_is_zero():
    hidden, weight, bias, labels = make_inputs()
    loss = sampled_softmax_loss(hidden, weight, bias, torch.full_like(labels, -100), 5)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(hidden.grad) == 0 and torch.isfinite(weight.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernels need a CUDA GPU")
@pytest.mark.parametrize("num_tokens,vocab_size", [(300, 5000), (7, 70_000)])
def test_triton_kernels_in_bf16_stay_close_to_fp32(num_tokens, vocab_size):
    pytest.importorskip("triton")
    hidden, weight, bias, labels = make_inputs(num_tokens, 256, vocab_size, seed=1)
    inputs = [
        t.detach().cuda().mul(scale).requires_grad_()
        for t, scale in ((hidden, 1.0), (weight, 0.05), (bias, 1.0))
    ]
    labels = labels.cuda()
    labels[::5] = -100
    expected_loss, expected_grads = loss_and_grads(plain_loss, *inputs, labels)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, grads = loss_and_grads(linear_cross_entropy, *inputs, labels, backend="triton")
    torch.testing.assert_close(loss, expected_loss, rtol=2e-3, atol=2e-3)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert (grad - expected).norm() / expected.norm() < 1e-2
