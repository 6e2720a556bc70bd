"""The loss library: pure functions, tensors in, per-position tensors out.

``get(name)`` returns a registered loss; ``reduce(per_position, mask)`` is the masked mean every caller uses.
"""

from lmdistill.losses.reduce import IGNORE_INDEX, reduce
from lmdistill.losses.registry import LossSpec, get, names, register, spec, validate_params

__all__ = ["IGNORE_INDEX", "LossSpec", "get", "names", "reduce", "register", "spec", "validate_params"]
