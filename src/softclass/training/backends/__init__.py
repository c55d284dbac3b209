"""The backends of the training loop (:mod:`softclass.training.loop`): each runs epochs only."""
