/* Whole training runs of MLPs whose products go to a BLAS gemm: the compiled backend of
 * softclass.training.mlp_native for networks whose layers are wide enough that a step's time is
 * its matrix products (see mlp_step.py).
 *
 * The run is that of mlp_native.c's mlp_train (same RunSettings, RunBuffers, row orders, design
 * losses, activations and optimizer updates; those are mlp_native.c's own functions, included
 * below), with each batch taken as matrices: per layer one forward product act_k @ W_kᵀ, then,
 * backward, the weight gradient deltaᵀ @ act_k and (but for the first layer) the input gradient
 * delta @ W_k, each one call of the BLAS's row-major gemm. The bias add and the activation run in
 * one pass over each product, the activation's derivative and the next bias gradient in one pass
 * over each input gradient. Nothing is allocated after the start of a call and nothing goes
 * through Python between the steps of a call.
 *
 * The BLAS is not linked at build time: the caller passes the addresses of a cblas_sgemm and a
 * cblas_dgemm with 32-bit integers (mlp_step.py takes them from the scipy-openblas32 wheel), so
 * this library builds without BLAS headers and a missing BLAS only leaves the row loops. For
 * float32 on one thread the caller may pass small_sgemm (small_gemm.c) instead: same signature.
 */
#ifndef REAL

#include "mlp_native.c" /* RunSettings, RunBuffers, design_batch, activate, update, ... */
#include "small_gemm.c"  /* small_sgemm: the step's own float32 products on AVX-512 CPUs */

/* CBLAS's enum values (cblas.h): row-major storage, operand as stored or transposed. */
enum { BLAS_ROW_MAJOR = 101, BLAS_NO_TRANS = 111, BLAS_TRANS = 112 };

typedef void (*sgemm_function)(int order, int trans_a, int trans_b, int32_t m, int32_t n,
                               int32_t k, float alpha, const float *a, int32_t lda,
                               const float *b, int32_t ldb, float beta, float *c, int32_t ldc);
typedef void (*dgemm_function)(int order, int trans_a, int trans_b, int32_t m, int32_t n,
                               int32_t k, double alpha, const double *a, int32_t lda,
                               const double *b, int32_t ldb, double beta, double *c,
                               int32_t ldc);

/* The BLAS functions of a call (mirrored by mlp_step.py's GemmFunctions). */
typedef struct {
    sgemm_function sgemm;
    dgemm_function dgemm;
} GemmFunctions;

#define REAL float
#define SUFFIX f32
#define GEMM sgemm
#include "mlp_step.c" /* this file, once per element type */
#undef REAL
#undef SUFFIX
#undef GEMM

#define REAL double
#define SUFFIX f64
#define GEMM dgemm
#include "mlp_step.c" /* this file, once per element type */
#undef REAL
#undef SUFFIX
#undef GEMM

#else /* the body, once per element type */

#define CONCAT_(a, b) a##_##b
#define CONCAT(a, b) CONCAT_(a, b)
#define NAME(base) CONCAT(base, SUFFIX)

/* c (m, n) = op(a) @ op(b), row-major; op transposes when the flag is set. */
static inline void NAME(product)(const GemmFunctions *blas, int transpose_a, int transpose_b,
                                 int64_t m, int64_t n, int64_t k, const REAL *a, int64_t lda,
                                 const REAL *b, int64_t ldb, REAL *c, int64_t ldc) {
    blas->GEMM(BLAS_ROW_MAJOR, transpose_a ? BLAS_TRANS : BLAS_NO_TRANS,
               transpose_b ? BLAS_TRANS : BLAS_NO_TRANS, (int32_t)m, (int32_t)n, (int32_t)k,
               (REAL)1, a, (int32_t)lda, b, (int32_t)ldb, (REAL)0, c, (int32_t)ldc);
}

/* One member's tensors and the work space of a call: per level l the batch's activations act[l]
 * and pre-activations pre[l] (rows, width_l) (act[0]: the gathered features; the logits at
 * act[n_layers], pre[n_layers] the design's scratch); delta, delta_next (rows, widest); per layer
 * the gradients; per row its scale, loss, log-sum-exp and target. */
typedef struct {
    REAL **act, **pre, **weights, **biases, **weight_grads, **bias_grads;
    REAL *delta, *delta_next, *row_scale, *row_loss, *logsumexp;
    int64_t *targets;
    void *space;
} NAME(StepSpace);

/* Forward pass of the `rows` rows at act[0]: act[k+1] = activation(act[k] @ W_kᵀ + b_k), the
 * pre-activations kept in pre[k+1]; the logits (no activation) at act[n_layers]. */
static void NAME(matrix_forward)(const RunSettings *settings, const GemmFunctions *blas,
                                 int64_t rows, const NAME(StepSpace) *space) {
    const int64_t n_layers = settings->n_layers, activation = settings->activation;
    for (int64_t k = 0; k < n_layers; ++k) {
        const int64_t n_in = settings->widths[k], n_out = settings->widths[k + 1];
        const int last = k + 1 == n_layers;
        REAL *pre = last ? space->act[k + 1] : space->pre[k + 1], *out = space->act[k + 1];
        const REAL *bias = space->biases[k];
        NAME(product)(blas, 0, 1, rows, n_out, n_in, space->act[k], n_in, space->weights[k],
                      n_in, pre, n_out);
        for (int64_t r = 0; r < rows; ++r) {
            REAL *pre_row = pre + r * n_out, *out_row = out + r * n_out;
            for (int64_t j = 0; j < n_out; ++j) pre_row[j] += bias[j];
            if (last) continue;
            if (activation == ACTIVATION_RELU) {
                for (int64_t j = 0; j < n_out; ++j)
                    out_row[j] = pre_row[j] > (REAL)0 ? pre_row[j] : (REAL)0;
            } else {
                for (int64_t j = 0; j < n_out; ++j)
                    out_row[j] = NAME(activate)(activation, pre_row[j]);
            }
        }
    }
}

/* Backward pass from delta = d loss / d logits (rows, classes): every layer's weight and bias
 * gradients into space->weight_grads / bias_grads (the first layer's input gradient is not
 * needed and not computed). */
static void NAME(matrix_backward)(const RunSettings *settings, const GemmFunctions *blas,
                                  int64_t rows, NAME(StepSpace) *space) {
    const int64_t n_layers = settings->n_layers, activation = settings->activation;
    REAL *delta = space->delta, *below = space->delta_next;
    const int64_t n_classes = settings->widths[n_layers];
    REAL *bias_grad = space->bias_grads[n_layers - 1];
    for (int64_t j = 0; j < n_classes; ++j) bias_grad[j] = (REAL)0;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n_classes; ++j) bias_grad[j] += delta[r * n_classes + j];
    for (int64_t k = n_layers - 1; k >= 0; --k) {
        const int64_t n_in = settings->widths[k], n_out = settings->widths[k + 1];
        NAME(product)(blas, 1, 0, n_out, n_in, rows, delta, n_out, space->act[k], n_in,
                      space->weight_grads[k], n_in);
        if (k == 0) break;
        NAME(product)(blas, 0, 0, rows, n_in, n_out, delta, n_out, space->weights[k], n_in, below,
                      n_in);
        /* d loss / d pre-activation of level k, and layer k-1's bias gradient (its sums). */
        REAL *bias_below = space->bias_grads[k - 1];
        for (int64_t i = 0; i < n_in; ++i) bias_below[i] = (REAL)0;
        for (int64_t r = 0; r < rows; ++r) {
            REAL *row = below + r * n_in;
            const REAL *out = space->act[k] + r * n_in, *pre = space->pre[k] + r * n_in;
            if (activation == ACTIVATION_RELU) {
                for (int64_t i = 0; i < n_in; ++i) row[i] = out[i] > (REAL)0 ? row[i] : (REAL)0;
            } else {
                for (int64_t i = 0; i < n_in; ++i)
                    row[i] = NAME(activation_backward)(activation, row[i], pre[i], out[i]);
            }
            for (int64_t i = 0; i < n_in; ++i) bias_below[i] += row[i];
        }
        REAL *swap = delta;
        delta = below;
        below = swap;
    }
}

/* The work space for batches of up to settings->batch_size rows (weights and biases: pointers
 * set per member); 0, or -1 when it could not be allocated. */
static int64_t NAME(allocate_space)(const RunSettings *settings, NAME(StepSpace) *space) {
    const int64_t n_layers = settings->n_layers, batch = settings->batch_size;
    int64_t level_total = 0, widest = 0, parameter_total = 0;
    for (int64_t l = 0; l <= n_layers; ++l) {
        level_total += settings->widths[l];
        widest = settings->widths[l] > widest ? settings->widths[l] : widest;
    }
    for (int64_t k = 0; k < n_layers; ++k)
        parameter_total += settings->widths[k + 1] * (settings->widths[k] + 1);
    const size_t n_reals =
        (size_t)(2 * batch * level_total + 2 * batch * widest + parameter_total + 3 * batch);
    const size_t n_pointers = (size_t)(2 * (n_layers + 1) + 4 * n_layers);
    /* Reals first (aligned as malloc aligns), then the pointers, then the targets. */
    char *memory = malloc(n_reals * sizeof(REAL) + n_pointers * sizeof(REAL *) +
                          (size_t)batch * sizeof(int64_t));
    if (memory == NULL) return -1;
    space->space = memory;
    REAL *cursor = (REAL *)memory;
    REAL **pointers = (REAL **)(memory + n_reals * sizeof(REAL));
    space->targets = (int64_t *)(pointers + n_pointers);
    space->act = pointers;
    space->pre = space->act + (n_layers + 1);
    space->weights = space->pre + (n_layers + 1);
    space->biases = space->weights + n_layers;
    space->weight_grads = space->biases + n_layers;
    space->bias_grads = space->weight_grads + n_layers;
    for (int64_t l = 0; l <= n_layers; ++l) {
        space->act[l] = cursor;
        cursor += batch * settings->widths[l];
        space->pre[l] = cursor;
        cursor += batch * settings->widths[l];
    }
    space->delta = cursor;
    space->delta_next = cursor + batch * widest;
    cursor += 2 * batch * widest;
    for (int64_t k = 0; k < n_layers; ++k) {
        space->weight_grads[k] = cursor;
        cursor += settings->widths[k + 1] * settings->widths[k];
        space->bias_grads[k] = cursor;
        cursor += settings->widths[k + 1];
    }
    space->row_scale = cursor;
    space->row_loss = cursor + batch;
    space->logsumexp = cursor + 2 * batch;
    return 0;
}

/* Rows [start, start + rows) of order into act[0] and targets, their scales (1/rows, or the
 * weights over their sum clamped at tiny); returns the count the network gets right after the
 * forward pass, the batch's losses and d loss / d logits in space->delta. */
static int64_t NAME(batch_forward)(const RunSettings *settings, const RunBuffers *buffers,
                                   const GemmFunctions *blas, const REAL *table, const int64_t *order, int64_t rows,
                                   int64_t loss_kind, const double *design_params,
                                   NAME(StepSpace) *space) {
    const int64_t n_layers = settings->n_layers, n_columns = settings->n_columns;
    const int64_t n_features = settings->widths[0], n_classes = settings->widths[n_layers];
    const int64_t n_compact = n_columns - 1 - settings->weighted; /* the class index's column */
    const REAL tiny = (REAL)settings->tiny;
    REAL weight_sum = (REAL)0;
    for (int64_t r = 0; r < rows; ++r) {
        const REAL *source = table + order[r] * n_columns;
        NAME(row_inputs)(settings, buffers, source, buffers->raw + order[r] * settings->n_raw,
                         space->act[0] + r * n_features);
        space->targets[r] = (int64_t)source[n_compact];
        if (settings->weighted) weight_sum += source[n_columns - 1];
    }
    weight_sum = weight_sum > tiny ? weight_sum : tiny;
    for (int64_t r = 0; r < rows; ++r)
        space->row_scale[r] = settings->weighted
                                  ? table[order[r] * n_columns + n_columns - 1] / weight_sum
                                  : (REAL)(1.0 / (double)rows);
    NAME(matrix_forward)(settings, blas, rows, space);
    const REAL *logits = space->act[n_layers];
    int64_t correct = 0;
    for (int64_t r = 0; r < rows; ++r) {
        const REAL *row = logits + r * n_classes;
        int64_t best = 0;
        for (int64_t c = 1; c < n_classes; ++c) best = row[c] > row[best] ? c : best;
        correct += best == space->targets[r];
    }
    NAME(design_batch)(loss_kind, design_params, tiny, rows, n_classes, logits, space->targets,
                       space->row_scale, space->row_loss, space->logsumexp, space->pre[n_layers],
                       space->delta);
    return correct;
}

/* The optimizer update of every tensor of one member after its `step`-th step (1-based). */
static void NAME(update_member)(const RunSettings *settings, const RunBuffers *buffers,
                                int64_t member, int64_t step, const NAME(StepSpace) *space) {
    REAL *const *first = (REAL *const *)buffers->first_moments;
    REAL *const *second = (REAL *const *)buffers->second_moments;
    for (int64_t k = 0; k < settings->n_layers; ++k) {
        const int64_t n_out = settings->widths[k + 1], n_weights = n_out * settings->widths[k];
        const int64_t weight_at = member * n_weights, bias_at = member * n_out;
        NAME(update)(settings, step, n_weights, space->weights[k], space->weight_grads[k],
                     first[2 * k] + weight_at, second == NULL ? NULL : second[2 * k] + weight_at);
        NAME(update)(settings, step, n_out, space->biases[k], space->bias_grads[k],
                     first[2 * k + 1] + bias_at, second == NULL ? NULL : second[2 * k + 1] + bias_at);
    }
}

/* Design loss and accuracy of one member on the validation rows, in blocks of batch_size rows. */
static void NAME(matrix_evaluate)(const RunSettings *settings, const RunBuffers *buffers,
                                  const GemmFunctions *blas, int64_t loss_kind,
                                  const double *design_params, NAME(StepSpace) *space,
                                  double *loss_out, double *accuracy_out) {
    const int64_t n_layers = settings->n_layers, n_rows = settings->n_val_rows;
    const int64_t n_features = settings->widths[0], n_classes = settings->widths[n_layers];
    const REAL *features = (const REAL *)buffers->val_features;
    const int64_t n_compact = settings->n_columns - 1 - settings->weighted;
    double loss_total = 0.0;
    int64_t correct = 0;
    for (int64_t start = 0; start < n_rows; start += settings->batch_size) {
        const int64_t rows = start + settings->batch_size <= n_rows ? settings->batch_size
                                                                    : n_rows - start;
        const int64_t *targets = buffers->val_targets + start;
        for (int64_t r = 0; r < rows; ++r)
            NAME(row_inputs)(settings, buffers, features + (start + r) * n_compact,
                             buffers->val_raw + (start + r) * settings->n_raw,
                             space->act[0] + r * n_features);
        NAME(matrix_forward)(settings, blas, rows, space);
        const REAL *logits = space->act[n_layers];
        for (int64_t r = 0; r < rows; ++r) {
            int64_t best = 0;
            for (int64_t c = 1; c < n_classes; ++c)
                best = logits[r * n_classes + c] > logits[r * n_classes + best] ? c : best;
            correct += best == targets[r];
        }
        NAME(design_batch)(loss_kind, design_params, (REAL)settings->tiny, rows, n_classes,
                           logits, targets, NULL, space->row_loss, space->logsumexp,
                           space->pre[n_layers], NULL);
        for (int64_t r = 0; r < rows; ++r) loss_total += (double)space->row_loss[r];
    }
    *loss_out = loss_total / (double)n_rows;
    *accuracy_out = (double)correct / (double)n_rows;
}

/* Every epoch of one member (its tensors in space->weights / biases). */
static void NAME(train_member)(const RunSettings *settings, const RunBuffers *buffers,
                               const GemmFunctions *blas, int64_t member,
                               NAME(StepSpace) *space) {
    const int64_t n_rows = settings->n_rows, batch_size = settings->batch_size;
    const int64_t loss_kind = buffers->loss_of_member[member];
    const double *design_params = buffers->design_params_of_member + member * MAX_DESIGN_PARAMS;
    const REAL *table = (const REAL *)buffers->table;
    int64_t step = settings->step_count;
    for (int64_t epoch = 0; epoch < settings->n_epochs; ++epoch) {
        const int64_t *order =
            buffers->orders +
            (buffers->order_of_member[member] * settings->n_epochs + epoch) * n_rows;
        double epoch_loss = 0.0;
        int64_t epoch_correct = 0;
        for (int64_t start = 0; start < n_rows; start += batch_size) {
            const int64_t rows = start + batch_size <= n_rows ? batch_size : n_rows - start;
            epoch_correct += NAME(batch_forward)(settings, buffers, blas, table, order + start, rows,
                                                 loss_kind, design_params, space);
            epoch_loss +=
                NAME(epoch_loss_share)(settings, rows, space->row_loss, space->row_scale);
            NAME(matrix_backward)(settings, blas, rows, space);
            NAME(update_member)(settings, buffers, member, ++step, space);
        }
        const int64_t at = member * settings->n_epochs + epoch;
        NAME(snapshot)(settings, buffers, member, epoch, space->weights, space->biases);
        buffers->train_loss[at] = epoch_loss;
        buffers->train_accuracy[at] = (double)epoch_correct / (double)n_rows;
        if (settings->n_val_rows > 0)
            NAME(matrix_evaluate)(settings, buffers, blas, loss_kind, design_params, space,
                                  buffers->val_loss + at, buffers->val_accuracy + at);
    }
}

/* Train members [member_begin, member_end) for settings->n_epochs epochs, as mlp_train does,
 * with the products through blas. Returns 0, or -1 when the work space could not be allocated
 * (nothing was changed then). */
int64_t NAME(mlp_step_train)(const RunSettings *settings, const RunBuffers *buffers,
                             int64_t member_begin, int64_t member_end,
                             const GemmFunctions *blas) {
    NAME(StepSpace) space;
    if (NAME(allocate_space)(settings, &space) != 0) return -1;
    for (int64_t member = member_begin; member < member_end; ++member) {
        for (int64_t k = 0; k < settings->n_layers; ++k) {
            const int64_t n_out = settings->widths[k + 1], n_weights = n_out * settings->widths[k];
            space.weights[k] = (REAL *)buffers->parameters[2 * k] + member * n_weights;
            space.biases[k] = (REAL *)buffers->parameters[2 * k + 1] + member * n_out;
        }
        NAME(train_member)(settings, buffers, blas, member, &space);
    }
    free(space.space);
    return 0;
}

#undef NAME
#undef CONCAT
#undef CONCAT_

#endif
