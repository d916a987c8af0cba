// The CPU implementation of the op `coeflow::quant_linear` (its schema and fake implementation
// are defined in Python, coeflow/model/kernels/quant.py), linked with quant_linear.c.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

extern "C" void coeflow_quant_prepare(const float *x, long ldx, int M, int K, int bits, int group, float *xp,
                                      float *xs);
extern "C" int coeflow_quant_linear(const float *xp, const float *xs, int M, int K, const uint8_t *w, long ldw,
                                    int bits, const void *scale, int bf16, int group, long N, float *y, long ldy,
                                    int nthreads);

namespace {

constexpr int kMaxRows = 8;  // the C file's MAXM

at::Tensor quant_linear(const at::Tensor &x_in, const at::Tensor &packed, const at::Tensor &scale, int64_t bits) {
    TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 2 && x_in.size(0) >= 1 && x_in.size(0) <= kMaxRows,
                "coeflow::quant_linear: x must be a CPU matrix of 1 to ", kMaxRows, " rows, got ", x_in.sizes());
    TORCH_CHECK(bits == 4 || bits == 8, "coeflow::quant_linear: 4 or 8 bits, got ", bits);
    const int64_t K = x_in.size(1);
    TORCH_CHECK(packed.device().is_cpu() && packed.scalar_type() == at::kInt && packed.dim() == 2 &&
                    packed.stride(1) == 1 && packed.size(1) * 32 / bits == K,
                "coeflow::quant_linear: packed weight must be int32 [N, ", K * bits / 32, "] with contiguous rows, got ",
                packed.sizes(), " ", packed.scalar_type());
    const int64_t N = packed.size(0), G = scale.dim() == 2 ? scale.size(1) : 0;
    TORCH_CHECK(scale.device().is_cpu() && scale.is_contiguous() && scale.dim() == 2 && scale.size(0) == N &&
                    G > 0 && K % G == 0 && (K / G) % 32 == 0 &&
                    (scale.scalar_type() == at::kFloat || scale.scalar_type() == at::kBFloat16),
                "coeflow::quant_linear: scale must be contiguous float32 or bfloat16 [", N,
                ", groups of a multiple of 32 inputs], got ", scale.sizes(), " ", scale.scalar_type());
    const at::Tensor x = x_in.to(at::kFloat).contiguous();
    const int M = static_cast<int>(x.size(0)), group = static_cast<int>(K / G);
    at::Tensor xp = at::empty({M, K}, x.options()), xs = at::empty({M, G}, x.options());
    coeflow_quant_prepare(x.data_ptr<float>(), K, M, static_cast<int>(K), static_cast<int>(bits), group,
                          xp.data_ptr<float>(), xs.data_ptr<float>());
    at::Tensor y = at::empty({M, N}, x.options());
    int rc = coeflow_quant_linear(xp.data_ptr<float>(), xs.data_ptr<float>(), M, static_cast<int>(K),
                                  static_cast<const uint8_t *>(packed.data_ptr()), packed.stride(0) * 4,
                                  static_cast<int>(bits), scale.data_ptr(), scale.scalar_type() == at::kBFloat16,
                                  group, N, y.data_ptr<float>(), N, at::get_num_threads());
    TORCH_CHECK(rc == 0, "coeflow::quant_linear: operands not taken");
    return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(coeflow, CPU, m) { m.impl("quant_linear", &quant_linear); }
