"""``AMAGO``: the in-context RL algorithm as an SB3 ``BaseAlgorithm`` (arXiv 2310.09971).

Loop (``learn``): collect ``train_freq`` steps on every env with the batched KV-cache policy plus exploration noise,
record them with :class:`~amago_sb.replay.VecTrajectoryRecorder` into the disk replay, then run ``gradient_steps``
updates on windows drawn by :class:`~amago_sb.replay.WindowSampler` (the loss lives in :mod:`amago_sb.losses`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
import weakref
from typing import Any, ClassVar, TypeVar, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import recursive_setattr, save_to_zip_file
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import check_for_correct_spaces, get_device
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecFrameStack, VecNormalize

import wrappers
from amago_sb.atomic_files import host_tag, pid_alive
from amago_sb.checkpoint import RESUME_STATE_KEY, restore_resume_state, save_model, validate_checkpoint
from amago_sb.cpu_allocator import keep_freed_memory
from amago_sb.cpu_threads import PhaseThreads
from amago_sb.exploration import EpisodicExploration
from amago_sb.inputs import check_number
from amago_sb.logs import dump_rollout_logs, record_train_stats
from amago_sb.losses import LossConfig, amago_loss
from amago_sb.networks.distributions import unsupported_action_reason
from amago_sb.nonfinite import NonFiniteGuard
from amago_sb.policy import RAW_OBS_HELP, AMAGOPolicy, FFPolicy, GRUPolicy, LRUPolicy, TransformerPolicy
from amago_sb.replay import TrajectoryStore, VecTrajectoryRecorder, WindowSampler
from amago_sb.replay.sampler import PADDED_SAMPLING
from amago_sb.serialization import UnsafeCheckpointError, encode_data, read_checkpoint
from amago_sb.update import accumulate, gradient_step
from wrappers.vec_trajectory import ensure_trajectory_vec_env

__all__ = ["AMAGO", "GAMMA_PRESETS", "episode_context_len", "resolve_gammas", "updates_per_phase"]

SelfAMAGO = TypeVar("SelfAMAGO", bound="AMAGO")


def _check_vec_wrappers(env: VecEnv) -> None:
    """Warn about SB3 VecEnv wrappers that change what AMAGO learns from without a word."""
    layer: Any = env
    while isinstance(layer, VecEnvWrapper):
        inner = layer.venv
        if isinstance(layer, VecNormalize) and layer.norm_reward:
            warnings.warn("VecNormalize(norm_reward=True): AMAGO would learn from (and see as prev_reward) normalized "
                          "rewards, whose scale drifts during training; PopArt already handles the reward scale. "
                          "Use VecNormalize(venv, norm_reward=False).", UserWarning, stacklevel=4)
        if isinstance(layer, VecFrameStack) and wrappers.is_trajectory_space(inner.observation_space):
            warnings.warn("VecFrameStack over trajectory-form envs stacks the reset / time / prev_action keys too; "
                          "AMAGO's sequence model already sees the history. Stack the plain VecEnv before AMAGO "
                          "wraps it, or drop VecFrameStack.", UserWarning, stacklevel=4)
        layer = inner


def _prepare_env(env: GymEnv | str | None, n_envs: int, seed: int | None) -> GymEnv | None:
    """Env id -> VecEnv of ``n_envs`` trajectory-form envs; gymnasium env -> trajectory form; VecEnv of plain envs ->
    ``VecTrajectoryWrapper``; a trajectory-form VecEnv is used as it is."""
    if env is None:
        return None
    if isinstance(env, str):
        env_id = env
        return make_vec_env(lambda: wrappers.make_env(env_id), n_envs=n_envs, seed=seed)
    if isinstance(env, VecEnv):
        _check_vec_wrappers(env)
        return ensure_trajectory_vec_env(env)
    if isinstance(env, gym.Env):
        return wrappers.ensure_trajectory_env(env)
    raise TypeError(f"env must be a gymnasium env, an env id or an SB3 VecEnv, got {type(env).__name__}.")


#: Discount sets (``AMAGO(gammas=<name>)``). ``"short"``, the default: the original v3's suggested set plus 0.999, for
#: short CPU budgets and episodes up to a few hundred steps. ``"discrete"`` / ``"continuous"``: the paper's sets (its 18
#: discrete entries hold 0.999 twice: 17 distinct, up to 0.9995; 6 for Box actions, which pay one critic pass per
#: discount, hence fewer).
GAMMA_PRESETS: dict[str, tuple[float, ...]] = {
    "short": (0.1, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999),
    "discrete": (0.7, 0.9, 0.93, 0.95, 0.98, 0.99, 0.992, 0.994, 0.995, 0.997, 0.998, 0.999, 0.9991, 0.9992, 0.9993,
                 0.9994, 0.9995),
    "continuous": (0.9, 0.95, 0.99, 0.993, 0.996, 0.999),
}


_TEMP_REPLAY_RE = re.compile(r"^amago_replay_(?P<host>[A-Za-z0-9-]+)_(?P<pid>\d+)_")


def _private_replay_dir() -> str:
    """A new temporary replay directory named after this host and process; the ones of dead processes on this host
    (a SIGTERM / SIGKILL skips the cleanup at exit) are deleted first."""
    host, root = host_tag(), tempfile.gettempdir()
    try:
        entries = list(os.scandir(root))
    except OSError:
        entries = []
    for entry in entries:
        m = _TEMP_REPLAY_RE.match(entry.name)
        if m and m.group("host") == host and not pid_alive(int(m.group("pid"))) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"amago_replay_{host}_{os.getpid()}_")


def resolve_gammas(gammas: Any, main_gamma: float | None) -> tuple[tuple[float, ...], float]:
    """``gammas`` (a preset name or discounts) and ``main_gamma`` -> (sorted discounts incl. ``main_gamma``, main)."""
    if isinstance(gammas, str):
        if gammas not in GAMMA_PRESETS:
            raise ValueError(f"gammas={gammas!r} is not a preset; use one of {sorted(GAMMA_PRESETS)} or a list of "
                             "discounts.")
        gammas = GAMMA_PRESETS[gammas]
    if isinstance(gammas, (int, float, np.number)) or not hasattr(gammas, "__iter__"):
        raise TypeError(f"gammas must be a list of discounts or a preset name, got {gammas!r}; for one discount pass "
                        f"gammas=[{gammas!r}].")
    values = [float(g) for g in gammas]
    if main_gamma is not None:
        values.append(float(main_gamma))
    if not values or any(not 0.0 <= g < 1.0 for g in values):
        raise ValueError(f"gammas must be a non-empty list of discounts in [0, 1), got {gammas!r} "
                         f"(main_gamma={main_gamma!r}).")
    values = sorted(set(values))
    return tuple(values), values[-1] if main_gamma is None else float(main_gamma)


def _show_success(callback: BaseCallback, rate: float) -> None:
    """Show the recent success rate (instruction envs, any env reporting ``is_success``) on SB3's progress bar."""
    stack: list[Any] = [callback]
    while stack:
        cb = stack.pop()
        stack.extend(getattr(cb, "callbacks", []) or [])
        if isinstance(cb, ProgressBarCallback) and getattr(cb, "pbar", None) is not None:
            cb.pbar.set_postfix_str(f"success {rate:.0%}", refresh=False)


def updates_per_phase(gradient_steps: int | None, train_freq: int, n_envs: int) -> int:
    """Updates after each collection of ``train_freq`` vector steps: ``gradient_steps``, or for None AMAGO's default
    ratio, one update per 16 env steps (``train_freq * n_envs / 16``, at least 1)."""
    if gradient_steps is not None:
        return int(gradient_steps)
    return max(1, round(train_freq * n_envs / 16))


def env_episode_length(env: VecEnv | None) -> int | None:
    """The one ``max_episode_steps`` all of ``env``'s envs report (trajectory wrapper, trial wrapper), else None."""
    if env is None:
        return None
    lengths = set(env.get_attr("max_episode_steps"))
    length = lengths.pop() if len(lengths) == 1 else None
    return int(length) if isinstance(length, (int, np.integer)) and length > 0 else None


def episode_context_len(env: VecEnv | None) -> int:
    """``context_len="episode"``: the observation rows of a whole episode, ``max_episode_steps + 1``.

    An episode of ``T`` steps has ``T + 1`` timesteps (the first observation and one after each action); a context of
    ``T`` rows would cut the first cue or the last step from half the windows. ``max_episode_steps`` is the trajectory
    wrapper's (``TimeLimit``, POPGym's episode length, ``episodes x`` the inner length for trials).
    """
    if env is None:
        raise ValueError("context_len='episode' needs an env to read the episode length from; pass an int.")
    length = env_episode_length(env)
    if length is None:
        raise ValueError(f"context_len='episode' needs one known episode length, but the envs report "
                         f"max_episode_steps={sorted(set(env.get_attr('max_episode_steps')), key=str)}; give the env "
                         "a time limit (gymnasium.wrappers.TimeLimit or max_episode_steps in its registration) or pass "
                         "an int.")
    return length + 1


class AMAGO(BaseAlgorithm):
    """AMAGO: off-policy actor-critic over whole trajectories with a shared sequence model.

    Args:
        policy: ``"Transformer"`` (default method), ``"GRU"``, ``"LRU"`` (linear recurrent unit: fast on CPU, O(1)
            acting state), ``"FF"`` (no memory) or an ``AMAGOPolicy`` subclass.
        env: gymnasium env, env id (``n_envs`` copies are vectorized) or VecEnv; wrapped into trajectory form.
        learning_rate: AdamW learning rate (float or schedule); a linear warmup over ``lr_warmup_steps`` updates
            is applied on top, because early updates of a fresh Transformer are the unstable ones.
        buffer_size: replay capacity in stored transitions (oldest trajectory files deleted first).
        replay_dir: directory of the replay files (default: a private temporary directory, deleted with the model).
            Give one to keep the data, to resume (`AMAGO.load(path, replay_dir=...)`) or to share it with collectors.
        batch_size: windows per update.
        context_len: timesteps the policy sees, in training windows and when acting (KV-cache size); ``"episode"``:
            the whole episode, ``max_episode_steps + 1`` rows (an episode of ``T`` steps has ``T + 1`` timesteps).
        gammas: discount factors, all trained in parallel (multi-gamma), or a preset name: ``"short"`` (default),
            ``"discrete"`` / ``"continuous"`` (the paper's 18 / 6 discounts; see ``GAMMA_PRESETS``).
        main_gamma: the discount whose actor head acts and whose values are logged as ``train/q_main`` (added to
            ``gammas`` if missing); default the largest. The original acts with 0.999.
        train_freq: vector-env steps collected between training phases (``train_freq * n_envs`` env steps).
        gradient_steps: updates per training phase; None: ``train_freq * n_envs / 16`` (one update per 16 env steps,
            measured as the fastest way to solve RepeatPreviousEasy on CPU, whatever the number of envs).
        learning_starts: env steps collected before the first update.
        tau: Polyak rate of the target actor / critics.
        num_critics: critic ensemble size.
        num_critics_td: random critics whose min forms each TD target (clipped double-Q, REDQ-style).
        online_coeff: weight of the ``-Q`` actor term.
        offline_coeff: weight of the filtered behaviour-cloning term.
        critic_coeff: weight of the critic loss in the total loss.
        reward_multiplier: rewards are multiplied by this inside the TD target (PopArt then removes the scale).
        ent_coef, target_entropy: SAC's entropy term for Box actions, with SB3's conventions: ``"auto"`` /
            ``"auto_<init>"`` learns one coefficient per gamma head so that the policy's entropy tracks
            ``target_entropy`` (``"auto"``: minus the action dimension), a float fixes it, 0 turns it off. Default
            (None): ``"auto_0.1"`` for Box actions, off for the others (not allowed there). The coefficient weighs
            the entropy against PopArt-normalized values (the original has no entropy term).
        relabel: hindsight instruction relabeling at sample time (default: on for envs with an ``instruction`` key).
        exploration_start, exploration_end, exploration_steps: AMAGO's bilevel noise schedule
            (``amago_sb.exploration``): the level at the start of an episode anneals from ``exploration_start`` to
            ``exploration_end`` over ``exploration_steps`` total env steps (None: the budget of each ``learn()`` call),
            decays within every episode toward ``exploration_end`` (down to a fifth of it), and is multiplied by a
            per-episode random scale. The within-episode decay spans the env's episode length (``context_len`` steps
            where the env does not know it).
        exploration_class, exploration_kwargs: the noise schedule (a subclass of ``EpisodicExploration``, e.g.
            ``QuietCorridorExploration``) and its extra keyword arguments.
        padded_sampling: ``"none"`` (default), ``"left"``, ``"right"`` or ``"both"``: windows of trajectories longer
            than the context may start before their first / end after their last row (padded and masked), so the
            first and last steps of long episodes are sampled as often as the middle ones (``amago_sb.replay.sampler``).
        lr_warmup_steps: updates of linear learning-rate warmup.
        max_grad_norm: global gradient-norm clip.
        max_nonfinite_updates: an update whose loss or gradient is NaN/inf is skipped (logged as
            ``train/nonfinite_skips``); this many skips in a row stop training with a ``FloatingPointError``.
        n_envs: copies of the env when ``env`` is an id.
        sampler_workers: DataLoader worker processes that sample replay windows in the background (0: sample in
            the learner process; workers pay off when cores are free, not on a 2-core machine).
        log_interval_steps: logs are written every ``log_interval`` episodes (``learn``'s argument, as in SB3) and
            also after this many env steps without a write (None: episodes only), so that runs with long episodes
            (Crafter: 10,000 steps) log ``train/`` and ``rollout/`` keys on schedule.
        sampler_cache_bytes: memory bound of the LRU of loaded trajectories in the sampler (and in each worker);
            default 1 GiB.
        chunk_len: transitions per stored replay file for long episodes (default ``4 * context_len``).
        replay_fsync: ``fsync`` every replay file (and its directory) as it is written. Files are always written
            atomically (temp file + rename), so a killed *process* never loses or corrupts stored data either way;
            fsync also survives a power loss or kernel crash, at a measured cost (docs/reliability.md, "Durability").
        num_threads: torch intra-op threads on CPU. ``"auto"`` (default): acting with 1 thread (faster for its
            one-token steps), updates with torch's current count capped at 4 (``amago_sb.cpu_threads``; measured
            1.5-1.9x faster updates with 2 threads than 1 on a quiet 2-core machine); each phase restores torch's
            count when it ends. An int sets ``torch.set_num_threads`` once, process-wide, for everything; None leaves
            it. **Runs that share cores should pass 1**: two runs with 2 threads each on 2 cores were measured 2.4x
            slower per update and 6x slower acting than with 1 each. On CPU the model also keeps freed memory in the
            process heap (glibc ``mallopt``, process-wide: ``amago_sb.cpu_allocator``; up to 1.9x faster updates).
        policy_kwargs: network sizes, e.g. ``dict(d_model=64, n_layers=2, n_heads=4, d_ff=256)``.
        stats_window_size, tensorboard_log, verbose, seed, device, _init_setup_model: as in SB3.
    """

    _missing_replay_dir: str | None = None  # set by load() when the checkpoint's replay directory is gone
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "Transformer": TransformerPolicy,
        "GRU": GRUPolicy,
        "LRU": LRUPolicy,
        "FF": FFPolicy,
    }
    policy: AMAGOPolicy

    def __init__(
        self,
        policy: str | type[AMAGOPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        replay_dir: str | None = None,
        batch_size: int = 24,
        context_len: int | str = 64,
        gammas: tuple[float, ...] | str = "short",
        main_gamma: float | None = None,
        train_freq: int = 16,
        gradient_steps: int | None = None,
        learning_starts: int = 1000,
        tau: float = 0.01,
        num_critics: int = 4,
        num_critics_td: int = 2,
        online_coeff: float = 1.0,
        offline_coeff: float = 0.1,
        critic_coeff: float = 10.0,
        reward_multiplier: float = 10.0,
        ent_coef: float | str | None = None,
        target_entropy: float | str = "auto",
        relabel: bool | None = None,
        exploration_start: float = 1.0,
        exploration_end: float = 0.05,
        exploration_steps: int | None = None,
        exploration_class: type[EpisodicExploration] = EpisodicExploration,
        exploration_kwargs: dict[str, Any] | None = None,
        padded_sampling: str = "none",
        lr_warmup_steps: int = 100,
        max_grad_norm: float = 1.0,
        n_envs: int = 8,
        chunk_len: int | None = None,
        replay_fsync: bool = False,
        num_threads: int | str | None = "auto",
        max_nonfinite_updates: int = 10,
        sampler_workers: int = 0,
        sampler_cache_bytes: int = 1 << 30,
        log_interval_steps: int | None = 10_000,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if isinstance(policy, str) and policy not in self.policy_aliases:
            raise ValueError(f"Unknown AMAGO policy {policy!r}; use one of {sorted(self.policy_aliases)} "
                             "or an AMAGOPolicy subclass.")
        if context_len != "episode":
            check_number("context_len (timesteps the policy sees, or 'episode')", context_len, integer=True, low=1)
        gammas, main_gamma = resolve_gammas(gammas, main_gamma)
        ints: dict[str, tuple[Any, int]] = dict(
            buffer_size=(buffer_size, 1), batch_size=(batch_size, 1), train_freq=(train_freq, 1), n_envs=(n_envs, 1),
            learning_starts=(learning_starts, 0), num_critics=(num_critics, 1), lr_warmup_steps=(lr_warmup_steps, 0),
            max_nonfinite_updates=(max_nonfinite_updates, 1), sampler_workers=(sampler_workers, 0),
            sampler_cache_bytes=(sampler_cache_bytes, 0))
        for name, (val, low) in ints.items():
            check_number(name, val, integer=True, low=low)
        optional_ints: dict[str, tuple[Any, int]] = dict(
            gradient_steps=(gradient_steps, 0), exploration_steps=(exploration_steps, 0), chunk_len=(chunk_len, 1),
            log_interval_steps=(log_interval_steps, 1))
        if num_threads != "auto":
            check_number("num_threads (torch threads, or 'auto')", num_threads, integer=True, low=1, allow_none=True)
        for name, (val, low) in optional_ints.items():
            check_number(name, val, integer=True, low=low, allow_none=True)
        check_number("num_critics_td", num_critics_td, integer=True, low=1, high=num_critics)
        check_number("tau (Polyak rate of the targets)", tau, low=0.0, high=1.0, low_open=True)
        check_number("max_grad_norm (a norm > 0; <= 0 would flip the gradient)", max_grad_norm, low=0.0, low_open=True)
        nonnegative: dict[str, Any] = dict(online_coeff=online_coeff, offline_coeff=offline_coeff,
                                           exploration_start=exploration_start, exploration_end=exploration_end)
        for name, val in nonnegative.items():
            check_number(name, val, low=0.0)
        check_number("critic_coeff", critic_coeff, low=0.0, low_open=True)
        check_number("reward_multiplier", reward_multiplier, low=0.0, low_open=True)
        if not callable(learning_rate):
            check_number("learning_rate (a number or a schedule)", learning_rate, low=0.0, low_open=True)
        if isinstance(context_len, (int, np.integer)) and context_len > buffer_size:
            raise ValueError(f"context_len={context_len} is larger than buffer_size={buffer_size}: no stored trajectory "
                             "could fill one window. Raise buffer_size or lower context_len.")
        if isinstance(env, (gym.Env, VecEnv)):
            reason = unsupported_action_reason(env.action_space)
            if reason is not None:
                raise ValueError(reason)
        env = _prepare_env(env, n_envs, seed)
        super().__init__(policy, env, learning_rate, policy_kwargs=policy_kwargs, stats_window_size=stats_window_size,
                         tensorboard_log=tensorboard_log, verbose=verbose, device=device, seed=seed,
                         support_multi_env=True, monitor_wrapper=True)
        if self.env is not None:
            reason = unsupported_action_reason(self.action_space)
            if reason is not None:
                raise ValueError(reason)
        if context_len == "episode":
            context_len = episode_context_len(self.env)
            if context_len > buffer_size:
                raise ValueError(f"context_len='episode' is {context_len} rows, more than buffer_size={buffer_size}; "
                                 "raise buffer_size.")
        self.buffer_size, self.replay_dir, self.batch_size = int(buffer_size), replay_dir, int(batch_size)
        self.context_len, self.gammas, self.main_gamma = int(context_len), gammas, main_gamma
        self.train_freq, self.learning_starts = int(train_freq), int(learning_starts)
        self.gradient_steps = None if gradient_steps is None else int(gradient_steps)
        self.tau, self.num_critics, self.num_critics_td = float(tau), int(num_critics), int(num_critics_td)
        self.online_coeff, self.offline_coeff = float(online_coeff), float(offline_coeff)
        self.critic_coeff = float(critic_coeff)
        self.ent_coef, self.target_entropy = ent_coef, target_entropy
        self.reward_multiplier, self.relabel = float(reward_multiplier), relabel
        self.exploration_start, self.exploration_end = float(exploration_start), float(exploration_end)
        self.exploration_steps = None if exploration_steps is None else int(exploration_steps)
        self.lr_warmup_steps = int(lr_warmup_steps)
        if not (isinstance(exploration_class, type) and issubclass(exploration_class, EpisodicExploration)):
            raise TypeError(f"exploration_class must be a subclass of amago_sb.exploration.EpisodicExploration, got "
                            f"{exploration_class!r}.")
        self.exploration_class, self.exploration_kwargs = exploration_class, dict(exploration_kwargs or {})
        self.max_grad_norm, self.chunk_len, self.num_threads = float(max_grad_norm), chunk_len, num_threads
        if not isinstance(replay_fsync, bool):
            raise TypeError(f"replay_fsync must be True or False, got {replay_fsync!r}.")
        self.replay_fsync = replay_fsync
        self.max_nonfinite_updates, self._nonfinite_skips = max_nonfinite_updates, 0
        self.sampler_workers, self.sampler_cache_bytes = int(sampler_workers), int(sampler_cache_bytes)
        self.log_interval_steps = None if log_interval_steps is None else int(log_interval_steps)
        if padded_sampling not in PADDED_SAMPLING:
            raise ValueError(f"padded_sampling must be one of {PADDED_SAMPLING}, got {padded_sampling!r}.")
        self.padded_sampling = padded_sampling
        self._batches: Any = None
        self._act_state: Any = None
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        self._threads = PhaseThreads(self.num_threads if self.device.type == "cpu" else None)
        if self.device.type == "cpu":
            keep_freed_memory()  # large update tensors reuse heap memory instead of fresh mmaps (cpu_allocator.py)
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        policy_class: Any = self.policy_class
        for key in ("ent_coef", "target_entropy", "gammas", "main_gamma", "context_len", "num_critics"):
            if key in self.policy_kwargs:
                raise ValueError(f"policy_kwargs[{key!r}]={self.policy_kwargs[key]!r}: {key} is an argument of AMAGO "
                                 f"itself; pass AMAGO(..., {key}=...) instead.")
        self.policy = policy_class(self.observation_space, self.action_space, self.lr_schedule,
                                        gammas=self.gammas, main_gamma=getattr(self, "main_gamma", None),
                                        context_len=self.context_len,
                                        num_critics=self.num_critics,
                                        ent_coef=getattr(self, "ent_coef", None),
                                        target_entropy=getattr(self, "target_entropy", "auto"),
                                        **self.policy_kwargs).to(self.device)
        has_instruction = "instruction" in wrappers.flatten_keys(cast(gym.spaces.Dict, self.observation_space))
        if self.relabel is None:
            self.relabel = has_instruction
        if self.relabel and not has_instruction:
            raise ValueError("relabel=True needs an instruction env (an 'instruction' observation key, see "
                             "wrappers.InstructionWrapper); pass relabel=False.")
        if self.replay_dir is None or getattr(self, "_replay_is_temp", False):
            # no replay_dir given: a private temporary replay, deleted when the model is garbage-collected or the
            # process exits (a model loaded from such a run starts a fresh one; pass replay_dir to keep the data)
            self.replay_dir = _private_replay_dir()
            self._replay_is_temp = True
            weakref.finalize(self, shutil.rmtree, self.replay_dir, True)
        else:  # the user's directory, by absolute path: a checkpoint must find it again from any working directory
            self.replay_dir, self._replay_is_temp = os.path.abspath(self.replay_dir), False
        self.replay = TrajectoryStore(self.replay_dir, max_steps=self.buffer_size,
                                      fsync=getattr(self, "replay_fsync", False))
        self.sampler = WindowSampler(self.replay, self.context_len, relabel=wrappers.relabel if self.relabel else None,
                                     seed=self.seed, padded_sampling=getattr(self, "padded_sampling", "none"),
                                     cache_bytes=getattr(self, "sampler_cache_bytes", 1 << 30))
        self.loss_config = LossConfig(reward_multiplier=self.reward_multiplier, num_critics_td=self.num_critics_td,
                                      online_coeff=self.online_coeff, offline_coeff=self.offline_coeff,
                                      critic_coeff=self.critic_coeff)
        self._nonfinite = NonFiniteGuard(self.policy, self.policy.optimizer, self.max_nonfinite_updates)
        self._make_collectors()

    def _make_collectors(self) -> None:
        chunk = self.chunk_len if self.chunk_len is not None else max(4 * self.context_len, 64)
        self.recorder = VecTrajectoryRecorder(self.n_envs, self.replay, chunk_len=chunk, overlap=self.context_len - 1)
        kwargs = {"horizon": self._episode_horizon(), **self.exploration_kwargs}
        anneal = self.exploration_steps if self.exploration_steps is not None else max(self._total_timesteps, 1)
        self.exploration = self.exploration_class(self.policy.spec, self.n_envs, eps_start=self.exploration_start,
                                                  eps_end=self.exploration_end, anneal_steps=anneal, seed=self.seed,
                                                  **kwargs)
        self._act_state = None
        self._recorder_live = False

    def _episode_horizon(self) -> int:
        """Episode length of the env (the within-episode span of the exploration decay); ``context_len`` if unknown."""
        length = env_episode_length(self.env)
        return self.context_len if length is None else length

    def _excluded_save_params(self) -> list[str]:
        return super()._excluded_save_params() + ["replay", "sampler", "recorder", "exploration", "_act_state",
                                                  "loss_config", "_recorder_live", "_nonfinite", "_batches",
                                                  "lr_schedule", "_last_obs", "_last_episode_starts",
                                                  "_last_original_obs", "_missing_replay_dir", "_threads"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """Use another env with the same spaces (wrapped into trajectory form if needed)."""
        prepared = _prepare_env(env, self.n_envs, self.seed)
        if prepared is None:
            raise ValueError("set_env needs an env, got None.")
        try:
            super().set_env(prepared, force_reset)
        except (ValueError, AssertionError) as e:
            raise ValueError(f"set_env: the new env does not match the model: {e}") from e
        self._flush_recorder()
        self._make_collectors()

    @classmethod
    def load(cls, path, env: GymEnv | None = None, device="auto", custom_objects=None, print_system_info=False,
             force_reset=True, allow_pickle: bool = False, **kwargs):
        """Load a checkpoint written by :meth:`save`, without unpickling anything (``amago_sb.serialization``).

        ``env`` is wrapped into trajectory form first and must match the saved spaces. Resume a run with
        ``AMAGO.load(path, env=..., replay_dir=...)`` then ``learn(n, reset_num_timesteps=False)``: counters,
        optimizer, targets, normalization statistics, RNG states and the replay carry over. The checkpoint stores
        its replay's absolute path; if that directory is gone, the model still predicts but ``learn`` refuses to run
        until ``replay_dir`` names the replay (or a new directory, to start a fresh one).

        Args:
            allow_pickle: also load a checkpoint in SB3's pickle format (amago-sb before the safe format). Loading it
                runs any code its author stored in it: only for files you trust.
            custom_objects, kwargs: ``data`` entries to replace / attributes to set, as in SB3.

        Raises:
            amago_sb.checkpoint.CorruptCheckpointError: a truncated / corrupt file (named, with the way out).
            amago_sb.serialization.UnsafeCheckpointError: the file holds pickled objects and ``allow_pickle`` is off.
            amago_sb.serialization.NotAMAGOCheckpointError: an SB3 checkpoint of another algorithm.
        """
        if isinstance(path, (str, os.PathLike)):
            path = validate_checkpoint(path)
        if kwargs.get("replay_dir") is not None:
            kwargs["_replay_is_temp"] = False  # an explicit replay dir is the user's: resume from it, never delete it
        if env is not None and not isinstance(env, VecEnv):
            env = _prepare_env(env, 1, None)
        device = get_device(device)
        try:
            data, params, pytorch_variables = read_checkpoint(path, device, custom_objects=custom_objects)
        except UnsafeCheckpointError:
            if not allow_pickle:
                raise
            if hasattr(path, "seek"):
                path.seek(0)
            model = super().load(path, env=env, device=device, custom_objects=custom_objects,
                                 print_system_info=print_system_info, force_reset=force_reset, **kwargs)
            restore_resume_state(model, model.__dict__.pop(RESUME_STATE_KEY, None))
            return model
        missing_replay = None
        stored = data.get("replay_dir")
        if not data.get("_replay_is_temp", True) and kwargs.get("replay_dir") is None and stored \
                and not os.path.isdir(stored):
            missing_replay, data["replay_dir"], data["_replay_is_temp"] = stored, None, True
        if env is not None:
            prepared = _prepare_env(env, int(data.get("n_envs", 1)), None)  # a plain env or VecEnv -> trajectory form
            assert prepared is not None
            env = cls._wrap_env(prepared, data.get("verbose", 0))
            try:
                check_for_correct_spaces(env, data["observation_space"], data["action_space"])
            except (ValueError, AssertionError) as e:
                raise ValueError(f"AMAGO.load: the env does not match the saved model: {e}") from e
            if force_reset:
                data["_last_obs"] = None
            data["n_envs"] = env.num_envs
        model = cls(policy=data["policy_class"], env=env, device=device, _init_setup_model=False)
        model.__dict__.update(data)
        model.__dict__.update(kwargs)
        model._setup_model()
        model.set_parameters(params, exact_match=True, device=device)
        for name, value in (pytorch_variables or {}).items():
            if value is not None:
                recursive_setattr(model, f"{name}.data", value)
        model._missing_replay_dir = missing_replay
        restore_resume_state(model, model.__dict__.pop(RESUME_STATE_KEY, None))
        return model

    def save(self, path, exclude=None, include=None) -> None:
        """Write the checkpoint atomically (temp file, fsync, rename: a crash never leaves a partial file) in the
        pickle-free format of ``amago_sb.serialization``, with the RNG states a resumed run needs."""
        save_model(self, path, exclude, include)

    def _write_checkpoint(self, path, exclude=None, include=None) -> None:
        """SB3's zip layout (``data``, ``policy.pth``, ...) with ``data`` in plain JSON (called by ``save_model``)."""
        exclude = set(exclude or ()).union(self._excluded_save_params())
        if include is not None:
            exclude = exclude.difference(include)
        state_dicts, torch_vars = self._get_torch_save_params()
        exclude.update(name.split(".")[0] for name in state_dicts + torch_vars)
        data = {k: v for k, v in self.__dict__.items() if k not in exclude}
        if not data.get("_replay_is_temp") and data.get("replay_dir"):
            data["replay_dir"] = os.path.abspath(data["replay_dir"])
        save_to_zip_file(path, data=encode_data(data), params=self.get_parameters(), pytorch_variables=None)

    # ------------------------------------------------------------------ acting
    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Action(s) for trajectory-form observation(s); ``state`` is each env's context (see ``AMAGOPolicy``)."""
        if not isinstance(observation, dict):
            raise ValueError(f"predict() got a raw observation ({type(observation).__name__}). " + RAW_OBS_HELP)
        return self.policy.predict(observation, state, episode_start, deterministic)

    # ------------------------------------------------------------------ learning loop
    def learn(
        self: SelfAMAGO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "AMAGO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfAMAGO:
        if self.env is None:
            raise ValueError("This model has no env; pass one to AMAGO.load(path, env=...) or call set_env(env).")
        if getattr(self, "_missing_replay_dir", None):
            raise ValueError(
                f"This model was loaded from a checkpoint whose replay {self._missing_replay_dir} does not exist (moved "
                "or deleted): learning now would silently start from an empty replay. Pass replay_dir= to AMAGO.load: "
                "the replay's new location to resume, or a new directory to start a fresh replay.")
        if reset_num_timesteps or self._last_obs is None:
            self._flush_recorder()
        self._wrap_callback_envs(callback)
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name,
                                                      progress_bar)
        if not self._recorder_live:
            self.recorder.reset(cast(dict, self._last_obs))
            self._act_state = self.policy.initial_state(self.n_envs)
            self.exploration.episode_step[:] = 0  # fresh episodes in every env
            self._recorder_live = True
        if self.exploration_steps is None:  # the schedule follows this call's budget
            self.exploration.anneal_steps = max(self._total_timesteps, 1)
        callback.on_training_start(locals(), globals())
        self._log_interval = log_interval
        self._episodes_logged = self._episode_num
        self._steps_logged = self.num_timesteps
        while self.num_timesteps < total_timesteps:
            with self._threads.acting():
                if not self.collect_rollouts(callback):
                    break
            n_updates = self.updates_per_phase
            if self.num_timesteps >= self.learning_starts and self.replay.num_trajectories > 0 and n_updates > 0:
                with self._threads.updating():
                    self.train(n_updates, self.batch_size)
        self.recorder.flush()
        callback.on_training_end()
        return self

    def wrap_env(self, env: GymEnv | str) -> GymEnv:
        """``env`` (a gymnasium env, an id or a VecEnv, plain or in trajectory form) in the form this model acts on.

        SB3's ``evaluate_policy`` never passes rewards to ``predict``, and the previous reward is part of what the agent
        sees, so evaluate with ``evaluate_policy(model, model.wrap_env(env))``.

        Raises:
            ValueError: the env's spaces differ from the model's.
        """
        wrapped = _prepare_env(env, 1, None) if not isinstance(env, gym.Env) else wrappers.ensure_trajectory_env(env)
        if wrapped is None:
            raise ValueError("wrap_env needs an env, got None.")
        if wrapped.observation_space != self.observation_space or wrapped.action_space != self.action_space:
            raise ValueError(f"wrap_env: the env's spaces ({wrapped.observation_space}, {wrapped.action_space}) differ "
                             f"from the model's ({self.observation_space}, {self.action_space}).")
        return wrapped

    def _wrap_callback_envs(self, callback: MaybeCallback) -> None:
        """Put the ``eval_env`` of every callback (EvalCallback and the like, nested ones too) in trajectory form."""
        stack: list[Any] = list(callback) if isinstance(callback, list) else [callback]
        while stack:
            cb = stack.pop()
            if cb is None:
                continue
            stack.extend(getattr(cb, "callbacks", []) or [])
            stack.append(getattr(cb, "callback", None))
            env = getattr(cb, "eval_env", None)
            if isinstance(env, VecEnv) and not wrappers.is_trajectory_space(env.observation_space):
                cb.eval_env = ensure_trajectory_vec_env(env)
            elif isinstance(env, gym.Env):
                cb.eval_env = wrappers.ensure_trajectory_env(env)

    @property
    def updates_per_phase(self) -> int:
        """Gradient updates after each collection of ``train_freq`` vector steps."""
        return updates_per_phase(self.gradient_steps, self.train_freq, self.n_envs)

    def _flush_recorder(self) -> None:
        if getattr(self, "_recorder_live", False):
            self.recorder.flush()
        self._recorder_live = False

    def collect_rollouts(self, callback: BaseCallback) -> bool:
        """Step every env ``train_freq`` times with one batched policy call per step; False if a callback stopped."""
        policy, env = self.policy, self.env
        assert env is not None  # learn() checked it
        policy.set_training_mode(False)
        callback.on_rollout_start()
        for _ in range(self.train_freq):
            obs, _ = policy.obs_to_torch(self._last_obs)
            with torch.no_grad():
                policy_action, self._act_state = policy.act(obs, self._act_state, deterministic=False)
            action = self.exploration(policy_action.cpu().numpy(), self.num_timesteps)
            env_action = policy.spec.to_env(action)
            new_obs: Any
            new_obs, rewards, dones, infos = env.step(env_action)
            self.num_timesteps += env.num_envs
            # record and advance the contexts before callbacks run, so a callback that stops training leaves the
            # recorder, the KV caches and _last_obs consistent for a later learn(reset_num_timesteps=False)
            self.recorder.step(env_action, rewards, dones, infos, new_obs)
            if dones.any():
                self._act_state.reset(torch.as_tensor(dones, device=self.device))
                self.exploration.new_episodes(dones)
                self._episode_num += int(dones.sum())
            self._last_obs, self._last_episode_starts = new_obs, dones
            self._update_info_buffer(infos, dones)
            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            episodes_due = self._log_interval and self._episode_num - self._episodes_logged >= self._log_interval
            steps_due = (self.log_interval_steps is not None
                         and self.num_timesteps - self._steps_logged >= self.log_interval_steps)
            if episodes_due or steps_due:  # long episodes (Crafter) still log on schedule
                self._episodes_logged, self._steps_logged = self._episode_num, self.num_timesteps
                self._dump_logs()
        if self.ep_success_buffer:
            _show_success(callback, float(np.mean(self.ep_success_buffer)))
        callback.on_rollout_end()
        return True

    def train(self, gradient_steps: int, batch_size: int) -> None:
        """``gradient_steps`` updates of the AMAGO loss (``amago_sb.losses``) on replay windows (``amago_sb.update``)."""
        policy = self.policy
        policy.set_training_mode(True)
        params = policy.trainable_parameters()

        def loss_fn(batch, want_entropy):
            return amago_loss(policy, batch, self.loss_config, want_entropy=want_entropy)

        sums: dict[str, torch.Tensor] = {}
        applied, result = 0, None
        for i in range(gradient_steps):
            batch = self._next_batch(batch_size).to(self.device)
            result = gradient_step(self, loss_fn, batch, self._nonfinite, params, want_entropy=(i == gradient_steps - 1))
            applied += accumulate(sums, result)
        policy.set_training_mode(False)
        if result is not None:
            self._record_train_stats(sums, applied, float(result.grad_norm), result.lr)

    def _next_batch(self, batch_size: int):
        """A replay batch: from the in-process sampler, or from ``sampler_workers`` DataLoader workers."""
        if getattr(self, "sampler_workers", 0) <= 0:
            return self.sampler.sample(batch_size)
        if self._batches is None or self._batches[0] != batch_size:
            from torch.utils.data import DataLoader

            from amago_sb.replay import ReplayDataset

            ds = ReplayDataset(str(self.replay_dir), self.context_len, batch_size,
                               relabel=wrappers.relabel if self.relabel else None, seed=self.seed or 0,
                               padded_sampling=self.padded_sampling, cache_bytes=self.sampler_cache_bytes)
            loader = DataLoader(ds, batch_size=None, num_workers=self.sampler_workers, prefetch_factor=4,
                                persistent_workers=True)
            self._batches = (batch_size, iter(loader))
        return next(self._batches[1])

    def _record_train_stats(self, sums: dict[str, torch.Tensor], n: int, grad_norm: float, lr: float) -> None:
        record_train_stats(self, sums, n, grad_norm, lr)

    def _dump_logs(self) -> None:
        dump_rollout_logs(self)
