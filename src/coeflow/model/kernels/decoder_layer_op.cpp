// The CPU implementation of the op `coeflow::decoder_layer` (schema and fake implementation in
// coeflow/model/kernels/__init__.py): checks the tensors, then hands their pointers to
// decoder_layer.c. The KV pools are written in place (the schema marks them mutated).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "decoder_layer.h"

namespace {

constexpr int kMaxRows = MAXB;

void check_matrix(const at::Tensor &w, at::ScalarType dtype, int64_t rows, int64_t cols, const char *name) {
    TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == dtype && w.dim() == 2 && w.size(0) == rows &&
                    w.size(1) == cols && w.stride(1) == 1,
                "coeflow::decoder_layer: ", name, " must be a CPU matrix [", rows, ", ", cols,
                "] of the input's dtype with contiguous rows, got ", w.sizes(), " strides ", w.strides());
}

void check_vector(const at::Tensor &v, at::ScalarType dtype, int64_t n, const char *name) {
    TORCH_CHECK(v.device().is_cpu() && v.scalar_type() == dtype && v.numel() == n && v.is_contiguous(),
                "coeflow::decoder_layer: ", name, " must be a contiguous CPU tensor of ", n,
                " elements of the input's dtype, got ", v.sizes());
}

at::Tensor decoder_layer(const at::Tensor &x_in, const at::Tensor &ln1, at::TensorList qkv_w, at::TensorList qkv_b,
                         const at::Tensor &o_w, const at::Tensor &ln2, at::TensorList gate_up_w,
                         const at::Tensor &down_w, at::Tensor &k_pool, at::Tensor &v_pool,
                         const at::Tensor &blocks_in, const at::Tensor &q_pos_in, const at::Tensor &cos_in,
                         const at::Tensor &sin_in, int64_t num_heads, double eps, int64_t window) {
    const auto dtype = x_in.scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "coeflow::decoder_layer: float32 or bfloat16 only");
    TORCH_CHECK(k_pool.dim() == 4 && v_pool.sizes() == k_pool.sizes() && v_pool.strides() == k_pool.strides() &&
                    k_pool.stride(3) == 1 && k_pool.scalar_type() == dtype && v_pool.scalar_type() == dtype &&
                    k_pool.device().is_cpu() && v_pool.device().is_cpu(),
                "coeflow::decoder_layer: KV pools must be alike CPU tensors [blocks, Hkv, block size, hd] of the "
                "input's dtype with a contiguous last dimension");
    const int64_t nblocks = k_pool.size(0), Hkv = k_pool.size(1), bs = k_pool.size(2), hd = k_pool.size(3);
    const int64_t B = blocks_in.size(0), nb = blocks_in.dim() == 2 ? blocks_in.size(1) : 0, S = nb * bs;
    const int64_t D = x_in.size(-1), H = num_heads, I = down_w.size(1);
    TORCH_CHECK(blocks_in.dim() == 2 && blocks_in.scalar_type() == at::kLong && nb >= 1,
                "coeflow::decoder_layer: block tables must be int64 [B, blocks], got ", blocks_in.sizes());
    TORCH_CHECK(B >= 1 && B <= kMaxRows && x_in.dim() >= 2 && x_in.size(0) == B && x_in.numel() == B * D,
                "coeflow::decoder_layer: x must hold one token of ", D, " per row (1 to ", kMaxRows,
                " rows), got ", x_in.sizes(), " for block tables ", blocks_in.sizes());
    TORCH_CHECK(Hkv >= 1 && H >= Hkv && H % Hkv == 0, "coeflow::decoder_layer: ", H, " heads over ", Hkv,
                " kv heads");
    TORCH_CHECK(hd >= 2 && hd % 2 == 0 && bs >= 1, "coeflow::decoder_layer: pools need an even head size and "
                "at least one slot a block, got ", k_pool.sizes());
    TORCH_CHECK(window >= 0, "coeflow::decoder_layer: window must be 0 (none) or positive, got ", window);
    TORCH_CHECK(qkv_w.size() == 3 && gate_up_w.size() == 2 && (qkv_b.empty() || qkv_b.size() == 3),
                "coeflow::decoder_layer: q, k, v weights (and biases or none), gate and up weights");
    const int64_t nq = H * hd, nkv = Hkv * hd;
    check_vector(ln1, dtype, D, "ln1");
    check_vector(ln2, dtype, D, "ln2");
    check_matrix(qkv_w[0], dtype, nq, D, "q weight");
    check_matrix(qkv_w[1], dtype, nkv, D, "k weight");
    check_matrix(qkv_w[2], dtype, nkv, D, "v weight");
    for (size_t j = 0; j < qkv_b.size(); j++) check_vector(qkv_b[j], dtype, j == 0 ? nq : nkv, "q/k/v bias");
    check_matrix(o_w, dtype, D, nq, "o weight");
    check_matrix(gate_up_w[0], dtype, I, D, "gate weight");
    check_matrix(gate_up_w[1], dtype, I, D, "up weight");
    check_matrix(down_w, dtype, D, I, "down weight");
    TORCH_CHECK(q_pos_in.numel() == B && q_pos_in.scalar_type() == at::kLong,
                "coeflow::decoder_layer: one int64 position per row");
    check_vector(cos_in.contiguous(), dtype, B * hd, "cos");
    check_vector(sin_in.contiguous(), dtype, B * hd, "sin");

    const at::Tensor x = x_in.contiguous(), cos = cos_in.contiguous(), sin = sin_in.contiguous();
    const at::Tensor blocks = blocks_in.contiguous(), q_pos = q_pos_in.contiguous();
    at::Tensor out = at::empty_like(x);
    const int nthreads = at::get_num_threads();
    at::Tensor work = at::empty({coeflow_decoder_layer_work(B, D, H, Hkv, hd, I, S, nthreads)}, x.options().dtype(at::kFloat));

    coeflow_layer_args a{};
    a.bf16 = dtype == at::kBFloat16;
    a.B = B, a.D = D, a.H = H, a.Hkv = Hkv, a.hd = hd, a.I = I, a.S = S;
    a.window = window, a.eps = static_cast<float>(eps), a.nthreads = nthreads;
    a.x = x.data_ptr(), a.out = out.data_ptr(), a.ln1 = ln1.data_ptr(), a.ln2 = ln2.data_ptr();
    for (int j = 0; j < 3; j++) {
        a.qkv_w[j] = qkv_w[j].data_ptr(), a.qkv_ld[j] = qkv_w[j].stride(0);
        a.qkv_b[j] = qkv_b.empty() ? nullptr : qkv_b[j].data_ptr();
    }
    a.o_w = o_w.data_ptr(), a.o_ld = o_w.stride(0);
    for (int j = 0; j < 2; j++) a.gu_w[j] = gate_up_w[j].data_ptr(), a.gu_ld[j] = gate_up_w[j].stride(0);
    a.down_w = down_w.data_ptr(), a.down_ld = down_w.stride(0);
    a.kc = k_pool.data_ptr(), a.vc = v_pool.data_ptr();
    a.c_sblk = k_pool.stride(0), a.c_sh = k_pool.stride(1), a.c_ss = k_pool.stride(2);
    a.nblocks = nblocks, a.bs = bs, a.nb = nb;
    a.blocks = blocks.data_ptr<int64_t>(), a.q_pos = q_pos.data_ptr<int64_t>();
    a.cos = cos.data_ptr(), a.sin = sin.data_ptr(), a.work = work.data_ptr<float>();
    TORCH_CHECK(coeflow_decoder_layer(&a) == 0, "coeflow::decoder_layer: sizes, a position or a block out of "
                "the kernel's range");
    return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(coeflow, CPU, m) { m.impl("decoder_layer", &decoder_layer); }
