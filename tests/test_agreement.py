"""Do the benchmarks agree (issue 25): the cell table, Spearman's rho per pair of benchmarks with a bootstrap CI over
cells, Kendall's W per model, on run folders with known headlines; the study report's section; the same on real runs."""
import json, math, re
from pathlib import Path
import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr, friedmanchisquare
from navab.analysis import agreement_cells, cells_wide, spearman_ci, rank_agreement, kendall_w, concordance_table
from navab.stats import bootstrap_ci

ROOT = Path(__file__).resolve().parent.parent
NATS = ['CN', 'US', 'UK', 'FR', 'DE']


def _summary_run(out, model, nation, task, value, n=20, metric='accuracy', **extra) -> dict:
    "A run folder with only the summary.json a task writes, its headline known."
    d = Path(out)/'runs'/model/nation/task; d.mkdir(parents=True, exist_ok=True)
    s = {'n': n, metric: value, 'ci_low': value - 0.05, 'ci_high': value + 0.05, 'model': model,
         'task': dict(name=task, metric=metric, value='correct' if metric == 'accuracy' else metric), **extra}
    (d/'summary.json').write_text(json.dumps(s), encoding='utf-8')
    return dict(model=model, nation=nation, method=task, dir=str(d))


@pytest.fixture
def concordant(tmp_path):
    "Two models x five nations, mc and normad ordering all ten cells alike, and a cell only mc scored."
    mc = {(m, n): 0.4 + 0.05 * j + 0.3 * (m == 'b') for m in 'ab' for j, n in enumerate(NATS)}
    runs = [_summary_run(tmp_path, m, n, 'mc', v) for (m, n), v in mc.items()]
    runs += [_summary_run(tmp_path, m, n, 'normad', v / 2, n=35) for (m, n), v in mc.items()]   # a monotone function of mc
    runs.append(_summary_run(tmp_path, 'a', 'JP', 'mc', 0.9))
    return runs


def test_cells_keep_two_or_more_benchmarks(concordant, tmp_path):
    c = agreement_cells(concordant)
    assert c.height == 20 and c.select('model', 'nation').n_unique() == 10 and 'JP' not in c['nation'].to_list()
    assert agreement_cells(concordant, min_benchmarks=1).height == 21
    assert c.filter(pl.col('benchmark') == 'normad')['n'].unique().to_list() == [35] and c['n_benchmarks'].unique().to_list() == [2]
    w = cells_wide(c)
    assert w.height == 10 and w.columns == ['model', 'nation', 'mc (accuracy)', 'normad (accuracy)']
    assert w.filter((pl.col('model') == 'a') & (pl.col('nation') == 'CN')).row(0)[2:] == ('0.40 [0.35, 0.45] n=20', '0.20 [0.15, 0.25] n=35')
    # mc's headline is its debiased accuracy when both orders were scored
    deb = _summary_run(tmp_path/'deb', 'a', 'CN', 'mc', 0.9, order='both', accuracy_debiased=dict(estimate=0.55, ci_low=0.5, ci_high=0.6))
    d = agreement_cells([deb, _summary_run(tmp_path/'deb', 'a', 'CN', 'pref', 0.7)])
    assert d.filter(pl.col('benchmark') == 'mc').select('metric', 'value', 'ci_low').row(0) == ('debiased accuracy', 0.55, 0.5)
    # tasks= chooses the benchmarks; a name no run has is an error that names it
    assert agreement_cells(concordant, tasks=['mc']).height == 0
    with pytest.raises(ValueError, match='blend: no run'): agreement_cells(concordant, tasks=['mc', 'blend'])


def test_spearman_concordant_is_one_with_n_cells(concordant):
    ra = rank_agreement(agreement_cells(concordant))
    assert ra.height == 1
    r = ra.row(0, named=True)
    assert (r['benchmark_a'], r['benchmark_b'], r['n'], r['models'], r['nations']) == ('mc', 'normad', 10, 2, 5)
    assert r['spearman'] == pytest.approx(1.0, abs=1e-12) and (r['ci_low'], r['ci_high']) == (1.0, 1.0)
    assert r['n_resamples'] == 10_000 and 9_990 < r['n_valid'] <= 10_000 and r['note'] == ''


def test_spearman_matches_scipy_and_bootstrap_is_seeded(tmp_path):
    rng = np.random.default_rng(7)
    x, y = rng.random(10), rng.random(10)
    runs = [_summary_run(tmp_path, m, n, t, float(v)) for t, vals in (('mc', x), ('opinions', y)) for (m, n), v in
            zip([(m, n) for m in 'ab' for n in NATS], vals)]
    c = agreement_cells(runs)
    r1, r2, r3 = rank_agreement(c, seed=0, n_resamples=2000), rank_agreement(c, seed=0, n_resamples=2000), rank_agreement(c, seed=1, n_resamples=2000)
    assert r1.equals(r2) and not r1.equals(r3)                      # seeded: reproducible, and the seed matters
    r = r1.row(0, named=True)
    assert r['spearman'] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12) and r['n'] == 10 and r['n_resamples'] == 2000
    assert -1 <= r['ci_low'] < r['spearman'] < r['ci_high'] <= 1
    # the interval is the percentile bootstrap over cells (sorted by model and nation, resampled with replacement) of spearmanr itself
    order = np.argsort([f'{m} {n}' for m in 'ab' for n in NATS], kind='stable'); x, y = x[order], y[order]
    i = np.random.default_rng(0).integers(0, 10, size=(2000, 10))
    ref = np.array([spearmanr(x[k], y[k]).statistic for k in i]); ref = ref[~np.isnan(ref)]
    assert r['n_valid'] == len(ref) and (r['ci_low'], r['ci_high']) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])), abs=1e-12)


def test_spearman_few_or_constant_cells():
    s = spearman_ci([1, 2, 3], [1, 3, 2])                          # three cells: one resample in nine is one cell thrice
    assert s['rho'] == pytest.approx(0.5) and (s['ci_low'], s['ci_high']) == (-1.0, 1.0) and abs(s['n_valid'] / 10_000 - 8 / 9) < 0.01
    for x, y in (([1, 2], [2, 1]), ([1, 2, 3], [4, 4, 4])):
        s = spearman_ci(x, y); assert math.isnan(s['rho']) and s['n_valid'] == 0 and s['n'] == len(x)


def test_kendall_w_by_hand():
    assert kendall_w([[1, 2, 3, 4], [1, 2, 3, 4]])['W'] == 1.0              # identical rankings
    assert kendall_w([[1, 2, 3, 4], [4, 3, 2, 1]])['W'] == 0.0              # two raters exactly reversed
    w = kendall_w([[3, 1, 2], [3, 2, 1], [3, 1, 2]])                        # R = (9, 4, 5), S = 14, W = 12*14 / (9*24) = 7/9
    assert (w['m'], w['k'], w['df']) == (3, 3, 2) and w['W'] == pytest.approx(7 / 9) and w['chi2'] == pytest.approx(3 * 2 * 7 / 9)
    X = [[1, 1, 2, 3], [1, 2, 2, 3], [3, 3, 3, 4]]                          # ties: T = 6, 6, 24
    w, f = kendall_w(X), friedmanchisquare(*np.array(X).T)
    assert w['W'] == pytest.approx(0.875) and w['chi2'] == pytest.approx(f.statistic) and w['p_value'] == pytest.approx(f.pvalue)


def test_concordance_per_model(concordant, tmp_path):
    ct = concordance_table(agreement_cells(concordant))
    assert ct[['model', 'm', 'k', 'W']].rows() == [('a', 2, 5, 1.0), ('b', 2, 5, 1.0)] and ct['nations'][0] == 'CN, DE, FR, UK, US'
    # a third benchmark that ranks the nations backwards and covers three of them: k = 3 (the nations all cover)
    back = [_summary_run(tmp_path, m, n, 'opinions', 0.9 - 0.1 * j, n=12, metric='similarity') for m in 'ab' for j, n in enumerate(NATS[:3])]
    ct = concordance_table(agreement_cells(concordant + back))
    assert ct[['m', 'k']].rows() == [(3, 3), (3, 3)] and ct['nations'].to_list() == ['CN, UK, US'] * 2
    assert ct['W'][0] == pytest.approx(kendall_w([[0.4, 0.5, 0.45], [0.2, 0.25, 0.225], [0.9, 0.7, 0.8]])['W']) and ct['W'][0] < 0.5
    assert concordance_table(agreement_cells(concordant).filter(pl.col('nation') == 'CN'))['note'].to_list() == ['the benchmarks share 1 nation(s): nothing to rank'] * 2


# ---- the study report's section ----

def _scored_run(out, model, nation, task, p, n, seed) -> dict:
    "A run folder with scores.parquet and its summary.json, as a task writes them: per-sample decisions, or opinions' similarities."
    d = Path(out)/'runs'/model/nation/task; d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if task == 'opinions':
        v = np.clip(rng.normal(p, 0.1, n), 0, 1)
        pl.DataFrame(dict(sample_id=[f'{nation}q{i}' for i in range(n)], nation=[nation] * n, similarity=v)).write_parquet(d/'scores.parquet')
        metric, col = 'similarity', 'similarity'
    else:
        v = (rng.random(n) < p).astype(float)
        pl.DataFrame(dict(sample_id=[f'{nation}{i}' for i in range(n)], nation=[nation] * n, source_type=['official', 'quoted'] * (n // 2),
                          topic=['t1', 't2'] * (n // 2), pred=['A'] * n, gold=['A' if c else 'B' for c in v], correct=v.astype(bool),
                          margin=np.where(v > 0, 1.0, -1.0))).write_parquet(d/'scores.parquet')
        metric, col = 'accuracy', 'correct'
    est, lo, hi = bootstrap_ci(v, seed=0)
    (d/'summary.json').write_text(json.dumps({'n': n, metric: est, 'ci_low': lo, 'ci_high': hi, 'model': model, 'method': task,
                                              'task': dict(name=task, metric=metric, value=col)}), encoding='utf-8')
    return dict(model=model, nation=nation, method=task, dir=str(Path('runs')/model/nation/task))


def _render(out: Path, runs: list) -> str:
    from navab.reports import execute_report
    (out/'runs.json').write_text(json.dumps(runs), encoding='utf-8')
    r = execute_report(ROOT/'nbs'/'reports'/'study.ipynb', dict(runs_file='runs.json', seed=0), out/'study.ipynb', out/'study.html', out, timeout=300)
    assert r['status'] == 'ok', r
    return (out/'study.html').read_text(encoding='utf-8')


def test_study_report_section(tmp_path):
    runs = [_scored_run(tmp_path, m, n, t, p, 20 if t != 'opinions' else 10, seed=i) for i, (m, n, t, p) in enumerate(
            (m, n, t, 0.3 + 0.1 * j + 0.1 * (m == 'tiny-b') + 0.05 * k) for m in ('tiny-a', 'tiny-b') for j, n in enumerate(NATS)
            for k, t in enumerate(('mc', 'normad', 'opinions')))]
    runs.append(_scored_run(tmp_path, 'tiny-a', 'JP', 'mc', 0.5, 20, seed=99))        # one benchmark only: left out
    page = _render(tmp_path, runs)
    sec = page[page.index('Do the benchmarks agree?'):page.index('>Robustness<')]
    full = [dict(r, dir=str(tmp_path/r['dir'])) for r in runs]
    c = agreement_cells(full)
    assert '10 cells with two or more benchmarks, 1 with one left out' in sec
    for col in ('mc (accuracy)', 'normad (accuracy)', 'opinions (similarity)'): assert f'<th>{col}</th>' in sec
    r0 = c.row(0, named=True)     # tiny-a CN mc: its value, CI and n as the cell table shows them
    assert f"{r0['value']:.2f} [{r0['ci_low']:.2f}, {r0['ci_high']:.2f}] n=20" in sec
    ra = rank_agreement(c, seed=0)
    assert ra['n'].to_list() == [10] * 3
    for r in ra.iter_rows(named=True):   # each pair's row: rho, CI, n cells, valid resamples
        assert re.search(rf"<td>{r['benchmark_a']}</td><td>{r['benchmark_b']}</td><td>10</td><td>2</td><td>5</td><td>{r['spearman']:.3f}</td>"
                         rf"<td>{r['ci_low']:.3f}</td><td>{r['ci_high']:.3f}</td><td>{r['n_valid']}</td><td>10000</td>", sec), r
    ct = concordance_table(c)
    for r in ct.iter_rows(named=True):
        assert f"<td>{r['model']}</td><td>3</td><td>5</td><td>{r['W']:.3f}</td>" in sec
    assert "Kendall's W per model" in sec and "Spearman's rho of each pair" in sec
    assert 'Models x nations' in page and 'MC accuracy per model and nation' in page      # the report's other sections still run
    # one benchmark per cell: one sentence, no tables
    out = tmp_path/'one'; out.mkdir()
    page = _render(out, [_scored_run(out, m, n, 'mc', 0.6, 20, seed=1) for m in ('tiny-a', 'tiny-b') for n in ('CN', 'US')])
    sec = page[page.index('Do the benchmarks agree?'):page.index('>Robustness<')]
    assert 'No model x nation cell was scored by two or more benchmarks (4 cells, each by one: mc)' in sec and '<table' not in sec


# ---- real runs: the embedded SmolLM2 on NaVAB HK (China) and GlobalOpinionQA ----

@pytest.mark.slow
def test_real_runs(shared, tmp_path):
    "SmolLM2 on China with MC (both orders: the debiased headline) and GlobalOpinionQA, and on the US with GlobalOpinionQA only."
    from navab.data import read_samples, read_opinions
    from navab.evaluate import evaluate
    out, m = tmp_path, 'smollm2-135m'
    hk = read_samples(shared/'navab-hk'/'human_statement_result.json', 'CN').valid   # the two shortest samples: long Chinese prompts are slow on CPU
    hk = hk.with_columns((pl.col('question') + pl.col('statement') + pl.col('reverse_statement')).str.len_chars().alias('_len')).sort('_len', 'id').head(2).drop('_len')
    op = read_opinions(shared/'global-opinions'/'eval.json', ['CN', 'US']).valid
    runs = []
    for nation, task, items, kw in (('CN', 'mc', hk, dict(order='both')), ('CN', 'opinions', op.filter(pl.col('nation') == 'CN').head(3), {}),
                                    ('US', 'opinions', op.filter(pl.col('nation') == 'US').head(3), {})):
        d = out/'runs'/m/nation/task
        evaluate(items, m, d, task=task, progress=False, seed=0, **kw)
        runs.append(dict(model=m, nation=nation, method=task, dir=str(d)))
    c = agreement_cells(runs)
    assert c.select('model', 'nation').unique().rows() == [(m, 'CN')]                   # US has one benchmark: left out
    assert c['benchmark'].to_list() == ['mc', 'opinions'] and c['n'].to_list() == [2, 3]
    assert c['metric'].to_list() == ['debiased accuracy', 'similarity']
    s = {b: json.loads((out/'runs'/m/'CN'/b/'summary.json').read_text()) for b in ('mc', 'opinions')}
    assert c['value'].to_list() == [s['mc']['accuracy_debiased']['estimate'], s['opinions']['similarity']]
    assert c['ci_high'].to_list() == [s['mc']['accuracy_debiased']['ci_high'], s['opinions']['ci_high']]
    ra = rank_agreement(c)
    assert ra['n'].to_list() == [1] and ra['note'].to_list() == ['fewer than 3 common cells'] and ra['spearman'].is_nan().all()
    ct = concordance_table(c)
    assert ct[['m', 'k']].row(0) == (2, 1) and 'share 1 nation' in ct['note'][0] and math.isnan(ct['W'][0])
    page = _render(out, [dict(r, dir=str(Path(r['dir']).relative_to(out))) for r in runs])
    sec = page[page.index('Do the benchmarks agree?'):page.index('>Robustness<')]
    assert '1 cells with two or more benchmarks, 1 with one left out' in sec and 'mc (debiased accuracy)' in sec and 'fewer than 3 common cells' in sec
