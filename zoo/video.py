"""Recordings of episodes: frames with the instruction drawn on them, written as GIF or MP4.

``annotate(frame, lines)`` enlarges a small frame (Crafter's 64 x 64) with nearest-neighbour scaling and draws
``lines`` in a band under it; ``instruction_lines(goals, completed)`` gives the lines of an instruction with the goals
completed so far checked; ``write_video(frames, path)`` writes ``.gif`` (imageio, or Pillow without it) or ``.mp4``
(imageio with the ``imageio-ffmpeg`` binary: ``pip install -e ".[zoo]"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["annotate", "instruction_lines", "write_video", "VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = (".gif", ".mp4")
_LINE_PX = 13  # height of one text line (11 px font) with spacing
_MIN_WIDTH = 256  # frames narrower than this are enlarged (an integer factor) so that text fits next to the picture


def instruction_lines(goals: Sequence[str], completed: int) -> list[str]:
    """``["[x] collect sapling", "[ ] place plant", ...]``: the first ``completed`` goals checked."""
    return [f"[{'x' if i < completed else ' '}] {goal}" for i, goal in enumerate(goals)]


def annotate(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``frame`` ``(H, W, 3)`` uint8 -> ``(k H + band, k W, 3)`` uint8: enlarged by the smallest integer ``k`` with
    ``k W >= 256`` and with ``lines`` drawn in white on a black band underneath (one line per row)."""
    from PIL import Image, ImageDraw

    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"annotate takes an (H, W, 3) uint8 frame, got shape {frame.shape} dtype {frame.dtype}.")
    k = max(1, -(-_MIN_WIDTH // frame.shape[1]))
    big = frame.repeat(k, axis=0).repeat(k, axis=1)
    band = _LINE_PX * len(lines) + (4 if lines else 0)
    canvas = Image.new("RGB", (big.shape[1], big.shape[0] + band))
    canvas.paste(Image.fromarray(big), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for i, line in enumerate(lines):
        draw.text((3, big.shape[0] + 2 + i * _LINE_PX), line, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _font():
    """Pillow's bundled scalable font at 11 px where FreeType is available, else its bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=11)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: int = 15) -> Path:
    """Write ``frames`` (all ``(H, W, 3)`` uint8) to ``path``: ``.gif`` or ``.mp4`` by its suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"Video path {str(path)!r} must end in one of {VIDEO_SUFFIXES}.")
    if not frames:
        raise ValueError("No frames to save: recording needs an env with image observations (e.g. Crafter-v0) or "
                         "one that renders (render_mode='rgb_array').")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".mp4":
        _write_mp4(frames, path, fps)
        return path
    try:
        import imageio.v2 as imageio
    except ImportError:
        from PIL import Image

        images = [Image.fromarray(np.asarray(f)) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    else:
        imageio.mimsave(path, list(frames), duration=1000.0 / fps, loop=0)  # imageio's GIF writer takes milliseconds
    return path


def _write_mp4(frames: Sequence[np.ndarray], path: Path, fps: int) -> None:
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary imageio's MP4 writer runs)
    except ImportError as err:
        raise ImportError(f"Writing {path.name} needs imageio and imageio-ffmpeg: pip install -e \".[zoo]\" "
                          f"(or write a .gif). ({err})") from err
    h, w = (max(f.shape[0] for f in frames), max(f.shape[1] for f in frames))
    h, w = h + h % 2, w + w % 2  # H.264 with yuv420p needs even sizes
    with imageio.get_writer(path, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1) as writer:
        for f in frames:
            f = np.asarray(f)
            if f.shape[:2] != (h, w):
                f = np.pad(f, ((0, h - f.shape[0]), (0, w - f.shape[1]), (0, 0)))
            writer.append_data(f)
