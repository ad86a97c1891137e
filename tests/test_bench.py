"""The benchmark's own arithmetic (benchmarks/bench_lmeval.py): its floor, its run-by-run ratios and its report. The
benchmark itself is run by hand (`make bench`); these tests only keep the numbers it prints honest."""
import importlib.util, os, statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(monkeypatch):
    "The bench as a module; the environment defaults it sets on import (TQDM_DISABLE, ...) stay out of other tests."
    monkeypatch.setattr(os, 'environ', dict(os.environ))
    spec = importlib.util.spec_from_file_location('bench_lmeval', ROOT / 'benchmarks' / 'bench_lmeval.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_floor_counts_each_distinct_prefix_once(monkeypatch):
    b = bench(monkeypatch)
    # two requests that differ only in their last token share every input position and every scored distribution
    assert b.floor_work([[0, 1, 2, 3], [0, 1, 2, 4]], [1, 1]) == (3, 3)
    # a third sharing only the start token adds its own positions; scoring only from its 3rd token adds 1 head row
    assert b.floor_work([[0, 1, 2, 3], [0, 1, 2, 4], [0, 5, 6, 7]], [1, 1, 3]) == (5, 4)
    # answer mode: one scored token per request, after a shared context
    assert b.floor_work([[0, 1, 2, 9], [0, 1, 2, 8], [0, 1, 5, 9]], [3, 3, 3]) == (4, 2)


def test_paired_ratios_and_report(capsys, monkeypatch):
    b = bench(monkeypatch)
    C = {'navab': {'whole_s_all': [10.0, 12.0, 11.0]}, 'lmeval': {'whole_s_all': [13.0, 12.0, 16.5]}}
    assert b.paired(C, 'lmeval') == [1.3, 1.0, 1.5]
    assert statistics.median(b.paired(C, 'lmeval')) == 1.3
    run = lambda s, w: dict(label='x', score_s=s, whole_s=w, req_per_s=1.0, req_per_s_whole=1.0, tok_per_s=1.0,
                            tok_per_s_whole=1.0, body_tokens=100, head_rows=10, peak_rss=2 ** 30, flops_effective=1e9,
                            flops_actual=1e9, loads=1, contended=False, whole_s_all=[w, w * 1.1])
    R = dict(meta=dict(model='m', samples=2, batch_size=16, threads=2, cpu_count=2, matmul_flops=1e11),
             params=dict(n_params=1e8, head_params=1e7), contention=[],
             modes={'navab': dict(requests=4, effective_tokens=400,
                                  contenders={'navab': run(8, 10), 'lmeval': run(11, 12)},
                                  checks={'lmeval': dict(max_abs_diff=1e-5, against='navab, navab mode', tokens_identical=4, greedy_identical=4)},
                                  floor=dict(seconds=9.0, body_tokens=90, head_rows=9, startup_s=1.0, max_ratio={'lmeval': 12 / 9}))})
    b.report(R)
    out = capsys.readouterr().out
    assert 'x1.20 whole process' in out and 'MISSED' in out and 'below the floor' in out and 'at most x1.33' in out
    assert 'run by run (whole): x1.20, x1.20; median x1.20' in out
