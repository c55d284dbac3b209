"""``softclass.Classifier``: softclass's MLP and designs as a scikit-learn classifier.

Drops into ``Pipeline``, ``GridSearchCV``, ``clone`` and pickle like ``MLPClassifier``, with what
that estimator lacks: the output/loss design (A–D or any registered one), class weights, a
validation-loss curve and a ``device``. Labels may be any type (strings too): ``classes_`` holds
them sorted, ``predict`` returns them, ``predict_proba`` columns follow ``classes_``.

Training runs through the batched engine of :mod:`softclass.training.ensemble` with one member
(hand-written
backward, batched optimizer), seeded by ``random_state``: an integer ``random_state`` s gives
exactly the weights of ``build_mlp(config, s)`` and the batch order ``epoch_permutation(n, s, e)``.
Probabilities are computed in float64 from the float32 weights, so a row's prediction does not
depend on the other rows it is predicted with.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    check_random_state,
    validate_data,
)

from softclass.errors import TrainingDiverged
from softclass.estimator_options import (
    add_generated_parameters,
    generated_constraints,
    generated_values,
    train_config,
)
from softclass.mlp.activations import ACTIVATIONS
from softclass.mlp.designs import DESIGNS, get_design
from softclass.mlp.model import MLP, MLPConfig
from softclass.mlp.optimizers import DEFAULTS
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.backends.epochs import BatchedEpochs
from softclass.training.callbacks import EarlyStoppingCallback, divergence
from softclass.training.early_stopping import EarlyStopping
from softclass.training.ensemble import AveragedMLP, member_seeds
from softclass.training.loop import FitLoop
from softclass.training.stacked import Member
from softclass.training.threads import available_cores, choose_threads, torch_threads

_SEED_BOUND = 2**31 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_float32_range(X: np.ndarray) -> None:
    """Training runs in float32: values beyond its range would become infinite (then NaN)."""
    # two reductions without a temporary (np.abs(X) took 0.17 s of a 0.9 s fit at 200,000 x 50)
    largest = max(float(X.max()), -float(X.min())) if X.size else 0.0
    if largest > _FLOAT32_MAX:
        raise ValueError(
            f"X holds a value of magnitude {largest:.3g}, beyond float32's {_FLOAT32_MAX:.3g}: "
            "training would turn it into infinity; scale X first (e.g. StandardScaler)"
        )


class Classifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron classifier over softclass's designs.

    Parameters:
        hidden_layer_sizes: widths of the hidden layers, e.g. ``(7,)`` for the Iris 4-7-3 net.
        activation: hidden activation, one of ``softclass.mlp.activations.ACTIVATIONS``.
        design: a key of ``softclass.mlp.designs.DESIGNS``: "A" (logits + cross entropy), "B"
            (log_softmax + NLL), "C" (softmax + squared error on one-hot), "D" (softmax + mean
            cross-entropy error), or one registered since.
        solver: an optimizer of ``softclass.mlp.optimizers.OPTIMIZERS``: "sgd" (with
            ``momentum``), "adam" or "adamw" (with ``betas`` and ``eps``), or one registered since.
        learning_rate_init: step size.
        batch_size: rows per step, or "auto" = min(200, n_samples).
        max_iter: maximum number of epochs (one epoch per ``partial_fit`` call).
        momentum: SGD momentum in [0, 1).
        alpha: weight decay (L2 for sgd/adam, decoupled for adamw).
        tol: improvement below which an epoch counts as "no change".
        early_stopping: hold out ``validation_fraction`` of the rows (stratified), stop when the
            validation accuracy has not improved by ``tol`` for more than ``n_iter_no_change``
            epochs, and keep the best weights (softclass's one early-stopping rule,
            :mod:`softclass.training.early_stopping`, monitoring validation accuracy).
        validation_fraction: share of rows held out when ``early_stopping``.
        n_iter_no_change: patience, in epochs (on the training loss without early stopping).
        random_state: int seed (same weights as ``build_mlp(config, seed)``), RandomState or None.
        class_weight: None, "balanced" (n_samples / (n_classes · count)) or {label: weight};
            multiplies ``sample_weight``. Each batch's loss is Σ w·loss / Σ w.
        device: torch device for training and prediction ("cpu", "cuda", ...).
        n_jobs: torch CPU threads for training and prediction: None chooses by the size of a step
            (one thread for small matrices, where a second one only adds synchronisation; see
            :mod:`softclass.training.threads`), -1 uses every core, k uses k. The caller's torch
            thread setting is restored afterwards.
        nesterov, betas, eps (keyword-only): the other optimizer hyper-parameters, generated
            from :class:`softclass.mlp.optimizer_params.OptimizerParams` with its defaults: one
            declared there is a parameter here, with the same name and allowed values.
        keep_columns: columns of a pandas/polars ``X`` kept as features even when they look
            like row numbers or IDs (by name or values, :mod:`softclass.data.typing_table`),
            which are otherwise dropped with a warning and listed in ``id_columns_``.
        label_smoothing: ε in [0, 1): train against the targets (1 - ε)·onehot + ε/C (every
            design's loss; :meth:`softclass.mlp.designs.Design.smoothed`); 0 = none.
        n_members (keyword-only, generated from ``--members``): networks trained at once from
            seeds ``s, s + 1000, …`` on the same rows, each early-stopped on its own; the
            probabilities are their mean. The fitted curves and ``n_iter_`` are the first
            network's.

    Fitted attributes: ``classes_``, ``n_features_in_`` (``feature_names_in_`` for frames),
    ``n_outputs_``, ``loss_curve_`` (training loss per epoch), ``validation_scores_`` and
    ``validation_loss_curve_`` (accuracy and design loss on the held-out rows; None without early
    stopping), ``best_validation_score_``, ``best_loss_``, ``n_iter_``.
    """

    @property
    def _parameter_constraints(self) -> dict[str, list]:
        """scikit-learn's constraints: the training options' from the option table (their
        scikit-learn names, :mod:`softclass.option_table`), the registries' names as they are
        now (an entry registered at run time is accepted), and the estimator's own."""
        return {
            "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
            "activation": [StrOptions(set(ACTIVATIONS))],
            "design": [StrOptions(set(DESIGNS) | {name.lower() for name in DESIGNS})],
            **generated_constraints(),
            "early_stopping": ["boolean"],
            "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
            "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
            "random_state": ["random_state"],
            "class_weight": [StrOptions({"balanced"}), dict, None],
            "device": [str, torch.device],
            "n_jobs": [
                None,
                Options(Integral, {-1}),
                Interval(Integral, 1, None, closed="left"),
            ],
            "keep_columns": [None, list, tuple],
        }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        design="A",
        solver="adam",
        learning_rate_init=0.001,
        batch_size="auto",
        max_iter=200,
        momentum=DEFAULTS.momentum,
        alpha=DEFAULTS.weight_decay,
        tol=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        random_state=None,
        class_weight=None,
        device="cpu",
        n_jobs=None,
        keep_columns=None,
        label_smoothing=0.0,
        **optimizer_params,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.design = design
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.momentum = momentum
        self.alpha = alpha
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.class_weight = class_weight
        self.device = device
        self.n_jobs = n_jobs
        self.keep_columns = keep_columns
        self.label_smoothing = label_smoothing
        for name, value in generated_values(type(self), optimizer_params).items():
            setattr(self, name, value)

    # -- fitting ---------------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Train from scratch for up to ``max_iter`` epochs. X ``(n, F)``, y ``(n,)`` labels."""
        self._validate_params()
        hidden = self._checked_hidden_sizes()
        X = self._without_id_columns(X, reset=True)
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), reset=True)
        _check_float32_range(X)
        check_classification_targets(y)
        self.classes_, targets = np.unique(y, return_inverse=True)
        self.n_outputs_ = 1
        row_weights = self._row_weights(X, targets, sample_weight)
        seed = self._seed()
        validation = None
        if self.early_stopping:
            train_rows, val_rows = self._validation_split(targets, seed)
            validation = (
                self._tensor(X[val_rows]),
                torch.as_tensor(targets[val_rows], device=self._device()),
            )
            X, targets = X[train_rows], targets[train_rows]
            row_weights = None if row_weights is None else row_weights[train_rows]
        self._start(hidden, X.shape[1], seed)
        self._run_epochs(X, targets, row_weights, self.max_iter, validation)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``(X, y)``; the first call needs ``classes`` (every label to expect)."""
        self._validate_params()
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True; use fit")
        first_call = not hasattr(self, "classes_")
        if first_call and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        X = self._without_id_columns(X, reset=first_call)
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), reset=first_call)
        _check_float32_range(X)
        check_classification_targets(y)
        if first_call:
            self.classes_ = np.unique(np.asarray(classes))
            self.n_outputs_ = 1
            self._start(self._checked_hidden_sizes(), X.shape[1], self._seed())
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={np.unique(classes).tolist()} differs from the classes of the first "
                f"partial_fit call {self.classes_.tolist()}"
            )
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(
                f"y contains labels {unknown.tolist()} that are not in classes_ "
                f"{self.classes_.tolist()}"
            )
        targets = np.searchsorted(self.classes_, y)
        self._run_epochs(X, targets, self._row_weights(X, targets, sample_weight), 1, None)
        return self

    def _without_id_columns(self, X, reset: bool):
        """``X`` without its row-number and ID columns when it is a pandas or polars frame
        (softclass's rule, :mod:`softclass.data.typing_table`); fitting records them in
        ``id_columns_`` with a warning, ``keep_columns`` keeps any."""
        if reset:
            self.id_columns_ = ()
        if not hasattr(X, "columns"):
            return X
        if reset:
            from softclass.data.typing_table import id_like_frame_columns

            found = id_like_frame_columns(X, self.keep_columns or ())
            self.id_columns_ = tuple(found)
            if found:
                warnings.warn(
                    f"softclass.Classifier: dropped ID-like column(s) {list(found)} "
                    f"({'; '.join(found.values())}); keep_columns=[...] keeps one as a feature",
                    UserWarning,
                    stacklevel=3,
                )
        dropped = [name for name in getattr(self, "id_columns_", ()) if name in X.columns]
        if not dropped:
            return X
        return (
            X.drop(dropped) if type(X).__module__.startswith("polars") else X.drop(columns=dropped)
        )

    def _validation_split(self, targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (train, validation); stratified by class when every class can be split."""
        n_rows = targets.shape[0]
        n_val = int(np.ceil(self.validation_fraction * n_rows))
        if n_val < 2 or n_rows - n_val < 1:
            raise ValueError(
                f"The validation set is too small: validation_fraction={self.validation_fraction} "
                f"of {n_rows} rows gives {n_val} validation rows (need at least 2 and at least 1 "
                "training row); raise validation_fraction or give more rows"
            )
        counts = np.bincount(targets)
        can_stratify = n_val >= np.count_nonzero(counts) and counts[counts > 0].min() >= 2
        return train_test_split(
            np.arange(n_rows),
            test_size=n_val,
            random_state=seed,
            stratify=targets if can_stratify else None,
        )

    def _checked_hidden_sizes(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, Integral) else tuple(sizes)
        if not all(isinstance(width, Integral) and width >= 1 for width in sizes):
            raise ValueError(
                f"hidden_layer_sizes must hold positive integers, got {self.hidden_layer_sizes!r}"
            )
        return tuple(int(width) for width in sizes)

    def _device(self) -> torch.device:
        try:
            return torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(
                f"device={self.device!r} is not a torch device ('cpu', 'cuda', 'cuda:1', ...)"
            ) from error

    def _seed(self) -> int:
        if isinstance(self.random_state, Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(_SEED_BOUND))

    def _threads(self, rows_per_step: int) -> int:
        """torch threads for steps of ``rows_per_step`` rows (``n_jobs``, or chosen by size)."""
        if self.n_jobs is not None:
            return available_cores() if self.n_jobs == -1 else int(self.n_jobs)
        config = self._trainer.config
        return choose_threads(rows_per_step, (config.n_features, *config.hidden, config.n_classes))

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.asarray(X), dtype=torch.float32, device=self._device())

    def _check_divergence(
        self, loss: float, validation_loss: float | None, check_weights: bool = True
    ) -> None:
        """The command line's divergence rule after every epoch: a NaN or infinite loss or
        weight, or a loss exploded far above uniform predictions, stops the fit."""
        network = self._trainer.network
        finite = not check_weights or all(
            bool(torch.isfinite(tensor).all()) for tensor in network.parameters()
        )
        reason = divergence(
            loss,
            validation_loss,
            finite,
            get_design(self.design_),
            self._trainer.config,
            float(self.learning_rate_init),
        )
        if reason is not None:
            problem = reason.split("; lower the learning rate")[0]
            raise TrainingDiverged(
                f"softclass.Classifier diverged at epoch {self.n_iter_}: {problem}; lower "
                f"learning_rate_init (now {self.learning_rate_init:g}) or scale X (e.g. "
                "StandardScaler)"
            )

    def _row_weights(self, X, targets: np.ndarray, sample_weight) -> np.ndarray | None:
        """Per-row weights: sample_weight × class_weight[target]; None when all are 1."""
        weights = None
        if sample_weight is not None:
            weights = _check_sample_weight(
                sample_weight, X, dtype=np.float64, ensure_non_negative=True
            )
        if self.class_weight is not None:
            if isinstance(self.class_weight, str):
                present = np.unique(targets)
                per_class = np.ones(len(self.classes_))
                per_class[present] = compute_class_weight("balanced", classes=present, y=targets)
            else:
                unknown = [label for label in self.class_weight if label not in self.classes_]
                if unknown:
                    raise ValueError(
                        f"class_weight names labels {unknown} that are not among the classes "
                        f"{self.classes_.tolist()}"
                    )
                per_class = np.array(
                    [float(self.class_weight.get(label, 1.0)) for label in self.classes_]
                )
            by_row = per_class[targets]
            weights = by_row if weights is None else weights * by_row
        return weights

    def _start(self, hidden: tuple[int, ...], n_features: int, seed: int) -> None:
        """Fresh network and optimizer; empty histories."""
        config = MLPConfig(n_features, len(self.classes_), hidden, self.activation)
        self.design_ = get_design(self.design).name
        self._trainer = BatchedTrainer(
            config,
            [Member(self.design_, each) for each in member_seeds(seed, self.n_members)],
            train_config(self, seed),
            device=self._device(),
        )
        # scikit-learn's rule: stop after more than n_iter_no_change epochs without improving by
        # tol (validation accuracy with early_stopping, else the training loss).
        self._stopping = EarlyStopping(
            "validation_accuracy" if self.early_stopping else "train_loss",
            self.n_iter_no_change + 1,
            float(self.tol),
            self.n_members,
        )
        self.n_iter_ = 0
        self.loss_curve_ = []
        self.best_loss_ = np.inf
        self.validation_scores_ = [] if self.early_stopping else None
        self.validation_loss_curve_ = [] if self.early_stopping else None
        self.best_validation_score_ = -np.inf if self.early_stopping else None

    def _run_epochs(self, X, targets, row_weights, max_epochs: int, validation) -> None:
        n_rows = X.shape[0]
        batch_size = min(200, n_rows) if self.batch_size == "auto" else min(self.batch_size, n_rows)
        self._trainer.settings = dataclasses.replace(self._trainer.settings, batch_size=batch_size)
        with torch_threads(self._threads(batch_size)):
            self._train_epochs(X, targets, row_weights, max_epochs, validation)

    def _train_epochs(self, X, targets, row_weights, max_epochs: int, validation) -> None:
        """``max_epochs`` more epochs through the training loop, with scikit-learn's stopping
        rule as its early-stopping callback (one epoch of ``partial_fit`` never stops)."""
        trainer = self._trainer
        device = self._device()
        # X and the class indices go straight into the engine's table (one float32 copy of X and
        # one column of class indices; each step builds the targets of its batch).
        X = np.asarray(X)
        rows = trainer.training_rows(
            torch.as_tensor(X, device=device) if X.flags.writeable else self._tensor(X),
            row_weights=None
            if row_weights is None
            else torch.as_tensor(row_weights, device=device),
            targets=torch.as_tensor(targets, device=device),
        )
        scored = (None, None) if validation is None else validation
        stopping = EarlyStoppingCallback(
            self._stopping, restore_best=validation is not None, stop=max_epochs > 1
        )
        first = self.n_iter_
        loop = FitLoop(BatchedEpochs(trainer, rows, *scored), first + max_epochs, [stopping])
        loop.fit(first_epoch=first)
        for epoch in range(first + 1, loop.epochs_run[0] + 1):
            numbers = loop.record(0, epoch)
            loss = numbers["train_loss"]
            self.n_iter_ += 1
            self.loss_curve_.append(loss)
            self.best_loss_ = min(self.best_loss_, loss) if not math.isnan(loss) else loss
            if validation is not None:
                self.validation_loss_curve_.append(numbers["val_loss"])
                self.validation_scores_.append(numbers["val_accuracy"])
                self.best_validation_score_ = max(
                    self.best_validation_score_, numbers["val_accuracy"]
                )
            # The command line's divergence rule on every epoch the loop ran (the weights once,
            # after the last).
            last = epoch == loop.epochs_run[0]
            validation_loss = None if validation is None else numbers["val_loss"]
            self._check_divergence(loss, validation_loss, check_weights=last)
        if max_epochs > 1 and not all(self._stopping.stopped):
            warnings.warn(
                f"softclass.Classifier: reached max_iter={self.max_iter} epochs without "
                f"converging (tol={self.tol}, n_iter_no_change={self.n_iter_no_change})",
                ConvergenceWarning,
                stacklevel=4,
            )

    # -- prediction ------------------------------------------------------------------------------

    def _logits(self, X) -> torch.Tensor:
        check_is_fitted(self)
        X = validate_data(
            self, self._without_id_columns(X, False), dtype=(np.float64, np.float32), reset=False
        )
        features = torch.tensor(np.asarray(X), dtype=torch.float64, device=self._device())
        # A forward pass is a third of a training step's work (no backward).
        with torch_threads(self._threads(max(1, features.shape[0] // 3))):
            logits = self._trainer.network.logits(features, torch.float64)
        if logits.shape[0] == 1:
            return logits[0]
        # The members' mean probabilities as log-probabilities, which every design maps back
        # to that mean (softclass.training.ensemble.AveragedMLP).
        design = get_design(self.design_)
        log_probs = torch.stack([design.predict_log_proba(member) for member in logits])
        return torch.logsumexp(log_probs, dim=0) - math.log(logits.shape[0])

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities ``(n, n_classes)`` float64, columns in ``classes_`` order (design rule)."""
        with torch.no_grad():
            logits = self._logits(X)
            probabilities = get_design(self.design_).predict_proba(logits)
        finite = torch.isfinite(probabilities).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten()
            raise ValueError(
                f"{bad.numel()} of {finite.numel()} row(s) of X get NaN or infinite "
                f"probabilities (first: row {int(bad[0])}): their values are too large for the "
                "network (scale X as it was scaled for fit)"
            )
        return probabilities.cpu().numpy()

    def predict_log_proba(self, X) -> np.ndarray:
        """Log-probabilities ``(n, n_classes)``: log_softmax of the logits (A, B); the clamped
        log of the softmax output for C, D (their network's own output is a probability)."""
        with torch.no_grad():
            logits = self._logits(X)
            return get_design(self.design_).predict_log_proba(logits).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable label of each row ``(n,)``, from ``classes_``."""
        with torch.no_grad():
            indices = self._logits(X).argmax(1).cpu().numpy()
        return self.classes_[indices]

    def to_mlp(self) -> MLP | AveragedMLP:
        """The trained network as a :class:`softclass.mlp.model.MLP` (float32, CPU, logits out);
        with ``n_members`` > 1 an :class:`~softclass.training.ensemble.AveragedMLP` of them (out:
        the log of their mean probabilities)."""
        check_is_fitted(self)
        network = self._trainer.network
        if network.n_members == 1:
            return network.to_mlp(0)
        members = [network.to_mlp(member) for member in range(network.n_members)]
        return AveragedMLP(members, get_design(self.design_)).eval()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


add_generated_parameters(Classifier)


def expected_failed_checks(estimator: Classifier) -> dict[str, str]:
    """scikit-learn estimator checks this estimator fails by design, each with the reason."""
    return {
        "check_sample_weight_equivalence_on_dense_data": (
            "minibatch SGD/Adam: a row with weight 2 is not the same as that row twice, because "
            "the duplicated row changes the batches and the shuffled order (MLPClassifier with "
            "sgd/adam fails it too)"
        ),
    }
