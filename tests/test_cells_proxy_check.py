"""The proxy check of the cell search (issue 27): the selection, the rank correlations, and a tiny run of
`vidnas search cells --proxy-check 3` with its rerun."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from test_cells_search import TINY, tiny_cfg
from vidnas.search.cells import train_static
from vidnas.search.cells.proxy_check import DECIDED_ON, kendall_tau_b, select_for_check, spearman_rho


def _records(rewards: list[float]) -> list[dict]:
    """Search-log records (the fields the selection reads) with distinct tokens, candidate i with rewards[i]."""
    return [{"cid": i, "tokens": [i, 0], "reward": r, "failed": False, "early_stopped": False}
            for i, r in enumerate(rewards)]


def test_selection_takes_the_top_k_and_one_genotype_per_rank_bin() -> None:
    recs = _records([1.0 - 0.01 * i for i in range(20)])  # candidate i has proxy rank i
    recs += [{**recs[0], "cid": 20, "reward": 0.5}, {"cid": 21, "tokens": [99, 0], "reward": None, "failed": True}]
    picks = select_for_check(recs, 6, 2, seed=0)
    ranks = [p["rank"] for p in picks]
    assert [p["role"] for p in picks] == ["top-k"] * 2 + ["spread"] * 4
    assert ranks[:2] == [0, 1] and [p["record"]["cid"] for p in picks] == ranks  # a repeat counts once, best record
    # the other 18 ranks (2..19) in 4 bins: [2, 6), [6, 11), [11, 15), [15, 20); one drawn in each
    for r, (lo, hi) in zip(ranks[2:], [(2, 6), (6, 11), (11, 15), (15, 20)], strict=True):
        assert lo <= r < hi
    assert select_for_check(recs, 6, 2, seed=0) == picks  # seeded
    assert {tuple(p["rank"] for p in select_for_check(recs, 6, 2, seed=s)) for s in range(8)} != {tuple(ranks)}
    assert [p["rank"] for p in select_for_check(recs, 20, 2, seed=0)] == list(range(20))  # every genotype
    with pytest.raises(ValueError, match="at least 3"):
        select_for_check(recs, 2, 2, seed=0)
    with pytest.raises(ValueError, match="only 20 distinct"):
        select_for_check(recs, 21, 2, seed=0)


def test_rank_correlations_against_hand_computed_values() -> None:
    assert spearman_rho([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman_rho([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties: x ranks (1, 2.5, 2.5, 4), y ranks (1, 3, 2, 4): rho = 4.5 / sqrt(4.5 * 5);
    # tau-b: P - Q = 5 of n0 = 6 pairs, one tied in x: 5 / sqrt((6 - 1) * 6)
    x, y = [1.0, 2.0, 2.0, 3.0], [0.1, 0.3, 0.2, 0.4]
    assert spearman_rho(x, y) == pytest.approx(4.5 / math.sqrt(22.5))
    assert kendall_tau_b(x, y) == pytest.approx(5 / math.sqrt(30))
    # one discordant pair of three: rho = 1 - 6 * 2 / (3 * 8) = 0.5, tau = (2 - 1) / 3
    assert spearman_rho([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert math.isnan(spearman_rho([1, 1, 1], [1, 2, 3])) and math.isnan(kendall_tau_b([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="at least 3"):
        spearman_rho([1, 2], [1, 2])


@pytest.mark.slow
def test_cli_proxy_check_writes_the_correlations_and_a_rerun_keeps_finished_genotypes(tmp_path: Path) -> None:
    from vidnas.cli.search_cells import cells_cmd

    static = train_static(tiny_cfg(), tmp_path / "static", epochs=1, max_steps_per_epoch=2)
    app = typer.Typer()
    app.command()(cells_cmd)
    out = tmp_path / "run"
    args = ["--static", str(static), "--out", str(out), "-n", "4", "--workers", "0",
            "--final-cell-epochs", "1", "--final-epochs", "0", "--final-batch-size", "4", "--max-steps", "2", "-q",
            "--cache", "disk", "--set", "cells.proxy_scale=0.5", "--set", "cells.cell_epochs=1",
            *sum((["--set", t] for t in TINY), [])]
    for bad, message in ((["--proxy-check", "2"], "at least 3 genotypes"),
                         (["--proxy-check", "5"], "more genotypes than the search's 4"),
                         (["--proxy-check", "3", "--final-cell-epochs", "0"], "--final-cell-epochs 0")):
        res = CliRunner().invoke(app, [*args, "--top-k", "1", *bad])
        assert res.exit_code == 2 and message in res.output and not out.exists(), res.output
    res = CliRunner().invoke(app, [*args, "--top-k", "2", "--proxy-check", "3"])
    assert res.exit_code == 0, res.output
    assert "proxy check: 3 genotypes at 32x48 on meta-val" in res.output
    data = json.loads((out / "proxy_check.json").read_text())
    assert data["n"] == 3 and data["decided_on"] == DECIDED_ON == "meta-val" and data["top_k"] == 2
    assert data["proxy_size"] == [32, 32] and data["full_size"] == [32, 48] and not data["end_to_end"]
    assert data["meta_split"]["meta_val"] > 0
    # the full-size cache holds the windows of the search's meta split, recut at the full size
    search_index = json.loads((out / "cache" / "index.json").read_text())
    full_index = json.loads((out / "proxy_check" / "cache" / "index.json").read_text())
    assert search_index["info"]["image_hw"] == [32, 32] and full_index["info"]["image_hw"] == [32, 48]
    for key in ("meta_train_windows", "meta_val_windows", "dropped_windows"):
        assert full_index[key] == search_index[key], key
    for corr in data["correlations"].values():
        assert corr["n"] == 3
        for v in (corr["spearman"], corr["kendall_tau_b"]):
            assert v is None or -1.0 <= v <= 1.0  # None: one side constant
    rows = data["genotypes"]
    assert [r["role"] for r in rows] == ["top-k", "top-k", "spread"] and [r["proxy_rank"] for r in rows][:2] == [0, 1]
    assert all(0.0 <= r["full_miou"] <= 1.0 and r["proxy_latency_ratio"] > 0 for r in rows)
    assert (out / "plots" / "proxy_check.png").stat().st_size > 0
    assert "## Proxy check" in (out / "report.md").read_text()
    assert (out / "proxy_check.md").read_text() in (out / "report.md").read_text()
    assert "| search reward |" in (out / "report.md").read_text()  # the top-k report, the section at its end
    kept = {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in (out / "proxy_check").glob("cand*.json")}
    assert len(kept) == 3
    # a rerun on the finished run trains none of them again (--top-k 0: the check alone, with the paper's k = 2)
    res = CliRunner().invoke(app, [*args, "--proxy-check", "3", "--resume", "--top-k", "0"])
    assert res.exit_code == 0, res.output
    assert "0 evaluated now" in res.output and "no end-to-end training" in res.output
    assert {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in (out / "proxy_check").glob("cand*.json")} == kept
    again = json.loads((out / "proxy_check.json").read_text())
    assert [r["full_miou"] for r in again["genotypes"]] == [r["full_miou"] for r in rows]
