"""Checkpoints: atomic writes, keep the last k, safe loading, ``--resume auto``, RNG states.

A checkpoint is one file ``checkpoints/ckpt-{step:08d}.pt`` written by the main process. It is
first written to a temporary file in the same directory, flushed to disk, then renamed over the
final name (``os.replace`` is atomic on POSIX), so a crash or SIGKILL during a save leaves either
the old set of checkpoints or the new one, never a half file under a checkpoint name. Older
checkpoints are deleted only after the new one is in place.

Everything stored is plain data (dicts, lists, numbers, strings, tensors), so loading uses
``torch.load(weights_only=True)``: a checkpoint cannot execute code.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.nonfinite import NonFiniteError, nonfinite_in_state
from train.writable import write_error

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")
TMP_SUFFIX = ".tmp"


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """``directory/ckpt-{step:08d}.pt``."""
    return Path(directory) / f"ckpt-{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], directory: str | Path, step: int, keep_last: int = 3) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step``; keep the newest ``keep_last``.

    Refuses (:class:`~train.nonfinite.NonFiniteError`, nothing written or deleted) a state whose
    model or optimizer holds a NaN or an infinity, so older finite checkpoints are never replaced
    by a diverged one."""
    bad = nonfinite_in_state(state)
    if bad is not None:  # the loop checks first; this keeps every caller from replacing good checkpoints
        raise NonFiniteError(f"step {step}: {bad} holds non-finite values; checkpoint not written, the existing ones are kept")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except (OSError, RuntimeError) as e:  # a full disk: torch.save says "unexpected pos ..." in 35 lines
        tmp.unlink(missing_ok=True)
        raise write_error(final, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)  # best effort; a SIGKILL leaves it, and it is ignored anyway
        raise
    _fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    for stale in directory.glob("ckpt-*.pt" + TMP_SUFFIX):  # left by a killed earlier run
        if stale != tmp:
            stale.unlink(missing_ok=True)
    return final


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``; one-line error when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same to the user
        first_line = (str(e).splitlines() or ["no message"])[0][:200]  # an empty file raises with no message
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first_line})") from None


StateCheck = Callable[[dict[str, Any]], None]


def usable_checkpoint(path: str | Path, check: StateCheck | None = None) -> dict[str, Any]:
    """Load ``path`` and refuse it, with a one-line ValueError, when it is unreadable, holds
    non-finite weights, or ``check(state)`` raises ValueError (e.g. it does not fit the run)."""
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a training checkpoint (a {type(state).__name__}, not a dict of states)")
    bad = nonfinite_in_state(state)
    if bad is not None:
        raise ValueError(f"{path}: {bad} holds non-finite values (a diverged run)")
    if check is not None:
        try:
            check(state)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return state


def newest_readable(found: list[Path], check: StateCheck | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The newest of ``found`` (oldest first) that loads and passes :func:`usable_checkpoint`'s
    checks, with its state; each newer one refused is reported as a warning naming the file and
    why. None when the list is empty; a one-line ValueError when none of them is usable."""
    skipped: list[str] = []
    for path in reversed(found):
        try:
            state = usable_checkpoint(path, check)
        except (OSError, ValueError) as e:
            skipped.append(str(e))
            log.warning("skipping checkpoint: %s", e)
            continue
        if skipped:
            log.warning("resuming from %s, the newest usable checkpoint (%d newer one(s) skipped)", path, len(skipped))
        return path, state
    if skipped:
        raise ValueError(
            f"no readable checkpoint among {len(skipped)} in {found[0].parent} (newest: {skipped[0]}); "
            "remove them or start without --resume"
        )
    return None


def load_resume(resume: str | None, directory: str | Path, check: StateCheck | None = None) -> tuple[Path, dict[str, Any]] | None:
    """What to resume from, loaded: ``(path, state)`` or None (no resume, or nothing to resume yet).

    ``None`` -> no resume; ``"auto"`` -> the newest *usable* checkpoint in ``directory`` (falls
    back past unreadable, non-finite or -- by ``check`` -- unfitting newer ones, saying so; None
    when there is none); a run directory -> the same within it; a file -> that checkpoint, which
    must exist, load and pass the same checks (one-line ValueError otherwise).
    """
    if resume is None:
        return None
    if resume == "auto":
        return newest_readable(list_checkpoints(directory), check)
    path = Path(resume)
    if path.is_dir():  # a run's output dir or its checkpoints dir
        found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"no checkpoint in {path}")
        return newest_readable(found, check)
    return path, usable_checkpoint(path, check)


def resolve_resume(resume: str | None, directory: str | Path) -> Path | None:
    """The path :func:`load_resume` would load (``"auto"`` and directories: the newest readable
    checkpoint). It loads candidates to know; prefer :func:`load_resume`, which keeps the state."""
    found = load_resume(resume, directory)
    return None if found is None else found[0]


# ---------------------------------------------------------------------------------------------
# RNG states as plain data (loadable with weights_only=True)
# ---------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when present) CUDA generator states of this process."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # a different GPU count: restore what fits
            for i, s in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
