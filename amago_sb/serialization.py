"""Checkpoint contents without pickle: what an AMAGO zip holds and how it is read back.

SB3 writes every attribute it cannot put in JSON (spaces, classes, schedules, numpy arrays, deques) as a base64
cloudpickle blob (``":serialized:"``), and ``BaseAlgorithm.load`` unpickles them: loading such a file runs whatever
code its author put in it. AMAGO checkpoints hold nothing that needs pickle, so they are written in a plain form:

* the zip keeps SB3's layout (``data``, ``policy.pth``, ``policy.optimizer.pth``, ``pytorch_variables.pth``...), and
  the ``.pth`` members are read with ``torch.load(weights_only=True)`` (tensors and containers only);
* ``data`` is plain JSON, marked with ``"amago_format": 1``. Values that JSON has no type for are tagged objects:
  ``{":ndarray:": {dtype, shape, b64}}`` (numeric dtypes only, raw bytes in base64), ``{":tensor:": ...}``,
  ``{":tuple:": [...]}``, ``{":deque:": {maxlen, items}}``, ``{":space:": ...}`` (a gymnasium space described by its
  parameters), ``{":class:": "module:Name"}`` and ``{":schedule:": [...]}`` (a learning-rate schedule tabulated at
  1001 points of the progress ``1 -> 0``, read back as a piecewise-linear :class:`TabulatedSchedule`);
* a class is imported on load only from :data:`TRUSTED_MODULES` (importing a module runs its code); pass the class in
  ``custom_objects`` to load one from elsewhere.

:func:`read_checkpoint` refuses a file with pickled entries (:class:`UnsafeCheckpointError`) unless the caller opts
in with ``allow_pickle=True``; a zip that is not an AMAGO checkpoint raises :class:`NotAMAGOCheckpointError`.
"""

from __future__ import annotations

import base64
import collections
import importlib
import io
import json
import os
import pickle  # only for its exception type: nothing here unpickles
import zipfile
from collections.abc import Iterable
from typing import IO, Any

import gymnasium as gym
import numpy as np
import torch

__all__ = [
    "FORMAT_KEY",
    "NotAMAGOCheckpointError",
    "TRUSTED_MODULES",
    "TabulatedSchedule",
    "UnsafeCheckpointError",
    "decode",
    "encode",
    "encode_data",
    "encode_space",
    "decode_space",
    "import_trusted",
    "pickled_entries",
    "read_checkpoint",
    "read_data_json",
]

FORMAT_KEY = "amago_format"
FORMAT_VERSION = 1
#: packages whose classes a checkpoint or a yml may name (prefix match on the module path)
TRUSTED_MODULES: tuple[str, ...] = ("amago_sb", "wrappers", "zoo", "torch.nn", "torch.optim", "stable_baselines3",
                                    "sb3_contrib", "gymnasium.spaces")
_SCHEDULE_POINTS = 1001


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled objects (loading it would run code) and the caller did not opt in."""


class NotAMAGOCheckpointError(ValueError):
    """A readable zip that was not written by ``AMAGO.save`` (e.g. an SB3 checkpoint of another algorithm)."""


class TabulatedSchedule:
    """A schedule ``progress_remaining -> value`` read back from a checkpoint: linear between 1001 stored points.

    Args:
        values: the schedule at ``progress_remaining = 0, 1/1000, ..., 1`` (index 0: the end of training).
    """

    def __init__(self, values: Iterable[float]) -> None:
        self.values = np.asarray(list(values), dtype=np.float64)
        self._grid = np.linspace(0.0, 1.0, len(self.values))

    def __call__(self, progress_remaining: float) -> float:
        return float(np.interp(progress_remaining, self._grid, self.values))

    def __repr__(self) -> str:
        return f"TabulatedSchedule(start={self.values[-1]:g}, end={self.values[0]:g})"


def import_trusted(spec: str, what: str, *, allow_any: bool = False) -> Any:
    """Import ``"package.module:Name"`` if the module is in :data:`TRUSTED_MODULES` (or ``allow_any``).

    Raises:
        ValueError: malformed ``spec``, a module outside the allow-list (the message says how to opt in), or a failed
            import; ``what`` names the setting in the message.
    """
    module, sep, name = str(spec).partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{what}={spec!r}: name a class as 'module:Name', e.g. "
                         "'amago_sb.exploration:QuietCorridorExploration'.")
    if not allow_any and not any(module == m or module.startswith(m + ".") for m in TRUSTED_MODULES):
        raise ValueError(f"{what}={spec!r}: module {module!r} is not trusted (importing a module runs its code; "
                         f"trusted: {', '.join(TRUSTED_MODULES)}). Pass the class itself, or opt in explicitly "
                         "(zoo: --trust-imports; AMAGO.load: custom_objects={...: TheClass}).")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{what}={spec!r}: cannot import it ({err}).") from err
    return obj


# ---------------------------------------------------------------------------------------------------- spaces
def encode_space(space: gym.Space) -> dict[str, Any]:
    """A JSON description of a gymnasium ``Box`` / ``Discrete`` / ``MultiDiscrete`` / ``MultiBinary`` / ``Dict`` /
    ``Tuple`` space (``TypeError`` for other kinds)."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "low": encode(space.low), "high": encode(space.high), "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": encode(space.nvec), "start": encode(space.start),
                "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": int(n) if isinstance(n, (int, np.integer)) else [int(x) for x in n]}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": [[k, encode_space(s)] for k, s in space.spaces.items()]}
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [encode_space(s) for s in space.spaces]}
    raise TypeError(f"Cannot describe the space {space!r} without pickle (supported: Box, Discrete, MultiDiscrete, "
                    "MultiBinary, Dict, Tuple).")


def decode_space(d: dict[str, Any]) -> gym.Space:
    """Inverse of :func:`encode_space`."""
    kind = d.get("type")
    if kind == "Box":
        return gym.spaces.Box(decode(d["low"]), decode(d["high"]), dtype=np.dtype(_numeric_dtype(d["dtype"])))
    if kind == "Discrete":
        return gym.spaces.Discrete(int(d["n"]), start=int(d["start"]))
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(decode(d["nvec"]), dtype=_numeric_dtype(d["dtype"]), start=decode(d["start"]))
    if kind == "MultiBinary":
        n = d["n"]
        return gym.spaces.MultiBinary(int(n) if isinstance(n, int) else [int(x) for x in n])
    if kind == "Dict":
        return gym.spaces.Dict({str(k): decode_space(s) for k, s in d["spaces"]})
    if kind == "Tuple":
        return gym.spaces.Tuple([decode_space(s) for s in d["spaces"]])
    raise ValueError(f"Unknown space description {kind!r} in checkpoint.")


# ---------------------------------------------------------------------------------------------------- values
def _numeric_dtype(name: str) -> np.dtype:
    dt = np.dtype(str(name))
    if dt.kind not in "biuf":
        raise ValueError(f"Checkpoint array dtype {name!r} is not numeric or bool.")
    return dt


def _encode_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    _numeric_dtype(a.dtype.str)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def _decode_array(d: dict[str, Any]) -> np.ndarray:
    dt = _numeric_dtype(d["dtype"])
    shape = tuple(int(s) for s in d["shape"])
    raw = base64.b64decode(d["b64"], validate=True)
    if len(raw) != dt.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"Checkpoint array of shape {shape} and dtype {dt} has {len(raw)} bytes.")
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


def encode(value: Any, key: str = "value") -> Any:
    """``value`` as JSON (see the module docstring); ``TypeError`` naming ``key`` for anything that would need pickle."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {":ndarray:": _encode_array(value)}
    if isinstance(value, torch.Tensor):
        return {":tensor:": _encode_array(value.detach().cpu().numpy())}
    if isinstance(value, gym.Space):
        return {":space:": encode_space(value)}
    if isinstance(value, type):
        return {":class:": f"{value.__module__}:{value.__qualname__}"}
    if isinstance(value, collections.deque):
        return {":deque:": {"maxlen": value.maxlen, "items": [encode(v, key) for v in value]}}
    if isinstance(value, tuple):
        return {":tuple:": [encode(v, key) for v in value]}
    if isinstance(value, list):
        return [encode(v, key) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"Cannot save {key!r}: dict keys must be strings, got {list(value)!r}.")
        if any(k.startswith(":") for k in value):
            raise TypeError(f"Cannot save {key!r}: dict keys may not start with ':' (reserved), got {list(value)!r}.")
        return {k: encode(v, f"{key}.{k}") for k, v in value.items()}
    if callable(value):  # a schedule progress_remaining -> value
        grid = np.linspace(0.0, 1.0, _SCHEDULE_POINTS)
        try:
            values = [float(value(float(p))) for p in grid]
        except (TypeError, ValueError) as e:
            raise TypeError(f"Cannot save {key!r}={value!r}: a callable is stored as a schedule of progress_remaining "
                            f"in [0, 1], and calling it failed ({e}). Exclude it: save(path, exclude=[{key!r}]).") from e
        return {":schedule:": values}
    raise TypeError(f"Cannot save {key!r} (a {type(value).__name__}) without pickle; exclude it with "
                    f"save(path, exclude=[{key.split('.')[0]!r}]) or store it as numbers, strings, arrays or classes.")


def decode(obj: Any, key: str = "value") -> Any:
    """Inverse of :func:`encode`; classes are imported only from :data:`TRUSTED_MODULES`."""
    if isinstance(obj, list):
        return [decode(v, key) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, body), = obj.items()
        if tag == ":ndarray:":
            return _decode_array(body)
        if tag == ":tensor:":
            return torch.from_numpy(_decode_array(body))
        if tag == ":space:":
            return decode_space(body)
        if tag == ":class:":
            return import_trusted(body, f"checkpoint entry {key!r}")
        if tag == ":tuple:":
            return tuple(decode(v, key) for v in body)
        if tag == ":deque:":
            return collections.deque((decode(v, key) for v in body["items"]), maxlen=body["maxlen"])
        if tag == ":schedule:":
            return TabulatedSchedule(body)
    if any(k.startswith(":") for k in obj):
        raise UnsafeCheckpointError(f"Checkpoint entry {key!r} holds an unknown tagged object {sorted(obj)!r}.")
    return {k: decode(v, f"{key}.{k}") for k, v in obj.items()}


# ---------------------------------------------------------------------------------------------------- files
def pickled_entries(data: dict[str, Any]) -> list[str]:
    """Top-level ``data`` keys whose value holds an SB3 pickled blob (``":serialized:"``) anywhere inside."""

    def has(v: Any) -> bool:
        if isinstance(v, dict):
            return ":serialized:" in v or any(has(x) for x in v.values())
        if isinstance(v, list):
            return any(has(x) for x in v)
        return False

    return sorted(k for k, v in data.items() if has(v))


def read_data_json(path: str | os.PathLike | IO[bytes]) -> dict[str, Any]:
    """The ``data`` member of an SB3-layout zip as raw JSON (nothing decoded, nothing unpickled)."""
    with zipfile.ZipFile(path) as zf:
        data = json.loads(zf.read("data").decode())
    if not isinstance(data, dict):
        raise ValueError(f"Checkpoint {path}: 'data' is not a JSON object.")
    return data


def read_checkpoint(
    path: str | os.PathLike | IO[bytes],
    device: torch.device | str = "cpu",
    *,
    custom_objects: dict[str, Any] | None = None,
    load_params: bool = True,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """Read an AMAGO checkpoint without unpickling anything.

    Args:
        path: the zip (path or binary file object).
        device: where the tensors go.
        custom_objects: ``data`` entries to take as given instead of decoding them (as SB3's ``custom_objects``).
        load_params: also read the ``.pth`` members.

    Returns:
        ``(data, params, pytorch_variables)`` as SB3's ``load_from_zip_file`` returns them.

    Raises:
        UnsafeCheckpointError: the file holds pickled entries (a checkpoint of an older amago-sb, or a crafted file).
        NotAMAGOCheckpointError: the zip was not written by ``AMAGO.save``.
    """
    custom_objects = dict(custom_objects or {})
    raw = read_data_json(path)
    pickled = [k for k in pickled_entries(raw) if k not in custom_objects]
    if raw.get(FORMAT_KEY) is None:
        amago_like = "context_len" in raw and "gammas" in raw
        if amago_like and pickled:
            raise UnsafeCheckpointError(
                f"Checkpoint {path} was written by an older amago-sb in SB3's pickle format (entries {pickled}): "
                "loading it would run any code stored in it. Only for a file you trust: "
                "AMAGO.load(path, allow_pickle=True) (zoo: --allow-pickle); saving it again writes the safe format.")
        saved_by = raw.get("policy_class", {}).get("__module__", "unknown") if isinstance(raw.get("policy_class"),
                                                                                         dict) else "unknown"
        raise NotAMAGOCheckpointError(
            f"{path} is not an AMAGO checkpoint (no {FORMAT_KEY!r} entry; its policy comes from {saved_by!r}). Load an "
            "SB3 checkpoint of another algorithm with that algorithm's class.")
    if pickled:
        raise UnsafeCheckpointError(
            f"Checkpoint {path} is in AMAGO's safe format but holds pickled entries {pickled}: it was not written by "
            "AMAGO.save (a crafted or edited file). Refusing to load it.")
    data = {k: (custom_objects[k] if k in custom_objects else decode(v, k)) for k, v in raw.items() if k != FORMAT_KEY}
    data.update({k: v for k, v in custom_objects.items() if k not in data})
    params: dict[str, Any] = {}
    pytorch_variables = None
    if load_params:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".pth"):
                    continue
                try:
                    tensors = torch.load(io.BytesIO(zf.read(name)), map_location=device, weights_only=True)
                except pickle.UnpicklingError as e:  # weights_only refused a non-tensor object
                    raise UnsafeCheckpointError(f"Checkpoint {path}: member {name!r} holds objects other than tensors "
                                                f"(refused by torch.load(weights_only=True): {e}).") from e
                if name == "pytorch_variables.pth":
                    pytorch_variables = tensors
                else:
                    params[name[: -len(".pth")]] = tensors
    return data, params, pytorch_variables


def encode_data(data: dict[str, Any]) -> dict[str, Any]:
    """Every entry of an algorithm's ``data`` encoded (``TypeError`` naming the first one that needs pickle)."""
    out = {FORMAT_KEY: FORMAT_VERSION}
    out.update({k: encode(v, k) for k, v in data.items()})
    return out
