"""Sequence-to-sequence LMs (T5, BART, Marian, mT5 ...): the decoder predicts the target from the encoded source.

The distilled logits are the decoder's (B, T, V): decoder position t predicts target token t (teacher forcing; the
decoder inputs are the targets shifted right behind the decoder start token, built by the model's own rule), so
they are already aligned with the labels and every logit divergence, dense or fused, runs on decoder positions.
The loss covers target tokens only (labels -100 on padding).

Feature terms read one of three layer stacks, each with its own layer map: the ``encoder`` (hidden states and
self-attention over source tokens, source mask), the ``decoder`` (hidden states and causal self-attention over
target positions, the default) and ``cross`` attention (queries: target positions; keys: source tokens, source
mask). The decoder's real positions are exactly the loss positions (decoder_attention_mask is 1 where labels are not
-100, from collation and from rollouts alike), so decoder terms are normalised by the loss mask's global count.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSeq2SeqLM

from lmdistill.data.seq2seq import DecoderInputs, collate_seq2seq, load_seq2seq_datasets
from lmdistill.eval.seq2seq import decoder_inputs_of, seq2seq_scores
from lmdistill.errors import UserError
from lmdistill.losses import IGNORE_INDEX
from lmdistill.models.capture import CapturedAttention
from lmdistill.models.pruning import seq2seq_layer_lists
from lmdistill.models.stacks import FEATURE_KINDS, FeatureStack
from lmdistill.tasks.seq2seq_rollout import seq2seq_rollout


class Seq2SeqLMTask:
    name = "seq2seq_lm"
    model_class = AutoModelForSeq2SeqLM
    lora_task_type = "SEQ_2_SEQ_LM"
    data_fields = frozenset({"source_field", "target_field", "source_prefix", "max_target_length"})
    headless_logits = True
    pipeline_tag = "text2text-generation"
    feature_stacks = {
        "decoder": FeatureStack(FEATURE_KINDS, positions="loss", keys="loss"),
        "encoder": FeatureStack(FEATURE_KINDS, positions="tokens", keys="tokens"),
        "cross": FeatureStack(frozenset({"attention"}), positions="loss", keys="tokens"),
    }
    samples_from_prompts = False
    cached_positions = "labels"

    def __init__(self):
        self._decoder_inputs: DecoderInputs | None = None

    def bind_model(self, model) -> None:
        """Decoder inputs are built by this model's ``prepare_decoder_input_ids_from_labels``."""
        self._decoder_inputs = decoder_inputs_of(model)

    def load_datasets(self, data, tokenizer, seed):
        return load_seq2seq_datasets(data, tokenizer, seed)

    def model_kwargs(self):
        return {}

    def collate(self, examples, pad_token_id):
        if self._decoder_inputs is None:
            raise AssertionError("seq2seq_lm collates only after bind_model(student)")
        return collate_seq2seq(examples, pad_token_id, self._decoder_inputs)

    def output_logits(self, output, batch) -> torch.Tensor:
        """(B, T, V) decoder logits, position t predicting target token t."""
        return output.logits

    def align_positions(self, per_token: torch.Tensor) -> torch.Tensor:
        return per_token

    def targets(self, batch):
        targets = batch["labels"]
        return targets, targets != IGNORE_INDEX

    def stack_depths(self, model) -> dict[str, int]:
        """Encoder and decoder blocks (from the model's own block lists); one cross-attention per decoder block."""
        blocks = seq2seq_layer_lists(model)
        return {"encoder": len(blocks["encoder"]), "decoder": len(blocks["decoder"]), "cross": len(blocks["decoder"])}

    def stack_hidden_states(self, output) -> dict[str, tuple[torch.Tensor, ...]]:
        return {"encoder": output.encoder_hidden_states, "decoder": output.decoder_hidden_states}

    def stack_attentions(self, records: CapturedAttention) -> dict[str, list]:
        stacks = records.by_stack()
        missing = sorted(set(self.feature_stacks) - set(stacks))
        if missing:
            raise UserError(f"no {missing[0]} attention was captured from this model (its attention does not go through "
                            "transformers' AttentionInterface); drop the attention terms of that stack")
        return stacks

    def evaluate(self, student, teacher, examples, pad_token_id, batch_size, device):
        """``eval/loss`` (decoder NLL per target token) and ``eval/perplexity``; with a teacher, ``eval/top1_agreement``
        and ``eval/mean_token_kl`` on the same decoder positions."""
        scores = seq2seq_scores(student, teacher, examples, pad_token_id, batch_size, device)
        renamed = {"nll_per_token": "loss"}
        return {f"eval/{renamed.get(key, key)}": value for key, value in scores.items() if key != "num_tokens"}

    def rollout(self, student, batches, *, tokenizer, sampling, row_seeds):
        return seq2seq_rollout(student, batches, tokenizer=tokenizer, sampling=sampling, row_seeds=row_seeds,
                               decoder_inputs=self._decoder_inputs)
