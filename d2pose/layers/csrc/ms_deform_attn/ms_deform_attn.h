// Multi-scale deformable attention (Deformable-DETR, Zhu et al. ICLR 2021, Sec. 4.1), with an
// optional value tensor shared by all heads (Poseur's EMSDA, Mao et al. ECCV 2022, Sec. 3.3).
//
// Shapes: N batch, S = sum_l H_l * W_l value tokens, Mv value heads (M, or 1 when shared),
// D channels per head, Lq queries, M heads, L levels, P points.
//   value            (N, S, Mv, D)
//   spatial_shapes   (L, 2) int64, (H, W) per level
//   level_start_index(L,)   int64
//   sampling_loc     (N, Lq, M, L, P, 2) as (x, y) in [0, 1]
//   attn_weight      (N, Lq, M, L, P)
//   output           (N, Lq, M, D)
#pragma once

#include <torch/types.h>

#include <tuple>
#include <vector>

#include "ms_deform_attn_sample.h"

namespace d2pose {

struct MSDeformAttnSizes {
  int64_t batch, num_value, value_heads, channels, num_query, num_heads, num_levels, num_points;
};

// Validates shapes, dtypes and devices; raises with the name of the argument at fault.
MSDeformAttnSizes ms_deform_attn_check(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight);

// The inputs as every kernel reads them: checked by ms_deform_attn_check, floating tensors
// contiguous.
struct MSDeformAttnInputs {
  msda::Dims dims;
  at::Tensor value, sampling_loc, attn_weight;

  // (N, Lq, M, D): the output's shape, and grad_output's.
  std::vector<int64_t> output_sizes() const { return {dims.N, dims.Lq, dims.M, dims.D}; }
};

MSDeformAttnInputs ms_deform_attn_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                         const at::Tensor& level_start_index,
                                         const at::Tensor& sampling_loc,
                                         const at::Tensor& attn_weight);

// grad_output checked against the output's shape, contiguous, in the value's dtype.
at::Tensor ms_deform_attn_grad_output(const MSDeformAttnInputs& in, const at::Tensor& grad_output);

// The signatures of the two ops (registered in vision.cpp); every backend declares its kernels by them.
using MSDeformAttnForward = at::Tensor(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight);
using MSDeformAttnBackward = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output);

MSDeformAttnForward ms_deform_attn_forward_cpu;
MSDeformAttnBackward ms_deform_attn_backward_cpu;

#ifdef WITH_CUDA
MSDeformAttnForward ms_deform_attn_forward_cuda;
MSDeformAttnBackward ms_deform_attn_backward_cuda;
#endif

}  // namespace d2pose
