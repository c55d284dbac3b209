"""What softclass accepts when it reads its own files back, one module per format.

- :mod:`~softclass.training.schema.fields`: the shared field checkers (one-line errors);
- :mod:`~softclass.training.schema.model_dir`: model.json of a saved model directory;
- :mod:`~softclass.training.schema.tensors_file`: the safetensors header (a model's weights and a
  checkpoint both are safetensors files);
- :mod:`~softclass.training.schema.checkpoint` (+ ``checkpoint_fields``): the one checkpoint.

Every failure is a :class:`~softclass.errors.ModelFileError` of one line naming the file, the
field and what was expected; nothing is unpickled.
"""
