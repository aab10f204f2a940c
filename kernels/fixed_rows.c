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

static inline void transpose8(__m256 *r) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Attention scores of a few query rows: out[m, j] = sum_d q[m, d] * k[j, d] for j < n, k row-major
   [n, D] (row stride ldk), out row stride ldo, q contiguous [M, D]; each output in the same order as
   fixed_rows (d blocks, d-sequential fma inside). Lanes run across 8 slots (an 8 x 8 tile of keys
   transposed in registers), up to 4 rows share each tile. */
void fixed_scores(const float *q, int64_t M, int64_t D, const float *k, int64_t ldk, int64_t n,
                  float *out, int64_t ldo, int64_t kc) {
    int64_t kb = block_len(D, kc);
    int64_t j = 0;
    if (D % 8 == 0 && kb % 8 == 0) {
        for (; j + 8 <= n; j += 8) {
            const float *kj = k + j * ldk;
            for (int64_t m0 = 0; m0 < M; m0 += 4) {
                int64_t mm = M - m0 < 4 ? M - m0 : 4;
                __m256 o[4], a[4], t[8];
                for (int64_t d0 = 0; d0 < D; d0 += kb) {
                    int64_t d1 = d0 + kb < D ? d0 + kb : D;
                    for (int r = 0; r < 4; r++) a[r] = _mm256_setzero_ps();
                    for (int64_t e = d0; e < d1; e += 8) {
                        for (int i = 0; i < 8; i++) t[i] = _mm256_loadu_ps(kj + i * ldk + e);
                        transpose8(t);  /* t[i] = k[j .. j+7][e + i] */
                        for (int i = 0; i < 8; i++)
                            for (int r = 0; r < mm; r++)
                                a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + (m0 + r) * D + e + i), t[i], a[r]);
                    }
                    for (int r = 0; r < mm; r++) o[r] = d0 == 0 ? a[r] : _mm256_add_ps(o[r], a[r]);
                }
                for (int r = 0; r < mm; r++) _mm256_storeu_ps(out + (m0 + r) * ldo + j, o[r]);
            }
        }
    }
    for (; j < n; j++)
        for (int64_t m = 0; m < M; m++) {
            float o = 0.0f;
            for (int64_t d0 = 0; d0 < D; d0 += kb) {
                int64_t d1 = d0 + kb < D ? d0 + kb : D;
                float a = 0.0f;
                for (int64_t d = d0; d < d1; d++) a = fmaf(q[m * D + d], k[j * ldk + d], a);
                o = d0 == 0 ? a : o + a;
            }
            out[m * ldo + j] = o;
        }
}

/* The split tree and the division: nodes o [n, M, D] and l [M, n] (each split's partial output and row
   sum) -> out[m, d] = tree(o[:, m, d]) / tree(l[m, :]), where tree adds neighbours level by level
   (0+1, 2+3, ...; an odd last moves up alone), as kernels.splitkv.merge_nodes does. scratch: n floats. */
void split_merge(const float *o, const float *l, int64_t n, int64_t M, int64_t D, float *out, float *scratch) {
    for (int64_t m = 0; m < M; m++) {
        for (int64_t s = 0; s < n; s++) scratch[s] = l[m * n + s];
        int64_t cnt = n;
        while (cnt > 1) {
            int64_t half = cnt / 2;
            for (int64_t i = 0; i < half; i++) scratch[i] = scratch[2 * i] + scratch[2 * i + 1];
            if (cnt % 2) scratch[half] = scratch[cnt - 1];
            cnt = half + cnt % 2;
        }
        float denom = scratch[0];
        for (int64_t d = 0; d < D; d++) {
            for (int64_t s = 0; s < n; s++) scratch[s] = o[(s * M + m) * D + d];
            cnt = n;
            while (cnt > 1) {
                int64_t half = cnt / 2;
                for (int64_t i = 0; i < half; i++) scratch[i] = scratch[2 * i] + scratch[2 * i + 1];
                if (cnt % 2) scratch[half] = scratch[cnt - 1];
                cnt = half + cnt % 2;
            }
            out[m * D + d] = scratch[0] / denom;
        }
    }
}

/* Split-KV partial outputs: o[s, m, :] = sum_{c < split} p[m, s split + c] * v[s split + c, :] for each split
   s < n_splits; p row stride ldp (zeros past the visible slots), v row-major [*, D] (row stride ldv) of
   which rows >= valid are taken as zero (never read); o contiguous [n_splits, M, D]. Each output in
   fixed_rows' order over the split's slots (K = split). Lanes run across D. */
void fixed_split_pv(const float *p, int64_t M, int64_t ldp, const float *v, int64_t ldv, int64_t D,
                    int64_t split, int64_t n_splits, int64_t valid, float *o, int64_t kc) {
    int64_t kb = block_len(split, kc);
    for (int64_t s = 0; s < n_splits; s++)
        for (int64_t m = 0; m < M; m++)
            row(p + m * ldp + s * split, v + s * split * ldv, ldv, split, valid - s * split, D, kb, NULL,
                o + (s * M + m) * D);
}
