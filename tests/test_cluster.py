"""The grid on a local Ray instance (started and stopped by the test): the same scores and index as the local
executor, a worker killed mid-grid retried, a task lost for good reported in the index while the rest go on."""
import json, os, re
from pathlib import Path
import polars as pl
from polars.testing import assert_frame_equal
import pytest
import ray
from navab.grid import run_grid


def _de_samples(path: Path) -> Path:
    "Six German samples."
    n = 6
    pl.DataFrame(dict(id=[f'de{i}' for i in range(n)], nation=['DE'] * n, lang=['de'] * n, topic=['umwelt', 'steuer'] * 3,
                      source_type=['official', 'quoted'] * 3, question=[f'Soll der Staat handeln ({i})?' for i in range(n)],
                      statement=[f'Der Staat soll handeln, Punkt {i}.' for i in range(n)],
                      reverse_statement=[f'Der Staat soll nicht handeln, Punkt {i}.' for i in range(n)])).write_parquet(path)
    return path


@pytest.fixture(scope='module')
def ray_local():
    "A local Ray instance on 2 CPUs for this module, shut down after it (navab.executor.ray_start: three tries, leftovers of a failed one stopped)."
    import ray.dashboard.agent, ray.dashboard.modules.reporter.reporter_agent   # noqa: F401  warm the agent's imports
    from navab.executor import ray_start, _ray_children
    try: ray_start(num_cpus=2, object_store_memory=100 * 2**20)
    except RuntimeError as e: pytest.skip(f"{e} (Ray 2.60's raylet gives its agents a fixed 15 s; this machine is too busy for that now)")
    yield ray
    ray.shutdown()
    import psutil
    gone, alive = psutil.wait_procs(_ray_children(), timeout=15)   # Ray stops its processes itself; stop any straggler
    for p in alive: p.kill()


def _records(out: Path) -> dict:
    return {r['name']: r for r in json.loads((out/'grid.json').read_text())['records']}


def _index(out: Path) -> str:
    "index.html with timings normalised (there are none today; a later column must not break the comparison)."
    return re.sub(r'\d+(\.\d+)? s\b', 'N s', (out/'index.html').read_text())


def _local_then_ray(kw: dict, tmp_path: Path, monkeypatch, kill: str) -> tuple:
    "The grid run locally, then on Ray with the worker of the task named `kill` ended once (retried): the two grids' records."
    run_grid(out=tmp_path/'local', **kw)
    marker = tmp_path/'killed'
    monkeypatch.setenv('NAVAB_FAULT_KILL', f'{kill}@{marker}')
    run_grid(out=tmp_path/'ray', executor='ray', retries=2, **kw)
    assert marker.read_text() == kill, 'the fault hook killed a worker'
    return _records(tmp_path/'local'), _records(tmp_path/'ray')


def test_ray_grid_same_as_local_with_a_killed_worker(study, ray_local, tmp_path, monkeypatch):
    "2 tiny models x 2 nations x (MC, AJ): Ray (one evaluation's worker killed once, retried) gives the local executor's scores and index."
    d = study['dir']
    kw = dict(models=study['kw']['models'], nations=['FR', 'DE'], samples={'FR': study['kw']['samples']['FR'], 'DE': [_de_samples(tmp_path/'de.parquet')]},
              methods=['mc', 'aj'], seed=0, max_new_tokens=6, progress=False, settings=d/'settings.ini')
    loc, rr = _local_then_ray(kw, tmp_path, monkeypatch, 'eval-tiny-b-DE-aj')
    assert sorted(rr) == sorted(loc) == ['run-tiny-a-DE', 'run-tiny-a-FR', 'run-tiny-b-DE', 'run-tiny-b-FR', 'study']
    assert all(r['status'] == 'ok' for r in rr.values()), {k: r.get('error') for k, r in rr.items()}
    runs = sorted((tmp_path/'local'/'runs').glob('*/*/*/scores.parquet'))
    assert len(runs) == 8
    for p in runs:   # same decisions; float32 log-probs equal to rounding (Ray runs a 1-CPU task with OMP_NUM_THREADS=1: other summation order)
        assert_frame_equal(pl.read_parquet(tmp_path/'ray'/p.relative_to(tmp_path/'local')), pl.read_parquet(p), check_exact=False, abs_tol=1e-6, rel_tol=0)
    assert _index(tmp_path/'ray') == _index(tmp_path/'local')
    for name in rr: assert rr[name]['headline'] == loc[name]['headline']

    # rerun with no retries and a report's worker killed every time: that report is failed in the index, the rest skip
    monkeypatch.setenv('NAVAB_FAULT_KILL', 'run-tiny-a-FR')
    run_grid(out=tmp_path/'ray', executor='ray', retries=0, **kw)
    rr = _records(tmp_path/'ray')
    assert rr['run-tiny-a-FR']['status'] == 'failed' and rr['run-tiny-a-FR']['error'].startswith('ray: '), rr['run-tiny-a-FR']
    assert all(rr[n]['status'] == 'ok' and rr[n]['skipped'] for n in ('run-tiny-a-DE', 'run-tiny-b-DE', 'run-tiny-b-FR'))
    assert rr['study']['status'] == 'ok'
    page = (tmp_path/'ray'/'index.html').read_text()
    assert '5 reports, 4 ok, 1 failed' in page and 'ray: ' in page


def test_ray_grid_aligns_as_a_ray_task(study, ray_local, tmp_path, monkeypatch):
    "--methods mc,align on Ray: the alignment runs as a Ray task (its worker killed once, retried) with the local executor's results and index row."
    import numpy as np
    from safetensors.numpy import load_file
    kw = dict(models=study['kw']['models'][:1], nations=['DE'], samples={'DE': [_de_samples(tmp_path/'de.parquet')]}, methods=['mc', 'align'], seed=0,
              progress=False, settings=study['dir']/'settings.ini', align_options=dict(steps=2, save_steps=2, batch_size=2, methods=['mc', 'pref']))
    loc, rr = _local_then_ray(kw, tmp_path, monkeypatch, 'align-tiny-a-DE')
    assert sorted(rr) == sorted(loc) == ['align-tiny-a-DE', 'run-tiny-a-DE', 'study']
    assert all(r['status'] == 'ok' for r in rr.values()), {k: r.get('error') for k, r in rr.items()}
    a, b = (json.loads((o/'align'/'tiny-a'/'DE'/'align.json').read_text()) for o in (tmp_path/'local', tmp_path/'ray'))
    assert [(r['arm'], r['method'], r['n'], r['accuracy']) for r in a['results']] == [(r['arm'], r['method'], r['n'], r['accuracy']) for r in b['results']]
    assert [{k: v for k, v in x['counts']['pairs'].items() if k != 'file'} for x in (a, b)] == [dict(n_in=6, out=6, quarantined=0)] * 2   # each grid's own samples file
    assert a['split'] == b['split']
    A, B = (load_file(str(o/'align'/'tiny-a'/'DE'/'adapter_model.safetensors')) for o in (tmp_path/'local', tmp_path/'ray'))
    assert A.keys() == B.keys() and max(float(np.abs(A[k] - B[k]).max()) for k in A) < 1e-4   # one thread on the worker: other summation order
    assert rr['align-tiny-a-DE']['headline'] == loc['align-tiny-a-DE']['headline'] and _index(tmp_path/'ray') == _index(tmp_path/'local')

    monkeypatch.setenv('NAVAB_FAULT_KILL', 'align-tiny-a-DE')        # killed every time, no retries: reported failed, the rest skip
    run_grid(out=tmp_path/'ray', executor='ray', retries=0, **kw)
    rr = _records(tmp_path/'ray')
    assert rr['align-tiny-a-DE']['status'] == 'failed' and rr['align-tiny-a-DE']['error'].startswith('ray: '), rr['align-tiny-a-DE']
    assert rr['run-tiny-a-DE']['status'] == 'ok' and rr['run-tiny-a-DE']['skipped'] and rr['study']['status'] == 'ok'
