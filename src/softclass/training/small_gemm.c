/* softclass's own single-precision gemm for the compiled training step's products, on x86-64
 * CPUs with AVX-512 (F, DQ, VL, BW): the products of an MLP step are small (a batch of 64-1024
 * rows, layers of 10-1024 units), where a BLAS's packing, blocking and threading decisions cost
 * a large share of each call, and where a BLAS can also be held to older kernels than the CPU
 * runs (OpenBLAS under OPENBLAS_CORETYPE=Haswell, or on a CPU newer than the library).
 *
 * small_sgemm has CBLAS's cblas_sgemm signature (32-bit integers) so that the step calls it
 * through the same GemmFunctions pointer as the BLAS's. It computes, row-major,
 *     c (m, n) = op(a) (m, k) @ op(b) (k, n)
 * for alpha = 1 and beta = 0, the only case the step asks for (other alphas and betas take a plain
 * loop; column-major storage is the row-major product of the transposes). The work: k in blocks of SMALL_GEMM_KC; per block, op(b) in
 * panels of 32 columns copied into a stack buffer (k-major, zero-padded to 32), then the rows of
 * op(a) in tiles of up to 8: a tile's 8 × 32 sums live in 16 AVX-512 registers, each step of k
 * broadcasts 8 values of op(a) and adds their products with the panel's two vectors (fused
 * multiply-adds). A later k block adds to what the earlier ones stored. Each output sums its k
 * products in order within a block, blocks in order; no thread is started.
 *
 * small_sgemm_supported() says whether the running CPU (and the compiler) has what it needs; the
 * Python side (training/mlp_native.py, own_sgemm) passes small_sgemm to the step only then.
 */
#include <stdint.h>

#define SMALL_GEMM_KC 256 /* rows of op(b) per panel: 256 × 32 floats = 32 KiB, within L1 */
#define SMALL_GEMM_NR 32  /* columns per panel: two AVX-512 vectors */
#define SMALL_GEMM_MR 8   /* rows per tile */

enum { SMALL_GEMM_ROW_MAJOR = 101, SMALL_GEMM_NO_TRANS = 111, SMALL_GEMM_TRANS = 112 };

/* The plain loop: any alpha, beta and layout the CBLAS signature allows (row-major only). */
static void small_sgemm_plain(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                              float alpha, const float *a, int64_t lda, const float *b,
                              int64_t ldb, float beta, float *c, int64_t ldc) {
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            float sum = 0.0f;
            for (int64_t p = 0; p < k; ++p) {
                const float left = trans_a ? a[p * lda + i] : a[i * lda + p];
                const float right = trans_b ? b[j * ldb + p] : b[p * ldb + j];
                sum += left * right;
            }
            c[i * ldc + j] = beta == 0.0f ? alpha * sum : alpha * sum + beta * c[i * ldc + j];
        }
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define SMALL_GEMM_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma")))
#define SMALL_GEMM_INLINE static inline __attribute__((always_inline)) SMALL_GEMM_TARGET

int small_sgemm_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("fma");
}

/* The lanes of a vector that hold columns when `columns` of them remain (any number). */
SMALL_GEMM_INLINE __mmask16 small_gemm_lanes(int64_t columns) {
    if (columns >= 16) return (__mmask16)0xFFFF;
    return columns <= 0 ? (__mmask16)0 : (__mmask16)((1u << columns) - 1u);
}

/* Copy op(b)'s rows [k0, k0 + kc) and columns [j0, j0 + cols) into panel (kc, 32), zero beyond
 * cols. */
SMALL_GEMM_INLINE void small_gemm_pack(int trans_b, const float *b, int64_t ldb, int64_t k0,
                                       int64_t kc, int64_t j0, int64_t cols, float *panel) {
    if (!trans_b) {
        const __mmask16 low = small_gemm_lanes(cols), high = small_gemm_lanes(cols - 16);
        for (int64_t p = 0; p < kc; ++p) {
            const float *row = b + (k0 + p) * ldb + j0;
            _mm512_store_ps(panel + p * SMALL_GEMM_NR, _mm512_maskz_loadu_ps(low, row));
            _mm512_store_ps(panel + p * SMALL_GEMM_NR + 16, _mm512_maskz_loadu_ps(high, row + 16));
        }
        return;
    }
    /* op(b)[p][j] = b[j][p]: column j of the panel is row j0 + j of b. */
    for (int64_t j = 0; j < SMALL_GEMM_NR; ++j) {
        if (j < cols) {
            const float *row = b + (j0 + j) * ldb + k0;
            for (int64_t p = 0; p < kc; ++p) panel[p * SMALL_GEMM_NR + j] = row[p];
        } else {
            for (int64_t p = 0; p < kc; ++p) panel[p * SMALL_GEMM_NR + j] = 0.0f;
        }
    }
}

/* One tile: rows [i0, i0 + MR) of c, the panel's columns (its first 16 only when WIDE is 0: a
 * panel of at most 16 columns); op(a)[i][p] is at a[i * step_i + p * step_p]. */
SMALL_GEMM_INLINE void small_gemm_tile(const int MR, const int WIDE, const float *a, int64_t step_i,
                                       int64_t step_p, int64_t kc, const float *panel, float *c,
                                       int64_t ldc, __mmask16 low, __mmask16 high,
                                       int accumulate) {
    __m512 sum0[SMALL_GEMM_MR], sum1[SMALL_GEMM_MR];
    for (int r = 0; r < MR; ++r) {
        sum0[r] = _mm512_setzero_ps();
        sum1[r] = _mm512_setzero_ps();
    }
    for (int64_t p = 0; p < kc; ++p) {
        const __m512 right0 = _mm512_load_ps(panel + p * SMALL_GEMM_NR);
        const __m512 right1 = WIDE ? _mm512_load_ps(panel + p * SMALL_GEMM_NR + 16) : right0;
        const float *left = a + p * step_p;
        for (int r = 0; r < MR; ++r) {
            const __m512 value = _mm512_set1_ps(left[r * step_i]);
            sum0[r] = _mm512_fmadd_ps(value, right0, sum0[r]);
            if (WIDE) sum1[r] = _mm512_fmadd_ps(value, right1, sum1[r]);
        }
    }
    for (int r = 0; r < MR; ++r) {
        float *row = c + r * ldc;
        if (accumulate) sum0[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(low, row), sum0[r]);
        _mm512_mask_storeu_ps(row, low, sum0[r]);
        if (!WIDE) continue;
        if (accumulate)
            sum1[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(high, row + 16), sum1[r]);
        _mm512_mask_storeu_ps(row + 16, high, sum1[r]);
    }
}

/* Rows [0, m) of one panel: tiles of 8 rows, then one tile of the remaining 1-7; WIDE: the
 * panel has more than 16 columns. */
SMALL_GEMM_INLINE void small_gemm_rows(const int WIDE, const float *a, int64_t step_i,
                                       int64_t step_p, int64_t m, int64_t kc, const float *panel,
                                       float *c, int64_t ldc, int64_t cols, int accumulate) {
    const __mmask16 low = small_gemm_lanes(cols), high = small_gemm_lanes(cols - 16);
    int64_t i = 0;
    for (; i + SMALL_GEMM_MR <= m; i += SMALL_GEMM_MR)
        small_gemm_tile(SMALL_GEMM_MR, WIDE, a + i * step_i, step_i, step_p, kc, panel, c + i * ldc,
                        ldc, low, high, accumulate);
    const float *rest = a + i * step_i;
    float *out = c + i * ldc;
    switch (m - i) {
#define SMALL_GEMM_REST(R)                                                                     \
    case R:                                                                                    \
        small_gemm_tile(R, WIDE, rest, step_i, step_p, kc, panel, out, ldc, low, high,        \
                        accumulate);                                                           \
        break;
        SMALL_GEMM_REST(1)
        SMALL_GEMM_REST(2)
        SMALL_GEMM_REST(3)
        SMALL_GEMM_REST(4)
        SMALL_GEMM_REST(5)
        SMALL_GEMM_REST(6)
        SMALL_GEMM_REST(7)
#undef SMALL_GEMM_REST
    default:
        break;
    }
}

SMALL_GEMM_TARGET static void small_sgemm_avx512(int trans_a, int trans_b, int64_t m, int64_t n,
                                                 int64_t k, const float *a, int64_t lda,
                                                 const float *b, int64_t ldb, float *c,
                                                 int64_t ldc) {
    float panel[SMALL_GEMM_KC * SMALL_GEMM_NR] __attribute__((aligned(64)));
    const int64_t step_i = trans_a ? 1 : lda, step_p = trans_a ? lda : 1;
    if (k == 0) {
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = 0.0f;
        return;
    }
    for (int64_t k0 = 0; k0 < k; k0 += SMALL_GEMM_KC) {
        const int64_t kc = k - k0 < SMALL_GEMM_KC ? k - k0 : SMALL_GEMM_KC;
        for (int64_t j0 = 0; j0 < n; j0 += SMALL_GEMM_NR) {
            const int64_t cols = n - j0 < SMALL_GEMM_NR ? n - j0 : SMALL_GEMM_NR;
            small_gemm_pack(trans_b, b, ldb, k0, kc, j0, cols, panel);
            if (cols > 16)
                small_gemm_rows(1, a + k0 * step_p, step_i, step_p, m, kc, panel, c + j0, ldc,
                                cols, k0 > 0);
            else
                small_gemm_rows(0, a + k0 * step_p, step_i, step_p, m, kc, panel, c + j0, ldc,
                                cols, k0 > 0);
        }
    }
}

void small_sgemm(int order, int trans_a, int trans_b, int32_t m, int32_t n, int32_t k,
                 float alpha, const float *a, int32_t lda, const float *b, int32_t ldb,
                 float beta, float *c, int32_t ldc) {
    if (order != SMALL_GEMM_ROW_MAJOR) {
        /* Column-major c (m, n) is row-major cᵀ (n, m) = op(b)ᵀ @ op(a)ᵀ. */
        small_sgemm(SMALL_GEMM_ROW_MAJOR, trans_b, trans_a, n, m, k, alpha, b, ldb, a, lda, beta,
                    c, ldc);
        return;
    }
    const int ta = trans_a == SMALL_GEMM_TRANS, tb = trans_b == SMALL_GEMM_TRANS;
    if (alpha != 1.0f || beta != 0.0f) { /* never asked by the step */
        small_sgemm_plain(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    small_sgemm_avx512(ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
}

#else /* not x86-64 with GCC or clang: never chosen (small_sgemm_supported() is 0) */

int small_sgemm_supported(void) { return 0; }

void small_sgemm(int order, int trans_a, int trans_b, int32_t m, int32_t n, int32_t k,
                 float alpha, const float *a, int32_t lda, const float *b, int32_t ldb,
                 float beta, float *c, int32_t ldc) {
    if (order != SMALL_GEMM_ROW_MAJOR) {
        small_sgemm_plain(trans_b == SMALL_GEMM_TRANS, trans_a == SMALL_GEMM_TRANS, n, m, k, alpha,
                          b, ldb, a, lda, beta, c, ldc);
        return;
    }
    small_sgemm_plain(trans_a == SMALL_GEMM_TRANS, trans_b == SMALL_GEMM_TRANS, m, n, k, alpha, a,
                      lda, b, ldb, beta, c, ldc);
}

#endif
