"""Evaluation end to end: the `navab evaluate` contract, resume after kill -9, real models on real NaVAB samples."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import polars as pl
import pytest
from navab.evaluate import evaluate, mc_prompts, s_first
from navab.data import load_samples, read_opinions

NAVAB = str(Path(sys.executable).parent / 'navab')
REQ_COLS = ['sample_id', 'stage', 'option', 'context', 'continuation', 'logprob', 'n_tokens', 'is_greedy']


def _samples(path, n, lang='en', nation='US'):
    rows = [dict(id=f'q{i:04d}', nation=nation, lang=lang, source_type=('official', 'quoted')[i % 2], topic=f't{i % 3}',
                 question=f'Should the country invest more in project number {i} this year?',
                 statement=f'The country should invest more in project {i}.', reverse_statement=f'The country should not invest more in project {i}.')
            for i in range(n)]
    path.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
    return path


def test_evaluate_contract_and_batch_invariance(tiny_model, tmp_path):
    f = _samples(tmp_path / 's.jsonl', 30)
    S = load_samples(f).valid
    runs = {bs: evaluate(S, str(tiny_model), tmp_path / f'b{bs}', batch_size=bs, progress=False) for bs in (1, 7, 32)}
    sc = {bs: pl.read_parquet(tmp_path / f'b{bs}' / 'scores.parquet') for bs in runs}
    for bs in (7, 32):
        assert sc[bs]['pred'].to_list() == sc[1]['pred'].to_list()
        assert (sc[bs]['margin'] - sc[1]['margin']).abs().max() < 1e-4
    r = pl.read_parquet(tmp_path / 'b1' / 'requests.parquet')
    assert r.columns == REQ_COLS and len(r) == 60 and r.select('sample_id', 'option').n_unique() == 60
    s = json.loads((tmp_path / 'b1' / 'summary.json').read_text())
    assert s['n'] == 30 and s['ci_low'] <= s['accuracy'] <= s['ci_high'] and s['method'] == 'mc' and len(s['model_hash']) == 64
    assert {d['source_type'] for d in s['by_source_type']} == {'official', 'quoted'}
    assert sum(sc[1]['s_first']) == 15                                   # option order balanced, recorded per sample


def test_kill_and_resume(tiny_model, tmp_path):
    f = _samples(tmp_path / 's.jsonl', 80)
    args = [NAVAB, 'evaluate', '--samples', str(f), '--model', str(tiny_model), '--batch-size', '2', '--method', 'aj', '--max-new-tokens', '3']
    subprocess.run(args + ['--out', str(tmp_path / 'clean')], check=True, capture_output=True)
    out = tmp_path / 'killed'
    for wait in (0.5, 2.0):                                              # two kills: early, then mid-run
        p = subprocess.Popen(args + ['--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        while time.time() - t0 < 60 and len(list((out / 'cache').glob('part-*.parquet'))) < 3 * (wait > 1) + 1:
            time.sleep(0.05)
        time.sleep(wait / 10)
        p.send_signal(signal.SIGKILL); p.wait()
        assert not (out / 'summary.json').exists()
    done_before = sum(len(pl.read_parquet(x)) for x in (out / 'cache').glob('part-*.parquet'))
    assert done_before > 0
    subprocess.run(args + ['--out', str(out)], check=True, capture_output=True)
    a, b = (pl.read_parquet(d / 'scores.parquet') for d in (tmp_path / 'clean', out))
    assert a.drop('model').equals(b.drop('model'))
    ra, rb = (pl.read_parquet(d / 'requests.parquet') for d in (tmp_path / 'clean', out))
    assert ra.equals(rb) and rb.select('sample_id', 'stage', 'option').n_unique() == len(rb) == 320
    assert not list(out.rglob('*.tmp'))


def test_compare_cli(tiny_model, tmp_path):
    from navab.models import make_tiny_model
    other = make_tiny_model(tmp_path / 'other', seed=3)
    f = _samples(tmp_path / 's.jsonl', 20)
    for m, o in ((tiny_model, 'a'), (other, 'b')):
        subprocess.run([NAVAB, 'evaluate', '--samples', str(f), '--model', str(m), '--out', str(tmp_path / o)], check=True, capture_output=True)
    r = subprocess.run([NAVAB, 'compare', str(tmp_path / 'a'), str(tmp_path / 'b')], capture_output=True, text=True, check=True)
    assert '20 common samples' in r.stdout and 'exact McNemar' in r.stdout and 'paired-bootstrap CI' in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize('model', ['smollm2-135m', 'gemma3-270m'])
def test_real_models_on_navab_hk(shared, model, tmp_path):
    for name, method, limit in (('human_statement_result.json', 'mc', None), ('official_statement_result.json', 'mc', None),
                                ('human_statement_result.json', 'aj', 8)):
        out = tmp_path / f'{method}-{name[:5]}'
        cmd = [NAVAB, 'evaluate', '--samples', str(shared / 'navab-hk' / name), '--nation', 'CN', '--model', model,
               '--method', method, '--max-new-tokens', '24', '--out', str(out)] + (['--limit', str(limit)] if limit else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        quarantined = name.startswith('official')     # one English statement in the Chinese file: scored without it, exit 1
        assert r.returncode == (1 if quarantined else 0) and 'Traceback' not in r.stderr, r.stderr[-2000:]
        if quarantined: assert '1 of 40 rows quarantined' in r.stderr.strip().splitlines()[-1], r.stderr[-500:]
        s = json.loads((out / 'summary.json').read_text())
        sc = pl.read_parquet(out / 'scores.parquet')
        assert s['n'] == len(sc) == (limit or {'human': 35, 'offic': 39}[name[:5]])
        assert 0 <= s['ci_low'] <= s['accuracy'] <= s['ci_high'] <= 1 and s['model'] == model
        assert set(sc['source_type']) == {'quoted' if name.startswith('human') else 'official'}
        req = pl.read_parquet(out / 'requests.parquet')
        assert req.columns == REQ_COLS and req['logprob'].is_finite().all() and (req['logprob'] < 0).all()
        if method == 'aj':
            assert sc['answer'].str.len_chars().min() > 0 and 'mc_aj' in s and s['mc_aj']['n'] == limit


@pytest.mark.slow
def test_opinions_five_nations(shared, tmp_path):
    items = read_opinions(shared / 'global-opinions' / 'eval.json').valid
    few = pl.concat([g.head(4) for _, g in items.group_by('nation', maintain_order=True)])
    s = evaluate(few, 'gemma3-270m', tmp_path, method='opinions', progress=False)
    assert s['n'] == 20 and {d['nation'] for d in s['by_nation']} == {'CN', 'US', 'UK', 'FR', 'DE'}
    sc = pl.read_parquet(tmp_path / 'scores.parquet')
    assert ((sc['model_dist'].list.sum() - 1).abs() < 1e-6).all() and sc['similarity'].is_between(0, 1).all()
    assert s['jsd_base'] == 2 and 0 < s['similarity'] < 1


def test_grid_limits_per_method(shared, tiny_model, tmp_path):
    "evaluate_pair: --opinions-limit caps the opinions run, --aj-limit the AJ run, --limit the rest; each run's key holds its own cap."
    from navab.runs import evaluate_pair
    samples = tmp_path / 'fr.parquet'
    pl.DataFrame(dict(id=[f'fr{i}' for i in range(6)], nation=['FR'] * 6, lang=['fr'] * 6, source_type=['official', 'quoted'] * 3,
                      question=[f"L'État doit-il agir {i} ?" for i in range(6)], statement=[f"L'État doit agir {i}." for i in range(6)],
                      reverse_statement=[f"L'État ne doit pas agir {i}." for i in range(6)])).write_parquet(samples)
    goqa = shared / 'global-opinions' / 'eval.json'
    kw = dict(opinions=goqa, max_new_tokens=4)
    d = evaluate_pair(str(tiny_model), 'FR', samples, ['mc', 'aj', 'opinions'], tmp_path / 'out', limit=5, aj_limit=2, opinions_limit=3, **kw)
    assert [len(pl.read_parquet(d[m] / 'scores.parquet')) for m in ('mc', 'aj', 'opinions')] == [5, 2, 3]
    d = evaluate_pair(str(tiny_model), 'FR', samples, ['opinions'], tmp_path / 'out', limit=4, **kw)   # no opinions cap: --limit
    assert len(pl.read_parquet(d['opinions'] / 'scores.parquet')) == 4
