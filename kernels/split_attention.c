/* Split-KV attention in one order this file fixes, for kernels/fused_attention.py.

   For one kv head: rows q [M, D] (already scaled), keys and values k, v [*, D] (rows ldk, ldv floats
   apart), vis[m] >= 1: row m sees the slots c < vis[m]. Every number a row gets depends only on that
   row, its vis and the slots it sees; never on M, on the other rows, on the slots past vis, or on the
   machine (any x86-64 with AVX2 and FMA), because each step is written out here:

     score s[c]  = q[0] k[c][0], then fma(q[d], k[c][d], s) for d = 1 .. D-1 (d-sequential);
     max         = the exact maximum of s[c < vis];
     p[c]        = exp8(s[c] - max) for c < vis (exp8 below, one fixed polynomial), 0 past vis;
     split j     = the slots [j split, (j + 1) split); n = ceil(vis / split) splits;
     l_j         = 8 lanes, lane i adding p[j split + 8 t + i] for t = 0, 1, ... in order, then
                   ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7));
     o_j[d]      = fma(p[c], v[c][d], o) over the split's visible slots c in order, from 0;
     tree        = neighbours added level by level (0+1, 2+3, ...; an odd last moves up alone);
     out[d]      = tree(o_j[d]) / tree(l_j).

   So training (a whole sequence), a chunk appended to a cache and a one-token decode step give a row
   the same bits, on AMD and Intel alike. Vector lanes never run across a reduction except where the
   order above says so (l_j), and a scalar tail runs the same fused multiply-adds (fmaf) as a lane.
   Built with -ffp-contract=off: no other multiply-add is fused. D must be a multiple of 8 and split a
   multiple of 8 (the Python side checks). */

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define RG 4   /* rows per score block */
#define TW 24  /* slots per score tile: 3 vectors */

/* exp(x) for x <= 88: Cody-Waite reduction by ln 2 and Cephes' degree-5 polynomial (about 1 ulp);
   x < -87 (and -inf) gives exactly 0. The same operations on every lane and every machine. */
static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

static inline float hsum8(__m256 a) {
    float t[8];
    _mm256_storeu_ps(t, a);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* r[i] <- column i of the 8 x 8 block whose rows are r[0 .. 8) (moves bits only). */
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

/* kt[d * TW + j] = k[(c0 + j) * ldk + d] for j < w, 0 for w <= j < TW. */
static void key_tile(const float *k, int64_t ldk, int64_t c0, int64_t w, int64_t D, float *kt) {
    if (w == TW) {
        for (int64_t j = 0; j < TW; j += 8)
            for (int64_t d = 0; d < D; d += 8) {
                __m256 t[8];
                for (int i = 0; i < 8; i++) t[i] = _mm256_loadu_ps(k + (c0 + j + i) * ldk + d);
                transpose8(t);
                for (int i = 0; i < 8; i++) _mm256_storeu_ps(kt + (d + i) * TW + j, t[i]);
            }
        return;
    }
    for (int64_t j = 0; j < TW; j++)
        for (int64_t d = 0; d < D; d++) kt[d * TW + j] = j < w ? k[(c0 + j) * ldk + d] : 0.0f;
}

/* Scores of rows [0, M) against slots [0, n) into sc (row stride lds >= n rounded up to TW). The keys
   of a tile of TW slots are transposed once into kt [D][TW] and shared by every block of RG rows;
   a block skips the tiles none of its rows sees. */
static void scores(const float *q, int64_t M, int64_t D, const int64_t *vis, const float *k, int64_t ldk,
                   int64_t n, float *sc, int64_t lds, float *kt) {
    for (int64_t c0 = 0; c0 < n; c0 += TW) {
        key_tile(k, ldk, c0, min64(TW, n - c0), D, kt);
        for (int64_t m0 = 0; m0 < M; m0 += RG) {
            const float *qr[RG];
            int64_t reach = 0;
            for (int r = 0; r < RG; r++) {
                int64_t m = min64(m0 + r, M - 1);
                qr[r] = q + m * D;
                if (vis[m] > reach) reach = vis[m];
            }
            if (c0 >= reach) continue;
            __m256 a[RG][3];
            for (int64_t d = 0; d < D; d++) {
                __m256 k0 = _mm256_loadu_ps(kt + d * TW), k1 = _mm256_loadu_ps(kt + d * TW + 8),
                       k2 = _mm256_loadu_ps(kt + d * TW + 16);
                for (int r = 0; r < RG; r++) {
                    __m256 b = _mm256_broadcast_ss(qr[r] + d);
                    if (d == 0) {
                        a[r][0] = _mm256_mul_ps(b, k0);
                        a[r][1] = _mm256_mul_ps(b, k1);
                        a[r][2] = _mm256_mul_ps(b, k2);
                    } else {
                        a[r][0] = _mm256_fmadd_ps(b, k0, a[r][0]);
                        a[r][1] = _mm256_fmadd_ps(b, k1, a[r][1]);
                        a[r][2] = _mm256_fmadd_ps(b, k2, a[r][2]);
                    }
                }
            }
            for (int r = 0; r < RG && m0 + r < M; r++) {
                float *o = sc + (m0 + r) * lds + c0;
                _mm256_storeu_ps(o, a[r][0]);
                _mm256_storeu_ps(o + 8, a[r][1]);
                _mm256_storeu_ps(o + 16, a[r][2]);
            }
        }
    }
}

/* Row m's probabilities in place (p = 0 on [vis, its last split's end)) and its split sums l[0 .. n). */
static void softmax_row(float *s, int64_t nv, int64_t split, float *l) {
    int64_t end = (nv + split - 1) / split * split;
    for (int64_t c = nv; c < end; c++) s[c] = -INFINITY;
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (int64_t c = 0; c < end; c += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + c));
    float t[8], m = -INFINITY;
    _mm256_storeu_ps(t, mx);
    for (int i = 0; i < 8; i++) m = t[i] > m ? t[i] : m;
    __m256 vm = _mm256_set1_ps(m);
    for (int64_t j = 0; j * split < end; j++) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t c = j * split; c < (j + 1) * split; c += 8) {
            __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + c), vm));
            _mm256_storeu_ps(s + c, p);
            acc = _mm256_add_ps(acc, p);
        }
        l[j] = hsum8(acc);
    }
}

/* o[r][d0 .. d0 + 8 NV) = (init ? o[r][..] : 0) + sum p[r][c] v[c][..] over c in [c0, c1), rows r < 3 (a row
   may repeat: its result is written alike). Lanes across d; each lane the recurrence o = fma(p[c], v[c][d], o). */
#define PV_BLOCK(NV)                                                                                       \
    static void pv##NV(const float *const *p, const float *v, int64_t ldv, int64_t c0, int64_t c1,        \
                       int64_t d0, float *const *o, int init) {                                            \
        __m256 a[3][NV];                                                                                   \
        for (int r = 0; r < 3; r++)                                                                        \
            for (int i = 0; i < NV; i++)                                                                   \
                a[r][i] = init ? _mm256_loadu_ps(o[r] + d0 + 8 * i) : _mm256_setzero_ps();                \
        for (int64_t c = c0; c < c1; c++) {                                                                \
            __m256 vv[NV];                                                                                 \
            for (int i = 0; i < NV; i++) vv[i] = _mm256_loadu_ps(v + c * ldv + d0 + 8 * i);              \
            for (int r = 0; r < 3; r++) {                                                                  \
                __m256 b = _mm256_broadcast_ss(p[r] + c);                                                  \
                for (int i = 0; i < NV; i++) a[r][i] = _mm256_fmadd_ps(b, vv[i], a[r][i]);                 \
            }                                                                                              \
        }                                                                                                  \
        for (int r = 0; r < 3; r++)                                                                        \
            for (int i = 0; i < NV; i++) _mm256_storeu_ps(o[r] + d0 + 8 * i, a[r][i]);                    \
    }
PV_BLOCK(4)
PV_BLOCK(1)

/* P_j @ V_j for up to 3 rows of split [start, end): the slots all of them see together, then each row
   alone over the rest it sees. A row never touches a slot past vis (not even as 0 x v). */
static void pv_rows(const float *const *pr, float *const *orow, const int64_t *vr, int na, const float *v,
                    int64_t ldv, int64_t D, int64_t start, int64_t end) {
    int64_t common = end;
    for (int r = 0; r < na; r++) common = min64(common, vr[r]);
    int64_t d0 = 0;
    for (; d0 + 32 <= D; d0 += 32) pv4(pr, v, ldv, start, common, d0, orow, 0);
    for (; d0 < D; d0 += 8) pv1(pr, v, ldv, start, common, d0, orow, 0);
    for (int r = 0; r < na; r++) {
        int64_t stop = min64(vr[r], end);
        if (stop <= common) continue;
        const float *p1[3] = {pr[r], pr[r], pr[r]};
        float *o1[3] = {orow[r], orow[r], orow[r]};
        for (d0 = 0; d0 + 32 <= D; d0 += 32) pv4(p1, v, ldv, common, stop, d0, o1, 1);
        for (; d0 < D; d0 += 8) pv1(p1, v, ldv, common, stop, d0, o1, 1);
    }
}

/* The tree over n nodes of width w (node i at x + i * stride), in place; the sum lands in node 0. */
static void tree(float *x, int64_t n, int64_t stride, int64_t w) {
    while (n > 1) {
        int64_t half = n / 2;
        for (int64_t i = 0; i < half; i++) {
            float *a = x + 2 * i * stride, *b = a + stride, *dst = x + i * stride;
            int64_t d = 0;
            for (; d + 8 <= w; d += 8)
                _mm256_storeu_ps(dst + d, _mm256_add_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d)));
            for (; d < w; d++) dst[d] = a[d] + b[d];
        }
        if (n % 2) memmove(x + half * stride, x + (n - 1) * stride, (size_t)w * sizeof(float));
        n = half + n % 2;
    }
}

/* out[m * ldo + d] for rows m < M. Work space (floats): sc M * lds with lds >= max(vis) rounded up to
   split and to TW; l M * ns and nodes M * ns * D with ns = ceil(max(vis) / split); kt D * TW. */
void split_attention(const float *q, int64_t M, int64_t D, const int64_t *vis, const float *k, int64_t ldk,
                     const float *v, int64_t ldv, int64_t split, float *out, int64_t ldo, float *sc, int64_t lds,
                     float *l, float *nodes, int64_t ns, float *kt) {
    int64_t reach = 0;
    for (int64_t m = 0; m < M; m++) reach = vis[m] > reach ? vis[m] : reach;
    scores(q, M, D, vis, k, ldk, reach, sc, lds, kt);
    for (int64_t m = 0; m < M; m++) softmax_row(sc + m * lds, vis[m], split, l + m * ns);
    for (int64_t j = 0; j < ns; j++) {
        int64_t start = j * split, act[3], na = 0, m = 0;
        while (m < M || na > 0) {
            while (na < 3 && m < M) {
                if (vis[m] > start) act[na++] = m;
                m++;
            }
            if (na == 0) break;
            const float *pr[3];
            float *orow[3];
            int64_t vr[3];
            for (int r = 0; r < 3; r++) {
                int64_t mr = act[r < na ? r : 0];
                pr[r] = sc + mr * lds;
                orow[r] = nodes + (mr * ns + j) * D;
                vr[r] = vis[mr];
            }
            pv_rows(pr, orow, vr, na, v, ldv, D, start, start + split);
            na = 0;
        }
    }
    for (int64_t m = 0; m < M; m++) {
        int64_t n = (vis[m] + split - 1) / split;
        float *node = nodes + m * ns * D, *lm = l + m * ns;
        tree(node, n, D, D);
        tree(lm, n, 1, 1);
        __m256 den = _mm256_set1_ps(lm[0]);
        for (int64_t d = 0; d < D; d += 8)
            _mm256_storeu_ps(out + m * ldo + d, _mm256_div_ps(_mm256_loadu_ps(node + d), den));
    }
}
