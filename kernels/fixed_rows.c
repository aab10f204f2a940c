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

/* The helpers below compute one row of x @ wt for columns [n0, n0 + width): wt rows k are ldw floats apart;
   rows k >= valid are taken as zero and never read (the product still enters the sum: fma(x, 0, acc)). */

/* Columns [n0, n0 + 32): four 8-lane accumulators per block. */
static void row_block32(const float *x, const float *wt, int64_t ldw, int64_t K, int64_t valid, int64_t n0,
                        int64_t kb, const float *bias, float *y) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 out0 = zero, out1 = zero, out2 = zero, out3 = zero;
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        int64_t k1 = k0 + kb < K ? k0 + kb : K;
        int64_t kv = k1 < valid ? k1 : (valid > k0 ? valid : k0);
        __m256 a0 = zero, a1 = zero, a2 = zero, a3 = zero;
        for (int64_t k = k0; k < kv; k++) {
            __m256 xb = _mm256_broadcast_ss(x + k);
            const float *w = wt + k * ldw + n0;
            a0 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w), a0);
            a1 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w + 8), a1);
            a2 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w + 16), a2);
            a3 = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w + 24), a3);
        }
        for (int64_t k = kv; k < k1; k++) {
            __m256 xb = _mm256_broadcast_ss(x + k);
            a0 = _mm256_fmadd_ps(xb, zero, a0);
            a1 = _mm256_fmadd_ps(xb, zero, a1);
            a2 = _mm256_fmadd_ps(xb, zero, a2);
            a3 = _mm256_fmadd_ps(xb, zero, a3);
        }
        if (k0 == 0) {
            if (bias) {
                a0 = _mm256_add_ps(a0, _mm256_loadu_ps(bias + n0));
                a1 = _mm256_add_ps(a1, _mm256_loadu_ps(bias + n0 + 8));
                a2 = _mm256_add_ps(a2, _mm256_loadu_ps(bias + n0 + 16));
                a3 = _mm256_add_ps(a3, _mm256_loadu_ps(bias + n0 + 24));
            }
            out0 = a0, out1 = a1, out2 = a2, out3 = a3;
        } else {
            out0 = _mm256_add_ps(out0, a0);
            out1 = _mm256_add_ps(out1, a1);
            out2 = _mm256_add_ps(out2, a2);
            out3 = _mm256_add_ps(out3, a3);
        }
    }
    _mm256_storeu_ps(y + n0, out0);
    _mm256_storeu_ps(y + n0 + 8, out1);
    _mm256_storeu_ps(y + n0 + 16, out2);
    _mm256_storeu_ps(y + n0 + 24, out3);
}

/* Columns [n0, n0 + 8). */
static void row_block8(const float *x, const float *wt, int64_t ldw, int64_t K, int64_t valid, int64_t n0,
                       int64_t kb, const float *bias, float *y) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 out = zero;
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        int64_t k1 = k0 + kb < K ? k0 + kb : K;
        __m256 a = zero;
        for (int64_t k = k0; k < k1; k++)
            a = _mm256_fmadd_ps(_mm256_broadcast_ss(x + k), k < valid ? _mm256_loadu_ps(wt + k * ldw + n0) : zero, a);
        if (k0 == 0) out = bias ? _mm256_add_ps(a, _mm256_loadu_ps(bias + n0)) : a;
        else out = _mm256_add_ps(out, a);
    }
    _mm256_storeu_ps(y + n0, out);
}

/* Column n: the same recurrence in scalar fmaf. */
static float one(const float *x, const float *wt, int64_t ldw, int64_t K, int64_t valid, int64_t n, int64_t kb,
                 const float *bias) {
    float out = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        int64_t k1 = k0 + kb < K ? k0 + kb : K;
        float a = 0.0f;
        for (int64_t k = k0; k < k1; k++) a = fmaf(x[k], k < valid ? wt[k * ldw + n] : 0.0f, a);
        if (k0 == 0) out = bias ? a + bias[n] : a;
        else out = out + a;
    }
    return out;
}

/* One row over every column N. */
static void row(const float *x, const float *wt, int64_t ldw, int64_t K, int64_t valid, int64_t N, int64_t kb,
                const float *bias, float *y) {
    int64_t n = 0;
    for (; n + 32 <= N; n += 32) row_block32(x, wt, ldw, K, valid, n, kb, bias, y);
    for (; n + 8 <= N; n += 8) row_block8(x, wt, ldw, K, valid, n, kb, bias, y);
    for (; n < N; n++) y[n] = one(x, wt, ldw, K, valid, n, kb, bias);
}

/* x [M, K] (row stride ldx), wt [K, N], bias [N] or NULL, y [M, N] (row stride ldy); kc: see block_len. */
void fixed_rows(const float *x, int64_t M, int64_t K, int64_t ldx, const float *wt, int64_t N,
                const float *bias, float *y, int64_t ldy, int64_t kc) {
    int64_t kb = block_len(K, kc);
    for (int64_t m = 0; m < M; m++) row(x + m * ldx, wt, N, K, K, N, kb, bias, y + m * ldy);
}
