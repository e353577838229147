// CUDA kernels of multi-scale deformable attention: forward and backward for float32, float64 and
// float16 (accumulated in float). The per-sample arithmetic comes from ms_deform_attn_sample.h,
// shared with the CPU kernels that the CPU test-suite checks.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "ms_deform_attn.h"
#include "ms_deform_attn_sample.h"

namespace d2pose {

namespace {

using msda::Corners;
using msda::Dims;

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8));
}

#define D2POSE_CUDA_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); \
       i += (int64_t)blockDim.x * gridDim.x)

// One thread per output element (n, q, m, d).
template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(Dims g, const scalar_t* __restrict__ value,
                               const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts,
                               const scalar_t* __restrict__ loc, const scalar_t* __restrict__ attn,
                               scalar_t* __restrict__ out) {
  const int64_t total = g.N * g.Lq * g.M * g.D;
  const int64_t spatial_stride = g.Mv * g.D;
  D2POSE_CUDA_LOOP(index, total) {
    const int64_t d = index % g.D;
    const int64_t row = index / g.D;  // (n, q, m)
    const scalar_t* value_nm = value + g.row_offset(row) + d;
    acc_t acc = 0;
    for (int64_t l = 0; l < g.L; ++l) {
      const int H = static_cast<int>(shapes[2 * l]);
      const int W = static_cast<int>(shapes[2 * l + 1]);
      const scalar_t* level = value_nm + starts[l] * spatial_stride;
      for (int64_t p = 0; p < g.P; ++p) {
        const int64_t k = (row * g.L + l) * g.P + p;
        const Corners<acc_t> c = msda::compute_corners<acc_t>(
            static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]), H, W);
        if (!c.active) continue;
        acc_t coef[4], v[4];
        msda::corner_coefficients(c, static_cast<acc_t>(attn[k]), coef);
        msda::read_corners(c, level, spatial_stride, v);
        acc += coef[0] * v[0] + coef[1] * v[1] + coef[2] * v[2] + coef[3] * v[3];
      }
    }
    out[index] = static_cast<scalar_t>(acc);
  }
}

// Gradient of the value: one thread per (n, q, m, d), atomic adds into the four corners.
template <typename scalar_t, typename acc_t>
__global__ void backward_value_kernel(Dims g, const int64_t* __restrict__ shapes,
                                      const int64_t* __restrict__ starts,
                                      const scalar_t* __restrict__ loc,
                                      const scalar_t* __restrict__ attn,
                                      const scalar_t* __restrict__ grad_out,
                                      acc_t* __restrict__ grad_value) {
  const int64_t total = g.N * g.Lq * g.M * g.D;
  const int64_t spatial_stride = g.Mv * g.D;
  D2POSE_CUDA_LOOP(index, total) {
    const int64_t d = index % g.D;
    const int64_t row = index / g.D;  // (n, q, m)
    const acc_t go = static_cast<acc_t>(grad_out[index]);
    acc_t* gv_nm = grad_value + g.row_offset(row) + d;
    for (int64_t l = 0; l < g.L; ++l) {
      const int H = static_cast<int>(shapes[2 * l]);
      const int W = static_cast<int>(shapes[2 * l + 1]);
      acc_t* level = gv_nm + starts[l] * spatial_stride;
      for (int64_t p = 0; p < g.P; ++p) {
        const int64_t k = (row * g.L + l) * g.P + p;
        const Corners<acc_t> c = msda::compute_corners<acc_t>(
            static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]), H, W);
        if (!c.active) continue;
        acc_t coef[4];
        msda::corner_coefficients(c, static_cast<acc_t>(attn[k]), coef);
        for (int i = 0; i < 4; ++i) {
          if (c.offset[i] >= 0) atomicAdd(level + c.offset[i] * spatial_stride, coef[i] * go);
        }
      }
    }
  }
}

// Gradients of sampling locations and attention weights: one thread per sample (n, q, m, l, p),
// reducing over the D channels.
template <typename scalar_t, typename acc_t>
__global__ void backward_sample_kernel(Dims g, const scalar_t* __restrict__ value,
                                       const int64_t* __restrict__ shapes,
                                       const int64_t* __restrict__ starts,
                                       const scalar_t* __restrict__ loc,
                                       const scalar_t* __restrict__ attn,
                                       const scalar_t* __restrict__ grad_out,
                                       scalar_t* __restrict__ grad_loc,
                                       scalar_t* __restrict__ grad_attn) {
  const int64_t total = g.N * g.Lq * g.M * g.L * g.P;
  const int64_t spatial_stride = g.Mv * g.D;
  D2POSE_CUDA_LOOP(k, total) {
    const int64_t l = (k / g.P) % g.L;
    const int64_t row = k / (g.L * g.P);  // (n, q, m)
    const int H = static_cast<int>(shapes[2 * l]);
    const int W = static_cast<int>(shapes[2 * l + 1]);
    const Corners<acc_t> c = msda::compute_corners<acc_t>(
        static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]), H, W);
    acc_t s[4] = {0, 0, 0, 0};
    if (c.active) {
      const scalar_t* level = value + g.row_offset(row) + starts[l] * spatial_stride;
      const scalar_t* go = grad_out + row * g.D;
      for (int64_t d = 0; d < g.D; ++d) {
        acc_t v[4];
        msda::read_corners(c, level + d, spatial_stride, v);
        const acc_t gd = static_cast<acc_t>(go[d]);
        for (int i = 0; i < 4; ++i) s[i] += gd * v[i];
      }
    }
    acc_t ga, gx, gy;
    msda::sample_gradients(c, s, static_cast<acc_t>(attn[k]), H, W, &ga, &gx, &gy);
    grad_attn[k] = static_cast<scalar_t>(ga);
    grad_loc[2 * k] = static_cast<scalar_t>(gx);
    grad_loc[2 * k + 1] = static_cast<scalar_t>(gy);
  }
}

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight) {
  at::cuda::CUDAGuard guard(value.device());
  const auto in =
      ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  auto shapes = spatial_shapes.to(value.device()).contiguous();
  auto starts = level_start_index.to(value.device()).contiguous();
  auto out = at::empty(in.output_sizes(), value.options());
  if (out.numel() == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t, acc_t><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        in.dims, in.value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
        in.sampling_loc.data_ptr<scalar_t>(), in.attn_weight.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output) {
  at::cuda::CUDAGuard guard(value.device());
  const auto in =
      ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  auto go = ms_deform_attn_grad_output(in, grad_output);
  auto shapes = spatial_shapes.to(value.device()).contiguous();
  auto starts = level_start_index.to(value.device()).contiguous();
  auto grad_loc = at::zeros_like(in.sampling_loc);
  auto grad_attn = at::zeros_like(in.attn_weight);
  at::Tensor grad_value;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor& v = in.value;
    // half values accumulate their gradient in float and are cast back at the end
    auto grad_value_acc = at::zeros(v.sizes(), v.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    if (go.numel() > 0 && grad_attn.numel() > 0) {
      backward_value_kernel<scalar_t, acc_t><<<blocks_for(go.numel()), kThreads, 0, stream>>>(
          in.dims, shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
          in.sampling_loc.data_ptr<scalar_t>(), in.attn_weight.data_ptr<scalar_t>(),
          go.data_ptr<scalar_t>(), grad_value_acc.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      backward_sample_kernel<scalar_t, acc_t>
          <<<blocks_for(grad_attn.numel()), kThreads, 0, stream>>>(
              in.dims, v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
              in.sampling_loc.data_ptr<scalar_t>(), in.attn_weight.data_ptr<scalar_t>(),
              go.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    grad_value = grad_value_acc.to(v.scalar_type());
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace d2pose
