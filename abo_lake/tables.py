"""Table-first search over a release's metadata tables.

:func:`release_table` gives a release metadata table (``ophys_experiments``, ``units``, ...)
as a :class:`Table` that searches by column (substrings, lists, ranges, callables), summarises
its columns and opens the dataset of a row lazily; :func:`search_table` is the one-call form
used by the CLI, and :func:`parse_value` turns CLI text into query values. Tables are read
once per content hash and kept in a small in-memory cache.
"""

from __future__ import annotations

import difflib
import html
import re
import warnings
from collections import OrderedDict
from typing import Any

import pandas as pd
import xarray as xr

from abo_lake.errors import DatasetNotFoundError
from abo_lake.release import Release

__all__ = [
    "Table",
    "parse_value",
    "release_table",
    "search_table",
]


def _warn_if_not_newest(rel: Release, stacklevel: int = 3) -> None:
    """Warn when ``rel`` is not the lake's newest release (used by ``open_catalog`` too)."""
    names = rel.lake.releases()
    if names and names[-1] != rel.name:
        newest = names[-1]
        warnings.warn(
            f"release {rel.pin} is not the newest in lake {rel.lake.url}: {newest!r} is. "
            f"See what changed with lake.diff({rel.name!r}, {newest!r}).",
            UserWarning,
            stacklevel=stacklevel,
        )


_TABLE_CACHE: OrderedDict[str, pd.DataFrame] = OrderedDict()


def release_table(release: Release, name: str) -> Table:
    """A release's metadata table as a searchable :class:`Table` (cached by content hash)."""
    entry = release.record.tables.get(name)
    h = entry["object"] if entry else None
    if h not in _TABLE_CACHE:
        df = release.table(name)  # raises DatasetNotFoundError listing the tables
        _TABLE_CACHE[h] = df
        while len(_TABLE_CACHE) > 16:
            _TABLE_CACHE.popitem(last=False)
    _TABLE_CACHE.move_to_end(h)
    return Table(_TABLE_CACHE[h].copy(), release=release, name=name)


def search_table(release: Release, name: str, **query: Any) -> pd.DataFrame:
    """Rows of a release table matching ``query`` (see :meth:`Table.search`)."""
    return release_table(release, name).search(**query).df


_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number(text: str) -> int | float | None:
    if not _NUM_RE.match(text):
        return None
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_value(text: str) -> Any:
    """A CLI value: ``"100:300"`` -> (100, 300), ``"a,b"`` -> list, ``"175"`` -> 175, ``"x"``.

    Open ranges keep ``None``: ``"100:"`` -> (100, None). ``true``/``false`` become bools.
    """
    text = text.strip()
    if "," in text:
        return [parse_value(t) for t in text.split(",") if t.strip()]
    lo, sep, hi = text.partition(":")
    if sep and (lo.strip() or hi.strip()):
        bounds = [_number(t.strip()) if t.strip() else None for t in (lo, hi)]
        if all(b is not None or not t.strip() for b, t in zip(bounds, (lo, hi))):
            return tuple(bounds)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    n = _number(text)
    return text if n is None else n


def _mask(series: pd.Series, value: Any, column: str) -> pd.Series:
    if callable(value):
        return pd.Series(value(series), index=series.index).fillna(False).astype(bool)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"range for {column!r} must be (lo, hi); got {value!r}")
        lo, hi = value
        mask = series.notna()
        if lo is not None:
            mask &= series >= lo
        if hi is not None:
            mask &= series <= hi
        return mask.fillna(False).astype(bool)
    if isinstance(value, list | set | frozenset):
        mask = pd.Series(False, index=series.index)
        for v in value:
            mask |= _mask(series, v, column)
        return mask
    if isinstance(value, str):
        if pd.api.types.is_bool_dtype(series) and value.lower() in ("true", "false"):
            return series == (value.lower() == "true")
        if pd.api.types.is_numeric_dtype(series):
            n = _number(value)
            if n is None:
                raise ValueError(
                    f"column {column!r} is numeric ({series.dtype}); cannot match {value!r}"
                )
            return series == n
        text = series if pd.api.types.is_string_dtype(series) else series.astype("string")
        found = text.str.contains(value, case=False, regex=False)
        return found.fillna(False).astype(bool)
    if pd.api.types.is_string_dtype(series) or series.dtype == object:
        return series.astype("string") == str(value)
    return (series == value).fillna(False).astype(bool)


class Table:
    """A release metadata table you can search, summarise, and open datasets from.

    Parameters
    ----------
    df
        The rows (index: the id, e.g. ``ophys_experiment_id``; a ``dataset_path`` column).
    release
        The release the table belongs to.
    name
        The table name, e.g. ``"ophys_experiments"``.
    total
        Rows of the whole release table (for the repr); default ``len(df)``.

    Examples
    --------
    >>> t = release_table(rel, "ophys_experiments")  # doctest: +SKIP
    >>> t.search(cre_line="Sst", imaging_depth=(100, 300))  # doctest: +SKIP
    <Table ophys_experiments: 12 of 127 rows>
    """

    def __init__(
        self, df: pd.DataFrame, *, release: Release, name: str, total: int | None = None
    ) -> None:
        self._df = df
        self.release = release
        self.name = name
        self.total = len(df) if total is None else total
        self._warned = False

    def __repr__(self) -> str:
        return f"<Table {self.name}: {len(self._df)} of {self.total} rows>"

    def __len__(self) -> int:
        return len(self._df)

    def __getitem__(self, column: str) -> pd.Series:
        return self._df[column]

    def _ipython_key_completions_(self) -> list[str]:
        return list(self.columns)

    @property
    def df(self) -> pd.DataFrame:
        """The rows as a DataFrame."""
        return self._df

    def to_dataframe(self) -> pd.DataFrame:
        """The rows as a DataFrame (a copy)."""
        return self._df.copy()

    @property
    def columns(self) -> list[str]:
        """Searchable columns (the index name first)."""
        names = [self._df.index.name] if self._df.index.name else []
        return names + [str(c) for c in self._df.columns]

    def _column(self, column: str) -> pd.Series:
        if column in self._df.columns:
            return self._df[column]
        if column == self._df.index.name:
            return self._df.index.to_series(index=self._df.index)
        near = difflib.get_close_matches(column, self.columns, n=3, cutoff=0.5)
        hint = f"did you mean {near!r}? " if near else ""
        raise DatasetNotFoundError(
            f"table {self.name!r} of release {self.release.pin} has no column {column!r}; "
            f"{hint}columns: {self.columns}"
        )

    def search(self, **query: Any) -> Table:
        """Rows matching every condition; a smaller Table (empty if nothing matches).

        A value is matched by its kind: a string is a case-insensitive substring (numbers
        and bools in text are compared as such); a list is any of its values; a
        ``(lo, hi)`` tuple is an inclusive range (``None`` for an open end); a callable
        gets the column and returns a boolean mask; anything else is equality.

        Raises
        ------
        DatasetNotFoundError
            For an unknown column, listing the columns.
        """
        mask = pd.Series(True, index=self._df.index)
        for column, value in query.items():
            mask &= _mask(self._column(column), value, column).to_numpy(dtype=bool)
        return Table(
            self._df[mask.to_numpy()], release=self.release, name=self.name, total=self.total
        )

    def unique(self, column: str | None = None) -> list[Any] | pd.DataFrame:
        """Sorted distinct values of one column, or a per-column summary (``nunique``)."""
        if column is not None:
            values = self._column(column).dropna().unique().tolist()
            try:
                return sorted(values)
            except TypeError:
                return values
        rows = {}
        for c in self.columns:
            s = self._column(c).dropna()
            shown = s.unique().tolist()[:5]
            rows[c] = {"nunique": int(s.nunique()), "values": shown}
        return pd.DataFrame.from_dict(rows, orient="index")

    def _repr_html_(self) -> str:
        head = (
            f"<p><b>{html.escape(self.name)}</b>: {len(self._df)} of {self.total} rows · "
            f"release <code>{html.escape(self.release.pin)}</code></p>"
        )
        summary = self.unique().to_html(max_rows=40) if len(self.columns) else ""
        return head + summary + self._df.head(10).to_html()

    # -- opening data ----------------------------------------------------------------------
    def _path(self, id_: Any) -> tuple[Any, str]:
        full = self._df if id_ in self._df.index else release_table(self.release, self.name).df
        index = full.index
        key = id_
        if key not in index and isinstance(id_, str) and _number(id_) is not None:
            key = _number(id_)
        if key not in index:
            ids = index.tolist()
            if pd.api.types.is_numeric_dtype(index) and _number(str(id_)) is not None:
                target = float(_number(str(id_)))
                near = sorted(ids, key=lambda i: abs(float(i) - target))[:5]
            else:
                near = difflib.get_close_matches(str(id_), list(map(str, ids)), n=5, cutoff=0)
            raise DatasetNotFoundError(
                f"no {index.name or 'id'} {id_!r} in table {self.name!r} of release "
                f"{self.release.pin}; nearest: {near}"
            )
        path = full.loc[key].get("dataset_path") if "dataset_path" in full.columns else None
        if isinstance(path, pd.Series):
            path = path.iloc[0]
        if not isinstance(path, str) or path not in self.release.record.datasets:
            raise DatasetNotFoundError(
                f"{index.name or 'id'} {key!r} is listed in table {self.name!r} but release "
                f"{self.release.pin} has no data for it (dataset_path {path!r}); "
                f"it may be metadata-only, or converted in another release"
            )
        return key, path

    def open(self, id_: Any, **kwargs: Any) -> xr.Dataset:
        """Open one row's dataset lazily (``Release.open``; attrs record the release)."""
        _, path = self._path(id_)
        if not self._warned:
            self._warned = True
            _warn_if_not_newest(self.release)
        return self.release.open(path, **kwargs)

    def to_dataset_dict(self, *, skip_missing: bool = False) -> dict[Any, xr.Dataset]:
        """``{id: lazy Dataset}`` for every row; rows without data raise unless skipped."""
        out, missing = {}, []
        for id_ in self._df.index:
            try:
                out[id_] = self.open(id_)
            except DatasetNotFoundError:
                if not skip_missing:
                    raise
                missing.append(id_)
        if missing:
            warnings.warn(
                f"{len(missing)} rows of {self.name!r} have no data in release "
                f"{self.release.pin}: {missing[:10]}",
                UserWarning,
                stacklevel=2,
            )
        return out
