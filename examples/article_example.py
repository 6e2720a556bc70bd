"""The article's attention-distillation example, on lmdistill's import path, with tiny random BERTs.

A 4-layer teacher and a 2-layer student (hidden 32, 4 heads) train for a few steps on a fixed random batch:
loss = task cross-entropy + alpha · attention distillation loss. Run: python examples/article_example.py
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

from lmdistill.article import KnowledgeDistillationModel


def tiny_bert(layers: int, seed: int, initializer_range: float = 0.02) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2,
                        initializer_range=initializer_range)
    return BertForSequenceClassification(config)


def main(steps: int = 8, seed: int = 0, alpha: float = 1.0, learning_rate: float = 3e-3) -> list[float]:
    """Train the student for ``steps`` steps; returns the total loss of each step."""
    # A wide initialisation gives the random teacher peaked attention maps, so there is something to distil.
    teacher = tiny_bert(layers=4, seed=seed, initializer_range=0.3)
    student = tiny_bert(layers=2, seed=seed + 1)
    model = KnowledgeDistillationModel(student, teacher, temperature=3.0)
    optimizer = torch.optim.AdamW(model.student.parameters(), lr=learning_rate)

    generator = torch.Generator().manual_seed(seed)
    batch = {
        "input_ids": torch.randint(1, 120, (8, 12), generator=generator),
        "attention_mask": torch.ones(8, 12, dtype=torch.long),
        "labels": torch.randint(0, 2, (8,), generator=generator),
    }
    batch["attention_mask"][:4, 9:] = 0  # some padded rows: padding is masked out of the attention loss

    model.train()
    losses = []
    for step in range(steps):
        student_output, attn_distill_loss = model(**batch)
        loss = student_output.loss + alpha * attn_distill_loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        print(f"step {step}: loss {loss.item():.4f} (task {student_output.loss.item():.4f}, attention {attn_distill_loss.item():.4f})")
    return losses


if __name__ == "__main__":
    main()
