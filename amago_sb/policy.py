"""``AMAGOPolicy``: timestep encoder -> shared trajectory encoder -> actor and critic ensemble (+ Polyak targets).

One policy holds every network of the method, so SB3's ``save``/``load`` (``policy`` state dict) round-trips the
online and target heads, PopArt statistics and input-normalization statistics together.

Acting (``predict`` / ``act``) feeds one new timestep per env and carries each env's context in ``state``:
a :class:`~amago_sb.networks.KVCache` (Transformer), :class:`~amago_sb.networks.GRUState` (GRU) or
:class:`~amago_sb.networks.NoState` (FF). The state is updated in place and returned (pass ``state.clone()`` to
branch). ``episode_start[i]`` empties env ``i``'s context before its step, as in sb3-contrib's recurrent policies.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import get_device
from torch import nn

from amago_sb.inputs import check_episode_start, check_observation, check_state
from amago_sb.networks import (
    TRAJ_ENCODERS,
    ActionSpec,
    Actor,
    CriticEnsemble,
    PopArt,
    TimestepEncoder,
    TrajEncoder,
    polyak_update,
)
from amago_sb.serialization import decode, encode
from wrappers.spaces import shape_of
from wrappers.trajectory import flatten_keys, flatten_obs
from wrappers.trajectory_wrapper import has_trajectory_keys, is_trajectory_space

__all__ = ["AMAGOPolicy", "TransformerPolicy", "GRUPolicy", "LRUPolicy", "FFPolicy", "RAW_OBS_HELP",
           "resolve_traj_encoder"]

RAW_OBS_HELP = (
    "AMAGO policies act on trajectory-form observations (a dict with keys 'obs', 'prev_action', 'prev_reward', "
    "'time', 'reset'). Fix: env = model.wrap_env(env) (any gymnasium env, id or VecEnv), e.g. "
    "evaluate_policy(model, model.wrap_env(env)); or step model.get_env(), which is already wrapped."
)


class AMAGOPolicy(BasePolicy):
    """All networks of an AMAGO agent.

    Args:
        observation_space: trajectory-form ``Dict`` space.
        action_space: Discrete, MultiDiscrete or bounded Box.
        lr_schedule: learning-rate schedule (the algorithm applies warmup on top).
        gammas: discount factors, ascending (multi-gamma: one actor head and critic output each).
        main_gamma: the discount whose actor head acts (one of ``gammas``; default the largest).
        context_len: tokens the Transformer attends to (KV-cache size).
        num_critics: critic ensemble size.
        d_model, n_layers, n_heads, d_ff, dropout, normformer: trajectory-encoder size / options (``d_ff`` defaults to
            ``2 * d_model``: half the usual width, for CPU speed).
        tstep_dim, tstep_hidden: timestep-encoder output / hidden size (default ``d_model`` / ``2 * d_model``).
        head_hidden: hidden width of the actor and critic MLPs.
        traj_encoder_class: the sequence model: a ``TRAJ_ENCODERS`` name (``"Transformer"``, ``"GRU"``, ``"LRU"``,
            ``"FF"``) or a class implementing ``amago_sb.networks.TrajEncoder``; default: the policy class's.
        traj_encoder_kwargs: extra constructor arguments of that encoder (e.g. ``{"state_dim": 128}`` for the LRU).
        popart_beta: PopArt EMA rate.
        popart_init_nu: PopArt's initial second moment of the TD targets (reward-multiplied units), which the first
            statistics updates blend in: a floor on the value scale early in training. Default 100 (the original's);
            tasks whose rewards are tiny per step (POPGym's +-1/T) may learn faster with a smaller one
            (bench/results/continuous_diag/README.md).
        weight_decay: AdamW L2 coefficient.
    """

    traj_encoder_name: ClassVar[str] = "Transformer"
    traj_encoder: TrajEncoder  # the sequence model (an nn.Module implementing the protocol)
    gammas: torch.Tensor  # buffer: the discounts, ascending (G,)

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *,
        gammas: tuple[float, ...] = (0.1, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999),
        main_gamma: float | None = None,
        context_len: int = 64,
        num_critics: int = 4,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        d_ff: int | None = None,
        dropout: float = 0.0,
        normformer: bool = True,
        tstep_dim: int | None = None,
        tstep_hidden: int | None = None,
        head_hidden: int = 64,
        popart_beta: float = 5e-4,
        popart_init_nu: float = 100.0,
        weight_decay: float = 1e-3,
        ent_coef: float | str | None = None,
        target_entropy: float | str = "auto",
        traj_encoder_class: type[nn.Module] | str | None = None,
        traj_encoder_kwargs: dict[str, Any] | None = None,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if optimizer_kwargs is None:  # foreach: one fused kernel per op over all parameters (CPU defaults to a loop)
            optimizer_kwargs = {"weight_decay": weight_decay, "foreach": True}
        super().__init__(observation_space, action_space, optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs)
        if not is_trajectory_space(observation_space):
            raise ValueError(f"AMAGOPolicy needs a trajectory-form observation space, got {observation_space}. "
                             + RAW_OBS_HELP)
        gammas = tuple(sorted(float(g) for g in gammas))
        main_gamma = gammas[-1] if main_gamma is None else float(main_gamma)
        if main_gamma not in gammas:
            raise ValueError(f"main_gamma={main_gamma} is not one of gammas={gammas}; add it to gammas.")
        self.main_index = gammas.index(main_gamma)  # the acting head
        self.cfg: dict[str, Any] = dict(gammas=gammas, main_gamma=main_gamma, context_len=context_len, num_critics=num_critics,
                        d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=d_ff, dropout=dropout,
                        normformer=normformer, tstep_dim=tstep_dim, tstep_hidden=tstep_hidden, head_hidden=head_hidden,
                        popart_beta=popart_beta, popart_init_nu=popart_init_nu, weight_decay=weight_decay,
                        ent_coef=ent_coef, target_entropy=target_entropy)
        enc_cls = resolve_traj_encoder(traj_encoder_class if traj_encoder_class is not None else self.traj_encoder_name)
        self.cfg.update(traj_encoder_class=enc_cls, traj_encoder_kwargs=dict(traj_encoder_kwargs or {}))
        self.spec = ActionSpec(action_space)
        self.leaves = flatten_keys(observation_space)
        g = torch.tensor(sorted(self.cfg["gammas"]), dtype=torch.float32)
        self.register_buffer("gammas", g)
        tstep_dim = d_model if tstep_dim is None else tstep_dim
        self.tstep_encoder = TimestepEncoder(observation_space, out_dim=tstep_dim,
                                             d_hidden=2 * d_model if tstep_hidden is None else tstep_hidden)
        self.traj_encoder = enc_cls(tstep_dim, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                                    d_ff=2 * d_model if d_ff is None else d_ff, context_len=context_len,
                                    dropout=dropout, normformer=normformer, **self.cfg["traj_encoder_kwargs"])
        if not isinstance(self.traj_encoder, TrajEncoder):
            raise TypeError(f"traj_encoder_class {enc_cls.__name__} does not implement amago_sb.networks.TrajEncoder "
                            "(out_dim, forward, init_state, step).")
        d = self.traj_encoder.out_dim
        self.actor = Actor(d, self.spec, len(g), d_hidden=head_hidden)
        self.critics = CriticEnsemble(d, self.spec, g, n_critics=num_critics, d_hidden=head_hidden)
        # Polyak targets of the heads only; the target uses the online encoder's features (no target encoder, as AMAGO)
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.popart = PopArt(len(g), beta=popart_beta, init_nu=popart_init_nu)
        self._setup_ent_coef(ent_coef, target_entropy, len(g))
        self._build(lr_schedule)

    def _setup_ent_coef(self, ent_coef: float | str | None, target_entropy: float | str, n_gammas: int) -> None:
        """SAC's entropy term for Box actors (SB3's ``ent_coef`` / ``target_entropy`` conventions): ``"auto"`` or
        ``"auto_<init>"`` learns one coefficient per gamma head towards ``target_entropy`` (``"auto"``: minus the
        action dimension); a float fixes it; 0 turns the term off; None: ``"auto_0.1"`` for Box, off otherwise."""
        if ent_coef is None:
            ent_coef = "auto_0.1" if self.spec.kind == "box" else 0.0
        self.log_ent_coef: nn.Parameter | None = None
        self.fixed_ent_coef = 0.0
        if isinstance(ent_coef, str):
            head, _, init_text = ent_coef.partition("_")
            try:
                init = float(init_text) if init_text else 1.0
            except ValueError:
                init = float("nan")
            if head != "auto" or not init > 0:
                raise ValueError(f"ent_coef={ent_coef!r}: use a float >= 0, 'auto' or 'auto_<initial value>' with "
                                 "an initial value after 'auto_' > 0 (e.g. 'auto_0.1').")
            self.log_ent_coef = nn.Parameter(torch.full((n_gammas,), math.log(init)))
        else:
            self.fixed_ent_coef = float(ent_coef)
            if not self.fixed_ent_coef >= 0:
                raise ValueError(f"ent_coef={ent_coef!r} must be >= 0 (0 turns the entropy term off).")
        if (self.log_ent_coef is not None or self.fixed_ent_coef > 0) and self.spec.kind != "box":
            raise ValueError(f"ent_coef={ent_coef!r} applies to Box action spaces only; this one is {self.action_space}. "
                             "Leave ent_coef at 0.")
        if target_entropy == "auto":
            self.target_entropy = -float(np.prod(self.action_space.shape or (1,)))
        elif isinstance(target_entropy, str):
            raise ValueError(f"target_entropy={target_entropy!r}: use 'auto' (minus the action dimension) or a float.")
        else:
            self.target_entropy = float(target_entropy)

    def ent_coef(self) -> torch.Tensor | None:
        """The entropy coefficient of each gamma head ``(G,)`` (no gradient), or None when the term is off."""
        if self.log_ent_coef is not None:
            return self.log_ent_coef.detach().exp()
        if self.fixed_ent_coef > 0:
            return torch.full_like(self.gammas, self.fixed_ent_coef)
        return None

    def _build(self, lr_schedule: Schedule) -> None:
        optimizer_class: Any = self.optimizer_class
        self.optimizer = optimizer_class(self.trainable_parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters updated by the optimizer (everything except the target heads)."""
        mods = (self.tstep_encoder, self.traj_encoder, self.actor, self.critics)
        extra = [self.log_ent_coef] if self.log_ent_coef is not None else []
        return [p for m in mods for p in m.parameters()] + extra

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return dict(observation_space=self.observation_space, action_space=self.action_space, **self.cfg,
                    optimizer_class=self.optimizer_class, optimizer_kwargs=self.optimizer_kwargs)

    def save(self, path: str | os.PathLike) -> None:
        """Save the policy alone (SB3's ``policy.save``), without pickle: tensors plus a JSON description of the
        constructor arguments (``amago_sb.serialization``), read back by :meth:`load` with ``weights_only=True``."""
        data = json.dumps(encode(self._get_constructor_parameters(), "policy"))
        torch.save({"state_dict": self.state_dict(), "constructor_json": data}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "auto") -> AMAGOPolicy:  # type: ignore[override]
        """Load a policy written by :meth:`save` (nothing is unpickled); call it on the same class (e.g.
        ``TransformerPolicy.load``)."""
        device = get_device(device)
        saved = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(saved, dict) or "constructor_json" not in saved:
            raise ValueError(f"{path} was not written by AMAGOPolicy.save (no 'constructor_json' entry).")
        kwargs = decode(json.loads(saved["constructor_json"]), "policy")
        policy = cls(lr_schedule=lambda _: 0.0, **kwargs).to(device)
        policy.load_state_dict(saved["state_dict"])
        return policy

    @property
    def main_gamma(self) -> float:
        """The discount of the acting head."""
        return float(self.gammas[self.main_index])

    def update_targets(self, tau: float) -> None:
        """Polyak-average the target actor and critics toward the online ones."""
        polyak_update(self.target_actor, self.actor, tau)
        polyak_update(self.target_critics, self.critics, tau)

    # ------------------------------------------------------------------ encoding (training)
    def encode(
        self, obs: dict[str, torch.Tensor], time_idx: torch.Tensor, mask: torch.Tensor, want_entropy: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Windows ``{key: (B, W, *shape)}`` -> features ``(B, W, D)`` and per-layer attention entropies."""
        o = self.tstep_encoder(obs, mask)  # (B, W, tstep_dim)
        return self.traj_encoder(o, time_idx, mask.sum(1), want_entropy)

    # ------------------------------------------------------------------ acting
    def initial_state(self, n_envs: int) -> Any:
        """An empty context for ``n_envs`` envs."""
        return self.traj_encoder.init_state(n_envs, device=self.device)

    def obs_to_torch(self, observation: Any) -> tuple[dict[str, torch.Tensor], bool]:
        """Trajectory-form observations -> ``({flat_key: (n, *shape)}, vectorized)``; raw observations -> ValueError."""
        if not isinstance(observation, Mapping) or not has_trajectory_keys(observation):
            got = type(observation).__name__ if not isinstance(observation, Mapping) else f"keys {sorted(observation)}"
            raise ValueError(f"predict() got a raw observation ({got}). " + RAW_OBS_HELP)
        flat = flatten_obs(observation)
        reset = np.asarray(flat["reset"])
        vectorized = reset.ndim == 2
        if reset.ndim not in (1, 2) or reset.shape[-1] != 1:
            raise ValueError(f"predict(observation): key 'reset' has shape {reset.shape}, expected (n_envs, 1) or (1,).")
        batch = reset.shape[:1] if vectorized else ()
        out = {}
        for key in self.leaves:
            if key not in flat:
                raise ValueError(f"Observation is missing key {key!r} of the policy's observation space "
                                 f"(got {sorted(flat)}); was the model trained on a different env?")
            arr = np.asarray(flat[key])
            shape = shape_of(self.leaves[key])
            if len(shape) == 3 and arr.shape[-3:] != shape and arr.shape[-3:] == (shape[1], shape[2], shape[0]):
                arr = np.moveaxis(arr, -1, -3)  # channel-last image from an env that VecTransposeImage did not wrap
            check_observation(key, arr, self.leaves[key], batch)  # before anything reaches a context
            if not vectorized:
                arr = arr[None]
            out[key] = torch.as_tensor(arr, device=self.device)
        return out, vectorized

    def act(self, obs: dict[str, torch.Tensor], state: Any, deterministic: bool = False) -> tuple[torch.Tensor, Any]:
        """One step for ``n`` envs: ``obs`` ``{key: (n, *shape)}`` -> policy actions ``(n, ...)`` (Box in [-1, 1])."""
        o = self.tstep_encoder(obs)  # (n, tstep_dim)
        s, state = self.traj_encoder.step(o, state)  # (n, D)
        dist = self.spec.dist(self.actor(s)[:, self.main_index])  # the head of main_gamma
        return (dist.mode() if deterministic else dist.sample()), state

    def predict(  # type: ignore[override]
        self,
        observation: dict[str, np.ndarray],
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """sb3-contrib recurrent contract; see the module docstring for ``state``."""
        self.set_training_mode(False)
        obs, vectorized = self.obs_to_torch(observation)
        n = next(iter(obs.values())).shape[0]
        if state is None:
            state = self.initial_state(n)
        else:
            if getattr(self, "_state_template", None) is None:
                self._state_template = self.initial_state(1)
            check_state(state, self._state_template, n)
        if episode_start is not None:
            state.reset(torch.as_tensor(check_episode_start(episode_start, n), device=self.device))
        with torch.no_grad():
            action, state = self.act(obs, state, deterministic)
        actions = self.spec.to_env(action.cpu().numpy())
        if not vectorized:
            actions = actions[0]
        return actions, state

    def _predict(self, observation: Any, deterministic: bool = False) -> torch.Tensor:
        raise NotImplementedError("AMAGOPolicy acts through predict(observation, state, episode_start) or act().")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("AMAGOPolicy has no single forward; use encode() for training and act() for acting.")


def resolve_traj_encoder(spec: type[nn.Module] | str) -> type[Any]:
    """A ``TRAJ_ENCODERS`` name or an encoder class -> the class (``ValueError`` naming the known names)."""
    if isinstance(spec, str):
        if spec not in TRAJ_ENCODERS:
            raise ValueError(f"traj_encoder_class={spec!r} is unknown; use one of {sorted(TRAJ_ENCODERS)} or a class "
                             "implementing amago_sb.networks.TrajEncoder.")
        return TRAJ_ENCODERS[spec]
    if not isinstance(spec, type):
        raise TypeError(f"traj_encoder_class must be a name or a class, got {spec!r}.")
    return spec


class TransformerPolicy(AMAGOPolicy):
    """AMAGO with the stabilized Transformer trajectory encoder (the method's default)."""

    traj_encoder_name = "Transformer"


class GRUPolicy(AMAGOPolicy):
    """AMAGO with a GRU trajectory encoder."""

    traj_encoder_name = "GRU"


class LRUPolicy(AMAGOPolicy):
    """AMAGO with a linear recurrent unit encoder (``amago_sb.networks.lru``): O(1) acting state per env."""

    traj_encoder_name = "LRU"


class FFPolicy(AMAGOPolicy):
    """AMAGO without memory (each timestep alone): the ablation that shows what memory buys."""

    traj_encoder_name = "FF"
