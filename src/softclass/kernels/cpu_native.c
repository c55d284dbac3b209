/* Row loops of softclass's fused cross entropy on CPU (see softclass/kernels/cpu.py).
 *
 * Built at first use with the system C compiler (-O3 -march=native -fopenmp-simd) and loaded with
 * ctypes; Python splits the rows among worker threads and calls these functions on row ranges.
 * Logits rows have any int64 row stride and class stride 1; every offset is int64.
 * Element types: f32 (float) and bf16 (uint16_t holding the top half of a float).
 */
#include <stdint.h>
#include <string.h>

/* Elements summed in fp32 lanes before the partial sum is added to a double. */
#define SUM_CHUNK 512

static inline float bf16_to_float(uint16_t value) {
    uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

static inline uint16_t float_to_bf16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u); /* round to nearest, ties to even */
    return (uint16_t)(bits >> 16);
}

static inline float load_f32(const float *row, int64_t c) { return row[c]; }
static inline float load_bf16(const uint16_t *row, int64_t c) { return bf16_to_float(row[c]); }
static inline void store_f32(float *row, int64_t c, float value) { row[c] = value; }
static inline void store_bf16(uint16_t *row, int64_t c, float value) { row[c] = float_to_bf16(value); }

/* exp(x) for x <= ~0 (arguments here are logit − max or logit − logsumexp): Cody–Waite reduction
 * x = k·ln2 + r, |r| <= ln2/2, degree-7 Taylor polynomial (relative error < 1e-8 before rounding),
 * 2^k built in the exponent bits. Below −87 (and for −inf) the result is exactly 0. Written so that
 * the compiler vectorises it; NaN propagates. */
static inline float exp_nonpositive(float x) {
    const float clamped = x < -87.0f ? -87.0f : x;
    const float k = __builtin_floorf(clamped * 1.44269504088896341f + 0.5f);
    const float r = (clamped - k * 0.693359375f) + k * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t exponent_bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &exponent_bits, sizeof scale);
    const float result = p * scale;
    return x < -87.0f ? 0.0f : result;
}

/* For rows [row_begin, row_end): logsumexp[n] = log Σ_c exp(x[n,c]) (as its two parts: the row
 * max and Σ_c exp(x − max), so the caller takes the log in torch), and, when weighted_sum is not
 * NULL, weighted_sum[n] = Σ_c w_c·x[n,c] (w_c = 1 when class_weight is NULL). */
#define DEFINE_STATISTICS(SUFFIX, TYPE)                                                          \
    void ce_row_statistics_##SUFFIX(const TYPE *logits, int64_t row_stride, int64_t n_classes,  \
                                    int64_t row_begin, int64_t row_end,                         \
                                    const float *class_weight, float *row_max,                  \
                                    double *exp_sum, double *weighted_sum) {                    \
        for (int64_t n = row_begin; n < row_end; ++n) {                                         \
            const TYPE *row = logits + n * row_stride;                                          \
            float max_value = -__builtin_inff();                                                \
            _Pragma("omp simd reduction(max : max_value)")                                      \
            for (int64_t c = 0; c < n_classes; ++c) {                                           \
                const float value = load_##SUFFIX(row, c);                                      \
                max_value = value > max_value ? value : max_value;                              \
            }                                                                                   \
            const float shift = (max_value == -__builtin_inff() ||                              \
                                 max_value == __builtin_inff()) ? 0.0f : max_value;             \
            double total = 0.0;                                                                 \
            double weighted_total = 0.0;                                                        \
            for (int64_t chunk = 0; chunk < n_classes; chunk += SUM_CHUNK) {                    \
                const int64_t chunk_end = chunk + SUM_CHUNK < n_classes ? chunk + SUM_CHUNK     \
                                                                        : n_classes;            \
                float partial = 0.0f;                                                           \
                _Pragma("omp simd reduction(+ : partial)")                                      \
                for (int64_t c = chunk; c < chunk_end; ++c)                                     \
                    partial += exp_nonpositive(load_##SUFFIX(row, c) - shift);                  \
                total += partial;                                                               \
                if (weighted_sum) {                                                             \
                    float weighted_partial = 0.0f;                                              \
                    if (class_weight) {                                                         \
                        _Pragma("omp simd reduction(+ : weighted_partial)")                     \
                        for (int64_t c = chunk; c < chunk_end; ++c)                             \
                            weighted_partial += class_weight[c] * load_##SUFFIX(row, c);        \
                    } else {                                                                    \
                        _Pragma("omp simd reduction(+ : weighted_partial)")                     \
                        for (int64_t c = chunk; c < chunk_end; ++c)                             \
                            weighted_partial += load_##SUFFIX(row, c);                          \
                    }                                                                           \
                    weighted_total += weighted_partial;                                         \
                }                                                                               \
            }                                                                                   \
            row_max[n] = shift;                                                                 \
            exp_sum[n] = total;                                                                 \
            if (weighted_sum) weighted_sum[n] = weighted_total;                                 \
        }                                                                                       \
    }

/* For rows [row_begin, row_end): grad[n,c] = exp(x[n,c] − L_n)·softmax_scale[n]
 *   − smoothing_scale[n]·w_c (when smoothing_scale is not NULL) − true_class_scale[n]·[c = y_n].
 * grad may be the logits buffer itself (each element is read before it is written). The true-class
 * element is recomputed in fp32 and rounded once. */
#define DEFINE_GRADIENT(SUFFIX, TYPE)                                                            \
    void ce_row_gradient_##SUFFIX(const TYPE *logits, int64_t row_stride, int64_t n_classes,    \
                                  int64_t row_begin, int64_t row_end, const float *logsumexp,   \
                                  const float *softmax_scale, const float *smoothing_scale,     \
                                  const float *class_weight, const int64_t *target,             \
                                  const float *true_class_scale, TYPE *grad,                    \
                                  int64_t grad_row_stride) {                                    \
        for (int64_t n = row_begin; n < row_end; ++n) {                                         \
            const TYPE *row = logits + n * row_stride;                                          \
            TYPE *grad_row = grad + n * grad_row_stride;                                        \
            const float lse = logsumexp[n];                                                     \
            const float scale = softmax_scale[n];                                               \
            const int64_t y = target[n];                                                        \
            const float x_y = load_##SUFFIX(row, y);                                            \
            float true_value = exp_nonpositive(x_y - lse) * scale - true_class_scale[n];        \
            if (smoothing_scale && class_weight) {                                              \
                const float smoothing = smoothing_scale[n];                                     \
                true_value -= smoothing * class_weight[y];                                      \
                _Pragma("omp simd")                                                             \
                for (int64_t c = 0; c < n_classes; ++c)                                         \
                    store_##SUFFIX(grad_row, c,                                                 \
                                   exp_nonpositive(load_##SUFFIX(row, c) - lse) * scale         \
                                       - smoothing * class_weight[c]);                          \
            } else if (smoothing_scale) {                                                       \
                const float smoothing = smoothing_scale[n];                                     \
                true_value -= smoothing;                                                        \
                _Pragma("omp simd")                                                             \
                for (int64_t c = 0; c < n_classes; ++c)                                         \
                    store_##SUFFIX(grad_row, c,                                                 \
                                   exp_nonpositive(load_##SUFFIX(row, c) - lse) * scale         \
                                       - smoothing);                                            \
            } else {                                                                            \
                _Pragma("omp simd")                                                             \
                for (int64_t c = 0; c < n_classes; ++c)                                         \
                    store_##SUFFIX(grad_row, c,                                                 \
                                   exp_nonpositive(load_##SUFFIX(row, c) - lse) * scale);       \
            }                                                                                   \
            store_##SUFFIX(grad_row, y, true_value);                                            \
        }                                                                                       \
    }

DEFINE_STATISTICS(f32, float)
DEFINE_STATISTICS(bf16, uint16_t)
DEFINE_GRADIENT(f32, float)
DEFINE_GRADIENT(bf16, uint16_t)
