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

namespace d2pose {

struct MSDeformAttnSizes {
  int64_t batch, num_value, value_heads, channels, num_query, num_heads, num_levels, num_points;
};

// Validates shapes, dtypes and devices; raises with the name of the argument at fault.
MSDeformAttnSizes ms_deform_attn_check(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight);

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output);
#endif

}  // namespace d2pose
