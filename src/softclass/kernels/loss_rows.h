/* The row math of softclass's losses, written once and compiled into both of softclass's C
 * libraries: the fused cross entropy and softmax kernels (cpu_native.c, what
 * softclass.functional dispatches to on CPU) and the compiled MLP training loops
 * (softclass/training/mlp_native.c, which includes cpu_native.c and computes every design's loss
 * and its gradient through those kernels and these functions). softclass/kernels/native.py hashes
 * this header with each source, so a change here rebuilds both libraries.
 *
 * Element types: f32 (float), bf16 (uint16_t holding the top half of a float), f64 (double); f32
 * and bf16 are computed in float ("REAL") with double row sums, f64 in double. A row is C values
 * with class stride 1. Per row with logits x, L = log Σ_c exp(x_c), p = exp(x − L), target y:
 *
 *   cross entropy (class weights w, W = Σ_c w_c, smoothing ε; design A):
 *     loss = (1−ε)·w_y·(L − x_y) + (ε/C)·(W·L − Σ_c w_c x_c)                ce_row_loss
 *     ∂(s·loss)/∂x_c = p_c·s·((1−ε)·w_y + ε·W/C) − s·(1−ε)·w_y·[c = y] − s·(ε/C)·w_c
 *                                                           ce_gradient_value, ce_gradient_row_*
 *   softmax p (or log_softmax) of a row, and its backward for an upstream gradient g:
 *     softmax: p ⊙ (g − Σ g·p); log_softmax: g − exp(out)·Σ g      softmax_row_*, softmax_backward_row_*
 *   squared error of probabilities against the one-hot target (design C's mse_onehot):
 *     loss = Σ_c (p_c − [c = y])², ∂(s·loss)/∂p_c = s·2·(p_c − [c = y])    mse_onehot_row_*
 *   negative log-likelihood of log-probabilities (design B's nll_loss of log_softmax):
 *     loss = −log_p_y, ∂(s·loss)/∂log_p_c = −s·[c = y]                         nll_row_*
 *   mean cross-entropy error of probabilities (design D's mcee), t = max(p_y, tiny):
 *     loss = −log t, ∂(s·loss)/∂p_y = −s/t (0 where p_y < tiny: the clamp passes no gradient)
 *                                                                        mcee_row_*
 * The probability losses' gradients with respect to the logits are their gradients with respect
 * to p (or log p) passed through softmax_backward_row_*, as autograd composes
 * softclass.functional's softmax / log_softmax with mse_onehot, mcee / nll_loss.
 *
 * Instantiate the row functions of an element type with DEFINE_LOSS_ROWS(SUFFIX, TYPE, REAL)
 * (SUFFIX f32, bf16 or f64). Compile with -fopenmp-simd (the reductions are `omp simd`) and
 * without -ffast-math.
 */
#ifndef SOFTCLASS_LOSS_ROWS_H
#define SOFTCLASS_LOSS_ROWS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Elements summed in "REAL" lanes before the partial sum is added to a double. */
#define SUM_CHUNK 512
/* The row functions are inlined into each loop that calls them, as if written there (a call per
 * row measured ~8% slower at 16384x1000 in the fused forward + gradient). */
#define ROW_FUNCTION static inline __attribute__((always_inline))

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
static inline double load_f64(const double *row, int64_t c) { return row[c]; }
static inline void store_f32(float *row, int64_t c, float value) { row[c] = value; }
static inline void store_bf16(uint16_t *row, int64_t c, float value) { row[c] = float_to_bf16(value); }
static inline void store_f64(double *row, int64_t c, double value) { row[c] = value; }

/* exp(x) for x <= ~0 (arguments here are logit − max or logit − logsumexp): Cody–Waite reduction
 * x = k·ln2 + r, |r| <= ln2/2, degree-7 Taylor polynomial (relative error < 1e-8 before rounding),
 * 2^k built in the exponent bits. Below −87 (and for −inf) the result is exactly 0. Written so that
 * the compiler vectorises it; NaN propagates. */
static inline float exp_f32(float x) {
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

static inline float exp_bf16(float x) { return exp_f32(x); }

/* The same in double: ln2 split in two parts (fdlibm's), degree-13 Taylor polynomial (truncation
 * < 1e-17 relative on |r| <= ln2/2). Below −708 (subnormal results) the result is exactly 0. */
static inline double exp_f64(double x) {
    const double clamped = x < -708.0 ? -708.0 : x;
    const double k = __builtin_floor(clamped * 1.44269504088896338700 + 0.5);
    const double r = (clamped - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const int64_t exponent_bits = ((int64_t)k + 1023) << 52;
    double scale;
    memcpy(&scale, &exponent_bits, sizeof scale);
    const double result = p * scale;
    return x < -708.0 ? 0.0 : result;
}

/* log(x) for x >= 0 (a sum of exps, >= 1 unless 0): x = 2^e·m with m in [√½, √2), f = m − 1,
 * u = f/(2 + f), log m = 2·atanh(u) = 2u·(1 + u²/3 + ... + u²⁰/21) (|u| < 0.172: truncation
 * < 1e-17 relative). log 0 = −inf; +inf and NaN are returned as they are. Vectorisable, unlike a
 * call to libm's log. */
static inline double log_f64(double x) {
    int64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int64_t exponent = ((bits >> 52) & 0x7FF) - 1023;
    int64_t mantissa_bits = (bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL;
    double mantissa;
    memcpy(&mantissa, &mantissa_bits, sizeof mantissa);
    const int high = mantissa > 1.41421356237309504880;
    mantissa = high ? 0.5 * mantissa : mantissa;
    exponent += high;
    const double f = mantissa - 1.0;
    const double u = f / (2.0 + f);
    const double u2 = u * u;
    double p = 1.0 / 21.0;
    p = p * u2 + 1.0 / 19.0;
    p = p * u2 + 1.0 / 17.0;
    p = p * u2 + 1.0 / 15.0;
    p = p * u2 + 1.0 / 13.0;
    p = p * u2 + 1.0 / 11.0;
    p = p * u2 + 1.0 / 9.0;
    p = p * u2 + 1.0 / 7.0;
    p = p * u2 + 1.0 / 5.0;
    p = p * u2 + 1.0 / 3.0;
    p = p * u2 + 1.0;
    const double k = (double)exponent;
    const double result = (k * 6.93147180369123816490e-01 + 2.0 * u * p)
                          + k * 1.90821492927058770002e-10;
    const int finite_positive = x > 0.0 && x < __builtin_inf();
    return finite_positive ? result : (x == 0.0 ? -__builtin_inf() : x);
}

/* log in the computation type (libm's logf for float, as torch's float log). */
static inline float log_real_f32(float x) { return logf(x); }
static inline float log_real_bf16(float x) { return logf(x); }
static inline double log_real_f64(double x) { return log(x); }

/* The cross entropy of one kept row from L (its log-sum-exp) and x_y, in double:
 * (1−ε)·w_y·(L − x_y) + (ε/C)·(W·L − Σ_c w_c x_c) (the second term only when ε > 0;
 * weighted_logits = Σ_c w_c x_c, weight_total = W). */
static inline double ce_row_loss(double logsumexp, double target_logit, double target_weight,
                                 double label_smoothing, int64_t n_classes, double weight_total,
                                 double weighted_logits) {
    double loss = (1.0 - label_smoothing) * target_weight * (logsumexp - target_logit);
    if (label_smoothing > 0.0)
        loss += label_smoothing / (double)n_classes * (weight_total * logsumexp - weighted_logits);
    return loss;
}

/* Per-row scales of the cross-entropy gradient for an upstream gradient row_scale (0 for an
 * ignored row): scale multiplies p_c, true_class is taken off at the target, smoothing_scale·w_c
 * off every class. */
typedef struct {
    double scale, true_class, smoothing_scale;
} CeGradientScales;

static inline CeGradientScales ce_gradient_scales(double row_scale, double target_weight,
                                                  double label_smoothing, int64_t n_classes,
                                                  double weight_total) {
    CeGradientScales scales;
    scales.true_class = row_scale * (1.0 - label_smoothing) * target_weight;
    scales.smoothing_scale = row_scale * label_smoothing / (double)n_classes;
    scales.scale = row_scale * ((1.0 - label_smoothing) * target_weight
                                + label_smoothing * weight_total / (double)n_classes);
    return scales;
}

/* Row functions of one element type: logits / probabilities of TYPE, computed in REAL. */
#define DEFINE_LOSS_ROWS(SUFFIX, TYPE, REAL)                                                     \
    /* The shift of a row's log-sum-exp: its max, or 0 when the max is ±inf (a +inf logit, or all \
     * −inf), so that L comes out +inf / −inf (or NaN) as torch computes it. */                 \
    ROW_FUNCTION REAL logsumexp_shift_##SUFFIX(REAL row_max) {                                  \
        return row_max == -(REAL)__builtin_inf() || row_max == (REAL)__builtin_inf() ? (REAL)0   \
                                                                                    : row_max;   \
    }                                                                                            \
                                                                                                 \
    /* p_c·scale − smoothing (one element of the cross-entropy gradient; smoothing = (ε/C)·s·w_c;  \
     * the target's element also loses true_class). */                                          \
    ROW_FUNCTION REAL ce_gradient_value_##SUFFIX(REAL logit, REAL logsumexp, REAL scale,       \
                                                  REAL smoothing) {                             \
        return exp_##SUFFIX(logit - logsumexp) * scale - smoothing;                             \
    }                                                                                           \
                                                                                                \
    /* L = log Σ_c exp(x_c) of one row, in double (exps summed in REAL chunks of SUM_CHUNK). With \
     * weighted_logits not NULL, also *weighted_logits = Σ_c w_c·x_c (w = 1 when class_weight is  \
     * NULL) from the same pass. */                                                             \
    ROW_FUNCTION double logsumexp_row_##SUFFIX(const TYPE *row, int64_t n_classes,             \
                                                const REAL *class_weight,                       \
                                                double *weighted_logits) {                      \
        REAL max_value = -(REAL)__builtin_inf();                                                 \
        _Pragma("omp simd reduction(max : max_value)")                                           \
        for (int64_t c = 0; c < n_classes; ++c) {                                                \
            const REAL value = load_##SUFFIX(row, c);                                            \
            max_value = value > max_value ? value : max_value;                                   \
        }                                                                                        \
        const REAL shift = logsumexp_shift_##SUFFIX(max_value);                             \
        double total = 0.0;                                                                      \
        double weighted_total = 0.0;                                                             \
        for (int64_t chunk = 0; chunk < n_classes; chunk += SUM_CHUNK) {                         \
            const int64_t chunk_end = chunk + SUM_CHUNK < n_classes ? chunk + SUM_CHUNK          \
                                                                    : n_classes;                 \
            REAL partial = 0;                                                                    \
            _Pragma("omp simd reduction(+ : partial)")                                           \
            for (int64_t c = chunk; c < chunk_end; ++c)                                          \
                partial += exp_##SUFFIX(load_##SUFFIX(row, c) - shift);                          \
            total += partial;                                                                    \
            if (weighted_logits) {                                                               \
                REAL weighted_partial = 0;                                                       \
                if (class_weight) {                                                              \
                    _Pragma("omp simd reduction(+ : weighted_partial)")                          \
                    for (int64_t c = chunk; c < chunk_end; ++c)                                  \
                        weighted_partial += class_weight[c] * load_##SUFFIX(row, c);             \
                } else {                                                                         \
                    _Pragma("omp simd reduction(+ : weighted_partial)")                          \
                    for (int64_t c = chunk; c < chunk_end; ++c)                                  \
                        weighted_partial += load_##SUFFIX(row, c);                               \
                }                                                                                \
                weighted_total += weighted_partial;                                              \
            }                                                                                    \
        }                                                                                        \
        if (weighted_logits) *weighted_logits = weighted_total;                                  \
        return (double)shift + log(total);                                                       \
    }                                                                                            \
                                                                                                 \
    /* grad_row[c] = ∂(s·loss)/∂x_c of a cross-entropy row with target y, L = logsumexp and the  \
     * scales of ce_gradient_scales (smoothing: ε > 0). grad_row may be row itself (each element \
     * is read before it is written); the target's element is recomputed and rounded once. */    \
    ROW_FUNCTION void ce_gradient_row_##SUFFIX(const TYPE *row, int64_t n_classes,             \
                                                REAL logsumexp, int64_t y,                       \
                                                CeGradientScales scales, int smoothing,          \
                                                const REAL *class_weight, TYPE *grad_row) {      \
        const REAL scale = (REAL)scales.scale;                                                   \
        const REAL smoothing_scale = (REAL)scales.smoothing_scale;                               \
        const REAL target_smoothing =                                                            \
            smoothing ? smoothing_scale * (class_weight ? class_weight[y] : (REAL)1) : (REAL)0;  \
        const REAL true_value =                                                                  \
            ce_gradient_value_##SUFFIX(load_##SUFFIX(row, y), logsumexp, scale,                  \
                                       (REAL)scales.true_class)                                  \
            - target_smoothing;                                                                  \
        if (smoothing && class_weight) {                                                         \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < n_classes; ++c)                                              \
                store_##SUFFIX(grad_row, c,                                                      \
                               ce_gradient_value_##SUFFIX(load_##SUFFIX(row, c), logsumexp,      \
                                                          scale,                                 \
                                                          smoothing_scale * class_weight[c]));   \
        } else if (smoothing) {                                                                  \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < n_classes; ++c)                                              \
                store_##SUFFIX(grad_row, c,                                                      \
                               ce_gradient_value_##SUFFIX(load_##SUFFIX(row, c), logsumexp,      \
                                                          scale, smoothing_scale));              \
        } else {                                                                                 \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < n_classes; ++c)                                              \
                store_##SUFFIX(grad_row, c,                                                      \
                               ce_gradient_value_##SUFFIX(load_##SUFFIX(row, c), logsumexp,      \
                                                          scale, (REAL)0));                      \
        }                                                                                        \
        store_##SUFFIX(grad_row, y, true_value);                                                 \
    }                                                                                            \
                                                                                                 \
    /* softmax (log_output 0) or log_softmax (1) of one row into out_row: exp(x − m) / Σ exp(x − m)\
     * with m the row max, or x − m − log Σ exp(x − m). A row whose max is ±inf is NaN throughout,\
     * as torch computes it. */                                                                  \
    ROW_FUNCTION void softmax_row_##SUFFIX(const TYPE *row, int64_t n_classes, TYPE *out_row,   \
                                            int log_output) {                                    \
        REAL max_value = -(REAL)__builtin_inf();                                                 \
        _Pragma("omp simd reduction(max : max_value)")                                           \
        for (int64_t c = 0; c < n_classes; ++c) {                                                \
            const REAL value = load_##SUFFIX(row, c);                                            \
            max_value = value > max_value ? value : max_value;                                   \
        }                                                                                        \
        if (max_value == (REAL)__builtin_inf() || max_value == -(REAL)__builtin_inf()) {         \
            for (int64_t c = 0; c < n_classes; ++c)                                              \
                store_##SUFFIX(out_row, c, (REAL)__builtin_nan(""));                             \
            return;                                                                              \
        }                                                                                        \
        double total = 0.0;                                                                      \
        for (int64_t chunk = 0; chunk < n_classes; chunk += SUM_CHUNK) {                         \
            const int64_t chunk_end = chunk + SUM_CHUNK < n_classes ? chunk + SUM_CHUNK          \
                                                                    : n_classes;                 \
            REAL partial = 0;                                                                    \
            _Pragma("omp simd reduction(+ : partial)")                                           \
            for (int64_t c = chunk; c < chunk_end; ++c)                                          \
                partial += exp_##SUFFIX(load_##SUFFIX(row, c) - max_value);                      \
            total += partial;                                                                    \
        }                                                                                        \
        if (log_output) {                                                                        \
            const REAL log_total = (REAL)log(total);                                             \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < n_classes; ++c)                                              \
                store_##SUFFIX(out_row, c, (load_##SUFFIX(row, c) - max_value) - log_total);     \
        } else {                                                                                 \
            const REAL scale = (REAL)(1.0 / total);                                              \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < n_classes; ++c)                                              \
                store_##SUFFIX(out_row, c, exp_##SUFFIX(load_##SUFFIX(row, c) - max_value) * scale); \
        }                                                                                        \
    }                                                                                            \
                                                                                                 \
    /* The backward of softmax_row_* for the upstream gradient grad_row and the forward's output  \
     * output_row: softmax y·(g − Σ g·y), log_softmax g − exp(y)·Σ g. result_row may be grad_row. */\
    ROW_FUNCTION void softmax_backward_row_##SUFFIX(const TYPE *grad_row, const TYPE *output_row,\
                                                     int64_t n_classes, TYPE *result_row,        \
                                                     int log_output) {                           \
        double total = 0.0;                                                                      \
        for (int64_t chunk = 0; chunk < n_classes; chunk += SUM_CHUNK) {                         \
            const int64_t chunk_end = chunk + SUM_CHUNK < n_classes ? chunk + SUM_CHUNK          \
                                                                    : n_classes;                 \
            REAL partial = 0;                                                                    \
            if (log_output) {                                                                    \
                _Pragma("omp simd reduction(+ : partial)")                                       \
                for (int64_t c = chunk; c < chunk_end; ++c)                                      \
                    partial += load_##SUFFIX(grad_row, c);                                       \
            } else {                                                                             \
                _Pragma("omp simd reduction(+ : partial)")                                       \
                for (int64_t c = chunk; c < chunk_end; ++c)                                      \
                    partial += load_##SUFFIX(grad_row, c) * load_##SUFFIX(output_row, c);        \
            }                                                                                    \
            total += partial;                                                                    \
        }                                                                                        \
        const REAL sum = (REAL)total;                                                            \
        if (log_output) {                                                                        \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < n_classes; ++c)                                              \
                store_##SUFFIX(result_row, c,                                                    \
                               load_##SUFFIX(grad_row, c)                                        \
                                   - exp_##SUFFIX(load_##SUFFIX(output_row, c)) * sum);          \
        } else {                                                                                 \
            _Pragma("omp simd")                                                                  \
            for (int64_t c = 0; c < n_classes; ++c)                                              \
                store_##SUFFIX(result_row, c,                                                    \
                               load_##SUFFIX(output_row, c) * (load_##SUFFIX(grad_row, c) - sum)); \
        }                                                                                        \
    }                                                                                            \
                                                                                                 \
    /* Σ_c (p_c − [c = y])² of a probability row; with grad_row not NULL also                    \
     * grad_row[c] = scale·2·(p_c − [c = y]) (its gradient for an upstream gradient scale). */   \
    ROW_FUNCTION REAL mse_onehot_row_##SUFFIX(const TYPE *probs, int64_t n_classes, int64_t y,  \
                                               REAL scale, TYPE *grad_row) {                     \
        REAL squared = 0;                                                                        \
        for (int64_t c = 0; c < n_classes; ++c) {                                                \
            const REAL residual = load_##SUFFIX(probs, c) - (REAL)(c == y);                      \
            squared += residual * residual;                                                      \
            if (grad_row) store_##SUFFIX(grad_row, c, scale * (residual + residual));            \
        }                                                                                        \
        return squared;                                                                          \
    }                                                                                            \
                                                                                                 \
    /* −log_probs[y] of a log-probability row (nll_loss of log_softmax, design B); with grad_row \
     * not NULL also its gradient for an upstream gradient scale: −scale at y, 0 elsewhere. */   \
    ROW_FUNCTION REAL nll_row_##SUFFIX(const TYPE *log_probs, int64_t n_classes, int64_t y,      \
                                       REAL scale, TYPE *grad_row) {                             \
        if (grad_row) {                                                                          \
            for (int64_t c = 0; c < n_classes; ++c) store_##SUFFIX(grad_row, c, (REAL)0);        \
            store_##SUFFIX(grad_row, y, -scale);                                                 \
        }                                                                                        \
        return -load_##SUFFIX(log_probs, y);                                                     \
    }                                                                                            \
                                                                                                 \
    /* −log(max(p_y, tiny)) of a probability row; with grad_row not NULL also its gradient for an\
     * upstream gradient scale: −scale/max(p_y, tiny) at y (0 when p_y < tiny), 0 elsewhere. */  \
    ROW_FUNCTION REAL mcee_row_##SUFFIX(const TYPE *probs, int64_t n_classes, int64_t y,        \
                                         REAL tiny, REAL scale, TYPE *grad_row) {                \
        const REAL picked = load_##SUFFIX(probs, y);                                             \
        const REAL clamped = picked > tiny ? picked : tiny;                                      \
        if (grad_row) {                                                                          \
            for (int64_t c = 0; c < n_classes; ++c) store_##SUFFIX(grad_row, c, (REAL)0);        \
            store_##SUFFIX(grad_row, y, picked < tiny ? (REAL)0 : -scale / clamped);             \
        }                                                                                        \
        return -log_real_##SUFFIX(clamped);                                                              \
    }

#endif
