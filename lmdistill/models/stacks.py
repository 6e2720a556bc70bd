"""The layer stacks whose hidden states and attention feed feature terms, as a task declares them for its models.

Most models have one stack (:data:`ONE_STACK`). An encoder-decoder model has three: its ``encoder``, its ``decoder``
(self-attention) and the decoder's ``cross`` attention over the encoder output, each with its own depth, so each
feature term reads one stack and resolves its layer map against that stack's depth in both models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

from lmdistill.errors import UserError

FEATURE_KINDS = frozenset({"hidden", "attention"})
ONE_STACK = "layers"  # the only stack of a model with one; never written in a config
ENCODER_DECODER_STACKS = ("encoder", "decoder", "cross")  # the names a term's `stack` may give

PositionSet = Literal["tokens", "loss"]


@dataclass(frozen=True)
class FeatureStack:
    """One layer stack as feature terms read it.

    kinds: the feature kinds it feeds ("hidden", "attention"). positions: the objective's mask over its positions,
    which for attention are the queries: "tokens" (the input tokens, ``Masks.tokens``) or "loss" (the loss positions,
    ``Masks.loss``, which for a seq2seq decoder are exactly its real tokens). keys: the mask over its attention keys.
    """

    kinds: frozenset[str]
    positions: PositionSet = "tokens"
    keys: PositionSet = "tokens"


ONE_STACK_FEATURES: dict[str, FeatureStack] = {ONE_STACK: FeatureStack(FEATURE_KINDS)}


def resolve_stack(stacks: Mapping[str, FeatureStack], kind: str, requested: str | None, *, term: str,
                  task: str | None = None) -> str:
    """The stack a ``kind`` term reads: ``requested``, else the first of ``stacks`` that feeds ``kind``.

    A stack the models do not have for this kind is a UserError naming the valid ones.
    """
    valid = [name for name, stack in stacks.items() if kind in stack.kinds]
    owner = f"task {task}'s models" if task else "the models"
    if not valid:
        raise UserError(f"objective term {term} ({kind} states) is not available for {f'task {task}' if task else 'these models'}; "
                        "use logit and label terms (e.g. forward_kl, ce)")
    if requested is None:
        return valid[0]
    if requested not in valid:
        if valid == [ONE_STACK]:
            raise UserError(f"objective term {term}: {owner} have one layer stack; remove stack: {requested} "
                            f"(it chooses among {', '.join(ENCODER_DECODER_STACKS)} for encoder-decoder models)")
        raise UserError(f"objective term {term}: {owner} have no {kind} stack {requested!r}; "
                        f"valid stacks: {', '.join(valid)}")
    return requested
