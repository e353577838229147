// Argument validation and input preparation shared by the CPU and CUDA entry points of multi-scale
// deformable attention.
#include "ms_deform_attn.h"

namespace d2pose {

MSDeformAttnSizes ms_deform_attn_check(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must be (L, 2), got ", spatial_shapes.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong,
              "ms_deform_attn: spatial_shapes must be int64, got ", spatial_shapes.scalar_type());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn: level_start_index must be an int64 vector");
  TORCH_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
              "ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2), got ",
              sampling_loc.sizes());
  TORCH_CHECK(attn_weight.dim() == 5,
              "ms_deform_attn: attention_weights must be (N, Lq, M, L, P), got ",
              attn_weight.sizes());
  MSDeformAttnSizes s;
  s.batch = value.size(0);
  s.num_value = value.size(1);
  s.value_heads = value.size(2);
  s.channels = value.size(3);
  s.num_query = sampling_loc.size(1);
  s.num_heads = sampling_loc.size(2);
  s.num_levels = sampling_loc.size(3);
  s.num_points = sampling_loc.size(4);
  TORCH_CHECK(spatial_shapes.size(0) == s.num_levels && level_start_index.size(0) == s.num_levels,
              "ms_deform_attn: spatial_shapes and level_start_index must have one row per level (",
              s.num_levels, ")");
  TORCH_CHECK(sampling_loc.size(0) == s.batch,
              "ms_deform_attn: sampling_locations batch ", sampling_loc.size(0),
              " != value batch ", s.batch);
  TORCH_CHECK(s.value_heads == s.num_heads || s.value_heads == 1,
              "ms_deform_attn: value has ", s.value_heads, " heads but sampling_locations has ",
              s.num_heads, " (value heads must equal M, or be 1 when shared)");
  TORCH_CHECK(attn_weight.sizes() == sampling_loc.sizes().slice(0, 5),
              "ms_deform_attn: attention_weights ", attn_weight.sizes(),
              " does not match sampling_locations ", sampling_loc.sizes());
  TORCH_CHECK(value.scalar_type() == sampling_loc.scalar_type() &&
                  value.scalar_type() == attn_weight.scalar_type(),
              "ms_deform_attn: value, sampling_locations and attention_weights must share a dtype");
  TORCH_CHECK(value.device() == sampling_loc.device() && value.device() == attn_weight.device(),
              "ms_deform_attn: value, sampling_locations and attention_weights must share a device");
  return s;
}

MSDeformAttnInputs ms_deform_attn_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                         const at::Tensor& level_start_index,
                                         const at::Tensor& sampling_loc,
                                         const at::Tensor& attn_weight) {
  const MSDeformAttnSizes s =
      ms_deform_attn_check(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  const msda::Dims dims{s.batch,     s.num_value, s.value_heads, s.channels,
                        s.num_query, s.num_heads, s.num_levels,  s.num_points};
  return {dims, value.contiguous(), sampling_loc.contiguous(), attn_weight.contiguous()};
}

at::Tensor ms_deform_attn_grad_output(const MSDeformAttnInputs& in, const at::Tensor& grad_output) {
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(in.output_sizes()),
              "ms_deform_attn: grad_output must be (N, Lq, M, D), got ", grad_output.sizes());
  return grad_output.contiguous().to(in.value.scalar_type());
}

}  // namespace d2pose
