/* COEFLOW_CPU_KERNEL=emulate: the kernels' AVX-512 intrinsics in portable code, SIMDe's
 * (Debian's libsimde-dev) and, for the few SIMDe 0.7.4 lacks, these, so that the kernels and
 * everything built on them run, slowly, on a CPU without AVX-512: their tests run there. Force-
 * included before each kernel source (gcc -include). */
#include <immintrin.h>
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <string.h>
#include <math.h>

static inline simde__m512i emu_maskz_loadu_epi16_512(uint32_t k, const void *p) {
    simde__m512i_private r; memset(&r, 0, sizeof r);
    for (int i = 0; i < 32; i++) if (k >> i & 1) r.u16[i] = ((const uint16_t *)p)[i];
    return simde__m512i_from_private(r);
}
static inline simde__m256i emu_maskz_loadu_epi16_256(uint16_t k, const void *p) {
    simde__m256i_private r; memset(&r, 0, sizeof r);
    for (int i = 0; i < 16; i++) if (k >> i & 1) r.u16[i] = ((const uint16_t *)p)[i];
    return simde__m256i_from_private(r);
}
static inline simde__m512i emu_cvtepu16_epi32(simde__m256i a) {
    simde__m256i_private x = simde__m256i_to_private(a); simde__m512i_private r;
    for (int i = 0; i < 16; i++) r.u32[i] = x.u16[i];
    return simde__m512i_from_private(r);
}
static inline simde__m512 emu_maskz_loadu_ps(uint16_t k, const void *p) {
    simde__m512_private r; memset(&r, 0, sizeof r);
    for (int i = 0; i < 16; i++) if (k >> i & 1) r.f32[i] = ((const float *)p)[i];
    return simde__m512_from_private(r);
}
static inline float emu_reduce_add_ps(simde__m512 a) {
    simde__m512_private x = simde__m512_to_private(a); float s = 0;
    for (int i = 0; i < 16; i++) s += x.f32[i];
    return s;
}
#undef _mm512_maskz_loadu_epi16
#define _mm512_maskz_loadu_epi16(k, p) emu_maskz_loadu_epi16_512((k), (p))
#undef _mm256_maskz_loadu_epi16
#define _mm256_maskz_loadu_epi16(k, p) emu_maskz_loadu_epi16_256((k), (p))
#undef _mm512_cvtepu16_epi32
#define _mm512_cvtepu16_epi32(a) emu_cvtepu16_epi32(a)
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps(k, p) emu_maskz_loadu_ps((k), (p))
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps(a) emu_reduce_add_ps(a)
static inline float emu_reduce_max_ps(simde__m512 a) {
    simde__m512_private x = simde__m512_to_private(a); float m = x.f32[0];
    for (int i = 1; i < 16; i++) m = x.f32[i] > m ? x.f32[i] : m;
    return m;
}
static inline void emu_mask_storeu_epi16_256(void *p, uint16_t k, simde__m256i a) {
    simde__m256i_private x = simde__m256i_to_private(a);
    for (int i = 0; i < 16; i++) if (k >> i & 1) ((uint16_t *)p)[i] = x.u16[i];
}
static inline void emu_mask_storeu_ps(void *p, uint16_t k, simde__m512 a) {
    simde__m512_private x = simde__m512_to_private(a);
    for (int i = 0; i < 16; i++) if (k >> i & 1) ((float *)p)[i] = x.f32[i];
}
static inline simde__m256i emu_cvtneps_pbh(simde__m512 a) {
    simde__m512_private x = simde__m512_to_private(a); simde__m256i_private r;
    for (int i = 0; i < 16; i++) {
        uint32_t u; memcpy(&u, &x.f32[i], 4);
        r.u16[i] = isnan(x.f32[i]) ? (uint16_t)((u >> 16) | 0x40) : (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
    }
    return simde__m256i_from_private(r);
}
#undef _mm512_mask_cmp_ps_mask
#define _mm512_mask_cmp_ps_mask(k, a, b, imm) ((uint16_t)((k) & simde_mm512_cmp_ps_mask((a), (b), (imm))))
#undef _mm512_reduce_max_ps
#define _mm512_reduce_max_ps(a) emu_reduce_max_ps(a)
#undef _mm256_mask_storeu_epi16
#define _mm256_mask_storeu_epi16(p, k, a) emu_mask_storeu_epi16_256((p), (k), (a))
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps(p, k, a) emu_mask_storeu_ps((p), (k), (a))
#undef _mm512_cvtneps_pbh
#define _mm512_cvtneps_pbh(a) emu_cvtneps_pbh(a)
