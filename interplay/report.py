"""Print benchmark figures: a human table, and with --json one JSON object on the last line.

Benchmarks live in their packages and return a plain dict of figures (see
../shared/FIGURES.md for the keys each must hold); this module only renders them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def render(title: str, figures: Mapping[str, Any], console: Console | None = None) -> None:
    """Render scalar figures as one key/value table and each list of dicts as its own table."""
    console = console or Console(stderr=False, highlight=False)
    scalars = Table(title=title, show_header=True, header_style="bold")
    scalars.add_column("figure")
    scalars.add_column("value", justify="right")
    nested: list[tuple[str, Any]] = []
    for key, value in figures.items():
        if isinstance(value, list) and value and isinstance(value[0], Mapping):
            nested.append((key, value))
        elif isinstance(value, Mapping):
            nested.append((key, [{"name": k, **(v if isinstance(v, Mapping) else {"value": v})} for k, v in value.items()]))
        else:
            scalars.add_row(key, _fmt(value))
    if scalars.row_count:
        console.print(scalars)
    for key, rows in nested:
        cols: list[str] = []
        for row in rows:
            cols += [c for c in row if c not in cols]
        table = Table(title=f"{title}: {key}", header_style="bold")
        for c in cols:
            table.add_column(c, justify="right")
        for row in rows:
            table.add_row(*[_fmt(row.get(c, "")) for c in cols])
        console.print(table)


def emit(title: str, figures: Mapping[str, Any], as_json: bool) -> None:
    """Print the table; with as_json also print the figures as one JSON object, last line."""
    render(title, figures)
    if as_json:
        print(json.dumps(figures, default=_json_default, sort_keys=False), flush=True)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "model_dump"):
        return o.model_dump()
    return str(o)
