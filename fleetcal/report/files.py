"""How the report writes its files: rounded, deterministic, and atomically (a reader never sees half a file); the
generated blocks of the README and docs/ pages; whether the outputs can be written at all.

Every table, plot, plot-data CSV and the README is written to a temporary file beside its target
and renamed over it, so a concurrent reader sees the old file or the new one, never a partial one.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import UsageError


def round_floats(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Floats to ``digits`` significant digits, so tables do not change with the last bits of a sum."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(lambda v: v if pd.isna(v) else float(f"{v:.{digits}g}"))
    return out


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path``; on failure nothing is left behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, lineterminator="\n"))


def write_table(df: pd.DataFrame, tables: Path, name: str) -> None:
    """``name``.csv and ``name``.md, rounded."""
    df = round_floats(df)
    write_csv(df, tables / f"{name}.csv")
    write_text(tables / f"{name}.md", df.to_markdown(index=False) + "\n" if not df.empty else "(no data)\n")


def save_plot(fig: Any, path: Path, data: pd.DataFrame) -> None:
    """A figure as PNG without creation metadata (identical bytes on every run), cropped to what it draws (a legend
    placed outside the axes included), and its data as CSV beside it."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None}))
    write_csv(round_floats(data), path.with_suffix(".csv"))


def replace_block(text: str, start: str, end: str, block: str) -> tuple[str, bool]:
    """``text`` with the block between ``start`` and ``end`` (markers included) replaced, and whether it was there."""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text), True
    return text, False


def generated_pages(readme: Path, docs: Path | None) -> list[Path]:
    """The README, then every page of ``docs`` (where it exists): the files ``fleetcal report`` rewrites blocks of."""
    return [readme] + (sorted(docs.glob("*.md")) if docs is not None and docs.is_dir() else [])


def rewrite_pages(pages: list[Path], blocks: dict[tuple[str, str], str | None], append: tuple[str, str] | None = None) -> None:
    """Replace each generated block (results section, key table, cross-checks, ...) in whichever page holds its
    markers; the ``append`` block goes at the end of the first page (the README) where no page has it."""
    before = {page: page.read_text() if page.exists() else None for page in pages}
    texts = {page: text or "" for page, text in before.items()}
    for (start, end), block in blocks.items():
        if block is None:
            continue
        found = False
        for page, text in texts.items():
            texts[page], hit = replace_block(text, start, end, block)
            found = found or hit
        if not found and (start, end) == append:
            texts[pages[0]] = texts[pages[0]].rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    for page, text in texts.items():
        if text != before[page]:  # each page read once; an unchanged page is not rewritten
            write_text(page, text)


def check_writable(results: Path, readme: Path | None) -> None:
    """Before any work: the output directories and the README can be written, else one UsageError naming which."""
    for sub in ("tables", "plots"):
        d = results / sub
        if d.exists() and not d.is_dir():
            raise UsageError(f"--results {results}: {d} is not a directory")
        target = d if d.exists() else results
        if not os.access(target, os.W_OK):
            raise UsageError(f"--results {results}: {target} is not writable")
    if readme is not None:
        if readme.is_dir():
            raise UsageError(f"--readme {readme} is a directory; give the README file")
        if not readme.parent.is_dir():
            raise UsageError(f"--readme {readme}: its directory does not exist")
        if not os.access(readme.parent, os.W_OK) or (readme.exists() and not os.access(readme, os.W_OK)):
            raise UsageError(f"--readme {readme} is not writable")
