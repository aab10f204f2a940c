/* Fixed-order rows for kernels/native.py: y[m, :] = x[m, :] @ wt (+ bias), wt = W^T [K, N] row-major.

   Every output y[m, n] is reduced in one order that this file fixes, whatever M, N or the machine:
   K is cut into blocks (block_len below); inside a block the products are accumulated in k order by
   fused multiply-add from 0; the block sums are added in block order, the bias (if any) to the first
   block sum. Vector lanes run across n, never across k, so a lane's arithmetic is the scalar
   recurrence acc = fma(x[k], w[k][n], acc). The scalar tail (n beyond a multiple of 8) uses fmaf,
   the same operation. Built with -ffp-contract=off: no other multiply-add is fused.

   block_len(K, kc): kc when K > 2 kc; K / 2 (rounded down) when kc < K <= 2 kc; K otherwise; the
   remainder of K over that length is one last block. With kc = 192 this is the order MKL's AVX2
   sgemm gives each row of a gemm of 4 or more rows on an AMD EPYC (measured for K = 1..1300);
   kernels/native.py checks the equality for each (K, N) before using this path. */

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

static int64_t block_len(int64_t k, int64_t kc) {
    if (k > 2 * kc) return kc;
    if (k > kc) return k / 2;
    return k > 0 ? k : 1;
}

/* The helpers below compute one row of x @ wt for columns [n0, n0 + 8 NV) (wt rows k are ldw floats
   apart): NV 8-lane accumulators per K block, each lane the recurrence acc = fma(x[k], w[k][n], acc).
   More accumulators only let more independent chains run at once (8 keep both FMA units busy); every
   output's order is the same whichever block computes it. */
#define ROW_BLOCK(NV)                                                                                      \
    static void row_block##NV(const float *x, const float *wt, int64_t ldw, int64_t K, int64_t n0,        \
                              int64_t kb, const float *bias, float *y) {                                   \
        __m256 out[NV];                                                                                    \
        for (int64_t k0 = 0; k0 < K; k0 += kb) {                                                           \
            int64_t k1 = k0 + kb < K ? k0 + kb : K;                                                        \
            __m256 a[NV];                                                                                  \
            for (int i = 0; i < NV; i++) a[i] = _mm256_setzero_ps();                                       \
            for (int64_t k = k0; k < k1; k++) {                                                            \
                __m256 xb = _mm256_broadcast_ss(x + k);                                                    \
                const float *w = wt + k * ldw + n0;                                                        \
                for (int i = 0; i < NV; i++) a[i] = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w + 8 * i), a[i]); \
            }                                                                                              \
            for (int i = 0; i < NV; i++) {                                                                 \
                if (k0 == 0)                                                                               \
                    out[i] = bias ? _mm256_add_ps(a[i], _mm256_loadu_ps(bias + n0 + 8 * i)) : a[i];       \
                else                                                                                       \
                    out[i] = _mm256_add_ps(out[i], a[i]);                                                  \
            }                                                                                              \
        }                                                                                                  \
        for (int i = 0; i < NV; i++) _mm256_storeu_ps(y + n0 + 8 * i, out[i]);                            \
    }
ROW_BLOCK(8)
ROW_BLOCK(4)
ROW_BLOCK(1)

/* Column n: the same recurrence in scalar fmaf. */
static float one(const float *x, const float *wt, int64_t ldw, int64_t K, int64_t n, int64_t kb,
                 const float *bias) {
    float out = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        int64_t k1 = k0 + kb < K ? k0 + kb : K;
        float a = 0.0f;
        for (int64_t k = k0; k < k1; k++) a = fmaf(x[k], wt[k * ldw + n], a);
        if (k0 == 0) out = bias ? a + bias[n] : a;
        else out = out + a;
    }
    return out;
}

/* One row over every column N. */
static void row(const float *x, const float *wt, int64_t ldw, int64_t K, int64_t N, int64_t kb,
                const float *bias, float *y) {
    int64_t n = 0;
    for (; n + 64 <= N; n += 64) row_block8(x, wt, ldw, K, n, kb, bias, y);
    for (; n + 32 <= N; n += 32) row_block4(x, wt, ldw, K, n, kb, bias, y);
    for (; n + 8 <= N; n += 8) row_block1(x, wt, ldw, K, n, kb, bias, y);
    for (; n < N; n++) y[n] = one(x, wt, ldw, K, n, kb, bias);
}

/* x [M, K] (row stride ldx), wt [K, N], bias [N] or NULL, y [M, N] (row stride ldy); kc: see block_len. */
void fixed_rows(const float *x, int64_t M, int64_t K, int64_t ldx, const float *wt, int64_t N,
                const float *bias, float *y, int64_t ldy, int64_t kc) {
    int64_t kb = block_len(K, kc);
    for (int64_t m = 0; m < M; m++) row(x + m * ldx, wt, N, K, N, kb, bias, y + m * ldy);
}
