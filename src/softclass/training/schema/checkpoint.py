"""The one checkpoint format: a safetensors file whose metadata holds every non-tensor field as one
checked JSON document (format :data:`BATCHED_CHECKPOINT_FORMAT`).

Its tensors are the stacked parameters ``(M, ...)``, the optimizer's moments, the early-stopping
best weights and the histories; every backend writes it (the autograd reference as M = 1). The
header (at most :data:`~softclass.training.schema.tensors_file.MAX_SAFETENSORS_HEADER_BYTES`) is
read and checked field by field, and the tensor layout it declares is checked against the
network, members and epoch of that document (and those against the resuming run) before a
single tensor byte is read; safetensors holds no code. A ``torch.save`` archive (the checkpoints
of earlier softclass versions) is recognised by its first bytes and refused in one line, never
unpickled.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from softclass.errors import ConfigError, ModelFileError
from softclass.mlp.model import MLPConfig
from softclass.mlp.optimizers import get_optimizer
from softclass.training.config import TrainConfig
from softclass.training.loop import HISTORY_NAMES, MONITORED_HISTORY
from softclass.training.schema.checkpoint_fields import (
    _check_epochs_run,
    _early_stopping_field,
    _members_field,
)
from softclass.training.schema.fields import (
    _describe,
    _integer,
    _kind,
    _mapping,
    bad_field,
    model_config_field,
    train_config_field,
)
from softclass.training.schema.tensors_file import (
    MAX_SAFETENSORS_HEADER_BYTES,
    SafetensorsLayout,
    read_safetensors_layout,
)

BATCHED_CHECKPOINT_FORMAT = 2
BATCHED_ENGINE = "batched"
BATCHED_METADATA_KEY = "softclass_checkpoint"
_BATCHED_FIELDS = (
    "format",
    "engine",
    "members",
    "model_config",
    "train_config",
    "data_fingerprint",
    "dtype",
    "epoch",
    "step_count",
    "epochs_run",
    "early_stopping",
)
# Parameter dtypes a batched checkpoint may hold: name → (torch dtype, safetensors code).
_BATCHED_DTYPES = {
    "float16": (torch.float16, "F16"),
    "bfloat16": (torch.bfloat16, "BF16"),
    "float32": (torch.float32, "F32"),
    "float64": (torch.float64, "F64"),
}
_MAX_STEPS = 2**53  # optimizer steps: exact as a float64 (Adam's bias correction reads them)
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class BatchedCheckpointHeader:
    """The checked non-tensor fields of a batched-engine checkpoint.

    Attributes:
        members: ``(design, seed)`` of each of the M stacked models, in stacking order.
        model_config, train_config: the network and the options of the run that wrote it.
        data_fingerprint: SHA-256 hex digest of the training data (see
            :func:`softclass.training.checkpoint.data_fingerprint`).
        dtype: the parameters' dtype.
        epoch: epochs run, in ``[1, train_config.epochs]``.
        step_count: optimizer steps taken (``epoch`` × batches per epoch).
        epochs_run: per member, ``train_config.epochs`` or, once it stopped early, its last
            epoch.
        early_stopping: :meth:`softclass.training.early_stopping.EarlyStopping.to_dict` (best
            values ±inf before a member's first improvement), None without early stopping.
    """

    members: tuple[tuple[str, int], ...]
    model_config: MLPConfig
    train_config: TrainConfig
    data_fingerprint: str
    dtype: torch.dtype
    epoch: int
    step_count: int
    epochs_run: tuple[int, ...]
    early_stopping: dict[str, list[Any]] | None

    @property
    def has_best(self) -> bool:
        """Whether the checkpoint holds the early-stopping best weights."""
        return self.early_stopping is not None and self.train_config.restore_best

    def tensor_layout(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        """Name → (dtype, shape) of every tensor the file must hold, in file order: per
        parameter ``i`` of :meth:`StackedMLP.parameters` (``W0, b0, W1, ...``: ``(M, out, in)``
        and ``(M, out)``) ``parameters.i``, ``first_moments.i``, ``second_moments.i`` (optimizers
        with two moments), ``best.i`` (:attr:`has_best`); then ``history.NAME`` ``(M, epoch)``
        float64 for each of :data:`HISTORY_NAMES`."""
        n_members = len(self.members)
        widths = [self.model_config.n_features, *self.model_config.hidden]
        widths.append(self.model_config.n_classes)
        shapes = [
            shape
            for fan_in, fan_out in itertools.pairwise(widths)
            for shape in ((n_members, fan_out, fan_in), (n_members, fan_out))
        ]
        groups = ["parameters", "first_moments"]
        if get_optimizer(self.train_config.optimizer).n_moments == 2:
            groups.append("second_moments")
        if self.has_best:
            groups.append("best")
        layout = {
            f"{group}.{index}": (self.dtype, shape)
            for group in groups
            for index, shape in enumerate(shapes)
        }
        for name in HISTORY_NAMES:
            layout[f"history.{name}"] = (torch.float64, (n_members, self.epoch))
        return layout


@dataclass(frozen=True)
class BatchedCheckpointTensors:
    """The tensors of a batched-engine checkpoint (CPU; shapes in
    :meth:`BatchedCheckpointHeader.tensor_layout`).

    Attributes:
        parameters, first_moments, second_moments: per parameter of the stacked network
            (``second_moments`` empty for optimizers with one moment).
        best: the early-stopping best weights per parameter, or None.
        histories: :data:`HISTORY_NAMES` → ``(M, epoch)`` float64 (the validation ones NaN
            without validation rows).
    """

    parameters: list[torch.Tensor]
    first_moments: list[torch.Tensor]
    second_moments: list[torch.Tensor]
    best: list[torch.Tensor] | None
    histories: dict[str, torch.Tensor]

    def named(self) -> list[torch.Tensor]:
        """Every tensor in the order of :meth:`BatchedCheckpointHeader.tensor_layout`."""
        return [
            *self.parameters,
            *self.first_moments,
            *self.second_moments,
            *(self.best or []),
            *(self.histories[name] for name in HISTORY_NAMES),
        ]


@dataclass(frozen=True)
class BatchedRun:
    """What the resuming run allows, checked before any tensor of its checkpoint is read.

    Attributes:
        dtype: the run's parameter dtype.
        epochs: the epochs the run asks for (a checkpoint may not have run more).
        batches_per_epoch: optimizer steps per epoch (from its rows and batch size).
        has_validation: whether the run scores validation rows after every epoch.
    """

    dtype: torch.dtype
    epochs: int
    batches_per_epoch: int
    has_validation: bool


def encode_batched_checkpoint(
    header: BatchedCheckpointHeader, tensors: BatchedCheckpointTensors
) -> bytes:
    """The bytes of a format-:data:`BATCHED_CHECKPOINT_FORMAT` checkpoint (a safetensors file
    whose metadata holds the header's fields as JSON); write them with an atomic write.

    Raises:
        ConfigError: the parameters' dtype is not a float dtype a checkpoint can hold.
    """
    dtype_names = {dtype: name for name, (dtype, _) in _BATCHED_DTYPES.items()}
    if header.dtype not in dtype_names:
        raise ConfigError(
            f"checkpoints hold parameters of dtype {', '.join(_BATCHED_DTYPES)}, not {header.dtype}"
        )
    document = {
        "format": BATCHED_CHECKPOINT_FORMAT,
        "engine": BATCHED_ENGINE,
        "members": [[design, seed] for design, seed in header.members],
        "model_config": header.model_config.to_dict(),
        "train_config": header.train_config.to_dict(),
        "data_fingerprint": header.data_fingerprint,
        "dtype": dtype_names[header.dtype],
        "epoch": header.epoch,
        "step_count": header.step_count,
        "epochs_run": list(header.epochs_run),
        "early_stopping": header.early_stopping,
    }
    named = dict(
        zip(
            header.tensor_layout(),
            (tensor.detach().cpu().contiguous() for tensor in tensors.named()),
            strict=True,
        )
    )
    return safetensors_bytes(named, metadata={BATCHED_METADATA_KEY: json.dumps(document)})


def is_torch_archive(path: Path) -> bool:
    """Whether ``path`` starts like the zip archive ``torch.save`` writes (the autograd
    Trainer's checkpoints, and the batched engine's before format 2); False when unreadable."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    except OSError:
        return False


def _looks_like_safetensors(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file: 8 bytes of header length, then the
    header's ``{`` (a length past the end of the file, as in a truncated file, or over the size
    limit is then refused by :func:`read_safetensors_layout` naming it)."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(9)
    except OSError:
        return False
    return start[8:] == b"{"


def _older_format(path: Path, formats: str) -> ModelFileError:
    return ModelFileError(
        f"{path}: a checkpoint of an earlier softclass (format {formats}, a torch.save "
        f"archive); this softclass reads its safetensors checkpoints (format "
        f"{BATCHED_CHECKPOINT_FORMAT}) only: train again without --resume, or finish the run "
        "with the softclass that wrote it"
    )


def read_batched_checkpoint_header(path: str | Path) -> BatchedCheckpointHeader:
    """Read and check the header of a checkpoint; no tensor is read.

    The safetensors header (at most :data:`MAX_SAFETENSORS_HEADER_BYTES`) is read by
    :func:`read_safetensors_layout`; every JSON field is typed and range-checked (members
    registered designs with integer seeds, the network within the size limits, the options a
    valid :class:`TrainConfig`, epoch counts within ``[1, train_config.epochs]``, early-stopping
    state consistent with the options); the tensors it declares must be exactly
    :meth:`BatchedCheckpointHeader.tensor_layout` and tile the data section. A ``torch.save``
    archive (an earlier softclass's checkpoint) is recognised by its first bytes and refused.

    Raises:
        ModelFileError: one line naming the file, the field and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no checkpoint to resume from (the file does not exist)")
    if is_torch_archive(path):  # never unpickled: its format is all it is asked
        raise _older_format(path, "1 or 2")
    if not _looks_like_safetensors(path):
        raise ModelFileError(
            f"{path}: not a softclass checkpoint (neither the safetensors file of the batched "
            "engine nor the zip archive torch.save writes)"
        )
    layout = read_safetensors_layout(path, max_dims=3)
    if BATCHED_METADATA_KEY not in layout.metadata:
        raise ModelFileError(
            f"{path}: not a softclass checkpoint (a safetensors file without the "
            f"{BATCHED_METADATA_KEY!r} metadata; a model's weights?)"
        )
    header = _check_batched_document(path, _json_document(path, layout.metadata))
    _check_batched_layout(path, layout, header.tensor_layout())
    return header


def _json_document(path: Path, metadata: dict[str, str]) -> object:
    """The JSON value of the checkpoint's metadata string (NaN and ±Infinity allowed: the best
    value of an early-stopping rule before its first improvement is infinite)."""
    try:
        return json.loads(metadata[BATCHED_METADATA_KEY])
    except (ValueError, RecursionError) as error:  # also huge integers, nesting too deep
        raise ModelFileError(
            f"{path}: field {BATCHED_METADATA_KEY!r} is not readable JSON "
            f"({str(error).splitlines()[0][:100]})"
        ) from None


def _check_batched_document(path: Path, document: object) -> BatchedCheckpointHeader:
    if not isinstance(document, dict):
        raise bad_field(path, BATCHED_METADATA_KEY, document, "a JSON object of checkpoint fields")
    found_format = document.get("format")
    if found_format != BATCHED_CHECKPOINT_FORMAT or isinstance(found_format, bool):
        if found_format == 1 and not isinstance(found_format, bool):
            raise _older_format(path, _describe(found_format))
        raise ModelFileError(
            f"{path}: batched-engine checkpoint format {_describe(found_format)}; this softclass "
            f"reads format {BATCHED_CHECKPOINT_FORMAT}"
        )
    data = _mapping(path, BATCHED_METADATA_KEY, document, _BATCHED_FIELDS)
    if data["engine"] != BATCHED_ENGINE:
        raise bad_field(path, "engine", data["engine"], repr(BATCHED_ENGINE))
    members = _members_field(path, data["members"])
    model_config = model_config_field(path, "model_config", data["model_config"])
    train_config = train_config_field(path, "train_config", data["train_config"])
    fingerprint = data["data_fingerprint"]
    if (
        not isinstance(fingerprint, str)
        or len(fingerprint) != 64
        or any(char not in "0123456789abcdef" for char in fingerprint)
    ):
        raise bad_field(path, "data_fingerprint", fingerprint, "a SHA-256 hex digest")
    dtype_name = data["dtype"]
    if not isinstance(dtype_name, str) or dtype_name not in _BATCHED_DTYPES:
        raise bad_field(path, "dtype", dtype_name, f"one of {list(_BATCHED_DTYPES)}")
    epoch = _integer(path, "epoch", data["epoch"], 1, train_config.epochs)
    step_count = _integer(path, "step_count", data["step_count"], epoch, _MAX_STEPS)
    epochs_run = _kind(path, "epochs_run", data["epochs_run"], list, "a list of epoch counts")
    if len(epochs_run) != len(members):
        raise bad_field(path, "epochs_run", epochs_run, f"{len(members)} counts (one per member)")
    for index, count in enumerate(epochs_run):
        _integer(path, f"epochs_run[{index}]", count, 1, train_config.epochs)
    early = _early_stopping_field(path, data["early_stopping"], train_config, epoch, len(members))
    _check_epochs_run(path, epochs_run, early, epoch, train_config.epochs)
    return BatchedCheckpointHeader(
        members=members,
        model_config=model_config,
        train_config=train_config,
        data_fingerprint=fingerprint,
        dtype=_BATCHED_DTYPES[dtype_name][0],
        epoch=epoch,
        step_count=step_count,
        epochs_run=tuple(epochs_run),
        early_stopping=early,
    )


def _check_batched_layout(
    path: Path,
    layout: SafetensorsLayout,
    expected: dict[str, tuple[torch.dtype, tuple[int, ...]]],
) -> None:
    """The tensors of ``layout`` must be exactly ``expected`` (names, dtypes, shapes) and their
    byte ranges must tile the data section, with nothing before, between or after them."""
    codes = {dtype: code for dtype, code in _BATCHED_DTYPES.values()}
    unexpected = [name for name in layout.tensors if name not in expected]
    if unexpected:
        raise ModelFileError(
            f"{path}: {len(unexpected)} unexpected tensor(s) {ascii(unexpected[:5])[:200]}; a "
            f"checkpoint of this network holds {list(expected)[:3]}…"
        )
    for name, (dtype, shape) in expected.items():
        if name not in layout.tensors:
            raise ModelFileError(
                f"{path}: lacks tensor {name!r} ({codes[dtype]} of shape {shape}, from fields "
                "'members', 'model_config', 'train_config' and 'epoch')"
            )
        found_code, found_shape = layout.tensors[name]
        if (found_code, found_shape) != (codes[dtype], shape):
            raise ModelFileError(
                f"{path}: tensor {name!r} is {found_code} of shape {found_shape}; expected "
                f"{codes[dtype]} of shape {shape} (from fields 'members', 'model_config', "
                "'dtype' and 'epoch')"
            )
    position = 0
    for name, (begin, end) in sorted(layout.offsets.items(), key=lambda item: item[1]):
        if begin != position:
            raise bad_field(
                path,
                f"header[{name}].data_offsets",
                [begin, end],
                f"a range starting at byte {position} (tensors packed one after another)",
            )
        position = end
    data_size = layout.file_size - 8 - layout.header_size
    if position != data_size:
        raise ModelFileError(
            f"{path}: {data_size - position} bytes after the last tensor; a checkpoint's "
            "tensors fill the file"
        )


def load_batched_checkpoint(
    path: str | Path, header: BatchedCheckpointHeader, run: BatchedRun
) -> BatchedCheckpointTensors:
    """The tensors of a checkpoint whose ``header`` :func:`read_batched_checkpoint_header`
    checked and whose members, network, options and data the caller compared with the run.

    Before reading: the dtype, the epochs (at most ``run.epochs``) and the step count
    (``epoch`` × ``run.batches_per_epoch``) must fit the run. The file (whose size the header
    fixed) is then read once with :func:`safetensors.torch.load` (no pickle), and the values
    checked: finite parameters, moments and best weights; second moments ≥ 0; accuracies in
    [0, 1], losses ≥ 0 or NaN; validation histories NaN exactly when the run has no validation
    rows; each early-stopping best equal to its history at the best epoch.

    Raises:
        ModelFileError: one line naming the file, the field or tensor and what was expected.
    """
    path = Path(path)
    if header.dtype != run.dtype:
        raise bad_field(
            path,
            "dtype",
            str(header.dtype).removeprefix("torch."),
            f"{str(run.dtype).removeprefix('torch.')!r} (this run's parameters)",
        )
    if header.epoch > run.epochs:
        raise ModelFileError(
            f"{path}: cannot resume, the checkpoint has run {header.epoch} epochs, more than the "
            f"{run.epochs} this run asks for (--epochs)"
        )
    steps = header.epoch * run.batches_per_epoch
    if header.step_count != steps:
        raise bad_field(
            path,
            "step_count",
            header.step_count,
            f"{steps} ({header.epoch} epochs × {run.batches_per_epoch} batches of this run)",
        )
    layout = header.tensor_layout()
    loaded = _read_safetensors_tensors(path, layout)
    for name, tensor in loaded.items():
        if name.startswith("history."):
            continue
        if not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(
                f"{path}: tensor {name!r} holds NaN or infinite values; a resumable checkpoint "
                "holds finite ones"
            )
        if name.startswith("second_moments.") and bool((tensor < 0).any()):
            raise ModelFileError(
                f"{path}: tensor {name!r} holds negative values; second moments are ≥ 0"
            )
    histories = {name: loaded[f"history.{name}"] for name in HISTORY_NAMES}
    _check_histories(path, histories, run.has_validation)
    if header.early_stopping is not None:
        monitored = histories[MONITORED_HISTORY[header.train_config.monitor]]
        early = header.early_stopping
        for member, (best, best_epoch) in enumerate(
            zip(early["best"], early["best_epoch"], strict=True)
        ):
            if best_epoch is not None and best != float(monitored[member, best_epoch - 1]):
                raise bad_field(
                    path,
                    f"early_stopping.best[{member}]",
                    best,
                    f"the {header.train_config.monitor} of its best epoch {best_epoch} "
                    f"({float(monitored[member, best_epoch - 1])!r})",
                )
    groups = {
        group: [loaded[name] for name in layout if name.startswith(f"{group}.")]
        for group in ("parameters", "first_moments", "second_moments", "best")
    }
    return BatchedCheckpointTensors(
        parameters=groups["parameters"],
        first_moments=groups["first_moments"],
        second_moments=groups["second_moments"],
        best=groups["best"] if header.has_best else None,
        histories=histories,
    )


def _read_safetensors_tensors(
    path: Path, layout: dict[str, tuple[torch.dtype, tuple[int, ...]]]
) -> dict[str, torch.Tensor]:
    """Every tensor of ``path``, read once into memory (never mapped: a file truncated while
    mapped would crash the process) and checked again against ``layout`` (the file may have
    changed since its header was read)."""
    limit = 8 + MAX_SAFETENSORS_HEADER_BYTES
    limit += sum(math.prod(shape) * dtype.itemsize for dtype, shape in layout.values())
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read the checkpoint ({error.strerror})") from None
    if len(data) > limit:
        raise ModelFileError(
            f"{path}: the checkpoint changed while it was read (larger than its header says); "
            "read it again once its writer has finished"
        )
    try:
        loaded = safetensors_load(data)
    except Exception as error:  # safetensors' own checks of a file changed since its header
        raise ModelFileError(
            f"{path}: not a readable safetensors file ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:150] if str(error) else 'no detail'})"
        ) from None
    found = {name: (tensor.dtype, tuple(tensor.shape)) for name, tensor in loaded.items()}
    if found != layout:
        raise ModelFileError(
            f"{path}: the checkpoint changed while it was read (its tensors no longer match its "
            "header); read it again once its writer has finished"
        )
    return loaded


def _check_histories(path: Path, histories: dict[str, torch.Tensor], has_validation: bool) -> None:
    """Accuracies in [0, 1] and losses ≥ 0 (NaN or +inf: a diverged member) for every epoch run;
    the validation ones NaN throughout exactly when the run has no validation rows."""
    for name, history in histories.items():
        field = f"history.{name}"
        if name.startswith("val_") and not has_validation:
            if not bool(history.isnan().all()):
                raise ModelFileError(
                    f"{path}: tensor {field!r} holds numbers; expected NaN throughout (this run "
                    "has no validation rows)"
                )
            continue
        if name.endswith("accuracy"):
            if not bool(((history >= 0) & (history <= 1)).all()):
                raise ModelFileError(
                    f"{path}: tensor {field!r} holds values outside [0, 1] (or NaN); expected "
                    "the share of rows classified right"
                )
        elif bool((history < 0).any()):
            raise ModelFileError(
                f"{path}: tensor {field!r} holds negative values; expected losses ≥ 0"
            )
