"""Seeded writers of source files in the real Allen layouts (``ALLEN_DATA.md``).

There is no internet here, so abo_lake writes its own NWB and NRRD files, group for group as
Allen ships them. Every writer is deterministic for a given ``seed`` and takes a ``scale``:
``"tiny"`` (a few MB per file, for tests) or ``"realistic"`` (for benchmarks).

Each writer has the signature ``write(out_dir, *, scale="tiny", seed=0, **options) -> list[Path]``
and returns the files it wrote.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from abo_lake.kinds import FORMATS

__all__ = ["KINDS", "SCALES", "synthesize"]

SCALES = ("tiny", "realistic")

#: ``abo-lake synth KIND`` -> "module:function" of its writer (declared in
#: :mod:`abo_lake.kinds`).
KINDS: dict[str, str] = {f.name: f.synthetic for f in FORMATS.values() if f.synthetic}


def _writer(kind: str) -> Callable[..., list[Path]]:
    if kind not in KINDS:
        raise ValueError(f"unknown source kind {kind!r}; choose one of {sorted(KINDS)}")
    module, func = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), func)


def synthesize(
    kind: str, out_dir: str | Path, *, scale: str = "tiny", seed: int = 0, **options
) -> list[Path]:
    """Write synthetic source files of one kind into ``out_dir``.

    Parameters
    ----------
    kind
        One of :data:`KINDS` (``"vbo-ophys"``, ``"ccf"``, ...).
    out_dir
        Folder to write into (created if needed).
    scale
        ``"tiny"`` or ``"realistic"``.
    seed
        Seed of ``np.random.default_rng``; the same seed gives byte-identical arrays.
    **options
        Passed to the kind's writer.

    Returns
    -------
    list of Path
        The files written.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _writer(kind)(out, scale=scale, seed=seed, **options)
