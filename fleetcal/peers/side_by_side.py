"""fleetcal beside a peer on the same published rows: both errors per row, both medians over the rows both express, which
is closer, by row group; the committed peer data (results/peer/<peer>-<version>.json) read back, and the generated block of
docs/peer.md. fleetcal's side is always its current prediction (estimator.validation.validate), never a frozen figure, so
the table moves with the model while the peer's side stays what was run and committed."""

from __future__ import annotations

import json
import math
import statistics
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import UsageError
from core.paths import README, portable
from fleetcal.peers.aic import NAME, PEER_DIR
from fleetcal.report.files import replace_block, write_text

PEER_START, PEER_END = "<!-- peer:start -->", "<!-- peer:end -->"
PEER_PAGE = README.parent / "docs" / "peer.md"
COLUMNS = ["id", "group", "published", "fleetcal", "fleetcal_error_pct", "peer", "peer_error_pct", "closer", "gate"]


def peer_file(peer: dict[str, Any], peer_dir: Path = PEER_DIR) -> Path:
    """Where a run of the peer is committed: results/peer/<peer>-<version>.json."""
    return peer_dir / f"{peer['peer']}-{peer['versions'][NAME]}.json"


def write_peer(peer: dict[str, Any], peer_dir: Path = PEER_DIR, today: date | None = None) -> Path:
    """Commit a run of the peer as data, dated; returns the file written."""
    peer_dir.mkdir(parents=True, exist_ok=True)
    path = peer_file(peer, peer_dir)
    path.write_text(json.dumps({**peer, "date": (today or date.today()).isoformat()}, indent=1) + "\n")
    return path


def load_peer(peer_dir: Path = PEER_DIR, name: str = NAME) -> dict[str, Any] | None:
    """The committed run of the peer with the highest version, or None when none is committed."""
    files = sorted(peer_dir.glob(f"{name}-*.json"), key=lambda p: [int(x) if x.isdigit() else x for x in p.stem.split("-")[-1].split(".")])
    if not files:
        return None
    try:
        return json.loads(files[-1].read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{portable(files[-1])} cannot be read: {exc}") from exc


def group_of(row: pd.Series) -> str:
    """A row's group: its source, kind of row, GPU and weight precision (e.g. 'trtllm-v061 static_batch A100 fp16')."""
    return f"{row['source']} {row['kind']} {row['gpu']} {row['precision'].split('/')[0]}"


def _closer(fleetcal_err: float, peer_err: float) -> str:
    if math.isnan(peer_err):
        return ""
    return "fleetcal" if abs(fleetcal_err) < abs(peer_err) else NAME if abs(peer_err) < abs(fleetcal_err) else "tie"


def side_by_side(validation: pd.DataFrame, peer: dict[str, Any]) -> pd.DataFrame:
    """One line per validation row: published, fleetcal's prediction and error, the peer's and its error (NaN where the
    peer did not express the row), which is closer. ``validation`` is estimator.validation.validate's table."""
    got = {r["id"]: r for r in peer["rows"]}
    out = []
    for _, v in validation.iterrows():
        p = got.get(v["id"], {})
        pred = p.get("predicted") if p.get("expressed") else math.nan
        peer_err = round((pred - v["published"]) / v["published"] * 100, 1) if not math.isnan(pred) else math.nan
        out.append({"id": v["id"], "group": group_of(v), "published": v["published"], "fleetcal": v["predicted"],
                    "fleetcal_error_pct": v["error_pct"], "peer": pred, "peer_error_pct": peer_err,
                    "closer": _closer(v["error_pct"], peer_err), "gate": bool(v["gate"])})  # fmt: skip
    return pd.DataFrame(out, columns=COLUMNS)


def shared_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Over the rows both express: how many, both medians of |error| and of the signed error, and who is closer how often."""
    s = df[df["peer_error_pct"].notna()]
    if s.empty:
        return {"rows": 0}
    return {"rows": len(s), "fleetcal_median_abs_error_pct": round(statistics.median(s["fleetcal_error_pct"].abs()), 1),
            "fleetcal_median_signed_error_pct": round(statistics.median(s["fleetcal_error_pct"]), 1),
            "peer_median_abs_error_pct": round(statistics.median(s["peer_error_pct"].abs()), 1),
            "peer_median_signed_error_pct": round(statistics.median(s["peer_error_pct"]), 1),
            "fleetcal_closer": int((s["closer"] == "fleetcal").sum()), "peer_closer": int((s["closer"] == NAME).sum()),
            "ties": int((s["closer"] == "tie").sum())}  # fmt: skip


def by_group(df: pd.DataFrame) -> pd.DataFrame:
    """The shared summary per row group, in the order the groups first appear."""
    rows = []
    for g in dict.fromkeys(df["group"]):
        s = shared_summary(df[df["group"] == g])
        if s["rows"]:
            rows.append({"group": g, "rows": s["rows"], "fleetcal median abs error %": s["fleetcal_median_abs_error_pct"],
                         "fleetcal median signed %": s["fleetcal_median_signed_error_pct"],
                         f"{NAME} median abs error %": s["peer_median_abs_error_pct"],
                         f"{NAME} median signed %": s["peer_median_signed_error_pct"],
                         "closer (fleetcal : peer)": f"{s['fleetcal_closer']} : {s['peer_closer']}"})  # fmt: skip
    return pd.DataFrame(rows)


def not_expressed(peer: dict[str, Any]) -> list[tuple[str, str]]:
    """(row id, why) for every row the peer could not express."""
    return [(r["id"], r["why"]) for r in peer["rows"] if not r.get("expressed")]


def not_run(validation: pd.DataFrame, peer: dict[str, Any]) -> list[str]:
    """Validation rows the committed peer run does not hold (added after it): neither expressed nor refused."""
    ran = {r["id"] for r in peer["rows"]}
    return [rid for rid in validation["id"] if rid not in ran]


def summary_line(s: dict[str, Any]) -> str:
    """Both medians over the shared rows and the closer-count, one sentence."""
    if not s["rows"]:
        return "No row is expressed by both."
    return (f"Over the {s['rows']} rows both express: fleetcal's median |error| {s['fleetcal_median_abs_error_pct']:.1f}% (signed "
            f"{s['fleetcal_median_signed_error_pct']:+.1f}%), {NAME}'s {s['peer_median_abs_error_pct']:.1f}% (signed "
            f"{s['peer_median_signed_error_pct']:+.1f}%); closer: fleetcal on {s['fleetcal_closer']} rows, {NAME} on {s['peer_closer']}"
            + (f", {s['ties']} ties" if s["ties"] else "") + ".")  # fmt: skip


def _provenance(peer: dict[str, Any]) -> str:
    v = peer["versions"]
    dbs = ", ".join(f"{k.rsplit('/', 1)[0].replace('/', ' ')} {db}" for k, db in v["databases"].items())
    return (f"{NAME} {v[NAME]} (aiconfigurator-core {v['aiconfigurator_core']}), run {peer.get('date', '?')}; databases: {dbs}. "
            f"Its predictions: `results/peer/{NAME}-{v[NAME]}.json`.")  # fmt: skip


def peer_block(validation: pd.DataFrame, peer_dir: Path = PEER_DIR) -> str | None:
    """The generated block of docs/peer.md from the committed peer data and fleetcal's current predictions; None when no
    peer run is committed (the page is then left as it is)."""
    peer = load_peer(peer_dir)
    if peer is None:
        return None
    df = side_by_side(validation, peer)
    blank = {c: df[c].map(lambda v: "" if pd.isna(v) else v) for c in ("peer", "peer_error_pct")}
    table = df.assign(fleetcal=df["fleetcal"].round(0), **blank).assign(peer=lambda d: d["peer"].map(lambda v: v if v == "" else round(v)))
    table = table.rename(columns={"peer": NAME, "peer_error_pct": f"{NAME}_error_pct"})
    generated = "_Generated by `fleetcal report` from the committed peer data and fleetcal's current predictions; do not edit._"
    lines = [PEER_START, "", generated, "",
             _provenance(peer), "", f"**{summary_line(shared_summary(df))}**", "", "By row group:", "",
             by_group(df).to_markdown(index=False), "", "Every row (error = (predicted - published) / published, in %):", "",
             table.to_markdown(index=False), "", "Rows the peer cannot express:", ""]  # fmt: skip
    lines += [f"- `{rid}`: {why}" for rid, why in not_expressed(peer)] or ["- none"]
    missing = not_run(validation, peer)
    if missing:
        lines += ["", f"Rows added since the peer's run (`fleetcal validate --peer {NAME} --write` runs them): "
                  + ", ".join(f"`{rid}`" for rid in missing) + "."]  # fmt: skip
    return "\n".join([*lines, "", PEER_END])


def write_peer_page(validation: pd.DataFrame, page: Path = PEER_PAGE, peer_dir: Path = PEER_DIR) -> bool:
    """Rewrite the generated block of ``page`` (docs/peer.md) in place; False when there is no block or no peer data."""
    block = peer_block(validation, peer_dir)
    if block is None or not page.is_file():
        return False
    text, hit = replace_block(page.read_text(), PEER_START, PEER_END, block)
    if hit:
        write_text(page, text)
    return hit
