/* One whole decoder layer of decode (1 to 8 rows, one new token each) in one call: RMSNorm,
 * q/k/v, rotary, the KV-cache write, attention over the cache, o and the residual, RMSNorm,
 * gate/up, SiLU, down and the residual.
 *
 * Why: on the CPU a compiled decode step otherwise spends a large share of its time outside
 * its products: Inductor's Python wrapper launching ~10 kernels a layer, each a parallel
 * region of its own, and the attention's loops. The paper's
 * answer is a whole decoder layer as one kernel; this is that answer on a CPU: one call, five
 * parallel regions (the four groups of products, through coeflow_linear, and attention).
 *
 * Numerics follow the model's code as the compiled step runs it: float32 inside, rounded to the
 * layer's dtype where that code rounds (each product's output, then again with a q/k/v bias
 * added, as the CPU's layers do (coeflow.engine.layers.cpu); the normed input; the residual sums; the rotated q and k once,
 * where eager's rotary rounds three times), so a bf16 step stays within bf16 rounding of the
 * eager one (tested). fp32 and bf16 only. Built with linear_avx512.c by coeflow.model.kernels. */

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "decoder_layer.h"

int coeflow_linear(int bf16, const void *x, long ldx, int nw, const void *const *ws, const long *ldws,
                   const long *ns, float *y, long ldy, int M, int K, int nthreads);
long coeflow_argmax(const void *x, long n, int bf16);

/* Vectors of 16 floats; every loop runs over n elements in steps of 16, the last masked. */
static inline __mmask16 tail(long n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

/* 16 (masked: fewer) elements of the dtype at p[i], as floats */
static inline __m512 vld(const void *p, long i, __mmask16 m, int bf16)
{
    if (bf16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i)), 16));
    return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}

/* stored in the dtype at p[i] (bf16: rounded to nearest even, as torch rounds) */
static inline void vst(void *p, long i, __m512 v, __mmask16 m, int bf16)
{
    if (bf16) _mm256_mask_storeu_epi16((uint16_t *)p + i, m, (__m256i)_mm512_cvtneps_pbh(v));
    else _mm512_mask_storeu_ps((float *)p + i, m, v);
}

/* v rounded to the dtype, kept as floats */
static inline __m512 vrnd(__m512 v, int bf16)
{
    if (!bf16) return v;
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v)), 16));
}

/* exp(x): 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2 (ln 2 in two parts, so r is
 * exact), e^r by its Taylor polynomial to r^7 (relative error under 1e-8 there); within
 * 2 ulp of expf. */
static inline __m512 vexp(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.f)), _mm512_set1_ps(89.f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    static const float c[8] = {1.f / 5040, 1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f};
    __m512 y = _mm512_set1_ps(c[0]);
    for (int i = 1; i < 8; i++) y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c[i]));
    return _mm512_scalef_ps(y, n);
}

/* dst (dtype) = ln * round(x * rsqrt(mean(x^2) + eps)), as the model's RMSNorm */
static void rms_norm(const float *x, const void *ln, void *dst, int D, float eps, int bf16)
{
    __m512 ss = _mm512_setzero_ps();
    for (long i = 0; i < D; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(tail(D - i), x + i);
        ss = _mm512_fmadd_ps(v, v, ss);
    }
    __m512 r = _mm512_set1_ps(1.f / sqrtf(_mm512_reduce_add_ps(ss) / D + eps));
    for (long i = 0; i < D; i += 16) {
        __mmask16 m = tail(D - i);
        __m512 v = vrnd(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), r), bf16);
        vst(dst, i, _mm512_mul_ps(vld(ln, i, m, bf16), v), m, bf16);
    }
}

long coeflow_decoder_layer_work(int B, int D, int H, int Hkv, int hd, int I, int S, int nthreads)
{
    long nq = (long)H * hd, nqkv = (long)(H + 2 * Hkv) * hd;
    return (long)B * (2L * D + nqkv + nq + (nq > D ? nq : D) + 3L * I) + (long)(nthreads < 1 ? 1 : nthreads) * S;
}

/* Where the key and value of row b's position p start in the pools, for kv head kvh. */
static inline long kv_at(const coeflow_layer_args *a, int b, int kvh, long p)
{
    return a->blocks[(long)b * a->nb + p / a->bs] * a->c_sblk + kvh * a->c_sh + (p % a->bs) * a->c_ss;
}

/* attention of one query head (row b, head h) over its row's keys at positions 0..q_pos (and
 * within the window): y [hd] float32, unrounded */
static void attend(const coeflow_layer_args *a, int b, int h, const float *q, float *scores, float *y)
{
    const int hd = a->hd, bf16 = a->bf16, kvh = h / (a->H / a->Hkv);
    const long qp = a->q_pos[b];
    const float scale = 1.f / sqrtf((float)hd);
    float mx = -INFINITY;
    for (long s = 0; s < a->S; s++) {
        if (s > qp || (a->window > 0 && qp - s >= a->window)) {
            scores[s] = -INFINITY;
            continue;
        }
        const long base = kv_at(a, b, kvh, s);
        __m512 acc = _mm512_setzero_ps();
        for (long d = 0; d < hd; d += 16) {
            __mmask16 m = tail(hd - d);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + d), vld(a->kc, base + d, m, bf16), acc);
        }
        scores[s] = _mm512_reduce_add_ps(acc) * scale;
        if (scores[s] > mx) mx = scores[s];
    }
    for (long d = 0; d < hd; d++) y[d] = 0.f;
    if (mx == -INFINITY) return; /* no slot to attend to: not reached in decode (its own key) */
    __m512 sum = _mm512_setzero_ps();
    for (long s = 0; s < a->S; s += 16) {
        __mmask16 m = tail(a->S - s);
        __m512 v = _mm512_maskz_loadu_ps(m, scores + s);
        m &= _mm512_cmp_ps_mask(v, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
        v = _mm512_maskz_mov_ps(m, vexp(_mm512_sub_ps(v, _mm512_set1_ps(mx))));
        _mm512_mask_storeu_ps(scores + s, tail(a->S - s), v);
        sum = _mm512_add_ps(sum, v);
    }
    for (long s = 0; s < a->S; s++) {
        if (scores[s] == 0.f) continue;
        __m512 e = _mm512_set1_ps(scores[s]);
        const long base = kv_at(a, b, kvh, s);
        for (long d = 0; d < hd; d += 16) {
            __mmask16 m = tail(hd - d);
            __m512 acc = _mm512_maskz_loadu_ps(m, y + d);
            _mm512_mask_storeu_ps(y + d, m, _mm512_fmadd_ps(e, vld(a->vc, base + d, m, bf16), acc));
        }
    }
    __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(sum));
    for (long d = 0; d < hd; d += 16) {
        __mmask16 m = tail(hd - d);
        _mm512_mask_storeu_ps(y + d, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + d), inv));
    }
}

static long long ncalls;

long long coeflow_layer_calls(void) { return __atomic_load_n(&ncalls, __ATOMIC_RELAXED); }

int coeflow_decoder_layer(const coeflow_layer_args *a)
{
    const int B = a->B, D = a->D, H = a->H, Hkv = a->Hkv, hd = a->hd, I = a->I, bf16 = a->bf16;
    if (B < 1 || B > MAXB || Hkv < 1 || H % Hkv || hd < 2 || hd % 2 || a->S < 1 || a->window < 0 || a->bs < 1
        || a->nb < 1 || a->S != a->nb * a->bs) return -1;
    for (int b = 0; b < B; b++) { /* every position a row reads and writes, in blocks of the pool */
        long qp = a->q_pos[b];
        if (qp < 0 || qp >= a->S) return -1;
        for (long i = 0; i <= qp / a->bs; i++)
            if (a->blocks[(long)b * a->nb + i] < 0 || a->blocks[(long)b * a->nb + i] >= a->nblocks) return -1;
    }
    __atomic_fetch_add(&ncalls, 1, __ATOMIC_RELAXED);
    const long nq = (long)H * hd, nkv = (long)Hkv * hd, nqkv = nq + 2 * nkv;
    float *xf = a->work;             /* [B, D] the input, then the residual stream */
    float *hn = xf + (long)B * D;    /* [B, D] the normed input, in the dtype */
    float *qkv = hn + (long)B * D;   /* [B, nqkv] */
    float *att = qkv + B * nqkv;     /* [B, nq] attention's output, in the dtype */
    float *tmp = att + B * nq;       /* [B, max(nq, D)] attention's output in float32; o's and down's */
    float *gu = tmp + (long)B * (nq > D ? nq : D); /* [B, 2 I] */
    float *act = gu + 2L * B * I;    /* [B, I] in the dtype */
    float *scores = act + (long)B * I; /* [nthreads, S] */

    const size_t es = bf16 ? 2 : 4; /* bytes of the dtype */
    for (int b = 0; b < B; b++) {
        for (long i = 0; i < D; i += 16)
            _mm512_mask_storeu_ps(xf + b * D + i, tail(D - i), vld(a->x, (long)b * D + i, tail(D - i), bf16));
        rms_norm(xf + b * D, a->ln1, (char *)hn + b * D * es, D, a->eps, bf16);
    }
    const long nsq[3] = {nq, nkv, nkv};
    if (coeflow_linear(bf16, hn, D, 3, a->qkv_w, a->qkv_ld, nsq, qkv, nqkv, B, D, a->nthreads)) return -1;

    /* round each output (+ bias, rounded again), rotate q and k, write k and v into the cache */
    const long half = hd / 2;
    for (int b = 0; b < B; b++) {
        float *row = qkv + b * nqkv;
        for (int part = 0; part < 3; part++) {
            long off = part == 0 ? 0 : nq + (part - 1) * nkv, n = part == 0 ? nq : nkv;
            for (long i = 0; i < n; i += 16) {
                __mmask16 m = tail(n - i);
                __m512 v = vrnd(_mm512_maskz_loadu_ps(m, row + off + i), bf16);
                if (a->qkv_b[0]) v = vrnd(_mm512_add_ps(v, vld(a->qkv_b[part], i, m, bf16)), bf16);
                _mm512_mask_storeu_ps(row + off + i, m, v);
            }
        }
        for (int h = 0; h < H + Hkv; h++) { /* q's heads, then k's: x * cos + rotate_half(x) * sin */
            float *x = row + (long)h * hd;
            const long t = (long)b * hd;
            for (long d = 0; d < half; d += 16) {
                __mmask16 m = tail(half - d);
                __m512 x1 = _mm512_maskz_loadu_ps(m, x + d), x2 = _mm512_maskz_loadu_ps(m, x + half + d);
                __m512 y1 = _mm512_fmsub_ps(x1, vld(a->cos, t + d, m, bf16), _mm512_mul_ps(x2, vld(a->sin, t + d, m, bf16)));
                __m512 y2 = _mm512_fmadd_ps(x2, vld(a->cos, t + half + d, m, bf16),
                                            _mm512_mul_ps(x1, vld(a->sin, t + half + d, m, bf16)));
                _mm512_mask_storeu_ps(x + d, m, vrnd(y1, bf16));
                _mm512_mask_storeu_ps(x + half + d, m, vrnd(y2, bf16));
            }
        }
        for (int h = 0; h < Hkv; h++) {
            long off = kv_at(a, b, h, a->q_pos[b]);
            for (long d = 0; d < hd; d += 16) {
                __mmask16 m = tail(hd - d);
                vst(a->kc, off + d, _mm512_maskz_loadu_ps(m, row + nq + (long)h * hd + d), m, bf16);
                vst(a->vc, off + d, _mm512_maskz_loadu_ps(m, row + nq + nkv + (long)h * hd + d), m, bf16);
            }
        }
    }

    int nt = a->nthreads < 1 ? 1 : a->nthreads;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && B * H > 1)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        float *y = tmp + (long)b * nq + (long)h * hd;
        attend(a, b, h, qkv + b * nqkv + (long)h * hd, scores + (long)omp_get_thread_num() * a->S, y);
        for (long d = 0; d < hd; d += 16)
            vst(att, (long)b * nq + (long)h * hd + d, _mm512_maskz_loadu_ps(tail(hd - d), y + d), tail(hd - d), bf16);
    }

    const long nsd[1] = {D};
    if (coeflow_linear(bf16, att, nq, 1, &a->o_w, &a->o_ld, nsd, tmp, D, B, (int)nq, a->nthreads)) return -1;
    for (int b = 0; b < B; b++) { /* the residual, rounded as eager's sum of two dtype tensors */
        for (long i = 0; i < D; i += 16) {
            __mmask16 m = tail(D - i);
            __m512 o = vrnd(_mm512_maskz_loadu_ps(m, tmp + b * D + i), bf16);
            _mm512_mask_storeu_ps(xf + b * D + i, m, vrnd(_mm512_add_ps(_mm512_maskz_loadu_ps(m, xf + b * D + i), o), bf16));
        }
        rms_norm(xf + b * D, a->ln2, (char *)hn + b * D * es, D, a->eps, bf16);
    }
    const long nsi[2] = {I, I};
    if (coeflow_linear(bf16, hn, D, 2, a->gu_w, a->gu_ld, nsi, gu, 2L * I, B, D, a->nthreads)) return -1;
    for (int b = 0; b < B; b++) /* silu(gate) * up, each rounded as eager's */
        for (long i = 0; i < I; i += 16) {
            __mmask16 m = tail(I - i);
            __m512 g = vrnd(_mm512_maskz_loadu_ps(m, gu + 2L * b * I + i), bf16);
            __m512 u = vrnd(_mm512_maskz_loadu_ps(m, gu + 2L * b * I + I + i), bf16);
            __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.f), vexp(_mm512_sub_ps(_mm512_setzero_ps(), g))));
            vst(act, (long)b * I + i, _mm512_mul_ps(vrnd(silu, bf16), u), m, bf16);
        }
    if (coeflow_linear(bf16, act, I, 1, &a->down_w, &a->down_ld, nsd, tmp, D, B, I, a->nthreads)) return -1;
    for (int b = 0; b < B; b++)
        for (long i = 0; i < D; i += 16) {
            __mmask16 m = tail(D - i);
            __m512 d = vrnd(_mm512_maskz_loadu_ps(m, tmp + b * D + i), bf16);
            vst(a->out, (long)b * D + i, _mm512_add_ps(_mm512_maskz_loadu_ps(m, xf + b * D + i), d), m, bf16);
        }
    return 0;
}

long coeflow_layer_args_size(void) { return sizeof(coeflow_layer_args); }
long coeflow_step_args_size(void) { return sizeof(coeflow_step_args); }

long coeflow_decode_step_work(int B, int D, int H, int Hkv, int hd, int I, int S, int nthreads)
{
    long layer = coeflow_decoder_layer_work(B, D, H, Hkv, hd, I, S, nthreads);
    return layer > (long)B * D ? layer : (long)B * D; /* the final norm's float32 input */
}

/* What the compiled decode step runs, in one call: no Python, dispatch or allocation between
 * the layers, where they ran with the caches cold while the second thread waited. */
int coeflow_decode_step(coeflow_step_args *s, const int64_t *tokens, const int64_t *q_pos, const int64_t *blocks)
{
    const int B = s->B, D = s->D, hd = s->hd, bf16 = s->bf16;
    const size_t es = bf16 ? 2 : 4;
    if (s->nlayers < 1) return -1;
    const coeflow_layer_args *l0 = &s->layers[0];
    for (int b = 0; b < B; b++) {
        if (tokens[b] < 0 || tokens[b] >= s->V || q_pos[b] < 0 || q_pos[b] >= s->S || q_pos[b] >= l0->S) return -1;
        for (long i = 0; i <= q_pos[b] / l0->bs; i++)
            if (blocks[(long)b * l0->nb + i] < 0 || blocks[(long)b * l0->nb + i] >= l0->nblocks) return -1;
    }
    char *h0 = s->h, *h1 = h0 + (size_t)B * D * es, *cos = s->rows, *sin = cos + (size_t)B * hd * es;
    for (int b = 0; b < B; b++) {
        memcpy(h0 + (size_t)b * D * es, (const char *)s->embed + (size_t)tokens[b] * s->embed_ld * es, D * es);
        memcpy(cos + (size_t)b * hd * es, (const char *)s->rope_cos + (size_t)q_pos[b] * hd * es, hd * es);
        memcpy(sin + (size_t)b * hd * es, (const char *)s->rope_sin + (size_t)q_pos[b] * hd * es, hd * es);
    }
    for (int i = 0; i < s->nlayers; i++) {
        coeflow_layer_args *a = &s->layers[i];
        a->x = i % 2 ? h1 : h0, a->out = i % 2 ? h0 : h1;
        a->q_pos = q_pos, a->blocks = blocks, a->cos = cos, a->sin = sin, a->work = s->work;
        if (coeflow_decoder_layer(a)) return -1;
    }
    const char *x = s->nlayers % 2 ? h1 : h0;
    float *xf = s->work;
    char *hn = s->nlayers % 2 ? h0 : h1; /* the last layer's input, free now */
    for (int b = 0; b < B; b++) {
        for (long i = 0; i < D; i += 16)
            _mm512_mask_storeu_ps(xf + (long)b * D + i, tail(D - i), vld(x, (long)b * D + i, tail(D - i), bf16));
        rms_norm(xf + (long)b * D, s->norm, hn + (size_t)b * D * es, D, s->eps, bf16);
    }
    const long nv = s->V;
    if (coeflow_linear(bf16, hn, D, 1, &s->head, &s->head_ld, &nv, s->logits, nv, B, D, s->nthreads)) return -1;
    return 0;
}

/* Greedy decoding's step: the step for tokens at q_pos, then each row's argmax written over
 * its token, so that the engine's loop between two steps makes no torch call. */
int coeflow_decode_greedy(coeflow_step_args *s, int64_t *tokens, const int64_t *q_pos, const int64_t *blocks)
{
    if (coeflow_decode_step(s, tokens, q_pos, blocks)) return -1;
    for (int b = 0; b < s->B; b++) tokens[b] = coeflow_argmax(s->logits + (long)b * s->V, s->V, 0);
    return 0;
}
