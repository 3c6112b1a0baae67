r"""``python -m zoo.collect --env ID --replay-dir DIR --checkpoint PATH_OR_DIR``: a collector process.

Acts in ``--n-envs`` copies of the env with the latest AMAGO checkpoint (the batched KV-cache ``act`` path and the
exploration noise of ``AMAGO.learn``; the checkpoint's exploration schedule continues from the env steps collected
by all collectors so far), checks every ``--reload-interval`` seconds for a newer checkpoint and loads its weights,
and writes the trajectories into the shared replay directory (one atomic ``.npz`` per episode or chunk, FIFO capped
at the checkpoint's ``buffer_size``). A learner (``torchrun ... -m zoo.learn``) trains from the same directory.

Examples::

    python -m zoo.collect --env popgym-RepeatPreviousEasy-v0 --replay-dir runs/r1/replay --checkpoint runs/r1/ckpt
    python -m zoo.collect --env popgym-RepeatPreviousEasy-v0 --replay-dir runs/r1/replay --checkpoint runs/r1/ckpt \
        --n-envs 16 --vec-env subproc --seed 3 --duration 3600

``--checkpoint`` is a ``.zip`` or a directory (its newest ``*.zip``: the learner's ``latest.zip``, or zoo.train's
``rl_model_<n>_steps.zip``). Progress goes to ``<replay-dir>/collectors/<collector-id>.json``
(:mod:`amago_sb.collector_status`). SIGTERM / SIGINT stop the collector cleanly: unfinished episodes are written as
truncated trajectories first. Bad input exits with status 2 and a one-line explanation.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.signals import stop_requested_on_signals

__all__ = ["CollectArgs", "Collector", "find_checkpoint", "build_parser", "main"]


@dataclass
class CollectArgs:
    """Options of one collector (the flags of ``python -m zoo.collect``; ``-1`` means unlimited / from the checkpoint)."""

    env: str
    replay_dir: str
    checkpoint: str
    n_envs: int = 8
    vec_env: str = "dummy"  # "dummy" (one process) or "subproc" (one process per env)
    seed: int = -1  # -1: drawn at random (collectors must not share seeds)
    collector_id: str = ""  # default <host>-<pid>
    reload_interval: float = 10.0
    status_interval: float = 5.0
    n_timesteps: int = -1
    duration: float = -1.0
    wait_checkpoint: float = 600.0
    buffer_size: int = -1
    fsync: bool = False
    device: str = "cpu"
    num_threads: int = 1
    manifest: str = ""  # append the name of every written file to this text file (auditing, tests)
    verbose: int = 1
    env_kwargs: dict = field(default_factory=dict)  # over the yml's env_kwargs (zoo/hyperparams/amago.yml)


def find_checkpoint(source: str | os.PathLike) -> Path | None:
    """``source`` if it is a file; for a directory its newest non-hidden ``*.zip`` (by mtime); else None."""
    p = Path(source)
    if p.is_file():
        return p
    if not p.is_dir():
        return None
    best, best_t = None, -1
    for entry in os.scandir(p):
        if entry.name.endswith(".zip") and not entry.name.startswith("."):
            try:
                t = entry.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if t > best_t:
                best, best_t = Path(entry.path), t
    return best


def _file_key(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)


def _make_store_class():
    from amago_sb.replay import TrajectoryStore

    class CountingStore(TrajectoryStore):
        """A ``TrajectoryStore`` that counts what this process wrote (and optionally lists it in a manifest)."""

        def __init__(self, *args: Any, manifest: str = "", **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.files_written = self.steps_written = 0
            self.manifest = manifest

        def add(self, traj):
            path = super().add(traj)
            self.files_written += 1
            self.steps_written += len(traj)
            if self.manifest:
                with open(self.manifest, "a") as f:
                    f.write(path.name + "\n")
            return path

    return CountingStore


class Collector:
    """One collector process: load, act, reload, report (see the module docstring)."""

    def __init__(self, args: CollectArgs) -> None:
        for name in ("n_envs", "num_threads"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
        if args.vec_env not in ("dummy", "subproc"):
            raise ValueError(f"--vec-env must be 'dummy' or 'subproc', got {args.vec_env!r}.")
        if args.reload_interval <= 0 or args.status_interval <= 0:
            raise ValueError("--reload-interval and --status-interval must be > 0 seconds.")
        self.args = args
        self.collector_id = args.collector_id or f"{socket.gethostname()}-{os.getpid()}"
        self.seed = args.seed if args.seed >= 0 else int.from_bytes(os.urandom(4), "little") >> 1
        self.stop_requested = False
        self.reloads, self.policy_updates, self.ckpt_key = 0, 0, None
        self.env_steps = 0
        self.model: Any = None

    # ------------------------------------------------------------------ setup
    def _wait_for_checkpoint(self) -> Path:
        deadline = time.monotonic() + self.args.wait_checkpoint
        while not self.stop_requested:
            path = find_checkpoint(self.args.checkpoint)
            if path is not None:
                return path
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        raise FileNotFoundError(
            f"No checkpoint at {self.args.checkpoint} after {self.args.wait_checkpoint:.0f} s. Start the "
            "learner first (it writes its initial policy right away), or pass --checkpoint a .zip."
        )

    def _make_env(self):
        from zoo.envs import make_vec_env
        from zoo.hyperparams import resolve_env_kwargs

        env_kwargs = resolve_env_kwargs("amago", self.args.env, cli=self.args.env_kwargs)
        return make_vec_env(self.args.env, "amago", self.args.n_envs, seed=self.seed, env_kwargs=env_kwargs,
                            vec_env=self.args.vec_env)

    def _load(self, env) -> Any:
        from amago_sb import AMAGO
        from amago_sb.checkpoint import CorruptCheckpointError

        overrides: dict[str, Any] = dict(
            replay_dir=self.args.replay_dir, gradient_steps=0, seed=self.seed, tensorboard_log=None, verbose=self.args.verbose
        )
        if self.args.buffer_size > 0:
            overrides["buffer_size"] = self.args.buffer_size
        deadline = time.monotonic() + self.args.wait_checkpoint
        while True:
            path = self._wait_for_checkpoint()
            key = _file_key(path)
            try:
                model = AMAGO.load(path, env=env, device=self.args.device, **overrides)
                break
            except (CorruptCheckpointError, FileNotFoundError) as e:  # still being written, or rotated away: retry
                if time.monotonic() > deadline:
                    raise
                warnings.warn(f"{e} Retrying in 1 s.", stacklevel=2)
                time.sleep(1.0)
        trained_on = getattr(model, "zoo_env_id", None)
        if trained_on and trained_on != self.args.env:
            raise ValueError(f"checkpoint {path} was trained on {trained_on!r}, not --env {self.args.env!r}.")
        model.set_random_seed(self.seed)  # the checkpoint restored the learner's RNG states: give this collector its own
        store_cls = _make_store_class()
        model.replay = store_cls(
            self.args.replay_dir, max_steps=model.buffer_size, fsync=self.args.fsync, manifest=self.args.manifest
        )
        model._make_collectors()  # recorder and exploration on the counting store, seeded with this collector's seed
        self.ckpt_key, self.policy_updates = key, int(model._n_updates)
        self._log(f"acting with {path} ({self.policy_updates} updates), {self.args.n_envs} envs, seed {self.seed}")
        return model

    # ------------------------------------------------------------------ running
    def maybe_reload(self) -> bool:
        """Load the weights of a newer checkpoint if there is one; True if it did."""
        from amago_sb.checkpoint import validate_checkpoint
        from amago_sb.serialization import read_checkpoint

        path = find_checkpoint(self.args.checkpoint)
        key = None if path is None else _file_key(path)
        if key is None or key == self.ckpt_key:
            return False
        try:
            validate_checkpoint(path)
            data, params, _ = read_checkpoint(path, self.model.device)  # never unpickles: a dropped-in file runs nothing
            self.model.policy.load_state_dict(params["policy"])
        except (ValueError, OSError, KeyError, RuntimeError) as e:  # partial / vanished / foreign file: retry later
            warnings.warn(
                f"Could not load checkpoint {path} ({type(e).__name__}: {e}); keeping the current policy.", stacklevel=2
            )
            return False
        self.ckpt_key = key
        self.reloads += 1
        self.policy_updates = int(data.get("_n_updates", 0)) if data else 0
        if data and data.get("num_timesteps"):  # exploration schedule: at least as far as the learner's count
            self.model.num_timesteps = max(self.model.num_timesteps, int(data["num_timesteps"]))
        self._log(f"reloaded {path} ({self.policy_updates} updates)")
        return True

    def status(self, finished: bool = False) -> dict[str, Any]:
        """This collector's progress (what goes into its status file)."""
        from stable_baselines3.common.utils import safe_mean

        m, store = self.model, self.model.replay
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        ep = [e["r"] for e in m.ep_info_buffer] if m.ep_info_buffer else []
        return {
            "collector": self.collector_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "env": self.args.env,
            "env_steps": self.env_steps,
            "episodes": int(m._episode_num),
            "files_written": store.files_written,
            "steps_written": store.steps_written,
            "env_steps_per_s": self.env_steps / elapsed,
            "ep_rew_mean": float(safe_mean(ep)) if ep else None,
            "checkpoint": self.ckpt_key[0] if self.ckpt_key else None,
            "policy_updates": self.policy_updates,
            "reloads": self.reloads,
            "seed": self.seed,
            "elapsed_s": elapsed,
            "cpu_s": time.process_time() - self.cpu0,
            "finished": finished,
        }

    def _log(self, msg: str) -> None:
        if self.args.verbose:
            print(f"[collect {self.collector_id}] {msg}", flush=True)

    def run(self) -> dict[str, Any]:
        """Collect until ``n_timesteps`` / ``duration`` / a stop signal; returns the final status."""
        from stable_baselines3.common.callbacks import BaseCallback

        from amago_sb.collector_status import write_status

        if self.args.num_threads > 0:
            import torch

            torch.set_num_threads(self.args.num_threads)
        env = self._make_env()
        collector = self
        try:
            self.model = self._load(env)
            self.t0, self.cpu0 = time.monotonic(), time.process_time()
            next_reload, next_status = self.t0 + self.args.reload_interval, self.t0
            deadline = self.t0 + self.args.duration if self.args.duration > 0 else float("inf")

            class _Hook(BaseCallback):
                def _on_step(self) -> bool:
                    nonlocal next_reload, next_status
                    collector.env_steps += self.training_env.num_envs
                    now = time.monotonic()
                    if now >= next_reload:
                        collector.maybe_reload()
                        next_reload = now + collector.args.reload_interval
                    if now >= next_status:
                        write_status(collector.args.replay_dir, collector.collector_id, collector.status())
                        next_status = now + collector.args.status_interval
                    limit = collector.args.n_timesteps
                    return not (collector.stop_requested or now >= deadline or (0 < limit <= collector.env_steps))

            self.model.learn(2**62, callback=_Hook(), reset_num_timesteps=False, log_interval=0)
        finally:
            env.close()
            if self.model is not None:  # other collectors' latest files may have pushed the replay past its cap
                self.model.replay.enforce_cap()
        final = self.status(finished=True)
        write_status(self.args.replay_dir, self.collector_id, final)
        self._log(
            f"done: {final['env_steps']} env steps ({final['env_steps_per_s']:.0f}/s), "
            f"{final['files_written']} files, {final['reloads']} reloads"
        )
        return final


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m zoo.collect``."""
    d = CollectArgs("", "", "")
    p = argparse.ArgumentParser(prog="python -m zoo.collect", description=__doc__.split("\n")[0])
    p.add_argument("--env", required=True, help="env id (the one the checkpoint was trained on)")
    p.add_argument("--replay-dir", required=True, help="shared replay directory to write trajectories into")
    p.add_argument("--checkpoint", required=True, help="AMAGO .zip, or a directory whose newest *.zip is used")
    p.add_argument("--n-envs", type=int, default=d.n_envs, help="envs stepped together (one batched policy call per step)")
    p.add_argument("--vec-env", choices=["dummy", "subproc"], default=d.vec_env, help="SB3 DummyVecEnv or SubprocVecEnv")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default: random; give collectors distinct seeds)")
    p.add_argument("--collector-id", default=d.collector_id, help="name of the status file (default: <host>-<pid>)")
    p.add_argument("--reload-interval", type=float, default=d.reload_interval, help="seconds between checkpoint checks")
    p.add_argument("--status-interval", type=float, default=d.status_interval, help="seconds between status writes")
    p.add_argument("-n", "--n-timesteps", type=int, default=d.n_timesteps, help="stop after N env steps (-1: never)")
    p.add_argument("--duration", type=float, default=d.duration, help="stop after S seconds (-1: never)")
    p.add_argument("--wait-checkpoint", type=float, default=d.wait_checkpoint, help="seconds to wait for a first checkpoint")
    p.add_argument("--buffer-size", type=int, default=d.buffer_size, help="replay FIFO cap in steps (-1: the checkpoint's)")
    p.add_argument("--fsync", action="store_true", help="fsync every replay file (survives power loss; slower)")
    p.add_argument("--device", default=d.device, help="torch device for acting (default: cpu)")
    p.add_argument("--num-threads", type=int, default=d.num_threads, help="torch threads (default 1)")
    p.add_argument("--manifest", default=d.manifest, help="append every written file name to this file")
    p.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY:VALUE",
                   help="env keyword arguments over the yml's env_kwargs (as given to zoo.train)")
    p.add_argument("--verbose", type=int, default=d.verbose, help="0: quiet, 1: info")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        from zoo.hyperparams import parse_overrides

        collector = Collector(CollectArgs(**{**vars(ns), "env_kwargs": parse_overrides(ns.env_kwargs)}))

        with stop_requested_on_signals(collector):  # finish the step, flush unfinished episodes, write the final status
            collector.run()
    except (ValueError, TypeError, OSError, ImportError) as err:
        parser.exit(2, f"zoo.collect: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
