// CPU kernels of multi-scale deformable attention: forward and backward, float32 / float64,
// multi-threaded with at::parallel_for. The per-sample arithmetic comes from
// ms_deform_attn_sample.h, shared with the CUDA kernels.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "ms_deform_attn.h"
#include "ms_deform_attn_sample.h"

// Channel loops carry `omp simd` so that the compiler vectorises them: the dot products are
// reductions, which -O3 alone may not reorder, and the channel vectors (value, gradients,
// outputs) never alias. With OpenMP off they compile as plain loops.
#if defined(_OPENMP)
#define D2POSE_PRAGMA(x) _Pragma(#x)
#define D2POSE_SIMD D2POSE_PRAGMA(omp simd)
#define D2POSE_SIMD_REDUCE(v) D2POSE_PRAGMA(omp simd reduction(+ : v))
#else
#define D2POSE_SIMD
#define D2POSE_SIMD_REDUCE(v)
#endif

namespace d2pose {

namespace {

using msda::Corners;

// The sizes, and the (H, W) and first token of every level.
struct Geometry : msda::Dims {
  std::vector<int64_t> height, width, start;
};

Geometry make_geometry(const msda::Dims& dims, const at::Tensor& spatial_shapes,
                       const at::Tensor& level_start_index) {
  Geometry g{dims, {}, {}, {}};
  auto shapes = spatial_shapes.to(at::kCPU).contiguous();
  auto starts = level_start_index.to(at::kCPU).contiguous();
  const int64_t* sp = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  for (int64_t l = 0; l < g.L; ++l) {
    g.height.push_back(sp[2 * l]);
    g.width.push_back(sp[2 * l + 1]);
    g.start.push_back(st[l]);
    TORCH_CHECK(sp[2 * l] >= 0 && sp[2 * l + 1] >= 0 && st[l] >= 0 &&
                    st[l] + sp[2 * l] * sp[2 * l + 1] <= g.S,
                "ms_deform_attn: level ", l, " (H=", sp[2 * l], ", W=", sp[2 * l + 1],
                ", start=", st[l], ") exceeds the ", g.S, " value tokens");
  }
  return g;
}

// Asks the kernel for transparent huge pages on a large, not yet touched buffer: zero-filling a fresh
// gradient of the value (134 MB at Poseur's decoder shape) is otherwise dominated by page faults.
void advise_huge_pages(void* ptr, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHuge = size_t(2) << 20;
  if (bytes < 4 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(ptr) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(ptr) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)ptr;
  (void)bytes;
#endif
}

// Large gradient buffers are recycled: a fresh 100+ MB buffer costs more in page faults than the
// whole backward computation (measured in tools/benchmark_ops.py), so up to kPoolSlots freed
// buffers are kept for the next backward of the same size. Buffers are zero-filled in parallel.
class LargeBufferPool {
 public:
  static LargeBufferPool& get() {
    static LargeBufferPool* pool = new LargeBufferPool();  // never destroyed: outlives tensors
    return *pool;
  }

  void* acquire(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (size_t i = 0; i < free_.size(); ++i) {
        if (free_[i].first == bytes) {
          void* p = free_[i].second;
          free_.erase(free_.begin() + i);
          return p;
        }
      }
    }
    void* p = std::aligned_alloc(kAlign, round_up(bytes));
    TORCH_CHECK(p != nullptr, "ms_deform_attn: out of memory allocating ", bytes, " bytes");
    advise_huge_pages(p, round_up(bytes));
    return p;
  }

  void release(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_.size() < kPoolSlots) {
      free_.emplace_back(bytes, p);
      return;
    }
    std::free(p);
  }

  static constexpr size_t kMinBytes = size_t(16) << 20;

 private:
  static constexpr size_t kAlign = size_t(2) << 20;
  static constexpr size_t kPoolSlots = 2;
  static size_t round_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }
  std::mutex mutex_;
  std::vector<std::pair<size_t, void*>> free_;
};

void parallel_memset_zero(void* ptr, size_t bytes) {
  char* base = static_cast<char*>(ptr);
  constexpr int64_t kChunk = int64_t(2) << 20;
  const int64_t chunks = (static_cast<int64_t>(bytes) + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t len = std::min<int64_t>(kChunk, static_cast<int64_t>(bytes) - i * kChunk);
      std::memset(base + i * kChunk, 0, len);
    }
  });
}

// A zero-filled contiguous tensor like `t`; large ones come from the recycling pool.
at::Tensor gradient_buffer_like(const at::Tensor& t) {
  const size_t bytes = t.numel() * t.element_size();
  if (bytes < LargeBufferPool::kMinBytes) return at::zeros_like(t, at::MemoryFormat::Contiguous);
  void* ptr = LargeBufferPool::get().acquire(bytes);
  parallel_memset_zero(ptr, bytes);
  return at::from_blob(
      ptr, t.sizes(), [bytes](void* p) { LargeBufferPool::get().release(p, bytes); },
      t.options().memory_format(at::MemoryFormat::Contiguous));
}

// Prefetches the corners of every sample of a row before they are read, so that the random reads
// into a large value overlap instead of stalling one by one.
template <typename T>
inline void prefetch_corners(const Corners<T>& c, const T* level, int64_t spatial_stride, int64_t channels) {
  for (int i = 0; i < 4; ++i) {
    if (c.offset[i] < 0) continue;
    const char* p = reinterpret_cast<const char*>(level + c.offset[i] * spatial_stride);
    const int64_t bytes = channels * static_cast<int64_t>(sizeof(T));
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b);
  }
}

constexpr int kMaxSamples = 64;  // samples per row held for the prefetch pass (L * P)

// Calls body(row) for every sample row (n, q, m), in parallel tasks of about 2048 multiply-adds.
template <typename Body>
void parallel_rows(const Geometry& g, const Body& body) {
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, g.L * g.P * g.D));
  at::parallel_for(0, g.N * g.Lq * g.M, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) body(row);
  });
}

template <typename T>
void forward_kernel(const Geometry& g, const T* value, const T* loc, const T* attn, T* out) {
  const int64_t spatial_stride = g.Mv * g.D;
  parallel_rows(g, [&](int64_t row) {
    T* o = out + row * g.D;
    std::fill(o, o + g.D, T(0));
    const T* value_nm = value + g.row_offset(row);
    const int64_t samples = g.L * g.P;
    for (int64_t s0 = 0; s0 < samples; s0 += kMaxSamples) {
      const int64_t s1 = std::min(samples, s0 + kMaxSamples);
      Corners<T> corners[kMaxSamples];
      const T* levels[kMaxSamples];
      for (int64_t j = s0; j < s1; ++j) {  // pass 1: corners and prefetches
        const int64_t l = j / g.P;
        const int64_t k = row * samples + j;
        levels[j - s0] = value_nm + g.start[l] * spatial_stride;
        corners[j - s0] = msda::compute_corners<T>(loc[2 * k], loc[2 * k + 1],
                                                   static_cast<int>(g.height[l]),
                                                   static_cast<int>(g.width[l]));
        if (corners[j - s0].active) prefetch_corners(corners[j - s0], levels[j - s0], spatial_stride, g.D);
      }
      for (int64_t j = s0; j < s1; ++j) {  // pass 2: weighted sums
        const Corners<T>& c = corners[j - s0];
        if (!c.active) continue;
        T coef[4];
        msda::corner_coefficients(c, attn[row * samples + j], coef);
        for (int i = 0; i < 4; ++i) {
          if (c.offset[i] < 0) continue;
          const T* src = levels[j - s0] + c.offset[i] * spatial_stride;
          const T w = coef[i];
          D2POSE_SIMD
          for (int64_t d = 0; d < g.D; ++d) o[d] += w * src[d];
        }
      }
    }
  });
}

// Gradients with respect to the sampling locations and attention weights: one task per sample row
// (n, q, m), reading the value only.
template <typename T>
void backward_sample_kernel(const Geometry& g, const T* value, const T* loc, const T* attn,
                            const T* grad_out, T* grad_loc, T* grad_attn) {
  const int64_t spatial_stride = g.Mv * g.D;
  parallel_rows(g, [&](int64_t row) {
    const T* go = grad_out + row * g.D;
    const T* value_nm = value + g.row_offset(row);
    for (int64_t l = 0; l < g.L; ++l) {
      const T* level = value_nm + g.start[l] * spatial_stride;
      const int H = static_cast<int>(g.height[l]);
      const int W = static_cast<int>(g.width[l]);
      for (int64_t p = 0; p < g.P; ++p) {
        const int64_t k = (row * g.L + l) * g.P + p;
        const Corners<T> c = msda::compute_corners<T>(loc[2 * k], loc[2 * k + 1], H, W);
        T s[4] = {0, 0, 0, 0};
        if (c.active) {
          for (int i = 0; i < 4; ++i) {
            if (c.offset[i] < 0) continue;
            const T* src = level + c.offset[i] * spatial_stride;
            T acc = 0;
            D2POSE_SIMD_REDUCE(acc)
            for (int64_t d = 0; d < g.D; ++d) acc += go[d] * src[d];
            s[i] = acc;
          }
        }
        msda::sample_gradients(c, s, attn[k], H, W, &grad_attn[k], &grad_loc[2 * k],
                               &grad_loc[2 * k + 1]);
      }
    }
  });
}

// Gradient with respect to the value: scattered adds into the four corners. Tasks own disjoint
// slices (n, value head, channel block) of grad_value, so no two threads write the same element;
// with a shared value (Mv = 1) the channel blocks provide the parallelism.
template <typename T>
void backward_value_kernel(const Geometry& g, const T* loc, const T* attn, const T* grad_out,
                           T* grad_value) {
  const int64_t block = g.Mv == 1 ? 32 : g.D;
  const int64_t blocks = (g.D + block - 1) / block;
  const int64_t tasks = g.N * g.Mv * blocks;
  const int64_t spatial_stride = g.Mv * g.D;
  const int64_t heads_per_task = g.Mv == 1 ? g.M : 1;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task % blocks;
      const int64_t mv = (task / blocks) % g.Mv;
      const int64_t n = task / (blocks * g.Mv);
      const int64_t d0 = b * block;
      const int64_t d1 = std::min(g.D, d0 + block);
      T* gv_n = grad_value + g.head_offset(n, mv);
      for (int64_t q = 0; q < g.Lq; ++q) {
        for (int64_t h = 0; h < heads_per_task; ++h) {
          const int64_t m = g.Mv == 1 ? h : mv;
          const int64_t row = (n * g.Lq + q) * g.M + m;
          const T* go = grad_out + row * g.D;
          for (int64_t l = 0; l < g.L; ++l) {
            T* level = gv_n + g.start[l] * spatial_stride;
            for (int64_t p = 0; p < g.P; ++p) {
              const int64_t k = (row * g.L + l) * g.P + p;
              const Corners<T> c = msda::compute_corners<T>(loc[2 * k], loc[2 * k + 1],
                                                            static_cast<int>(g.height[l]),
                                                            static_cast<int>(g.width[l]));
              if (!c.active) continue;
              T coef[4];
              msda::corner_coefficients(c, attn[k], coef);
              for (int i = 0; i < 4; ++i) {
                if (c.offset[i] < 0) continue;
                T* dst = level + c.offset[i] * spatial_stride;
                const T w = coef[i];
                D2POSE_SIMD
                for (int64_t d = d0; d < d1; ++d) dst[d] += w * go[d];
              }
            }
          }
        }
      }
    }
  });
}

// Fused backward: one task per (n, value head) owns grad_value[n, :, mv, :], so the value gradient
// needs no atomics, and each sample's corners are computed and fetched once for the value,
// location and attention gradients. With a shared value (Mv = 1) a task serves all M heads.
template <typename T>
void backward_fused_kernel(const Geometry& g, const T* value, const T* loc, const T* attn,
                           const T* grad_out, T* grad_value, T* grad_loc, T* grad_attn) {
  const int64_t spatial_stride = g.Mv * g.D;
  const int64_t samples = g.L * g.P;
  const int64_t heads_per_task = g.Mv == 1 ? g.M : 1;
  at::parallel_for(0, g.N * g.Mv, 1, [&](int64_t begin, int64_t end) {
    Corners<T> corners[kMaxSamples];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.Mv;
      const int64_t mv = task % g.Mv;
      const int64_t head = g.head_offset(n, mv);
      for (int64_t q = 0; q < g.Lq; ++q) {
        for (int64_t h = 0; h < heads_per_task; ++h) {
          const int64_t row = (n * g.Lq + q) * g.M + (g.Mv == 1 ? h : mv);
          const T* go = grad_out + row * g.D;
          for (int64_t s0 = 0; s0 < samples; s0 += kMaxSamples) {
            const int64_t s1 = std::min(samples, s0 + kMaxSamples);
            for (int64_t j = s0; j < s1; ++j) {  // pass 1: corners and prefetches
              const int64_t l = j / g.P;
              const int64_t k = row * samples + j;
              corners[j - s0] = msda::compute_corners<T>(loc[2 * k], loc[2 * k + 1],
                                                         static_cast<int>(g.height[l]),
                                                         static_cast<int>(g.width[l]));
              if (corners[j - s0].active) {
                prefetch_corners(corners[j - s0], value + head + g.start[l] * spatial_stride,
                                 spatial_stride, g.D);
              }
            }
            for (int64_t j = s0; j < s1; ++j) {  // pass 2: gradients
              const int64_t l = j / g.P;
              const int64_t k = row * samples + j;
              const Corners<T>& c = corners[j - s0];
              const T* level = value + head + g.start[l] * spatial_stride;
              T* grad_level = grad_value + head + g.start[l] * spatial_stride;
              T s[4] = {0, 0, 0, 0};
              if (c.active) {
                T coef[4];
                msda::corner_coefficients(c, attn[k], coef);
                for (int i = 0; i < 4; ++i) {
                  if (c.offset[i] < 0) continue;
                  const T* src = level + c.offset[i] * spatial_stride;
                  T* dst = grad_level + c.offset[i] * spatial_stride;
                  const T w = coef[i];
                  T acc = 0;
                  D2POSE_SIMD_REDUCE(acc)
                  for (int64_t d = 0; d < g.D; ++d) {
                    acc += go[d] * src[d];
                    dst[d] += w * go[d];
                  }
                  s[i] = acc;
                }
              }
              msda::sample_gradients(c, s, attn[k], static_cast<int>(g.height[l]),
                                     static_cast<int>(g.width[l]), &grad_attn[k],
                                     &grad_loc[2 * k], &grad_loc[2 * k + 1]);
            }
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight) {
  const auto in =
      ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  const Geometry g = make_geometry(in.dims, spatial_shapes, level_start_index);
  auto out = at::empty(in.output_sizes(), value.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    forward_kernel<scalar_t>(g, in.value.data_ptr<scalar_t>(), in.sampling_loc.data_ptr<scalar_t>(),
                             in.attn_weight.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output) {
  const auto in =
      ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  const Geometry g = make_geometry(in.dims, spatial_shapes, level_start_index);
  auto go = ms_deform_attn_grad_output(in, grad_output);
  auto grad_value = gradient_buffer_like(in.value);
  auto grad_loc = at::zeros_like(in.sampling_loc);
  auto grad_attn = at::zeros_like(in.attn_weight);
  if (go.numel() == 0 || grad_attn.numel() == 0) return {grad_value, grad_loc, grad_attn};
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    const scalar_t* v = in.value.data_ptr<scalar_t>();
    const scalar_t* loc = in.sampling_loc.data_ptr<scalar_t>();
    const scalar_t* attn = in.attn_weight.data_ptr<scalar_t>();
    // enough (n, value head) tasks for every thread: one fused pass; otherwise (e.g. a single
    // image with a shared value) two passes that split the work by sample rows and channel blocks
    if (g.N * g.Mv >= at::get_num_threads()) {
      backward_fused_kernel<scalar_t>(g, v, loc, attn, go.data_ptr<scalar_t>(),
                                      grad_value.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(),
                                      grad_attn.data_ptr<scalar_t>());
      return;
    }
    backward_sample_kernel<scalar_t>(g, v, loc, attn, go.data_ptr<scalar_t>(),
                                     grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>());
    backward_value_kernel<scalar_t>(g, loc, attn, go.data_ptr<scalar_t>(),
                                    grad_value.data_ptr<scalar_t>());
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace d2pose
