"""softclass's cross entropy where Hugging Face transformers uses torch's: tiny models built from
a config in the test (random weights, no download), trained and evaluated with each loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import transformers  # a test dependency (pyproject's test extra): never skipped
from torch.utils.data import Dataset

from softclass import functional
from softclass import nn as softclass_nn

VOCAB, HIDDEN, LAYERS, HEADS, SEQUENCE, N_LABELS = 96, 32, 2, 4, 12, 3
STEPS = 5


def _llama_config(**extra) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=64,
        pad_token_id=0,
        **extra,
    )


def softclass_causal_lm_loss(
    logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100, shift_labels=None, **_
):
    """Hugging Face's causal-LM loss (next-token cross entropy, padded labels ignored, summed
    and divided by ``num_items_in_batch`` when the Trainer counts tokens) on softclass's
    cross entropy; a model's ``loss_function`` can be set to it."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = functional.cross_entropy(
        logits.float().reshape(-1, vocab_size),
        shift_labels.reshape(-1).to(logits.device),
        ignore_index=ignore_index,
        reduction=reduction,
    )
    return loss if num_items_in_batch is None else loss / num_items_in_batch


def _tokens(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) of ``batch`` random sequences; the last 3 labels are padding (-100)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (batch, SEQUENCE), generator=generator)
    labels = input_ids.clone()
    labels[:, -3:] = -100
    return input_ids, labels


def _train_causal_lm(model) -> tuple[list[float], float]:
    """STEPS AdamW steps on one batch (the model learns it), then the eval loss of another."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    input_ids, labels = _tokens(4, seed=3)
    losses = []
    for _ in range(STEPS):
        loss = model(input_ids=input_ids, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    input_ids, labels = _tokens(8, seed=4)
    with torch.no_grad():
        return losses, model(input_ids=input_ids, labels=labels).loss.item()


def test_llama_trains_and_evaluates_alike_with_softclass_as_its_loss_function():
    """A LlamaForCausalLM whose ``loss_function`` is softclass's takes the same AdamW steps as
    the stock model (torch's cross entropy inside transformers' ForCausalLMLoss)."""
    torch.manual_seed(0)
    stock = transformers.LlamaForCausalLM(_llama_config())
    ours = copy.deepcopy(stock)
    ours.loss_function = softclass_causal_lm_loss
    stock_losses, stock_eval = _train_causal_lm(stock)
    our_losses, our_eval = _train_causal_lm(ours)
    assert stock_losses[-1] < stock_losses[0]  # it learns
    torch.testing.assert_close(our_losses, stock_losses, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_eval, stock_eval, rtol=1e-5, atol=1e-5)
    for (name, ours_param), stock_param in zip(
        ours.named_parameters(), stock.parameters(), strict=True
    ):
        torch.testing.assert_close(ours_param, stock_param, rtol=1e-4, atol=1e-5, msg=name)


class _Sentences(Dataset):
    """Random token sequences with one of ``N_LABELS`` classes each."""

    def __init__(self, n_items: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1, VOCAB, (n_items, SEQUENCE), generator=generator)
        self.labels = torch.randint(0, N_LABELS, (n_items,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


def _trainer_run(model, criterion, tmp_path) -> tuple[list[float], float]:
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=5e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=7,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    compute_loss = None
    if criterion is not None:

        def compute_loss(outputs, labels, num_items_in_batch=None):
            return criterion(outputs.logits, labels)

    trainer = transformers.Trainer(
        model=model,
        args=arguments,
        train_dataset=_Sentences(64, seed=1),
        eval_dataset=_Sentences(32, seed=2),
        compute_loss_func=compute_loss,
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, trainer.evaluate()["eval_loss"]


def test_trainer_with_softclass_criterion_matches_the_stock_model(tmp_path):
    """transformers.Trainer with ``compute_loss_func`` calling softclass.nn.CrossEntropyLoss on a
    LlamaForSequenceClassification logs the same training and evaluation losses, and ends with
    the same weights, as the stock model's own loss (torch's cross entropy)."""
    torch.manual_seed(0)
    stock = transformers.LlamaForSequenceClassification(_llama_config(num_labels=N_LABELS))
    ours = copy.deepcopy(stock)
    stock_losses, stock_eval = _trainer_run(stock, None, tmp_path / "stock")
    criterion = softclass_nn.CrossEntropyLoss()
    assert isinstance(criterion, torch.nn.CrossEntropyLoss)
    calls = []
    criterion.register_forward_hook(lambda *_: calls.append(1))
    our_losses, our_eval = _trainer_run(ours, criterion, tmp_path / "ours")
    assert len(calls) >= STEPS + 1  # every training step and the evaluation used softclass's loss
    assert len(stock_losses) == STEPS
    torch.testing.assert_close(our_losses, stock_losses, rtol=1e-4, atol=1e-5)
    assert our_eval == pytest.approx(stock_eval, rel=1e-5, abs=1e-6)
    for ours_param, stock_param in zip(ours.parameters(), stock.parameters(), strict=True):
        torch.testing.assert_close(ours_param, stock_param, rtol=1e-4, atol=1e-5)
