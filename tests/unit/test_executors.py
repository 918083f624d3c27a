"""Rows as independent tasks: the same scorecard whichever executor ran them; sweeps."""

from __future__ import annotations

import json
import os

import pytest

from medveil.bench import run_bench, run_sweep
from medveil.errors import ConfigError, UnknownNameError
from medveil.executors import get_executor
from tests.unit.test_bench_rows import TINY

#: figures that are times or dates, which differ from run to run by nature
VOLATILE = ("timing", "wall_s", "created", "cost", "machine", "train_s")


def figures(card: dict) -> dict:
    """The scorecard without its times: what must not depend on where rows ran."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(card)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """Two rows in this process with one torch thread, as a worker has on two cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_bench(schemes="plain,intensity_lut", out=tmp_path_factory.mktemp("inproc"),
                         progress=False, budget=TINY)
    finally:
        torch.set_num_threads(before)


def test_local_processes_give_the_in_process_scorecard(in_process, tmp_path):
    card = run_bench(schemes="plain,intensity_lut", out=tmp_path, progress=False, budget=TINY,
                     executor="processes", workers=2)
    assert card["machine"]["executor"] == {"name": "processes", "workers": 2,
                                           "threads_per_worker": max(1, os.cpu_count() // 2)}
    assert [r["scheme"] for r in card["results"]] == ["plain", "intensity_lut"]
    assert figures(card) == figures(in_process)
    assert all(r["timing"] for r in card["results"])
    on_disk = json.loads((tmp_path / "scorecard.json").read_text())
    assert figures(on_disk) == figures(json.loads(json.dumps(in_process)))


@pytest.mark.slow
def test_a_ray_sweep_of_two_rows_gives_the_in_process_scorecard(in_process, tmp_path):
    """A local Ray instance (two CPU slots) runs the two rows: the same figures."""
    pytest.importorskip("ray", reason="Ray is the cluster extra: pip install 'medveil[cluster]'")
    card = run_bench(schemes="plain,intensity_lut", out=tmp_path, progress=False, budget=TINY,
                     executor="ray", workers=2)
    assert card["machine"]["executor"]["name"] == "ray"
    assert figures(card) == figures(in_process)


def test_a_sweep_writes_one_scorecard_per_data_set_and_seed(tmp_path):
    cards = run_sweep(data=["cxr-demo"], seeds=[0, 1], schemes="plain", out=tmp_path,
                      progress=False, budget=TINY)
    assert [c["seed"] for c in cards] == [0, 1]
    index = json.loads((tmp_path / "sweep.json").read_text())["sweep"]
    assert [(e["seed"], e["folder"]) for e in index] == [(0, "cxr-demo-seed0"),
                                                         (1, "cxr-demo-seed1")]
    for entry, card in zip(index, cards, strict=True):
        written = json.loads((tmp_path / entry["folder"] / "scorecard.json").read_text())
        assert written["seed"] == card["seed"] == entry["seed"]
        assert written["results"][0]["status"] == "ok"
        assert (tmp_path / entry["folder"] / "report.md").exists()
    # another seed splits and initialises differently: not the same row twice
    assert cards[0]["results"][0]["utility"] != cards[1]["results"][0]["utility"]


def test_bad_executor_and_seeds_are_clear_errors(tmp_path):
    with pytest.raises(UnknownNameError, match="processes"):
        get_executor("procesess")
    with pytest.raises(ConfigError, match="workers"):
        get_executor("processes", workers=0)
    with pytest.raises(ConfigError, match="twice"):
        run_sweep(seeds=[1, 1], schemes="plain", out=tmp_path, progress=False, budget=TINY)


def test_the_longest_rows_are_handed_out_first(tmp_path, monkeypatch):
    """Workers finish together when the rows that take longest (the schemes' measured
    ``bench_cost``) start first; the scorecard keeps the schemes' order."""
    from medveil.executors import EXECUTORS, InProcessExecutor
    from medveil.schemes import get_scheme_class

    handed: list[str] = []

    class Recording(InProcessExecutor):
        name = "recording"

        def run(self, tasks, done):
            handed.extend(task.spec.name for task in tasks)
            raise KeyboardInterrupt  # the order is all this test needs

    monkeypatch.setitem(EXECUTORS, "recording", Recording)
    with pytest.raises(KeyboardInterrupt):
        run_bench(schemes="plain,intensity_lut,primis,obfuscation,ckks", out=tmp_path,
                  progress=False, budget=TINY, executor="recording")
    costs = [get_scheme_class(name).row_cost(TINY.mode) for name in handed]
    assert handed[0] == "primis" and costs == sorted(costs, reverse=True)
    # the full budget encrypts every test image: ckks's row is long there, short in the quick
    ckks, fesf = get_scheme_class("ckks"), get_scheme_class("fesf")
    assert ckks.row_cost("full") > fesf.row_cost("full")
    assert ckks.row_cost("quick") < fesf.row_cost("quick")
    assert set(handed) == {"plain", "intensity_lut", "primis", "obfuscation", "ckks"}
