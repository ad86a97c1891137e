"""The task layer: `navab tasks` lists the registered tasks; MC in both orders through hf and through a real `navab serve`
process agree; on the real HK samples both embedded models give per-order and debiased accuracies and a consistency
rate (printed: the figures of the note)."""
import json, os, subprocess, sys
from pathlib import Path
import polars as pl
import pytest

NAVAB = str(Path(sys.executable).parent/'navab')
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_backend import serve, _hk


def test_navab_tasks_lists_the_four():
    "One line per task: name, metric, request kinds, what it asks."
    r = subprocess.run([NAVAB, 'tasks'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = {l.split()[0]: l for l in r.stdout.splitlines() if l.strip()}
    assert {'mc', 'aj', 'pref', 'opinions'} <= set(lines)
    assert 'similarity' in lines['opinions'] and 'accuracy' in lines['mc'] and 'loglik+generate' in lines['aj']


def _both(d: Path) -> pl.DataFrame:
    return pl.read_parquet(d/'scores.parquet').select('sample_id', 'pred_sa', 'pred_sb', 'correct_sa', 'correct_sb', 'consistent', 'same_letter', 'correct')


def test_order_both_tiny_hf_equals_openai(tiny_model, tmp_path):
    "MC with --order both: the decisions of each order, the debiased one and the consistency are the same in process and over HTTP."
    from navab.evaluate import evaluate
    S = pl.DataFrame(dict(id=[f'u{i}' for i in range(8)], nation=['US'] * 8, lang=['en'] * 8, topic=['t'] * 8, source_type=['official'] * 8,
                          question=[f'Should the state act on {i}?' for i in range(8)], statement=[f'The state should act on {i}.' for i in range(8)],
                          reverse_statement=[f'The state should not act on {i}.' for i in range(8)]))
    a = evaluate(S, str(tiny_model), tmp_path/'hf', order='both', progress=False)
    with serve(str(tiny_model), None, '--served-name', 'tiny') as (url, _):
        b = evaluate(S, f'{url}/v1#tiny', tmp_path/'oa', order='both', progress=False, tokenizer=str(tiny_model))
    assert _both(tmp_path/'hf').equals(_both(tmp_path/'oa'))
    for k in ('accuracy', 'same_letter_share', 'top_letter_share'): assert abs(a[k] - b[k]) < 1e-12, k
    assert a['position_consistency'] == b['position_consistency'] and b['backend'] == 'openai' and b['config']['tokenizer'] == str(tiny_model)


@pytest.mark.slow
@pytest.mark.parametrize('model', ['smollm2-135m', 'gemma3-270m'])
def test_order_both_real_models_on_hk(model, shared, tmp_path):
    "Both embedded models on all HK samples (human and official) in both orders: the figures, hf = openai for the first 12, each order = a fixed-order run."
    from navab.data import load_samples
    from navab.evaluate import evaluate
    S = pl.concat([load_samples(shared/'navab-hk'/f, 'CN').valid for f in ('human_statement_result.json', 'official_statement_result.json')])
    s = evaluate(S, model, tmp_path/'both', order='both', progress=False)
    sc = pl.read_parquet(tmp_path/'both'/'scores.parquet')
    f = evaluate(S, model, tmp_path/'sa', order='s_first', progress=False)       # the same requests, from the cache
    assert sc['correct_sa'].to_list() == pl.read_parquet(tmp_path/'sa'/'scores.parquet')['correct'].to_list() and f['accuracy'] == s['accuracy_by_order']['S as A']['estimate']
    o = s['accuracy_by_order']
    print(f"\n{model} HK n={s['n']}: S as A {o['S as A']['estimate']:.3f} [{o['S as A']['ci_low']:.3f}, {o['S as A']['ci_high']:.3f}], "
          f"S as B {o['S as B']['estimate']:.3f} [{o['S as B']['ci_low']:.3f}, {o['S as B']['ci_high']:.3f}], "
          f"debiased {s['accuracy']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}], consistency {s['position_consistency']['estimate']:.3f} "
          f"[{s['position_consistency']['ci_low']:.3f}, {s['position_consistency']['ci_high']:.3f}], same letter {s['same_letter_share']:.3f}, "
          f"top letter {s['top_letter']} {s['top_letter_share']:.3f}")
    assert s['n'] == len(S) and 0 <= s['position_consistency']['estimate'] <= 1
    assert abs(s['accuracy'] - sc['correct'].mean()) < 1e-12 and abs(s['same_letter_share'] - sc['same_letter'].mean()) < 1e-12
    with serve(model) as (url, _):
        evaluate(S.head(12), f'{url}/v1#{model}', tmp_path/'oa', order='both', progress=False)
    evaluate(S.head(12), model, tmp_path/'hf12', order='both', progress=False)
    assert _both(tmp_path/'hf12').equals(_both(tmp_path/'oa'))


EXTERNAL = '''
"A task that lives outside navab: S against RS right after the bare question, no template."
import polars as pl
from navab.tasks import Task, Step, register_task, decide, pref_requests

def _bare(samples, run):
    P = pl.DataFrame(dict(sample_id=samples['id'], nation=samples['nation'], source_type=samples['source_type'], topic=samples['topic'],
                          prompt=samples['question'], chosen=' ' + samples['statement'], rejected=' ' + samples['reverse_statement'],
                          s_first=[True] * len(samples), gold=['S'] * len(samples), labels=[['S', 'RS']] * len(samples)))
    return P, pref_requests(P)

register_task(Task('bare', 'S vs RS after the bare question', [Step('bare', 'score', _bare)],
                   lambda s, run: decide(run.results['bare'][1], run.results['bare'][0]),
                   lambda sc, run: dict(accuracy=float(sc['correct'].mean()))), replace=True)
'''


def test_a_task_defined_outside_navab_runs_through_evaluate_grid_and_study(tiny_model, tmp_path):
    "A module named in NAVAB_TASKS registers a task: navab tasks lists it, evaluate runs it, grid runs it per model x nation and the run and study reports show it."
    (tmp_path/'mytasks.py').write_text(EXTERNAL)
    env = dict(os.environ, NAVAB_TASKS='mytasks', PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get('PYTHONPATH')])))
    n = 6
    f = tmp_path/'fr.parquet'
    pl.DataFrame(dict(id=[f'fr{i}' for i in range(n)], nation=['FR'] * n, lang=['fr'] * n, topic=['env', 'tax'] * 3, source_type=['official', 'quoted'] * 3,
                      question=[f"L'État doit-il agir {i} ?" for i in range(n)], statement=[f"L'État doit agir {i}." for i in range(n)],
                      reverse_statement=[f"L'État ne doit pas agir {i}." for i in range(n)])).write_parquet(f)
    r = subprocess.run([NAVAB, 'tasks'], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and any(l.startswith('bare ') for l in r.stdout.splitlines()), r.stdout + r.stderr
    r = subprocess.run([NAVAB, 'evaluate', '--task', 'bare', '--samples', str(f), '--model', str(tiny_model), '--out', str(tmp_path/'ev')],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    s = json.loads((tmp_path/'ev'/'summary.json').read_text())
    assert s['task']['name'] == 'bare' and s['n'] == n and s['ci_low'] <= s['accuracy'] <= s['ci_high']
    out = tmp_path/'grid'
    r = subprocess.run([NAVAB, 'grid', '--models', str(tiny_model), '--nations', 'FR', '--samples', f'FR={f}', '--tasks', 'mc,bare', '--order', 'both',
                        '--seed', '0', '--out', str(out), '--no-progress'], capture_output=True, text=True, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-1500:]
    runs = json.loads((out/'runs.json').read_text())
    assert {x['method'] for x in runs} == {'mc', 'bare'}
    assert json.loads((out/'runs'/'tiny-llama'/'FR'/'mc'/'summary.json').read_text())['order'] == 'both'
    run_html = next(out.glob('run-*-FR.html')).read_text(encoding='utf-8')
    study = (out/'study.html').read_text(encoding='utf-8')
    for page in (run_html, study):
        assert 'BARE' in page and 'debiased accuracy' in page and 'position consistency' in page
    assert 'BARE accuracy' in json.loads((out/'grid.json').read_text())['records'][0]['headline']
    r = subprocess.run([NAVAB, 'tasks'], capture_output=True, text=True)     # without the module the task is unknown, and says so
    assert 'bare' not in r.stdout
