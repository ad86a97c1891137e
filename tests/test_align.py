"""Alignment: the held-out split (seeded, no topic leak), bad pairs and untrainable models (one clear line), a run killed
with kill -9 resumes to the same adapter, the result folder as `--model` in evaluate and grid, and SmolLM2-135M LoRA on
real GlobalOpinionQA pairs with before/after evaluation."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import polars as pl
import pytest
from navab.align import split_pairs, read_pairs, _frame, align

NAVAB = str(Path(sys.executable).parent / 'navab')
ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE='1')


def _pairs(path, n=24, topics=6):
    "n English pairs over `topics` topics: dpo_pairs.jsonl with the samples.parquet beside it (topics), as extraction writes them."
    rows = [dict(id=f'p{i:02d}', prompt=f'Should the city fund project {i}?', chosen=f'Yes, the city should fund project {i}.',
                 rejected=f'No, project {i} is a waste.') for i in range(n)]
    path.mkdir(parents=True, exist_ok=True)
    (path / 'dpo_pairs.jsonl').write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
    pl.DataFrame(dict(id=[r['id'] for r in rows], topic=[f't{i % topics}' for i in range(n)])).write_parquet(path / 'samples.parquet')
    return path / 'dpo_pairs.jsonl'


def _cli(*args):
    return subprocess.run([NAVAB, *map(str, args)], capture_output=True, text=True, env=ENV)


def test_split_groups_by_topic_seeded_and_falls_back(tmp_path):
    P, Q, n = read_pairs(_pairs(tmp_path / 'x', 40, 8), 'US')
    assert (n, len(P), len(Q)) == (40, 40, 0) and P['topic'].n_unique() == 8
    for seed in range(5):
        tr, te, info = split_pairs(P, 0.3, seed)
        assert info['by'] == 'topic' and not set(tr['topic']) & set(te['topic'])       # no topic on both sides
        assert len(tr) + len(te) == 40 and not set(tr['id']) & set(te['id'])
        assert split_pairs(P, 0.3, seed)[2]['test_ids'] == info['test_ids']             # seeded
    assert len({tuple(split_pairs(P, 0.3, s)[2]['test_ids']) for s in range(5)}) > 1     # and the seed matters
    tr, te, info = split_pairs(P.with_columns(pl.lit('one').alias('topic')), 0.3, 0)    # one topic: by pair, with a warning
    assert info['by'] == 'id' and 'only 1 distinct topics' in info['warning'] and len(te) == 12


def test_bad_pairs_and_models_give_one_clear_line(tmp_path, tiny_model):
    f = tmp_path / 'dpo_pairs.jsonl'
    rows = [dict(id='a', prompt='Q?', chosen='', rejected='No.'), dict(id='b', prompt='Q?', chosen='Same.', rejected='Same.'),
            dict(id='c', prompt='Q?', chosen='y' * 3000, rejected='No.'), dict(id='d', prompt='Q?', chosen='政府应当保护环境', rejected='No.'),
            dict(id='e', prompt='Q?', chosen='Yes.', rejected='No.')]
    f.write_text('\n'.join(json.dumps(r, ensure_ascii=False) for r in rows) + '\n')
    P, Q, n = read_pairs(f, 'US')
    assert (n, len(P), Q.select('file', 'row').n_unique()) == (5, 1, 4)                  # in = out + quarantined
    got = {r['row']: (r['field'], r['reason']) for r in Q.iter_rows(named=True)}
    assert got[1] == ('statement', 'empty') and got[2][1].startswith('identical') and 'over the 1000-character limit' in got[3][1]
    assert got[4] == ('statement', 'mostly Chinese characters: not written in en') and set(Q['file']) == {str(f)}
    r = _cli('align', '--pairs', f, '--model', tiny_model, '--nation', 'US', '--out', tmp_path / 'o')
    assert r.returncode == 1 and r.stderr.strip().splitlines() == ['navab: error: too few pairs to split: 1 valid pairs (need at least 4: some to train on, some held out)']
    good = _pairs(tmp_path / 'g')
    r = _cli('align', '--pairs', good, '--model', 'http://127.0.0.1:9/v1#m', '--nation', 'US', '--out', tmp_path / 'o')
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and 'server URL cannot be trained' in r.stderr
    bert = tmp_path / 'bert'; bert.mkdir()
    (bert / 'config.json').write_text(json.dumps(dict(model_type='bert', architectures=['BertModel'])))
    r = _cli('align', '--pairs', good, '--model', bert, '--nation', 'US', '--out', tmp_path / 'o')
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and 'no causal-LM head' in r.stderr


def _adapter(d):
    from safetensors.numpy import load_file
    return load_file(str(Path(d) / 'adapter_model.safetensors'))


@pytest.fixture(scope='module')
def resumed(tmp_path_factory, tiny_model):
    "The same tiny training run uninterrupted and killed with kill -9 after its first checkpoint, then restarted."
    d = tmp_path_factory.mktemp('align')
    pairs = _pairs(d / 'pairs')
    cmd = lambda out: [NAVAB, 'align', '--pairs', pairs, '--model', tiny_model, '--nation', 'US', '--out', out, '--steps', '10',
                       '--save-steps', '5', '--batch-size', '2', '--lr', '0.01', '--methods', 'mc', '--eval-limit', '4', '--no-progress']
    a = subprocess.run(list(map(str, cmd(d / 'a'))), capture_output=True, text=True, env=ENV)
    assert a.returncode == 0, a.stderr[-3000:]
    p = subprocess.Popen(list(map(str, cmd(d / 'b'))), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    t0 = time.time()
    while not list((d / 'b' / 'checkpoints').glob('*/checkpoint-*/trainer_state.json')) and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    killed_at = sorted(c.parent.name for c in (d / 'b' / 'checkpoints').glob('*/checkpoint-*/trainer_state.json'))
    finished = (d / 'b' / 'adapter_model.safetensors').exists()
    b = subprocess.run(list(map(str, cmd(d / 'b'))), capture_output=True, text=True, env=ENV)
    assert b.returncode == 0, b.stderr[-3000:]
    return dict(dir=d, a=d / 'a', b=d / 'b', killed_at=killed_at, finished=finished, pairs=pairs, stdout=a.stdout)


def test_kill9_resumes_to_the_same_adapter(resumed):
    assert resumed['killed_at'] and not resumed['finished'], resumed        # killed after a checkpoint, before the end
    ma, mb = (json.loads((resumed[k] / 'navab_align.json').read_text()) for k in 'ab')
    assert ma['resumed_from'] is None and mb['resumed_from'] and mb['global_step'] == ma['global_step'] == 10
    A, B = _adapter(resumed['a']), _adapter(resumed['b'])
    assert A.keys() == B.keys() and len(A)
    assert max(float(np.abs(A[k] - B[k]).max()) for k in A) < 1e-5
    ha, hb = ([x['loss'] for x in json.loads((resumed[k] / 'log_history.json').read_text()) if 'loss' in x] for k in 'ab')
    assert np.allclose(ha, hb[-len(ha):] if len(hb) >= len(ha) else hb, atol=1e-5)
    s = json.loads((resumed['a'] / 'align.json').read_text())
    assert [r['arm'] for r in s['results']] == ['base', 'aligned'] and s['comparisons'][0]['b'] == 'aligned'
    assert 'accuracy' in resumed['stdout'] and 'McNemar p =' in resumed['stdout']


def test_result_folder_is_a_model_for_evaluate_and_grid(resumed, tiny_model, tmp_path):
    from navab.models import load_model, resolve
    from navab.grid import run_grid
    a = resumed['a']
    assert resolve(str(a)).kind == 'adapter'
    _, _, ib = load_model(str(tiny_model)); _, _, ia = load_model(str(a))
    assert ia.hash != ib.hash and ia.kind == 'adapter'
    test = pl.read_parquet(a / 'eval' / 'US' / 'aligned-mc' / 'scores.parquet')
    s = json.loads((a / 'eval' / 'US' / 'aligned-mc' / 'summary.json').read_text())
    assert s['model_hash'] == ia.hash and len(test) == s['n']
    P, _, _ = read_pairs(resumed['pairs'], 'US')
    f = tmp_path / 'us.parquet'
    P.select('id', 'nation', 'lang', 'topic', pl.lit('official').alias('source_type'), 'question', 'statement', 'reverse_statement').write_parquet(f)
    r = _cli('evaluate', '--samples', f, '--model', a, '--out', tmp_path / 'ev2')
    assert r.returncode == 0 and json.loads((tmp_path / 'ev2' / 'summary.json').read_text())['model_hash'] == ia.hash, r.stderr[-2000:]
    idx = run_grid([str(tiny_model), str(a)], ['US'], {'US': [f]}, ['mc', 'align'], tmp_path / 'grid', progress=False,
                   align_options=dict(steps=2, save_steps=2, batch_size=2))            # --methods mc,align: alignment reports too
    recs = {(r['kind'], r['model']): r for r in json.loads((tmp_path / 'grid' / 'grid.json').read_text())['records']}
    tiny = Path(tiny_model).name
    assert recs['run', tiny]['status'] == recs['run', 'a']['status'] == recs['study', '']['status'] == 'ok', recs
    assert recs['align', tiny]['status'] == 'ok' and 'aligned' in recs['align', tiny]['headline'], recs['align', tiny]
    assert f'href="{recs["align", tiny]["html"]}"' in idx.read_text() and (tmp_path / 'grid' / recs['align', tiny]['html']).is_file()
    assert recs['align', 'a']['status'] == 'failed' and 'align its base model instead' in recs['align', 'a']['error']   # an adapter is not re-aligned
    ev = tmp_path / 'grid' / 'align' / tiny / 'US' / 'eval' / 'US'
    assert not (ev / 'base-mc' / 'cache').exists() and (ev / 'aligned-mc' / 'cache').is_dir()   # the base arm read the grid's score cache
    from navab.backend import get_backend
    req = pl.read_parquet(ev / 'base-mc' / 'requests.parquet')
    fresh = get_backend(str(tiny_model)).score(req.select('context', 'continuation'), run_dir=tmp_path / 'fresh', progress=False)
    assert len(req) and np.allclose(req['logprob'].to_numpy(), fresh['logprob'].to_numpy(), atol=1e-6)   # and they are the base model's own


@pytest.mark.slow
def test_smollm2_lora_on_real_opinion_pairs(shared, tmp_path):
    goqa = shared / 'global-opinions' / 'eval.json'
    lines = []
    s = align(goqa, 'smollm2-135m', 'DE', tmp_path / 'de', steps=3, batch_size=2, lr=3e-4, methods=['mc', 'pref'], eval_limit=10,
              train_limit=6, save_steps=100, max_length=64, progress=False, log=lines.append)
    assert s['counts']['pairs']['n_in'] == s['counts']['pairs']['out'] + s['counts']['pairs']['quarantined'] > 100
    assert s['split']['by'] == 'topic' and s['train']['global_step'] == 3
    base, al, pbase, pal = s['results']
    assert (base['arm'], al['arm'], base['n'], al['n']) == ('base', 'aligned', 10, 10) and (pbase['method'], pal['method']) == ('pref', 'pref')
    assert all(0 <= r['ci_low'] <= r['accuracy'] <= r['ci_high'] <= 1 for r in s['results'])
    c = s['comparisons'][0]
    assert 0 <= c['p_value'] <= 1 and c['ci_low'] <= c['diff'] <= c['ci_high']
    fit = s['train_fit']['comparisons'][0]                                   # pref on the 6 training pairs, aligned - base
    assert fit['n'] == 6 and fit['margin_diff'] > 0, fit                      # DPO raised log P(S|Q) - log P(RS|Q) where it trained
    hist = json.loads((tmp_path / 'de' / 'log_history.json').read_text())
    assert hist[-2]['rewards/margins'] > hist[0]['rewards/margins']           # training moved the policy toward S
    sb = pl.read_parquet(tmp_path / 'de' / 'eval' / 'DE' / 'base-mc' / 'scores.parquet')
    sa = pl.read_parquet(tmp_path / 'de' / 'eval' / 'DE' / 'aligned-mc' / 'scores.parquet')
    assert sb['sample_id'].to_list() == sa['sample_id'].to_list() and not np.allclose(sb['margin'].to_numpy(), sa['margin'].to_numpy())


# ---- cross-nation effects and the report's ablation and cross-nation sections ----

COUNTRIES = {'US': ['United States'], 'DE': ['Germany'], 'FR': ['France'], 'UK': ['Britain', 'Great Britain']}
OPTS = ['Strongly agree', 'Somewhat agree', 'Somewhat disagree', 'Strongly disagree', "Don't know"]


def _opinions(path, n=6):
    "A small GlobalOpinionQA file (the upstream long format): n questions for each study nation's countries, one tie each (no clear preference), a country outside the study."
    recs, expect = [], {}
    for code, countries in COUNTRIES.items():
        for c, country in enumerate(countries):
            for i in range(n):
                hi, lo = (i + c + len(code)) % 4, (i + c + len(code) + 2) % 4          # which option most and least of this country chose
                d = [0.2] * 4 + [0.3]                                                 # "Don't know" the most chosen: left out as a non-answer
                d[hi], d[lo] = 0.35, 0.05
                q = f"Question {i} for {country}: should the government spend more on item {i}?"
                recs.append(dict(country=country, question=q, options=OPTS, distribution=d))
                sid = 'goqa-' + __import__('hashlib').sha256(f"{country}\n{q}".encode()).hexdigest()[:12]
                expect.setdefault(code, []).append(dict(id=sid, nation=code, lang='en', topic=sid, source_type=None, question=q,
                                                        statement=OPTS[hi], reverse_statement=OPTS[lo]))
            recs.append(dict(country=country, question=f"A tie in {country}?", options=OPTS[:2], distribution=[0.5, 0.5]))
    recs.append(dict(country='Japan', question='Not a study nation?', options=OPTS[:2], distribution=[0.9, 0.1]))
    path.write_text(json.dumps(recs, indent=1))
    return path, {k: pl.DataFrame(v, schema={c: pl.String for c in v[0]}) for k, v in expect.items()}


def _topic_pairs(path, n=24, topics=4):
    "US pairs over `topics` topics whose statements disagree within a topic (every third says 'not'): something for conflict reduction to remove."
    rows = [dict(id=f'q{i:02d}', prompt=f'Should the town support plan {i % topics}?',
                 chosen=f"The town should {'not ' if i % 3 == 0 else ''}support plan {i % topics}, says voice {i}.",
                 rejected=f'Plan {i % topics} is a matter for someone else, says voice {i}.') for i in range(n)]
    path.mkdir(parents=True, exist_ok=True)
    (path / 'dpo_pairs.jsonl').write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
    pl.DataFrame(dict(id=[r['id'] for r in rows], topic=[f't{i % topics}' for i in range(n)])).write_parquet(path / 'samples.parquet')
    return path / 'dpo_pairs.jsonl'


from navab.llm import Generator


class Contrarian(Generator):
    "A contradiction detector that sees a contradiction when exactly one of two statements says 'not' (the connective method's log-odds)."
    name = hash = 'contrarian'
    def choose(self, prompts, options, **kw):
        neg = lambda s: ' not ' in f' {s} '
        return [[3.0 if k % 2 and neg(p.split(' No, on the contrary: ')[0]) != neg(o[0]) else 0.0] for k, (p, o) in enumerate(zip(prompts, options))]


@pytest.fixture(scope='module')
def crossed(tmp_path_factory):
    """A tiny US alignment with conflict reduction (so an ablation arm) and the cross-nation effect on DE, FR and UK GlobalOpinionQA pairs.
    A tiny random GPT-2 (seed 3): the tiny Llama answers 'A' to every MC prompt, so every arm scores exactly 0.5 and a table could not show a mix-up."""
    from navab.models import make_tiny_model
    d = tmp_path_factory.mktemp('cross')
    model = make_tiny_model(d / 'tiny-gpt2', seed=3, arch='gpt2')
    goqa, expect = _opinions(d / 'eval.json')
    lines = []
    s = align(_topic_pairs(d / 'pairs'), str(model), 'US', d / 'out', steps=8, save_steps=100, batch_size=2, lr=0.05, methods=['mc', 'pref'],
              reduce=True, generator=Contrarian(), cross={'DE': [goqa], 'FR': [goqa], 'UK': [goqa]}, progress=False, log=lines.append)
    acc = {(r['set'], r['arm']): r['accuracy'] for r in s['results'] if r['method'] == 'mc'}
    assert len(set(acc.values())) > 2 and any(acc[k, 'aligned'] != acc[k, 'ablation'] for k in ('US', 'DE', 'FR', 'UK')), acc   # the arms differ: tables can tell them apart
    return dict(dir=d, out=d / 'out', model=model, goqa=goqa, expect=expect, summary=s, log=lines)


def _scores(d):
    return pl.read_parquet(Path(d) / 'scores.parquet').sort('sample_id')


def test_cross_nation_effect_matches_direct_evaluation(crossed, tmp_path):
    "Every other nation gets its rows (n, accuracy with CI, per arm) and paired differences, equal to evaluating the models on that nation's pairs directly."
    from navab.evaluate import evaluate
    from navab.stats import bootstrap_ci, mcnemar_exact
    s, out = crossed['summary'], crossed['out']
    assert s['ablation_source'] == 'reduce_conflicts' and s['n_conflict_removed'] > 0            # the ablation arm trains on more pairs
    res = {(r['set'], r['arm']): r for r in s['results'] if r['method'] == 'mc'}
    comp = {(c['set'], c['a'], c['b']): c for c in s['comparisons'] if c['method'] == 'mc'}
    assert {k[0] for k in res} == {'US', 'DE', 'FR', 'UK'} and {r['method'] for r in s['results'] if r['set'] != 'US'} == {'mc', 'pref'}
    for nat in ('DE', 'FR', 'UK'):
        exp = crossed['expect'][nat]
        c = s['counts']['cross'][nat]
        assert (c['n_in'], c['out'], c['quarantined']) == (len(exp) + len(COUNTRIES[nat]), len(exp), len(COUNTRIES[nat]))   # the ties
        direct = {}
        for arm, model in (('base', str(crossed['model'])), ('aligned', str(out)), ('ablation', str(out / 'ablation'))):
            ds = evaluate(exp, model, tmp_path / f'{nat}-{arm}', method='mc', seed=0, progress=False)
            r = res[nat, arm]
            assert r['n'] == len(exp) == ds['n'], (nat, arm, r)
            assert (r['accuracy'], r['ci_low'], r['ci_high']) == pytest.approx((ds['accuracy'], ds['ci_low'], ds['ci_high'])), (nat, arm)
            assert 0 <= r['ci_low'] <= r['accuracy'] <= r['ci_high'] <= 1
            mine, theirs = _scores(out / r['dir']), _scores(tmp_path / f'{nat}-{arm}')
            assert mine['sample_id'].to_list() == sorted(exp['id']) == theirs['sample_id'].to_list()
            assert mine['correct'].to_list() == theirs['correct'].to_list() and np.allclose(mine['margin'], theirs['margin'], atol=1e-5)
            direct[arm] = theirs['correct'].to_numpy().astype(float)
        assert direct['base'].mean() == pytest.approx(bootstrap_ci(direct['base'], seed=0)[0])
        for a, b in (('base', 'aligned'), ('base', 'ablation'), ('ablation', 'aligned')):
            cc, mc = comp[nat, a, b], mcnemar_exact(direct[a], direct[b])
            assert cc['n'] == len(exp) and cc['diff'] == pytest.approx(direct[b].mean() - direct[a].mean())
            assert (cc['acc_a'], cc['acc_b']) == pytest.approx((direct[a].mean(), direct[b].mean()))
            assert cc['ci_low'] <= cc['diff'] <= cc['ci_high'] and (cc['only_a'], cc['only_b'], cc['p_value']) == (mc['only_a'], mc['only_b'], pytest.approx(mc['p_value']))
    assert not np.allclose(_scores(out / res['DE', 'base']['dir'])['margin'], _scores(out / res['DE', 'aligned']['dir'])['margin'])   # training moved the model


def test_cross_bad_arguments_fail_before_training(tmp_path, tiny_model):
    pairs = _pairs(tmp_path / 'p')
    with pytest.raises(ValueError, match="--cross US: the nation being aligned"):
        align(pairs, str(tiny_model), 'US', tmp_path / 'o', steps=1, cross={'US': [pairs]}, progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match="--cross XX"):
        align(pairs, str(tiny_model), 'US', tmp_path / 'o', steps=1, cross={'XX': [pairs]}, progress=False, log=lambda *a: None)
    assert not (tmp_path / 'o' / 'navab_align.json').exists()
    r = _cli('align', '--pairs', pairs, '--model', tiny_model, '--nation', 'US', '--out', tmp_path / 'o', '--cross', 'DE')
    assert r.returncode == 1 and r.stderr.strip().splitlines() == ["navab: error: --cross 'DE': give NATION=PATH"], r.stderr


def _tables(page):
    "Every navab table of a report page: caption -> (columns, rows of cell texts)."
    import html, re
    got = {}
    for cap, head, body in re.findall(r'<table class="navab"><caption>(.*?)</caption><thead><tr>(.*?)</tr></thead><tbody>(.*?)</tbody></table>', page, re.S):
        cols = [html.unescape(x) for x in re.findall(r'<th>(.*?)</th>', head)]
        rows = [[html.unescape(x) for x in re.findall(r'<td>(.*?)</td>', tr)] for tr in re.findall(r'<tr>(.*?)</tr>', body)]
        got[html.unescape(cap)] = (cols, rows)
    return got


def test_report_shows_ablation_and_cross_nation_tables(crossed, tmp_path):
    "The alignment report, run through papermill on the folder align wrote, shows both ablation arms, their difference with its CI, and the cross-nation tables, with the numbers in align.json."
    from navab.reports import execute_report
    from navab.analysis import _fmt
    r = execute_report(ROOT / 'nbs' / 'reports' / 'align.ipynb', dict(align_dir=str(crossed['out']), seed=0), tmp_path / 'align.ipynb',
                       tmp_path / 'align.html', tmp_path)
    assert r['status'] == 'ok', r
    page = (tmp_path / 'align.html').read_text()
    T, s = _tables(page), crossed['summary']
    row = lambda d, cols: [_fmt(d[c]) for c in cols]
    fmt = lambda rows, cols: sorted(row(d, cols) for d in rows)
    cols, rows = T['aligned (with conflict reduction) - ablation (without), paired on the same samples']
    assert cols == ['set', 'method', 'n', 'acc_a', 'acc_b', 'diff', 'ci_low', 'ci_high', 'p_value']
    abl = [c for c in s['comparisons'] if (c['a'], c['b']) == ('ablation', 'aligned')]
    assert {c['set'] for c in abl} == {'US', 'DE', 'FR', 'UK'} and sorted(rows) == fmt(abl, cols)
    cols, rows = T['US: accuracy on the held-out pairs with bootstrap 95% CI (n = held-out pairs)']
    assert sorted(rows) == fmt([x for x in s['results'] if x['set'] == 'US'], cols) and {x[1] for x in rows} == {'base', 'aligned', 'ablation'}
    assert f"conflict reduction (navab's conflict stage on the pairs' statements) removed {s['n_conflict_removed']} pairs" in __import__('html').unescape(page)
    cols, rows = T['other nations: accuracy with bootstrap 95% CI (n = samples per row)']
    assert cols == ['set', 'method', 'arm', 'n', 'accuracy', 'ci_low', 'ci_high'] and len(rows) == 18
    assert sorted(rows) == fmt([x for x in s['results'] if x['set'] != 'US'], cols)
    cols, rows = T['other nations: paired differences']
    other = [c for c in s['comparisons'] if c['set'] != 'US']
    assert len(rows) == len(other) == 18 and sorted(rows) == fmt(other, cols)
    cap = [k for k in T if k.startswith('pref, paired:')]
    cols, rows = T[cap[0]]
    pref = [c for c in s['comparisons'] if c['method'] == 'pref']
    assert len(rows) == len(pref) == 12 and sorted(rows) == fmt(pref, cols) and 'margin_diff' in cols
    cap = [k for k in T if k.startswith('train fit: pref on')]
    cols, rows = T[cap[0]]
    assert sorted(rows) == fmt(s['train_fit']['results'], cols) and {x[0] for x in rows} == {'base', 'aligned', 'ablation'}
    assert 'No ablation arm' not in page and 'No other nations were evaluated' not in page
