// Per-sample arithmetic of multi-scale deformable attention, shared by the CPU and CUDA kernels.
//
// Every function here is `__host__ __device__`, so the CPU tests exercise exactly the math the GPU
// runs. Conventions follow Deformable-DETR (Zhu et al., ICLR 2021) and `grid_sample` with
// `align_corners=False`, zero padding:
//   a normalised location (x, y) in [0, 1] maps to pixel coordinates w = x * W - 0.5, h = y * H - 0.5;
//   a sample contributes only when -1 < h < H and -1 < w < W; corners outside the map read as zero.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define D2POSE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define D2POSE_HOST_DEVICE inline
#endif

namespace d2pose {
namespace msda {

// Sizes of one call, as the kernels name them (see ms_deform_attn.h): N batch, S value tokens, Mv
// value heads, D channels per value head, Lq queries, M heads, L levels, P points.
struct Dims {
  int64_t N, S, Mv, D, Lq, M, L, P;

  // Offset of value[n, 0, mv, 0] in a contiguous (N, S, Mv, D) value.
  D2POSE_HOST_DEVICE int64_t head_offset(int64_t n, int64_t mv) const { return (n * S * Mv + mv) * D; }

  // The same for sample row `row` = (n, q, m): value head mv = m, or 0 when the value is shared by
  // every head (Mv = 1).
  D2POSE_HOST_DEVICE int64_t row_offset(int64_t row) const {
    return head_offset(row / (Lq * M), Mv == 1 ? 0 : row % M);
  }
};

// The four bilinear corners of one sample in one level.
// Corner order: (h0, w0), (h0, w1), (h1, w0), (h1, w1). `offset[i]` is the flattened spatial index
// h * W + w of corner i relative to the level start, or -1 when the corner lies outside the map.
template <typename T>
struct Corners {
  int offset[4];
  T weight[4];  // bilinear weights; they sum to 1
  T lh, lw;     // fractional parts: h - h0, w - w0
  bool active;  // false when the sample lies entirely outside the map
};

template <typename T>
D2POSE_HOST_DEVICE Corners<T> compute_corners(T loc_x, T loc_y, int height, int width) {
  Corners<T> c;
  const T h = loc_y * static_cast<T>(height) - static_cast<T>(0.5);
  const T w = loc_x * static_cast<T>(width) - static_cast<T>(0.5);
  c.active = h > static_cast<T>(-1) && w > static_cast<T>(-1) && h < static_cast<T>(height) &&
             w < static_cast<T>(width);
  if (!c.active) {
    for (int i = 0; i < 4; ++i) {
      c.offset[i] = -1;
      c.weight[i] = 0;
    }
    c.lh = c.lw = 0;
    return c;
  }
  const int h0 = static_cast<int>(floor(h));
  const int w0 = static_cast<int>(floor(w));
  const int h1 = h0 + 1;
  const int w1 = w0 + 1;
  c.lh = h - static_cast<T>(h0);
  c.lw = w - static_cast<T>(w0);
  const T hh = static_cast<T>(1) - c.lh;
  const T hw = static_cast<T>(1) - c.lw;
  const bool h0_in = h0 >= 0, h1_in = h1 <= height - 1;
  const bool w0_in = w0 >= 0, w1_in = w1 <= width - 1;
  c.offset[0] = (h0_in && w0_in) ? h0 * width + w0 : -1;
  c.offset[1] = (h0_in && w1_in) ? h0 * width + w1 : -1;
  c.offset[2] = (h1_in && w0_in) ? h1 * width + w0 : -1;
  c.offset[3] = (h1_in && w1_in) ? h1 * width + w1 : -1;
  c.weight[0] = hh * hw;
  c.weight[1] = hh * c.lw;
  c.weight[2] = c.lh * hw;
  c.weight[3] = c.lh * c.lw;
  return c;
}

// Reads the four corner values of one channel; `base` points at channel 0 of spatial index 0 of
// the level, `stride` is the distance between consecutive spatial indices.
template <typename T, typename V>
D2POSE_HOST_DEVICE void read_corners(const Corners<T>& c, const V* base, long stride, T v[4]) {
  for (int i = 0; i < 4; ++i) {
    v[i] = c.offset[i] >= 0 ? static_cast<T>(base[static_cast<long>(c.offset[i]) * stride]) : T(0);
  }
}

// Bilinear interpolation of four corner values.
template <typename T>
D2POSE_HOST_DEVICE T interpolate(const Corners<T>& c, const T v[4]) {
  return c.weight[0] * v[0] + c.weight[1] * v[1] + c.weight[2] * v[2] + c.weight[3] * v[3];
}

// Derivatives of the interpolated value with respect to the pixel coordinates (w, h).
template <typename T>
D2POSE_HOST_DEVICE void interpolate_grad_wh(const Corners<T>& c, const T v[4], T* d_w, T* d_h) {
  const T hh = static_cast<T>(1) - c.lh;
  const T hw = static_cast<T>(1) - c.lw;
  *d_w = hh * (v[1] - v[0]) + c.lh * (v[3] - v[2]);
  *d_h = hw * (v[2] - v[0]) + c.lw * (v[3] - v[1]);
}

}  // namespace msda
}  // namespace d2pose

namespace d2pose {
namespace msda {

// Corner coefficients of one sample: attention weight times bilinear weight, zero for corners
// outside the map. The sampled value of a channel is sum_i coef[i] * v[i].
template <typename T>
D2POSE_HOST_DEVICE void corner_coefficients(const Corners<T>& c, T attn, T coef[4]) {
  for (int i = 0; i < 4; ++i) {
    coef[i] = c.offset[i] >= 0 ? attn * c.weight[i] : T(0);
  }
}

// Gradients of one sample from the dot products s[i] = sum_d grad_out[d] * v_i[d] of the upstream
// gradient with each corner's values (corners outside the map have s[i] = 0):
//   grad_attn = interpolated s;  grad_x = W * attn * d/dw;  grad_y = H * attn * d/dh.
template <typename T>
D2POSE_HOST_DEVICE void sample_gradients(const Corners<T>& c, const T s[4], T attn, int height,
                                         int width, T* grad_attn, T* grad_x, T* grad_y) {
  T d_w, d_h;
  interpolate_grad_wh(c, s, &d_w, &d_h);
  *grad_attn = interpolate(c, s);
  *grad_x = static_cast<T>(width) * attn * d_w;
  *grad_y = static_cast<T>(height) * attn * d_h;
}

}  // namespace msda
}  // namespace d2pose
