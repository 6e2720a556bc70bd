"""Distil with a Hugging Face Trainer: lmdistill's objective through DistillationTrainer, optionally into a LoRA student.

Tiny random Llama models and random token sequences, so it runs anywhere in seconds:
    python examples/hf_trainer.py            # full student
    python examples/hf_trainer.py --lora     # peft LoRA adapters on the student; only they are trained
For real runs, load your models with from_pretrained and pass a tokenised dataset with input_ids/labels.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lmdistill.data.collate import collate_causal
from lmdistill.integrations import DistillationTrainer, DistillationTrainingArguments

VOCAB = 128


def tiny_llama(layers: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.2)
    return LlamaForCausalLM(config)


def random_examples(count: int, seed: int) -> list[dict[str, list[int]]]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        ids = torch.randint(1, VOCAB, (int(torch.randint(8, 24, (1,), generator=generator)),), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": list(ids)})  # -100 in labels would leave a position out
    return examples


def main(lora: bool = False, max_steps: int = 10, output_dir: str | None = None) -> list[dict]:
    teacher, student = tiny_llama(layers=4, seed=0), tiny_llama(layers=2, seed=1)
    if lora:
        from peft import LoraConfig, get_peft_model

        student = get_peft_model(student, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
        student.print_trainable_parameters()
    args = DistillationTrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(prefix="lmdistill-hf-"),
        objective=[{"name": "forward_kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5},
                   {"name": "hidden_mse", "weight": 0.1}],
        max_steps=max_steps, per_device_train_batch_size=4, gradient_accumulation_steps=2, learning_rate=3e-3,
        logging_steps=2, save_strategy="no", report_to="none", remove_unused_columns=False, use_cpu=not torch.cuda.is_available(),
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=random_examples(64, seed=0),
                                  data_collator=lambda rows: collate_causal(rows, pad_token_id=0))
    trainer.train()
    return [entry for entry in trainer.state.log_history if "loss" in entry]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters on the student instead of all weights")
    parser.add_argument("--max-steps", type=int, default=10)
    options = parser.parse_args()
    for entry in main(lora=options.lora, max_steps=options.max_steps):
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()})
