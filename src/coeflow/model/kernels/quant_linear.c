/* y[M,N] = x[M,K] @ w[N,K]^T for 1 to 8 rows of x (decode), where w is stored quantized to 8
 * or 4 bits in compressed-tensors' pack-quantized layout (coeflow/model/quant.py): value
 * q + 2^(bits-1) as unsigned bits, element k of a row at bit k*bits, and w = q * scale with
 * one scale a group of `group` inputs. float32 out.
 *
 * Why: decode reads every weight once a token, so reading 1 or 0.5 bytes a weight instead of
 * 2 or 4 is the whole gain, if unpacking keeps up with the memory. The packed bytes are read
 * directly (never dequantized into a buffer): 32 values at a time are widened to floats and
 * multiplied into the rows of x with fused multiply-adds. The offset 2^(bits-1) is taken out
 * once a group, as offset * scale * sum(x over the group), rather than from every value.
 *
 * Written for AVX2 (8 floats a vector) and AVX-512 (16), whichever the build flags allow,
 * so it runs on any x86-64 CPU of the last decade. Output rows are split across `nthreads`
 * OpenMP threads in contiguous stripes (torch's threads: libgomp is the runtime it loaded).
 * Built by coeflow.model.kernels.quant (gcc, on first use). */

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

/* Floats a vector: 16 with AVX-512, else 8 (AVX2). The tests also build the 16-wide code
 * without AVX-512 (-DQUANT_VL=16, in GCC's generic vectors) to check it on any CPU. */
#ifndef QUANT_VL
#if defined(__AVX512F__)
#define QUANT_VL 16
#else
#define QUANT_VL 8
#endif
#endif
#define VL QUANT_VL

#if VL == 16
typedef float vf __attribute__((vector_size(64)));
static inline __m128i load_bytes(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }
#if defined(__AVX512F__)
static inline vf u8_to_f(__m128i b) { return (vf)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)); }
#else
typedef uint8_t v16u8 __attribute__((vector_size(16)));
typedef int32_t v16i32 __attribute__((vector_size(64)));
static inline vf u8_to_f(__m128i b) {
    return __builtin_convertvector(__builtin_convertvector((v16u8)b, v16i32), vf);
}
#endif
#else
typedef __m256 vf;
static inline vf u8_to_f(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)); }
static inline __m128i load_bytes(const uint8_t *p) { return _mm_loadl_epi64((const __m128i *)p); }
#endif

#define MAXM 8
#define CHUNK 32          /* values unpacked at a time; groups are whole chunks */
#define P (CHUNK / VL)    /* vectors a chunk */

static inline vf load_f(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline float hsum(vf v) { float t = 0; for (int i = 0; i < VL; i++) t += v[i]; return t; }

/* Element i of a float32 or (bf16) bfloat16 array. */
static inline float read_float(const void *s, int bf16, long i) {
    if (!bf16) return ((const float *)s)[i];
    uint32_t u = (uint32_t)((const uint16_t *)s)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The chunk of row values from k as P float vectors, unsigned (offset not taken out). 4-bit
 * values come out as the chunk's even elements, then its odd ones: x is permuted to match. */
static inline __attribute__((always_inline)) void unpack_chunk(const uint8_t *row, long k, int bits, vf w[P]) {
    if (bits == 8) {
        for (int p = 0; p < P; p++) w[p] = u8_to_f(load_bytes(row + k + p * VL));
        return;
    }
    __m128i b = _mm_loadu_si128((const __m128i *)(row + k / 2));
    __m128i lo = _mm_and_si128(b, _mm_set1_epi8(15)), hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
#if VL == 8
    w[0] = u8_to_f(lo), w[1] = u8_to_f(_mm_unpackhi_epi64(lo, lo));
    w[2] = u8_to_f(hi), w[3] = u8_to_f(_mm_unpackhi_epi64(hi, hi));
#else
    w[0] = u8_to_f(lo), w[1] = u8_to_f(hi);
#endif
}

/* x [M, K] (float32, or bfloat16 where x_bf16) into the kernel's order `xp` (4 bits: each
 * chunk's even elements, then its odd ones), float32, and `xs` [M, K / group], each group's sum. */
void coeflow_quant_prepare(const void *x, int x_bf16, long ldx, int M, int K, int bits, int group, float *xp,
                           float *xs) {
    int G = K / group;
    for (int m = 0; m < M; m++) {
        float *pr = xp + (long)m * K;
        if (x_bf16) {
            const uint16_t *xr = (const uint16_t *)x + m * ldx;
            for (int k = 0; k < K; k++) pr[k] = read_float(xr, 1, k);
        } else {
            memcpy(pr, (const float *)x + m * ldx, K * sizeof(float));
        }
        for (int g = 0; g < G; g++) {
            float t = 0;
            for (int k = g * group; k < (g + 1) * group; k++) t += pr[k];
            xs[m * G + g] = t;
        }
        if (bits == 4)
            for (int c = 0; c < K; c += CHUNK) {
                float tmp[CHUNK];
                memcpy(tmp, pr + c, sizeof tmp);
                for (int j = 0; j < CHUNK / 2; j++) pr[c + j] = tmp[2 * j], pr[c + CHUNK / 2 + j] = tmp[2 * j + 1];
            }
    }
}

/* Output n for the M rows. One row (batch-1 decode) keeps P accumulators so that the chain of
 * dependent multiply-adds does not bound the rate; several rows are independent chains already. */
static inline __attribute__((always_inline)) void
out_row(const float *xp, const float *xs, const int M, int K, const uint8_t *wr, const int bits,
        const void *scale, int bf16, int group, long n, float *y, long ldy) {
    const int G = K / group;
    vf tot[MAXM];
    float offsets[MAXM];
    for (int m = 0; m < M; m++) tot[m] = (vf){}, offsets[m] = 0;
    for (int g = 0; g < G; g++) {
        vf acc[MAXM][P];
        for (int m = 0; m < M; m++)
            for (int p = 0; p < P; p++) acc[m][p] = (vf){};
        for (long k = (long)g * group; k < (long)(g + 1) * group; k += CHUNK) {
            vf w[P];
            unpack_chunk(wr, k, bits, w);
            for (int m = 0; m < M; m++) {
                const float *xm = xp + (long)m * K + k;
                if (M == 1) {
                    for (int p = 0; p < P; p++) acc[0][p] += w[p] * load_f(xm + p * VL);
                } else {
                    vf t = w[0] * load_f(xm);
                    for (int p = 1; p < P; p++) t += w[p] * load_f(xm + p * VL);
                    acc[m][0] += t;
                }
            }
        }
        float s = read_float(scale, bf16, n * G + g);
        for (int m = 0; m < M; m++) {
            vf a = acc[m][0];
            for (int p = 1; p < P; p++) a += acc[m][p];
            tot[m] += s * a;
            offsets[m] += s * xs[m * G + g];
        }
    }
    const float off = (float)(1 << (bits - 1));
    for (int m = 0; m < M; m++) y[m * ldy + n] = hsum(tot[m]) - off * offsets[m];
}

/* xp, xs from coeflow_quant_prepare; `nw` weights that read the same x (q, k, v), weight j
 * with ns[j] packed rows `ldws[j]` bytes apart and scales [ns[j], K/group] float32 or (bf16)
 * bfloat16; their outputs side by side in y [M, ldy]. Returns 0, or -1 for operands the kernel
 * does not take. */
int coeflow_quant_linear(const float *xp, const float *xs, int M, int K, int nw, const uint8_t *const *ws,
                         const long *ldws, const long *ns, int bits, const void *const *scales, int bf16,
                         int group, float *y, long ldy, int nthreads) {
    if (M < 1 || M > MAXM || (bits != 8 && bits != 4) || group % CHUNK || K % group || nw < 1) return -1;
    long total = 0;
    for (int j = 0; j < nw; j++) total += ns[j];
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long r = 0; r < total; r++) {
        int j = 0;
        long n = r;
        while (n >= ns[j]) n -= ns[j++];
        const uint8_t *wr = ws[j] + n * ldws[j];
        const void *sc = scales[j];
        float *yj = y + (r - n);  /* weight j's first output column */
        switch (M * 16 + bits) {
#define CASE(mm) case mm * 16 + 8: out_row(xp, xs, mm, K, wr, 8, sc, bf16, group, n, yj, ldy); break; \
                 case mm * 16 + 4: out_row(xp, xs, mm, K, wr, 4, sc, bf16, group, n, yj, ldy); break;
            CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
        }
    }
    return 0;
}
