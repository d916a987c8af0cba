/* y[M,N] = x[M,K] @ w[N,K]^T for a few rows (decode: M <= 8), float32 out, on AVX-512;
 * several weights that read the same x in one call.
 *
 * Why: a decode step reads every weight once per token, so batching rows should be almost
 * free while memory is the limit. MKL's small-M GEMMs (what F.linear does for 2-8 rows)
 * reach neither the memory's read rate nor the compute peak on 2 threads. Here each weight
 * vector is loaded once and multiplied into all M activation rows (bf16 pairs with
 * vdpbf16ps, fp32 with FMA), with one accumulator per activation row; each output is reduced
 * horizontally once, at the end of its weight row.
 *
 * Weights keep their native [out, in] layout (they are views into the store's shared pool).
 * Output rows are split across `nthreads` OpenMP threads in contiguous stripes; libgomp is
 * the runtime torch itself has loaded, so the threads are torch's. Built by
 * coeflow.model.kernels (gcc, on first use). */

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>

#define MAXM 8
#define MAXU 2

/* The lanes of the last, partial vector of 16 floats: the first n (all for n >= 16). */
static inline __mmask16 tail16(long n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

/* Software prefetch distance: the weight bytes read ahead of the current load. */
#define PF_BYTES 6144

/* One output row n against M rows of x. U independent accumulators per x row split the
 * K loop, so that for small M the chain of dependent multiply-adds does not bound the
 * rate. Rows are processed one at a time so that the weight is read as one sequential
 * stream: interleaving even two rows (to reuse each x load twice) halved the read rate.
 * Each 64-byte line is also prefetched PF_BYTES ahead, since the hardware prefetcher alone
 * falls short of the read rate when memory is fast. The prefetch is non-temporal: a weight is
 * read once a step, and streamed through the caches it would evict everything else, so the
 * Python of each step would run from memory. */
static inline __attribute__((always_inline)) void
row_bf16(const uint16_t *x, long ldx, const uint16_t *w, long ldw, float *y, long ldy,
         int M, int U, long n, int K)
{
    __m512 acc[MAXU][MAXM];
#pragma GCC unroll 8
    for (int u = 0; u < U; u++)
#pragma GCC unroll 8
        for (int m = 0; m < M; m++) acc[u][m] = _mm512_setzero_ps();
    const uint16_t *wr = w + n * ldw;
    int k = 0;
    for (; k + 32 * U <= K; k += 32 * U) {
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) {
            __m512bh wv = (__m512bh)_mm512_loadu_si512(wr + k + 32 * u);
            _mm_prefetch((const char *)(wr + k + 32 * u) + PF_BYTES, _MM_HINT_NTA);
#pragma GCC unroll 8
            for (int m = 0; m < M; m++)
                acc[u][m] = _mm512_dpbf16_ps(acc[u][m], wv, (__m512bh)_mm512_loadu_si512(x + m * ldx + k + 32 * u));
        }
    }
    for (; k < K; k += 32) { /* the rest; masked loads read nothing past the row's end */
        __mmask32 mask = K - k >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (K - k)) - 1);
        __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mask, wr + k);
#pragma GCC unroll 8
        for (int m = 0; m < M; m++)
            acc[0][m] = _mm512_dpbf16_ps(acc[0][m], wv, (__m512bh)_mm512_maskz_loadu_epi16(mask, x + m * ldx + k));
    }
#pragma GCC unroll 8
    for (int m = 0; m < M; m++) {
#pragma GCC unroll 4
        for (int u = 1; u < U; u++) acc[0][m] = _mm512_add_ps(acc[0][m], acc[u][m]);
        y[m * ldy + n] = _mm512_reduce_add_ps(acc[0][m]);
    }
}

static inline __attribute__((always_inline)) void
row_f32(const float *x, long ldx, const float *w, long ldw, float *y, long ldy,
        int M, int U, long n, int K)
{
    __m512 acc[MAXU][MAXM];
#pragma GCC unroll 8
    for (int u = 0; u < U; u++)
#pragma GCC unroll 8
        for (int m = 0; m < M; m++) acc[u][m] = _mm512_setzero_ps();
    const float *wr = w + n * ldw;
    int k = 0;
    for (; k + 16 * U <= K; k += 16 * U) {
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) {
            __m512 wv = _mm512_loadu_ps(wr + k + 16 * u);
            _mm_prefetch((const char *)(wr + k + 16 * u) + PF_BYTES, _MM_HINT_NTA);
#pragma GCC unroll 8
            for (int m = 0; m < M; m++)
                acc[u][m] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + m * ldx + k + 16 * u), acc[u][m]);
        }
    }
    for (; k < K; k += 16) {
        __mmask16 mask = tail16(K - k);
        __m512 wv = _mm512_maskz_loadu_ps(mask, wr + k);
#pragma GCC unroll 8
        for (int m = 0; m < M; m++)
            acc[0][m] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(mask, x + m * ldx + k), acc[0][m]);
    }
#pragma GCC unroll 8
    for (int m = 0; m < M; m++) {
#pragma GCC unroll 4
        for (int u = 1; u < U; u++) acc[0][m] = _mm512_add_ps(acc[0][m], acc[u][m]);
        y[m * ldy + n] = _mm512_reduce_add_ps(acc[0][m]);
    }
}

/* Rows [lo, hi) for a fixed M; M and U are constants in each instantiation, so the unrolled
 * accumulators live in registers (U * M <= 8 of the 32 vector registers). */
#define DEFINE_RANGE(T, M, U)                                                               \
    static void range_##T##_##M(const void *x, long ldx, const void *w, long ldw, float *y, \
                                long ldy, long lo, long hi, int K)                          \
    {                                                                                       \
        for (long n = lo; n < hi; n++) row_##T(x, ldx, w, ldw, y, ldy, M, U, n, K);         \
    }
#define U1 2 /* one row: 2 chains ran 5-8% faster than 1 from memory, 4 no faster than 2 */
#define U2 2
#define U3 2
#define DEFINE_ALL(T)                                                                          \
    DEFINE_RANGE(T, 1, U1) DEFINE_RANGE(T, 2, U2) DEFINE_RANGE(T, 3, U3) DEFINE_RANGE(T, 4, 1) \
    DEFINE_RANGE(T, 5, 1) DEFINE_RANGE(T, 6, 1) DEFINE_RANGE(T, 7, 1) DEFINE_RANGE(T, 8, 1)
DEFINE_ALL(bf16)
DEFINE_ALL(f32)

typedef void (*range_fn)(const void *, long, const void *, long, float *, long, long, long, int);
static const range_fn BF16[MAXM] = {range_bf16_1, range_bf16_2, range_bf16_3, range_bf16_4,
                                    range_bf16_5, range_bf16_6, range_bf16_7, range_bf16_8};
static const range_fn F32[MAXM] = {range_f32_1, range_f32_2, range_f32_3, range_f32_4,
                                   range_f32_5, range_f32_6, range_f32_7, range_f32_8};

static long long ncalls;

/* Calls so far (tests check that a compiled step used the kernel). */
long long coeflow_calls(void) { return __atomic_load_n(&ncalls, __ATOMIC_RELAXED); }

/* Entry point: y[:, off_j : off_j + ns[j]] = x @ ws[j].T for the nw weights ws (all with K
 * columns; off_j = ns[0] + ... + ns[j-1]), so that layers reading the same x (q, k and v; gate
 * and up) cost one call and one parallel region. bf16: 1 for bfloat16 x and weights, 0 for
 * float32. Returns 0, or -1 for bad sizes. */
int coeflow_linear(int bf16, const void *x, long ldx, int nw, const void *const *ws, const long *ldws,
                   const long *ns, float *y, long ldy, int M, int K, int nthreads)
{
    if (M < 1 || M > MAXM || K < 0 || nw < 1) return -1;
    long N = 0;
    for (int j = 0; j < nw; j++) {
        if (ns[j] < 0) return -1;
        N += ns[j];
    }
    __atomic_fetch_add(&ncalls, 1, __ATOMIC_RELAXED);
    range_fn fn = bf16 ? BF16[M - 1] : F32[M - 1];
    if (nthreads < 1 || N < 64) nthreads = 1;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        /* one contiguous stripe of the concatenated rows per thread: one sequential stream
         * per weight it touches */
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        long lo = N * t / nt, hi = N * (t + 1) / nt, off = 0;
        for (int j = 0; j < nw; j++) {
            long a = lo > off ? lo : off, b = hi < off + ns[j] ? hi : off + ns[j];
            if (a < b) fn(x, ldx, ws[j], ldws[j], y + off, ldy, a - off, b - off, K);
            off += ns[j];
        }
    }
    return 0;
}

/* The sum of n floats read by nthreads threads, one contiguous stripe each, with four
 * independent accumulators: as plain a read of memory as this CPU allows; with `prefetch`,
 * each line asked for PF_BYTES ahead as the products ask for theirs (faster with memory slow,
 * slower with memory fast). The benchmarks' physical limit is the fastest of these and
 * torch's reductions (coeflow.bench.machine), since torch's alone read slower than the
 * products above. */
double coeflow_read(const float *p, long n, int nthreads, int prefetch)
{
    double total = 0;
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel num_threads(nthreads) reduction(+ : total)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        long lo = n / 64 * t / nt * 64, hi = t == nt - 1 ? n : n / 64 * (t + 1) / nt * 64;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        long i = lo;
        for (; i + 64 <= hi; i += 64) {
            if (prefetch)
                for (int u = 0; u < 4; u++) _mm_prefetch((const char *)(p + i + 16 * u) + PF_BYTES, _MM_HINT_NTA);
            a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
            a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
            a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
            a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
        }
        double s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        for (; i < hi; i++) s += p[i];
        total += s;
    }
    return total;
}

/* 16 (masked: fewer) elements at x[i] as floats: float32, or bfloat16 widened (exact). */
static inline __m512 load16(const void *x, long i, __mmask16 m, int bf16)
{
    if (bf16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)x + i)), 16));
    return _mm512_maskz_loadu_ps(m, (const float *)x + i);
}

/* Index of the largest of n floats (bf16: bfloat16 values), the first where several are
 * equal; a NaN counts as the largest (the first NaN wins), as torch.argmax has it. Greedy
 * decoding takes one per row of logits a step, where torch's argmax costs several times
 * more; bfloat16 logits are read as they are, without converting them first. */
long coeflow_argmax(const void *x, long n, int bf16)
{
    if (n <= 0) return -1;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    __mmask16 nan = 0;
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 v = load16(x, i, m, bf16);
        nan |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
        mx = _mm512_mask_max_ps(mx, m, mx, v);
    }
    if (nan) {
        for (long i = 0; i < n; i += 16) {
            __mmask16 m = tail16(n - i);
            __m512 v = load16(x, i, m, bf16);
            __mmask16 un = _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
            if (un) return i + __builtin_ctz(un);
        }
    }
    const __m512 best = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __mmask16 eq = _mm512_mask_cmp_ps_mask(m, load16(x, i, m, bf16), best, _CMP_EQ_OQ);
        if (eq) return i + __builtin_ctz(eq);
    }
    return 0; /* not reached: the maximum is one of the values */
}
