"""Robustness: `navab robustness` outputs, the shared score cache (a duplicated variation costs no forward pass), the
base variation equals `navab evaluate`, the format test, and the real embedded models on NaVAB HK."""
import json, subprocess, sys
from pathlib import Path
import numpy as np
import polars as pl
import pytest
from navab.robustness import robustness, load_variations, format_test, robustness_section, VARIATION_FIELDS

NAVAB = str(Path(sys.executable).parent / 'navab')
HEAD = 'name,option_order,labels,template_lang,chat,persona,norm\n'


def _samples(path, n):
    rows = [dict(id=f'q{i:03d}', nation=('US', 'CN')[i % 2], lang=('en', 'zh')[i % 2], source_type=('official', 'quoted')[i % 3 == 0],
                 question=f'Should the city build road number {i}?', statement=f'The city should build road {i}.',
                 reverse_statement=f'The city should not build road {i}.') for i in range(n)]
    path.write_text('\n'.join(json.dumps(r, ensure_ascii=False) for r in rows) + '\n')
    return path


def _table(path, rows):
    path.write_text(HEAD + ''.join(r + '\n' for r in rows))
    return path


def test_cli_outputs_share_the_evaluate_cache(tiny_model, tmp_path):
    f = _samples(tmp_path / 's.jsonl', 20)
    ev = tmp_path / 'eval'
    subprocess.run([NAVAB, 'evaluate', '--samples', str(f), '--model', str(tiny_model), '--out', str(ev)], check=True, capture_output=True)
    v = _table(tmp_path / 'v.csv', ['s_first,s_first,A/B,native,no,no,none', 'base,seeded,A/B,native,no,no,none', 'numbers,seeded,1/2,native,no,no,none',
                                    'text,seeded,text,en,no,yes,token', 'chat,seeded,A/B,native,yes,no,none', 'base_again,seeded,A/B,native,no,no,none'])
    out = tmp_path / 'rob'
    r = subprocess.run([NAVAB, 'robustness', '--samples', str(f), '--model', str(tiny_model), '--variations', str(v), '--cache', str(ev / 'cache'),
                        '--permutations', '500', '--out', str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'keep their decision under every variation' in r.stdout and 'permutation test p =' in r.stdout
    vt, ft = pl.read_parquet(out / 'variations.parquet'), pl.read_parquet(out / 'flips.parquet')
    s = json.loads((out / 'summary.json').read_text())
    assert vt['name'].to_list() == ['s_first', 'base', 'numbers', 'text', 'chat', 'base_again']
    assert vt.filter(pl.col('name') == 'chat')['status'].item() == 'skipped' and 'no chat template' in s['skipped']['chat']
    ok = vt.filter(pl.col('status') == 'ok')
    assert (ok['n'] == 20).all() and (ok['ci_low'] <= ok['accuracy']).all() and (ok['accuracy'] <= ok['ci_high']).all()
    assert ft.columns[:3] == ['sample_id', 'nation', 'source_type'] and len(ft) == 20 and ft['sample_id'].n_unique() == 20
    assert set(s['variations']) == {'s_first', 'base', 'numbers', 'text', 'base_again'} and 'chat' not in ft.columns
    # the base variation asks exactly what `navab evaluate` asked: same decisions, and every request came from its cache
    sc = pl.read_parquet(ev / 'scores.parquet')
    assert ft['base'].to_list() == sc['correct'].to_list()
    assert s['cache']['new_requests']['base'] == 0 and s['cache']['new_requests']['base_again'] == 0
    assert s['cache']['new_requests']['numbers'] == 40 and s['cache']['new_requests']['s_first'] == 20   # half of s_first is in base
    assert ft['base'].to_list() == ft['base_again'].to_list()
    # the summary's figures follow from the tables
    acc = dict(zip(ok['name'], ok['accuracy']))
    assert s['spread'] == pytest.approx(max(acc.values()) - min(acc.values()))
    assert s['stable_share'] == pytest.approx(ft['stable'].mean()) and ((ft['flips'] == 0) == ft['stable']).all()
    assert s['single_run'] == 's_first' and s['single_run_ci_width'] == pytest.approx(ok['ci_high'][0] - ok['ci_low'][0])
    assert 0 < s['format_test']['p_value'] <= 1 and s['format_test']['n_permutations'] == 500
    sec = robustness_section(out)
    assert len(sec['text']) == 4 and sec['variations'].equals(vt)


def test_duplicate_variation_costs_zero_forwards(tiny_model, tmp_path, monkeypatch):
    import navab.score
    from navab.models import load_model
    seen = []
    real = navab.score._score_tokens
    def counting(model, seqs, *a, **k):
        seen.append(len(seqs))
        yield from real(model, seqs, *a, **k)
    monkeypatch.setattr(navab.score, '_score_tokens', counting)
    S = pl.read_ndjson(_samples(tmp_path / 's.jsonl', 12)).with_columns(pl.lit(None, pl.String).alias('topic'))
    m = load_model(str(tiny_model))
    one = [dict(name='base', option_order='seeded', labels='1/2', template_lang='native', chat='no', persona='no', norm='none')]
    two = one + [dict(one[0], name='same_again')]
    robustness(S, m, tmp_path / 'a', one, n_permutations=10, progress=False)
    forwards_one = sum(seen)
    seen.clear()
    s = robustness(S, m, tmp_path / 'b', two, n_permutations=10, progress=False)
    assert forwards_one == 24 and sum(seen) == forwards_one                  # the copy added no request to the model
    assert s['cache']['new_requests'] == {'base': 24, 'same_again': 0}
    seen.clear()
    robustness(S, m, tmp_path / 'b', two, n_permutations=10, progress=False)   # a rerun computes nothing
    assert sum(seen) == 0


def test_format_test_and_variations_table(tmp_path):
    rng = np.random.default_rng(0)
    noise = (rng.random((80, 5)) < 0.6).astype(int)
    planted = noise.copy(); planted[:, 2] = 1
    a, b = format_test(noise, 2000, seed=1), format_test(planted, 2000, seed=1)
    assert a['p_value'] > 0.05 and b['p_value'] < 0.01 and b['cochran_p'] < 0.01 and a == format_test(noise, 2000, seed=1)
    V = load_variations()
    assert V['name'].n_unique() == len(V) >= 8 and set(V['chat']) == {'yes', 'no'}
    for f, allowed in VARIATION_FIELDS.items():
        assert set(V[f]) <= set(allowed)
    bad = _table(tmp_path / 'v.csv', ['ok,seeded,A/B,native,no,no,none', 'odd,seeded,X/Y,native,no,no,none'])
    r = subprocess.run([NAVAB, 'robustness', '--samples', str(_samples(tmp_path / 's.jsonl', 3)), '--model', 'x', '--variations', str(bad),
                        '--out', str(tmp_path / 'o')], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().count('\n') == 0
    assert "v.csv: row 3, field 'labels': 'X/Y' is not one of A/B, 1/2, text" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize('model', ['smollm2-135m', 'gemma3-270m'])
def test_real_models_on_navab_hk(shared, model, tmp_path):
    hk = shared / 'navab-hk'
    out = tmp_path / model
    r = subprocess.run([NAVAB, 'robustness', '--samples', str(hk / 'human_statement_result.json'), str(hk / 'official_statement_result.json'),
                        '--nation', 'CN', '--model', model, '--limit', '3', '--permutations', '1000', '--out', str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / 'summary.json').read_text())
    ft = pl.read_parquet(out / 'flips.parquet')
    assert s['n_samples'] == len(ft) == 6                     # the first 3 valid samples of each file and s['model'] == model and 0 <= s['stable_share'] <= 1
    assert ('chat' in s['skipped']) == (model == 'gemma3-270m')            # SmolLM2 is an instruct model with a chat template
    assert s['n_variations'] == 8 - (model == 'gemma3-270m')
    nr = s['cache']['new_requests']                                        # base (first) asks half of s_first and half of rs_first
    assert nr['base'] == nr['s_first'] + nr['rs_first'] == 12
    vt = pl.read_parquet(out / 'variations.parquet').filter(pl.col('status') == 'ok')
    assert vt['accuracy'].is_between(0, 1).all() and (vt['n'] == 6).all()
