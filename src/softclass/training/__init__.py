"""Training: batching, the trainers (autograd reference and batched engine), distributed runs."""
