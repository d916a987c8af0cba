/* coeflow_decoder_layer's arguments, shared by decoder_layer.c and decoder_layer_op.cpp. */
#ifndef COEFLOW_DECODER_LAYER_H
#define COEFLOW_DECODER_LAYER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MAXB 8

typedef struct {
    int bf16;                  /* 1: bfloat16 activations, weights and caches; 0: float32 */
    int B, D, H, Hkv, hd, I, S; /* rows, hidden, heads, kv heads, head dim, MLP width, positions a
                                 * row's block table reaches (nb * bs) */
    long window;               /* sliding window (0: none) */
    float eps;                 /* RMSNorm's */
    int nthreads;
    const void *x;             /* [B, D] contiguous; the layer's input */
    void *out;                 /* [B, D] contiguous; its output */
    const void *ln1, *ln2;     /* [D] */
    const void *qkv_w[3];      /* [Nq or Nkv, D] with row strides qkv_ld */
    long qkv_ld[3];
    const void *qkv_b[3];      /* [Nq or Nkv] contiguous, or all NULL */
    const void *o_w;           /* [D, H * hd] */
    long o_ld;
    const void *gu_w[2];       /* gate, up: [I, D] */
    long gu_ld[2];
    const void *down_w;        /* [D, I] */
    long down_ld;
    void *kc, *vc;             /* the KV pools [nblocks, Hkv, bs, hd], last dimension contiguous, same strides */
    long c_sblk, c_sh, c_ss;   /* their strides (block, head, slot), in elements */
    long nblocks, bs, nb;      /* blocks in the pool, tokens a block, entries of a row's table */
    const int64_t *blocks;     /* [B, nb] contiguous: each row's block table (position p: block
                                * blocks[p / bs], slot p % bs) */
    const int64_t *q_pos;      /* [B]: the new token's position, where its key and value go */
    const void *cos, *sin;     /* [B, hd] contiguous: rotary table rows at q_pos */
    float *work;               /* coeflow_decoder_layer_work(...) floats of scratch */
} coeflow_layer_args;

/* Scratch floats one call needs (the activations in float32 and in the dtype, the scores). */
long coeflow_decoder_layer_work(int B, int D, int H, int Hkv, int hd, int I, int S, int nthreads);

/* Returns 0, or -1 for sizes out of range. */
int coeflow_decoder_layer(const coeflow_layer_args *a);

/* Calls so far (tests check that a compiled step used the layer). */
long long coeflow_layer_calls(void);

/* A whole decode step: the embedding rows, the rotary rows, every layer, the final RMSNorm
 * and the output head, as the compiled step with the layer kernel runs them. Built once per
 * KV cache and attached weights (coeflow.engine.runners.cpu_replay); all pointers fixed. */
typedef struct {
    int nlayers;
    coeflow_layer_args *layers; /* x, out, q_pos, blocks, cos, sin and work set by each step */
    int bf16, B, D, V, hd;
    long S;                     /* rows of the rotary tables: positions a step may take */
    float eps;                  /* the final RMSNorm's */
    int nthreads;
    const void *embed;          /* [V, D], row stride embed_ld */
    long embed_ld;
    const void *rope_cos, *rope_sin; /* [S, hd] contiguous */
    const void *norm;           /* [D] */
    const void *head;           /* [V, D], row stride head_ld */
    long head_ld;
    void *h;                    /* [2, B, D] in the dtype: the layers' inputs and outputs in turn */
    void *rows;                 /* [2, B, hd] in the dtype: cos, then sin, at q_pos */
    float *work;                /* coeflow_decode_step_work(...) floats */
    float *logits;              /* [B, V] float32 (as the compiled step's: Inductor drops the
                                 * head's round trip through the dtype) */
} coeflow_step_args;

long coeflow_decode_step_work(int B, int D, int H, int Hkv, int hd, int I, int S, int nthreads);

/* One token for each of the B rows: tokens [B] at q_pos [B], the rows' block tables blocks
 * [B, nb] (nb as the layers were built with). Returns 0, or -1: for a token, position or block
 * out of range (checked first: nothing written then), or for sizes the layer or product
 * kernels refuse (possibly after some writes). */
int coeflow_decode_step(coeflow_step_args *s, const int64_t *tokens, const int64_t *q_pos, const int64_t *blocks);

/* The step, then each row's argmax (first largest; NaN largest) written over its token:
 * greedy decoding's next tokens. */
int coeflow_decode_greedy(coeflow_step_args *s, int64_t *tokens, const int64_t *q_pos, const int64_t *blocks);

/* sizeof(coeflow_layer_args), sizeof(coeflow_step_args): the ctypes mirrors check them */
long coeflow_layer_args_size(void);
long coeflow_step_args_size(void);

#ifdef __cplusplus
}
#endif
#endif
