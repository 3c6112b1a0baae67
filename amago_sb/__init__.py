"""amago-sb: AMAGO in-context reinforcement learning (arXiv 2310.09971) for Gymnasium and Stable-Baselines3 users.

>>> from amago_sb import AMAGO
>>> model = AMAGO("Transformer", "popgym-RepeatPreviousEasy-v0")  # doctest: +SKIP
"""

from amago_sb.algorithm import AMAGO
from amago_sb.policy import AMAGOPolicy, FFPolicy, GRUPolicy, TransformerPolicy

__version__ = "0.1.0"

__all__ = ["AMAGO", "AMAGOPolicy", "TransformerPolicy", "GRUPolicy", "FFPolicy", "__version__"]
