"""Publishable reports: no absolute path of this machine (home, the checkout, the shared data, the Python environment, the
working folder) in any HTML or executed notebook a grid writes, and no "running over TCP without encryption" warning."""
import json, os, re, sys, time
from pathlib import Path
import pytest
from conftest import ROOT, SHARED

_DATA_URI = re.compile(r'data:image/[a-z+]+;base64,[A-Za-z0-9+/=\s]+')


def _text(p: Path) -> str:
    "What a published file says, without its embedded images (base64 could spell anything)."
    if p.suffix == '.ipynb':
        nb = json.loads(p.read_text(encoding='utf-8'))
        for c in nb['cells']:
            for o in c.get('outputs', []):
                for k in [k for k in o.get('data', {}) if k.startswith('image/')]: del o['data'][k]
        return json.dumps(nb, ensure_ascii=False)
    return _DATA_URI.sub('', p.read_text(encoding='utf-8'))


def _leaks(out: Path, needles: dict) -> list:
    "(file, what, context) for every absolute path of this machine found in the published files under `out`."
    hits = []
    for p in sorted([*out.rglob('*.html'), *out.rglob('*.ipynb')]):
        t = _text(p)
        for what, n in needles.items():
            for m in re.finditer(re.escape(n), t):
                hits.append((str(p.relative_to(out)), what, t[max(0, m.start() - 60):m.end() + 60]))
    return hits


def _needles(work: Path) -> dict:
    d = {'home': str(Path.home()), 'checkout': str(ROOT), 'shared data': str(SHARED.resolve()), 'python env': sys.prefix,
         'working folder': str(work)}
    return {k: v for k, v in d.items() if len(v.strip('/')) >= 3}   # a home of '/' would match every path


@pytest.fixture(scope='module')
def grid(tmp_path_factory):
    "A small grid as the demo runs it: a tiny model (a local folder) on the real HK samples (from ../shared/data), MC, AJ, robustness, one alignment."
    if not (SHARED/'navab-hk').is_dir():
        msg = f"real data not found at {SHARED} (../shared/data beside the checkout): the no-absolute-path test reads the NaVAB HK files from it"
        pytest.fail(msg) if os.environ.get('CI') == 'true' else pytest.skip(msg)
    from navab.models import make_tiny_model
    from navab.grid import run_grid
    work = tmp_path_factory.mktemp('public')
    model = make_tiny_model(work/'tiny-pub')
    cfg = json.loads((model/'config.json').read_text()); cfg['max_position_embeddings'] = 4096   # rotary: the HK statements are long in bytes
    (model/'config.json').write_text(json.dumps(cfg))
    hk = SHARED/'navab-hk'
    idx = run_grid([str(model)], ['CN'], {'CN': [hk/'human_statement_result.json', hk/'official_statement_result.json']},
                   ['mc', 'aj', 'robustness', 'align'], work/'reports', limit=4, aj_limit=2, robust_limit=2, max_new_tokens=4, progress=False,
                   align_options=dict(steps=1, save_steps=1, batch_size=2, methods=['mc']))
    return dict(work=work, out=work/'reports', index=idx)


def test_reports_carry_no_absolute_path(grid):
    out = grid['out']
    recs = {r['name']: r for r in json.loads((out/'grid.json').read_text())['records']}
    assert {r['status'] for r in recs.values()} == {'ok'}, recs
    assert {'run-tiny-pub-CN', 'align-tiny-pub-CN', 'study'} <= set(recs)
    files = [*out.rglob('*.html'), *out.rglob('*.ipynb')]
    assert len(files) >= 7, files     # index + 3 reports as HTML and notebook
    leaks = _leaks(out, _needles(grid['work']))
    assert not leaks, '\n'.join(f"{f}: {w}: ...{c}..." for f, w, c in leaks[:20])
    idx = grid['index'].read_text(encoding='utf-8')
    assert 'samples from human_statement_result.json (sha256 ' in idx   # the notes still say which files: by name and hash
    assert (out/'study'/'settings.ini').is_file() and (out/'study'/'models.csv').is_file()   # the study's settings, beside its report


def test_leak_finder_finds_a_leak(tmp_path):
    "The check above can fail: a page naming the checkout, and a notebook printing home, are found; an image is not read."
    (tmp_path/'a.html').write_text(f'<p>samples from {ROOT}/data</p><img src="data:image/png;base64,{Path.home()}AAA">', encoding='utf-8')
    nb = dict(cells=[dict(cell_type='code', source='', outputs=[dict(output_type='stream', text=f'{Path.home()}/x'),
                                                                   dict(output_type='display_data', data={'image/png': str(ROOT)})])])
    (tmp_path/'b.ipynb').write_text(json.dumps(nb), encoding='utf-8')
    got = {(f, w) for f, w, _ in _leaks(tmp_path, _needles(tmp_path / 'elsewhere'))}
    assert ('a.html', 'checkout') in got and ('b.ipynb', 'home') in got
    assert ('b.ipynb', 'checkout') not in got or str(Path.home()) in str(ROOT)




def test_kernel_runs_encrypted_without_the_tcp_warning(tmp_path, capfd):
    "A report's kernel gets CurveZMQ keys: its traffic is encrypted and it prints no 'running over TCP without encryption' (papermill's default does)."
    import nbformat, papermill as pm
    from navab.reports import execute_report
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# parameters\nx = 1"), nbformat.v4.new_code_cell("# headline\nprint(x * 2)")],
                                  metadata=dict(kernelspec=dict(name='python3', display_name='Python 3', language='python')))
    nbformat.write(nb, tmp_path/'t.ipynb')
    r = execute_report(tmp_path/'t.ipynb', dict(x=21), tmp_path/'r.ipynb', tmp_path/'r.html', tmp_path)
    assert r == dict(status='ok', error='', headline='42'), r
    err = capfd.readouterr().err
    assert 'without encryption' not in err, err[-2000:]
    meta = nbformat.read(tmp_path/'r.ipynb', 4).metadata['papermill']
    assert meta['input_path'] == 't.ipynb' and meta['output_path'] == 'r.ipynb'
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# parameters\nx = 1"), nbformat.v4.new_code_cell("1 / 0")], metadata=nb.metadata)
    nbformat.write(bad, tmp_path/'bad.ipynb')   # real errors still show: a failing cell fails the report, its traceback published
    r = execute_report(tmp_path/'bad.ipynb', {}, tmp_path/'b.ipynb', tmp_path/'b.html', tmp_path)
    assert r['status'] == 'failed' and 'ZeroDivisionError' in r['error'] and 'ZeroDivisionError' in (tmp_path/'b.html').read_text()
    capfd.readouterr()
    pm.execute_notebook(tmp_path/'t.ipynb', str(tmp_path/'plain.ipynb'), kernel_name='python3', progress_bar=False)   # the check can fail
    assert 'without encryption' in capfd.readouterr().err


def test_index_shows_the_time_of_each_phase(tmp_path):
    from navab.reports import write_index
    idx = write_index(tmp_path, [dict(kind='study', name='study', status='ok', headline='MC 0.5', html='study.html')], ['a note'],
                      phases=[('install (make)', 237.4, ''), ('extract CN', 85.2, 'smollm2-135m'), ('total', 1434.0, '')]).read_text()
    assert '<h2>Time per phase</h2>' in idx and '<td>extract CN</td><td>85</td><td>smollm2-135m</td>' in idx and '<td>total</td><td>1434</td>' in idx
    assert 'Time per phase' not in write_index(tmp_path, [], []).read_text()


def test_demo_phases_of_a_grid(grid):
    "navab demo's phase table: each run's evaluations (with their methods) and each report, from the grid's records."
    from navab.demo import _grid_phases
    recs = json.loads((grid['out']/'grid.json').read_text())['records']
    rows = {n: (s, x) for n, s, x in _grid_phases(grid['out'], recs)}
    s, x = rows['evaluate tiny-pub x CN']
    assert s > 0 and 'mc ' in x and 'aj ' in x and 'robustness ' in x, x
    assert {'report run-tiny-pub-CN', 'report align-tiny-pub-CN', 'report study'} <= set(rows) and rows['report study'][0] > 0
    later = {n: (s, x) for n, s, x in _grid_phases(grid['out'], recs, since=time.time() + 60)}   # all done before: cached, 0 s now
    assert later['evaluate tiny-pub x CN'][0] == 0 and later['evaluate tiny-pub x CN'][1].count('(cached: when it ran)') == 3
    skipped = [dict(r, skipped=True) for r in recs]
    assert all(s == 0 and x.startswith('skipped: unchanged (') for n, s, x in _grid_phases(grid['out'], skipped) if n.startswith('report '))
