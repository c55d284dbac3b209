/* Cross entropy of logits (N, C, d1, ..., dK) in their own layout, for softclass's fused
 * cross entropy on CPU (softclass/kernels/spatial_cross_entropy_cpu.py). Included by cpu_native.c
 * after the row loops, whose row math (loss_rows.h) and gradient scales it reuses.
 *
 * With S = d1·...·dK positions, the C logits of position (n, s) lie S apart and the positions of
 * one class are adjacent. Rather than moving the classes last (a copy of the logits, and of the
 * gradient back), the loops take SPATIAL_BLOCK adjacent positions at a time and walk the classes
 * with stride S: every step (max, exp, sum, gradient) runs in SIMD lanes across positions, on
 * lines of contiguous memory. The formulas are those of cpu_native.c's header, per position.
 */
#ifndef SOFTCLASS_SPATIAL_LOOPS_H
#define SOFTCLASS_SPATIAL_LOOPS_H

/* Adjacent positions per block: 64 floats per class line (four cache lines). */
#define SPATIAL_BLOCK 64

#define DEFINE_SPATIAL_KERNELS(SUFFIX, TYPE, REAL)                                               \
/* The gradient of the positions [s0, s0 + width) of one batch item (pointers as above;            \
 * grad_output at position s0, stride 0 for a 0-d one), divided by *denominator when not NULL.     \
 * grad may be x itself: each element is read before it is written. */                             \
static void spatial_block_backward_##SUFFIX(                                                       \
    const TYPE *x, int64_t class_stride, int64_t n_classes, int64_t width, const int64_t *y,       \
    int64_t ignore_index, const REAL *class_weight, double label_smoothing, double weight_total,   \
    const REAL *lse, const REAL *grad_output, int64_t grad_output_stride,                          \
    const double *denominator, TYPE *grad) {                                                       \
    REAL scale[SPATIAL_BLOCK], true_class[SPATIAL_BLOCK], smoothing_scale[SPATIAL_BLOCK];          \
    int64_t safe_target[SPATIAL_BLOCK];                                                            \
    const double divisor = denominator ? *denominator : 1.0;                                       \
    _Pragma("omp simd")                                                                            \
    for (int64_t s = 0; s < width; ++s) {                                                          \
        const int kept = y[s] != ignore_index;                                                     \
        const int64_t target_class = kept ? y[s] : 0;                                              \
        const double upstream = (double)grad_output[s * grad_output_stride];                       \
        const double row_scale = kept ? upstream / divisor : 0.0;                                  \
        const double target_weight = class_weight ? (double)class_weight[target_class] : 1.0;      \
        const CeGradientScales scales = ce_gradient_scales(                                        \
            row_scale, target_weight, label_smoothing, n_classes, weight_total);                   \
        scale[s] = (REAL)scales.scale;                                                             \
        true_class[s] = (REAL)scales.true_class;                                                   \
        smoothing_scale[s] = (REAL)scales.smoothing_scale;                                         \
        safe_target[s] = target_class;                                                             \
    }                                                                                              \
    for (int64_t c = 0; c < n_classes; ++c) {                                                      \
        const TYPE *line = x + c * class_stride;                                                   \
        TYPE *grad_line = grad + c * class_stride;                                                 \
        const REAL w = class_weight ? class_weight[c] : (REAL)1;                                   \
        _Pragma("omp simd")                                                                        \
        for (int64_t s = 0; s < width; ++s) {                                                      \
            const REAL value = ce_gradient_value_##SUFFIX(load_##SUFFIX(line, s), lse[s],          \
                                                          scale[s], smoothing_scale[s] * w);       \
            store_##SUFFIX(grad_line, s, safe_target[s] == c ? value - true_class[s] : value);     \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* The forward of the positions [s0, s0 + width) of one batch item: x points at the logit of       \
 * (class 0, position s0), classes class_stride apart; y, lse, row_loss at position s0. Adds to    \
 * *loss_sum and *weight_sum. With grad (same layout as x), also writes the gradient for a unit    \
 * grad_output divided by *grad_denominator (when not NULL). Returns −1, or the offset of the      \
 * first kept target outside [0, C). */                                                            \
static int64_t spatial_block_forward_##SUFFIX(                                                     \
    const TYPE *x, int64_t class_stride, int64_t n_classes, int64_t width, const int64_t *y,       \
    int64_t ignore_index, const REAL *class_weight, double label_smoothing, double weight_total,   \
    REAL *lse, TYPE *row_loss, double *loss_sum, double *weight_sum, TYPE *grad,                   \
    const double *grad_denominator) {                                                              \
    REAL column_max[SPATIAL_BLOCK], shift[SPATIAL_BLOCK], weighted[SPATIAL_BLOCK];                 \
    REAL partial[SPATIAL_BLOCK];                                                                   \
    double total[SPATIAL_BLOCK], losses[SPATIAL_BLOCK];                                            \
    int bad = 0; /* any kept target outside [0, C): checked in SIMD, located only then */        \
    _Pragma("omp simd reduction(| : bad)")                                                         \
    for (int64_t s = 0; s < width; ++s)                                                            \
        bad |= (y[s] != ignore_index) & ((uint64_t)y[s] >= (uint64_t)n_classes);                   \
    for (int64_t s = 0; bad && s < width; ++s)                                                     \
        if (y[s] != ignore_index && (y[s] < 0 || y[s] >= n_classes)) return s;                     \
    _Pragma("omp simd")                                                                            \
    for (int64_t s = 0; s < width; ++s) {                                                          \
        column_max[s] = -(REAL)__builtin_inf();                                                    \
        total[s] = 0.0;                                                                            \
        weighted[s] = 0;                                                                           \
    }                                                                                              \
    for (int64_t c = 0; c < n_classes; ++c) {                                                      \
        const TYPE *line = x + c * class_stride;                                                   \
        _Pragma("omp simd")                                                                        \
        for (int64_t s = 0; s < width; ++s) {                                                      \
            const REAL value = load_##SUFFIX(line, s);                                             \
            column_max[s] = value > column_max[s] ? value : column_max[s];                         \
        }                                                                                          \
    }                                                                                              \
    for (int64_t s = 0; s < width; ++s) shift[s] = logsumexp_shift_##SUFFIX(column_max[s]);        \
    for (int64_t chunk = 0; chunk < n_classes; chunk += SUM_CHUNK) {                               \
        const int64_t chunk_end = chunk + SUM_CHUNK < n_classes ? chunk + SUM_CHUNK : n_classes;   \
        for (int64_t s = 0; s < width; ++s) partial[s] = 0;                                        \
        for (int64_t c = chunk; c < chunk_end; ++c) {                                              \
            const TYPE *line = x + c * class_stride;                                               \
            _Pragma("omp simd")                                                                    \
            for (int64_t s = 0; s < width; ++s)                                                    \
                partial[s] += exp_##SUFFIX(load_##SUFFIX(line, s) - shift[s]);                     \
        }                                                                                          \
        for (int64_t s = 0; s < width; ++s) total[s] += (double)partial[s];                        \
    }                                                                                              \
    if (label_smoothing > 0.0) {                                                                   \
        for (int64_t c = 0; c < n_classes; ++c) {                                                  \
            const TYPE *line = x + c * class_stride;                                               \
            const REAL w = class_weight ? class_weight[c] : (REAL)1;                               \
            _Pragma("omp simd")                                                                    \
            for (int64_t s = 0; s < width; ++s) weighted[s] += w * load_##SUFFIX(line, s);         \
        }                                                                                          \
    }                                                                                              \
    _Pragma("omp simd")                                                                            \
    for (int64_t s = 0; s < width; ++s)                                                            \
        total[s] = (double)shift[s] + log_f64(total[s]);                                           \
    double block_loss = 0.0, block_weight = 0.0;                                                   \
    _Pragma("omp simd reduction(+ : block_loss, block_weight)")                                    \
    for (int64_t s = 0; s < width; ++s) {                                                          \
        lse[s] = (REAL)total[s];                                                                   \
        const int kept = y[s] != ignore_index;                                                     \
        const int64_t target_class = kept ? y[s] : 0;                                              \
        const double target_weight = class_weight ? (double)class_weight[target_class] : 1.0;      \
        const double target_logit = (double)load_##SUFFIX(x + target_class * class_stride, s);     \
        const double loss = kept ? ce_row_loss(total[s], target_logit, target_weight,              \
                                               label_smoothing, n_classes, weight_total,           \
                                               (double)weighted[s])                                \
                                 : 0.0;                                                            \
        losses[s] = loss;                                                                          \
        block_loss += loss;                                                                        \
        block_weight += kept ? target_weight : 0.0;                                                \
    }                                                                                              \
    *loss_sum += block_loss;                                                                       \
    *weight_sum += block_weight;                                                                   \
    if (row_loss)                                                                                  \
        for (int64_t s = 0; s < width; ++s) store_##SUFFIX(row_loss, s, (REAL)losses[s]);          \
    if (grad) {                                                                                    \
        const REAL unit = 1;                                                                       \
        spatial_block_backward_##SUFFIX(x, class_stride, n_classes, width, y, ignore_index,        \
                                        class_weight, label_smoothing, weight_total, lse,          \
                                        &unit, 0, grad_denominator, grad);                         \
    }                                                                                              \
    return -1;                                                                                     \
}                                                                                                  \
                                                                                                   \
/* Forward over the flat positions [begin, end) of logits (N, C, S) (element (n, c, s) at          \
 * n·batch_stride + c·S + s; target, logsumexp and row_loss (N·S) contiguous): as ce_forward_*     \
 * with rows replaced by positions (sums[0] = Σ loss, sums[1] = Σ w_y of the range). grad, when    \
 * not NULL, has the logits' layout. Returns −1 or the first bad flat position. */                 \
int64_t ce_spatial_forward_##SUFFIX(                                                               \
    const TYPE *logits, int64_t batch_stride, int64_t n_classes, int64_t n_spatial,                \
    int64_t begin, int64_t end, const int64_t *target, int64_t ignore_index,                       \
    const REAL *class_weight, double label_smoothing, REAL *logsumexp, TYPE *row_loss,             \
    double *sums, TYPE *grad, const double *grad_denominator) {                                    \
    const double weight_total =                                                                    \
        label_smoothing > 0.0 ? weight_total_##SUFFIX(class_weight, n_classes) : 0.0;              \
    double loss_sum = 0.0, weight_sum = 0.0;                                                       \
    for (int64_t p = begin; p < end;) {                                                            \
        const int64_t n = p / n_spatial, s0 = p % n_spatial;                                       \
        int64_t width = n_spatial - s0 < end - p ? n_spatial - s0 : end - p;                       \
        width = width < SPATIAL_BLOCK ? width : SPATIAL_BLOCK;                                     \
        const int64_t offset = n * batch_stride + s0;                                              \
        const int64_t bad = spatial_block_forward_##SUFFIX(                                        \
            logits + offset, n_spatial, n_classes, width, target + p, ignore_index, class_weight,  \
            label_smoothing, weight_total, logsumexp + p, row_loss ? row_loss + p : NULL,          \
            &loss_sum, &weight_sum, grad ? grad + offset : NULL, grad_denominator);                \
        if (bad >= 0) return p + bad;                                                              \
        p += width;                                                                                \
    }                                                                                              \
    sums[0] = loss_sum;                                                                            \
    sums[1] = weight_sum;                                                                          \
    return -1;                                                                                     \
}                                                                                                  \
                                                                                                   \
/* Backward over the flat positions [begin, end): grad (the logits' layout) = ∂output/∂x with      \
 * ∂output/∂loss_p = grad_output[p·grad_output_stride], divided by *denominator when not           \
 * NULL. */                                                                                        \
void ce_spatial_backward_##SUFFIX(                                                                 \
    const TYPE *logits, int64_t batch_stride, int64_t n_classes, int64_t n_spatial,                \
    int64_t begin, int64_t end, const int64_t *target, int64_t ignore_index,                       \
    const REAL *class_weight, double label_smoothing, const REAL *logsumexp,                       \
    const REAL *grad_output, int64_t grad_output_stride, const double *denominator, TYPE *grad) {  \
    const double weight_total =                                                                    \
        label_smoothing > 0.0 ? weight_total_##SUFFIX(class_weight, n_classes) : 0.0;              \
    for (int64_t p = begin; p < end;) {                                                            \
        const int64_t n = p / n_spatial, s0 = p % n_spatial;                                       \
        int64_t width = n_spatial - s0 < end - p ? n_spatial - s0 : end - p;                       \
        width = width < SPATIAL_BLOCK ? width : SPATIAL_BLOCK;                                     \
        const int64_t offset = n * batch_stride + s0;                                              \
        spatial_block_backward_##SUFFIX(                                                           \
            logits + offset, n_spatial, n_classes, width, target + p, ignore_index, class_weight,  \
            label_smoothing, weight_total, logsumexp + p, grad_output + p * grad_output_stride,    \
            grad_output_stride, denominator, grad + offset);                                       \
        p += width;                                                                                \
    }                                                                                              \
}

DEFINE_SPATIAL_KERNELS(f32, float, float)
DEFINE_SPATIAL_KERNELS(bf16, uint16_t, float)
DEFINE_SPATIAL_KERNELS(f64, double, double)

#endif
