// Registration of every d2pose operator under the `d2pose` namespace (torch.ops.d2pose.*).
// The dispatcher picks the CPU or CUDA kernel by the device of the inputs.
#include <torch/extension.h>
#include <torch/library.h>

#include "ms_deform_attn/ms_deform_attn.h"

namespace d2pose {

bool has_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

TORCH_LIBRARY(d2pose, m) {
  m.def(
      "ms_deform_attn_forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, Tensor grad_output) "
      "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(d2pose, CPU, m) {
  m.impl("ms_deform_attn_forward", &ms_deform_attn_forward_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(d2pose, CUDA, m) {
  m.impl("ms_deform_attn_forward", &ms_deform_attn_forward_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}
#endif

}  // namespace d2pose

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("has_cuda", &d2pose::has_cuda, "whether the CUDA kernels were compiled");
}
