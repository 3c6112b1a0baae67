"""Networks of the AMAGO policy: timestep encoder, trajectory encoders (Transformer / GRU / LRU / FF), heads."""

from amago_sb.networks.distributions import ActionSpec
from amago_sb.networks.heads import Actor, CriticEnsemble, PopArt, polyak_update
from amago_sb.networks.layers import MLP, EnsembleLinear, InputNorm, SigmaReparamLinear
from amago_sb.networks.lru import LRUState, LRUTrajEncoder
from amago_sb.networks.protocols import ContextState, TrajEncoder
from amago_sb.networks.recurrent import FFTrajEncoder, GRUState, GRUTrajEncoder, NoState
from amago_sb.networks.transformer import KVCache, TransformerTrajEncoder
from amago_sb.networks.tstep import TimestepEncoder

#: encoders by name (the ``AMAGO(policy)`` aliases); any class implementing ``TrajEncoder`` also works
TRAJ_ENCODERS: dict[str, type] = {"Transformer": TransformerTrajEncoder, "GRU": GRUTrajEncoder, "LRU": LRUTrajEncoder,
                                  "FF": FFTrajEncoder}

__all__ = [
    "ActionSpec", "Actor", "CriticEnsemble", "PopArt", "polyak_update", "MLP", "EnsembleLinear", "InputNorm",
    "SigmaReparamLinear", "FFTrajEncoder", "GRUState", "GRUTrajEncoder", "NoState", "KVCache",
    "TransformerTrajEncoder", "TimestepEncoder", "TRAJ_ENCODERS", "LRUState", "LRUTrajEncoder", "ContextState",
    "TrajEncoder",
]
