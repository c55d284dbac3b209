"""What softclass accepts when it reads its own files back, one module per format.

- :mod:`~softclass.training.schema.fields`: the shared field checkers (one-line errors);
- :mod:`~softclass.training.schema.model_dir`: model.json of a saved model directory;
- :mod:`~softclass.training.schema.tensors_file`: the safetensors header (a model's weights and a
  checkpoint both are safetensors files);
- :mod:`~softclass.training.schema.checkpoint` (+ ``checkpoint_fields``): the one checkpoint.

Every failure is a :class:`~softclass.errors.ModelFileError` of one line naming the file, the
field and what was expected; nothing is unpickled.
"""

from softclass.training.schema.checkpoint import (
    BATCHED_CHECKPOINT_FORMAT,
    BATCHED_ENGINE,
    BATCHED_METADATA_KEY,
    HISTORY_NAMES,
    MONITORED_HISTORY,
    BatchedCheckpointHeader,
    BatchedCheckpointTensors,
    BatchedRun,
    encode_batched_checkpoint,
    is_torch_archive,
    load_batched_checkpoint,
    read_batched_checkpoint_header,
)
from softclass.training.schema.fields import bad_field, model_config_field, train_config_field
from softclass.training.schema.model_dir import (
    MAX_JSON_BYTES,
    MODEL_FORMAT,
    ModelMetadata,
    check_metadata,
    read_json_object,
)
from softclass.training.schema.tensors_file import (
    MAX_SAFETENSORS_HEADER_BYTES,
    SafetensorsLayout,
    check_weights_header,
    read_safetensors_header,
    read_safetensors_layout,
)

__all__ = [
    "BATCHED_CHECKPOINT_FORMAT",
    "BATCHED_ENGINE",
    "BATCHED_METADATA_KEY",
    "HISTORY_NAMES",
    "MAX_JSON_BYTES",
    "MAX_SAFETENSORS_HEADER_BYTES",
    "MODEL_FORMAT",
    "MONITORED_HISTORY",
    "BatchedCheckpointHeader",
    "BatchedCheckpointTensors",
    "BatchedRun",
    "ModelMetadata",
    "SafetensorsLayout",
    "bad_field",
    "check_metadata",
    "check_weights_header",
    "encode_batched_checkpoint",
    "is_torch_archive",
    "load_batched_checkpoint",
    "model_config_field",
    "read_batched_checkpoint_header",
    "read_json_object",
    "read_safetensors_header",
    "read_safetensors_layout",
    "train_config_field",
]
