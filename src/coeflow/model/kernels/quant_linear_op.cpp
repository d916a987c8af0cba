// The CPU implementation of the op `coeflow::quant_linear` (its schema and fake implementation
// are defined in Python, coeflow/model/kernels/quant.py), linked with quant_linear.c.
//
// Why C++: a decode step calls the op dozens of times, and each call's fixed cost (argument
// checks, allocation, the conversion of x) is paid in full at these small shapes: here it is
// one scratch and one output allocation, x read in its own dtype.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

extern "C" void coeflow_quant_prepare(const void *x, int x_bf16, long ldx, int M, int K, int bits, int group,
                                      float *xp, float *xs);
extern "C" int coeflow_quant_linear(const float *xp, const float *xs, int M, int K, int nw, const uint8_t *const *ws,
                                    const long *ldws, const long *ns, int bits, const void *const *scales, int bf16,
                                    int group, float *y, long ldy, int nthreads);

namespace {

constexpr int kMaxRows = 8;      // the C file's MAXM
constexpr int kMaxWeights = 8;   // layers sharing one input in one call (q, k, v: 3)

at::Tensor quant_linear(const at::Tensor &x_in, at::TensorList packed, at::TensorList scales, int64_t bits) {
    TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 2 && x_in.size(0) >= 1 && x_in.size(0) <= kMaxRows,
                "coeflow::quant_linear: x must be a CPU matrix of 1 to ", kMaxRows, " rows, got ", x_in.sizes());
    const bool x_bf16 = x_in.scalar_type() == at::kBFloat16;
    TORCH_CHECK(x_bf16 || x_in.scalar_type() == at::kFloat, "coeflow::quant_linear: x must be float32 or bfloat16");
    TORCH_CHECK(bits == 4 || bits == 8, "coeflow::quant_linear: 4 or 8 bits, got ", bits);
    const int nw = static_cast<int>(packed.size());
    TORCH_CHECK(nw >= 1 && nw <= kMaxWeights && scales.size() == packed.size(),
                "coeflow::quant_linear: 1 to ", kMaxWeights, " weights, each with its scales");
    const int64_t K = x_in.size(1);
    const int64_t G = scales[0].dim() == 2 ? scales[0].size(1) : 0;
    TORCH_CHECK(G > 0 && K % G == 0 && (K / G) % 32 == 0,
                "coeflow::quant_linear: scales must be [rows, groups of a multiple of 32 inputs], got ", scales[0].sizes());
    const bool s_bf16 = scales[0].scalar_type() == at::kBFloat16;
    const uint8_t *ptrs[kMaxWeights];
    const void *sptrs[kMaxWeights];
    long ld[kMaxWeights], rows[kMaxWeights], n = 0;
    for (int j = 0; j < nw; j++) {
        const at::Tensor &w = packed[j], &s = scales[j];
        TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == at::kInt && w.dim() == 2 && w.stride(1) == 1 &&
                        w.size(1) * 32 / bits == K,
                    "coeflow::quant_linear: packed weight ", j, " must be int32 [N, ", K * bits / 32,
                    "] with contiguous rows, got ", w.sizes(), " ", w.scalar_type());
        TORCH_CHECK(s.device().is_cpu() && s.is_contiguous() && s.dim() == 2 && s.size(0) == w.size(0) &&
                        s.size(1) == G && (s.scalar_type() == at::kFloat || s.scalar_type() == at::kBFloat16) &&
                        (s.scalar_type() == at::kBFloat16) == s_bf16,
                    "coeflow::quant_linear: scales ", j, " must be contiguous float32 or bfloat16 [", w.size(0), ", ",
                    G, "] like the others, got ", s.sizes(), " ", s.scalar_type());
        ptrs[j] = static_cast<const uint8_t *>(w.data_ptr());
        sptrs[j] = s.data_ptr();
        ld[j] = w.stride(0) * 4;
        rows[j] = w.size(0);
        n += rows[j];
    }
    const at::Tensor x = x_in.stride(1) == 1 ? x_in : x_in.contiguous();
    const int M = static_cast<int>(x.size(0)), group = static_cast<int>(K / G);
    at::Tensor scratch = at::empty({M * (K + G)}, x.options().dtype(at::kFloat));
    float *xp = scratch.data_ptr<float>(), *xs = xp + M * K;
    coeflow_quant_prepare(x.data_ptr(), x_bf16, x.stride(0), M, static_cast<int>(K), static_cast<int>(bits), group,
                          xp, xs);
    at::Tensor y = at::empty({M, n}, x.options().dtype(at::kFloat));
    int rc = coeflow_quant_linear(xp, xs, M, static_cast<int>(K), nw, ptrs, ld, rows, static_cast<int>(bits), sptrs,
                                  s_bf16, group, y.data_ptr<float>(), n, at::get_num_threads());
    TORCH_CHECK(rc == 0, "coeflow::quant_linear: operands not taken");
    return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(coeflow, CPU, m) { m.impl("quant_linear", &quant_linear); }
