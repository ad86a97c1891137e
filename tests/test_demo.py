"""navab demo's order of work: extractions, each nation's runs as soon as its samples exist, the alignment once its base
model's run is scored, then the study, in two worker processes, give what one process gives in order."""
import json
import polars as pl
from navab.demo import demo
from navab.extract import EchoGenerator



def _run(out, tiny_model, tmp_path, workers):
    ph = [('install', 1.0, 'measured by make')]
    idx = demo(out, shared=tmp_path / 'no-shared-data', workers=workers, models=[str(tiny_model)], nations=['US', 'UK'], generator=EchoGenerator('en'),
               articles=8, progress=False, align_steps=2, phases=ph, limit=6, aj_limit=2)
    return idx, json.loads((out / 'grid.json').read_text()), {n: (s, x) for n, s, x in ph}


def test_pipelined_demo_equals_one_process(tiny_long, tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    i1, g1, p1 = _run(one, tiny_long, tmp_path, 1)
    i2, g2, p2 = _run(two, tiny_long, tmp_path, 2)
    tiny = tiny_long.name
    for g in (g1, g2):
        recs = {(r['kind'], r['model'], r['nation']): r for r in g['records']}
        assert set(recs) == {('run', tiny, 'US'), ('run', tiny, 'UK'), ('align', tiny, 'UK'), ('study', '', '')}, sorted(recs)   # UK has the most samples (8 of 8 articles)
        assert all(r['status'] == 'ok' for r in recs.values()), [(k, r.get('error')) for k, r in recs.items()]
    timed = lambda g: [x for x in g['notes'] if not x.startswith(('align:', 'extraction, evaluations'))]   # the notes that carry seconds
    assert timed(g1) == timed(g2) and len(timed(g1)) == len(g1['notes']) - 2 and sorted(r['name'] for r in g1['records']) == sorted(r['name'] for r in g2['records'])
    for n in ('US', 'UK'):
        a, b = (pl.read_parquet(d / 'extract' / n / 'samples_all.parquet') for d in (one, two))
        assert len(a) and a.equals(b), n
        for m in ('mc', 'aj', 'pref'):
            s1, s2 = (json.loads((d / 'runs' / tiny / n / m / 'summary.json').read_text()) for d in (one, two))
            assert (s1['n'], s1['accuracy']) == (s2['n'], s2['accuracy']), (n, m)
    ev = two / 'align' / tiny / 'UK' / 'eval' / 'UK'
    assert not (ev / 'base-mc' / 'cache').exists() and (ev / 'aligned-mc' / 'cache').is_dir()   # queued after its base run: the grid's cache served it
    for p in (p1, p2):                                                     # every phase timed, make's first, the total last
        assert list(p)[0] == 'install' and list(p)[-2:] == ['navab demo in all', 'make demo in all'], list(p)
        assert {'extract US', 'extract UK', f'evaluate {tiny} x US', f'report run-{tiny}-UK', 'report study', f'align {tiny} toward UK'} <= set(p)
        assert p['make demo in all'][0] == 1.0 + p['navab demo in all'][0] and p['extract US'][0] > 0
    assert 'side by side in 2 processes' in g2['notes'][-1] and 'Time per phase' in i2.read_text()
