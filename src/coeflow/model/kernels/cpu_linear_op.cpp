// The CPU implementation of the op `coeflow::cpu_linear` (its schema and fake implementation
// are defined in Python, coeflow/model/kernels/__init__.py), linked with linear_avx512.c.
//
// Why C++: a decode step calls the op dozens of times, and the Python implementation
// (argument checks, the output tensor, ctypes) costs several times more a call through the
// dispatcher than this one.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

extern "C" int coeflow_linear(int bf16, const void *x, long ldx, int nw, const void *const *ws,
                              const long *ldws, const long *ns, float *y, long ldy, int M, int K,
                              int nthreads);

namespace {

constexpr int kMaxRows = 8;      // the C file's MAXM
constexpr int kMaxWeights = 16;  // layers sharing one input in one call (q, k, v: 3)

at::Tensor cpu_linear(const at::Tensor &x_in, at::TensorList ws) {
    TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 2 && x_in.size(0) >= 1 && x_in.size(0) <= kMaxRows,
                "coeflow::cpu_linear: x must be a CPU matrix of 1 to ", kMaxRows, " rows, got ", x_in.sizes());
    const bool bf16 = x_in.scalar_type() == at::kBFloat16;
    TORCH_CHECK(bf16 || x_in.scalar_type() == at::kFloat, "coeflow::cpu_linear: x must be float32 or bfloat16");
    const int nw = static_cast<int>(ws.size());
    TORCH_CHECK(nw >= 1 && nw <= kMaxWeights, "coeflow::cpu_linear: 1 to ", kMaxWeights, " weights, got ", nw);
    const at::Tensor x = x_in.contiguous();
    const void *ptrs[kMaxWeights];
    long ld[kMaxWeights], rows[kMaxWeights], n = 0;
    for (int j = 0; j < nw; j++) {
        const at::Tensor &w = ws[j];
        TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == x.scalar_type() && w.dim() == 2 &&
                        w.size(1) == x.size(1) && w.stride(1) == 1,
                    "coeflow::cpu_linear: weight ", j, " must be a CPU matrix of x's dtype with ", x.size(1),
                    " contiguous columns, got ", w.sizes(), " strides ", w.strides());
        ptrs[j] = w.data_ptr();
        ld[j] = w.stride(0);
        rows[j] = w.size(0);
        n += rows[j];
    }
    at::Tensor y = at::empty({x.size(0), n}, x.options().dtype(at::kFloat));
    coeflow_linear(bf16, x.data_ptr(), x.size(1), nw, ptrs, ld, rows, y.data_ptr<float>(), n,
                   static_cast<int>(x.size(0)), static_cast<int>(x.size(1)), at::get_num_threads());
    return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(coeflow, CPU, m) { m.impl("cpu_linear", &cpu_linear); }
