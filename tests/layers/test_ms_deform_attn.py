"""Tests of the multi-scale deformable attention op: every backend against the grid_sample
reference (float64, forward and backward), gradcheck, the shared-value variant, edge cases and
argument errors."""
import importlib
import math
import warnings

import pytest
import torch

from d2pose.layers import (
    compiled_backends,
    ms_deform_attn,
    ms_deform_attn_shared,
    ms_deform_attn_shared_torch,
    ms_deform_attn_torch,
)

msda_module = importlib.import_module("d2pose.layers.ms_deform_attn")

HAS_CPP = "cpp" in compiled_backends()
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="d2pose._C is not built")
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and "cuda" in compiled_backends()), reason="needs a GPU and CUDA kernels"
)


def make_inputs(N=2, Lq=5, M=3, D=4, shapes=((6, 5), (3, 4), (1, 1)), P=2, dtype=torch.float64, shared=False,
                spread=(-0.2, 1.2), seed=0, device="cpu"):
    """Random inputs; sampling locations spread beyond [0, 1] so some samples fall outside."""
    g = torch.Generator().manual_seed(seed)
    ss = torch.tensor(shapes, dtype=torch.long).view(-1, 2)
    sizes = ss[:, 0] * ss[:, 1]
    lsi = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    S, L = int(sizes.sum()), ss.shape[0]
    vshape = (N, S, D) if shared else (N, S, M, D)
    value = torch.randn(vshape, generator=g, dtype=dtype)
    lo, hi = spread
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=dtype) * (hi - lo) + lo
    attn = torch.rand(N, Lq, M, L, P, generator=g, dtype=dtype)
    return [t.to(device) for t in (value, ss, lsi, loc, attn)]


def run(fn, inputs, backend, grad_out_seed=1):
    value, ss, lsi, loc, attn = [t.clone() for t in inputs]
    for t in (value, loc, attn):
        t.requires_grad_(True)
    out = fn(value, ss, lsi, loc, attn, backend=backend)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_out_seed), dtype=torch.float64)
    out.backward(g.to(device=out.device, dtype=out.dtype))
    return out.detach(), value.grad, loc.grad, attn.grad


def assert_all_close(a, b, tol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x.cpu(), y.cpu(), rtol=tol, atol=tol)


def naive_msda(value, ss, lsi, loc, attn):
    """Loop-by-loop bilinear sampling with the kernel convention (h = y*H - 0.5), for hand checks."""
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = loc.shape
    out = torch.zeros(N, Lq, M, D, dtype=value.dtype)
    for n in range(N):
        for q in range(Lq):
            for m in range(M):
                for l in range(L):
                    H, W = ss[l].tolist()
                    start = int(lsi[l])
                    for p in range(P):
                        x, y = loc[n, q, m, l, p].tolist()
                        h, w = y * H - 0.5, x * W - 0.5
                        h0, w0 = math.floor(h), math.floor(w)
                        acc = torch.zeros(D, dtype=value.dtype)
                        for dh, dw in ((0, 0), (0, 1), (1, 0), (1, 1)):
                            hh, ww = h0 + dh, w0 + dw
                            if 0 <= hh < H and 0 <= ww < W:
                                wt = (1 - abs(h - hh)) * (1 - abs(w - ww))
                                acc += wt * value[n, start + hh * W + ww, m]
                        out[n, q, m] += attn[n, q, m, l, p] * acc
    return out.view(N, Lq, M * D)


def test_reference_matches_hand_loop():
    value, ss, lsi, loc, attn = make_inputs(N=1, Lq=3, M=2, D=3)
    torch.testing.assert_close(ms_deform_attn_torch(value, ss, lsi, loc, attn), naive_msda(value, ss, lsi, loc, attn))


def test_hand_computed_value():
    # one 2x2 map, one sample exactly between the four pixels: the mean of the four values
    value = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 4, 1, 1)
    ss = torch.tensor([[2, 2]])
    lsi = torch.tensor([0])
    loc = torch.full((1, 1, 1, 1, 1, 2), 0.5, dtype=torch.float64)
    attn = torch.full((1, 1, 1, 1, 1), 2.0, dtype=torch.float64)
    for backend in ["torch"] + (["cpp"] if HAS_CPP else []):
        out = ms_deform_attn(value, ss, lsi, loc, attn, backend=backend)
        assert out.item() == pytest.approx(2.0 * 2.5)
    # at the centre of pixel (0, 1): x = 1.5 / 2, y = 0.5 / 2 -> exactly value 2 (weight 1)
    loc = torch.tensor([0.75, 0.25], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    for backend in ["torch"] + (["cpp"] if HAS_CPP else []):
        assert ms_deform_attn(value, ss, lsi, loc, attn, backend=backend).item() == pytest.approx(4.0)


@needs_cpp
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(N=1, Lq=1, M=1, D=1, shapes=((1, 1),), P=1),  # one level, 1x1 map
        dict(N=3, Lq=7, M=4, D=8, shapes=((9, 7), (5, 4), (3, 2), (1, 1)), P=4),
        dict(spread=(-3.0, 4.0)),  # most samples outside every map
        dict(spread=(0.0, 1.0), shapes=((1, 1), (2, 1), (1, 3))),  # thin maps
    ],
)
def test_cpp_matches_reference_float64(kw):
    inputs = make_inputs(**kw)
    assert_all_close(run(ms_deform_attn, inputs, "cpp"), run(ms_deform_attn, inputs, "torch"), 1e-9)


@needs_cpp
def test_cpp_float32_close_to_float64_reference():
    inputs = make_inputs(dtype=torch.float32, N=2, Lq=9, M=8, D=32, P=4, shapes=((16, 12), (8, 6), (4, 3), (2, 2)))
    ref = run(ms_deform_attn, [t.double() if t.is_floating_point() else t for t in inputs], "torch")
    fast = run(ms_deform_attn, inputs, "cpp")
    assert_all_close([f.double() for f in fast], ref, 1e-4)


@needs_cpp
def test_cpp_large_value_uses_recycled_gradient_buffer():
    # value of 32 MB (> the 16 MB pool threshold): twice in a row, gradients must be exact both times
    inputs = make_inputs(N=2, Lq=3, M=8, D=32, shapes=((128, 128),), P=2, dtype=torch.float32)
    ref = run(ms_deform_attn, inputs, "torch")
    for _ in range(3):
        assert_all_close(run(ms_deform_attn, inputs, "cpp"), ref, 1e-4)


@pytest.mark.parametrize("fn, backend, sizes", [
    pytest.param(ms_deform_attn, "cpp", dict(M=2, D=3, shapes=((4, 3), (2, 2))), marks=needs_cpp, id="cpp"),
    pytest.param(ms_deform_attn_shared, "cpp", dict(M=3, D=4, shapes=((4, 3), (2, 2)), shared=True), marks=needs_cpp,
                 id="cpp-shared"),
    pytest.param(ms_deform_attn, "torch", dict(M=2, D=2, shapes=((3, 3), (1, 2))), id="reference"),
])
def test_gradcheck(fn, backend, sizes):
    value, ss, lsi, loc, attn = make_inputs(N=1, Lq=2, P=2, spread=(0.05, 0.95), **sizes)
    for t in (value, loc, attn):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, l, a: fn(v, ss, lsi, l, a, backend=backend), (value, loc, attn), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("backend", ["torch"] + (["cpp"] if HAS_CPP else []))
def test_shared_equals_expanded_value(backend):
    inputs = make_inputs(shared=True, M=4, D=6, N=3)
    value, ss, lsi, loc, attn = inputs
    M = loc.shape[2]
    shared = run(ms_deform_attn_shared, inputs, backend)
    # expand the value over the heads (a view): gradients of the copies sum back into the value
    expanded_inputs = [value, ss, lsi, loc, attn]

    def expanded(v, ss_, lsi_, l, a, backend):
        return ms_deform_attn(v[:, :, None].expand(-1, -1, M, -1), ss_, lsi_, l, a, backend=backend).view(
            v.shape[0], l.shape[1], M, v.shape[2]
        )

    ref = run(expanded, expanded_inputs, "torch")
    assert_all_close(shared, ref, 1e-9)


@needs_cpp
@pytest.mark.parametrize("N", [1, 2, 5])
def test_shared_cpp_matches_shared_reference(N):
    # N=1 exercises the two-pass backward (fewer tasks than threads), N>1 the fused one
    inputs = make_inputs(shared=True, N=N, M=8, D=40, Lq=6, P=3)
    assert_all_close(run(ms_deform_attn_shared, inputs, "cpp"), run(ms_deform_attn_shared, inputs, "torch"), 1e-9)


@needs_cpp
def test_single_thread_equals_multi_thread():
    inputs = make_inputs(N=4, M=4, D=8, Lq=9)
    multi = run(ms_deform_attn, inputs, "cpp")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run(ms_deform_attn, inputs, "cpp")
    finally:
        torch.set_num_threads(threads)
    assert_all_close(single, multi, 1e-12)


@needs_cpp
def test_non_contiguous_inputs():
    value, ss, lsi, loc, attn = make_inputs(N=2, M=3, D=4)
    # same numbers, non-contiguous layouts
    value_nc = value.transpose(1, 2).contiguous().transpose(1, 2)
    loc_nc = loc.permute(5, 0, 1, 2, 3, 4).contiguous().permute(1, 2, 3, 4, 5, 0)
    attn_nc = attn.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (value_nc.is_contiguous() or loc_nc.is_contiguous() or attn_nc.is_contiguous())
    fast = run(ms_deform_attn, [value_nc, ss, lsi, loc_nc, attn_nc], "cpp")
    assert_all_close(fast, run(ms_deform_attn, [value, ss, lsi, loc, attn], "torch"), 1e-12)


@pytest.mark.parametrize("backend", ["torch"] + (["cpp"] if HAS_CPP else []))
@pytest.mark.parametrize("fn,shared", [(ms_deform_attn, False), (ms_deform_attn_shared, True)])
def test_empty_queries_and_batch(backend, fn, shared):
    for kw in (dict(Lq=0), dict(N=0)):
        value, ss, lsi, loc, attn = make_inputs(shared=shared, **kw)
        for t in (value, loc, attn):
            t.requires_grad_(True)
        out = fn(value, ss, lsi, loc, attn, backend=backend)
        assert out.numel() == 0
        out.sum().backward()
        assert value.grad is not None and torch.count_nonzero(value.grad) == 0


def test_outside_samples_read_zero():
    value, ss, lsi, loc, attn = make_inputs(spread=(1.6, 3.0))
    for backend in ["torch"] + (["cpp"] if HAS_CPP else []):
        out, gv, gl, ga = run(ms_deform_attn, [value, ss, lsi, loc, attn], backend)
        assert torch.count_nonzero(out) == 0 and torch.count_nonzero(gv) == 0 and torch.count_nonzero(ga) == 0


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a.update(value=a["value"][0]), "value"),
        (lambda a: a.update(sampling_locations=a["sampling_locations"][..., :1]), "sampling_locations"),
        (lambda a: a.update(attention_weights=a["attention_weights"][:, :, :, :, :1]), "attention_weights"),
        (lambda a: a.update(spatial_shapes=a["spatial_shapes"][:1]), "spatial_shapes"),
        (lambda a: a.update(level_start_index=a["level_start_index"][:1]), "level_start_index"),
        (lambda a: a.update(spatial_shapes=a["spatial_shapes"] + 1), "spatial_shapes cover"),
        (lambda a: a.update(value=a["value"][:, :, :2]), "heads"),
        (lambda a: a.update(value=a["value"][:1]), "batch"),
        (lambda a: a.update(attention_weights=a["attention_weights"].float()), "dtype"),
        (lambda a: a.update(spatial_shapes=a["spatial_shapes"].int()), "int64"),
        (lambda a: a.update(backend="fast"), "backend"),
    ],
)
def test_bad_arguments_are_named(mutate, match):
    value, ss, lsi, loc, attn = make_inputs()
    args = dict(value=value, spatial_shapes=ss, level_start_index=lsi, sampling_locations=loc, attention_weights=attn)
    mutate(args)
    with pytest.raises((ValueError, TypeError), match=match):
        ms_deform_attn(**args)


def test_shared_requires_3d_value():
    value, ss, lsi, loc, attn = make_inputs()
    with pytest.raises(ValueError, match=r"value must be \(N, S, C\)"):
        ms_deform_attn_shared(value, ss, lsi, loc, attn)


@needs_cpp
def test_kernel_checks_level_bounds():
    value, ss, lsi, loc, attn = make_inputs()
    bad = lsi.clone()
    bad[-1] = value.shape[1]  # last level would start past the end
    with pytest.raises(RuntimeError, match="exceeds"):
        torch.ops.d2pose.ms_deform_attn_forward(value, ss, bad, loc, attn)


def test_cuda_backend_rejected_for_cpu_tensors():
    value, ss, lsi, loc, attn = make_inputs()
    with pytest.raises((ValueError, RuntimeError), match="cuda"):
        ms_deform_attn(value, ss, lsi, loc, attn, backend="cuda")


def test_fallback_warns_once_when_compiled_op_is_missing(monkeypatch):
    monkeypatch.setattr(msda_module, "compiled_backends", lambda: ())
    monkeypatch.setattr(msda_module, "_warned", False)
    inputs = make_inputs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run(ms_deform_attn, inputs, "auto")
        run(ms_deform_attn, inputs, "auto")
    msgs = [w for w in caught if "falls back to the PyTorch reference" in str(w.message)]
    assert len(msgs) == 1
    assert_all_close(out, run(ms_deform_attn, inputs, "torch"), 1e-12)
    with pytest.raises(RuntimeError, match="not built"):
        ms_deform_attn(*inputs, backend="cpp")


def test_tracing_uses_reference():
    value, ss, lsi, loc, attn = make_inputs(dtype=torch.float32)
    traced = torch.jit.trace(lambda v, l, a: ms_deform_attn(v, ss, lsi, l, a), (value, loc, attn), check_trace=False)
    assert "grid_sampler" in str(traced.graph)
    torch.testing.assert_close(traced(value, loc, attn), ms_deform_attn(value, ss, lsi, loc, attn, backend="torch"))


@needs_cuda
@pytest.mark.parametrize("shared", [False, True])
def test_cuda_matches_cpu(shared):
    fn = ms_deform_attn_shared if shared else ms_deform_attn
    inputs = make_inputs(shared=shared, N=3, M=4, D=8, Lq=7, P=3)
    cpu = run(fn, inputs, "torch")
    gpu = run(fn, [t.cuda() for t in inputs], "cuda")
    assert_all_close(gpu, cpu, 1e-9)
    half = run(fn, [t.cuda().half() if t.is_floating_point() else t.cuda() for t in inputs], "cuda")
    assert_all_close([h.double() for h in half], cpu, 5e-2)
