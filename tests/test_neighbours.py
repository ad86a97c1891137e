"""The neighbour benchmarks as tasks: CulturalBench (Easy, Hard) and NormAd read from the real files, from the hub's
layout offline, with bad rows quarantined; run through evaluate and grid on the embedded models."""
import json, subprocess, sys
from pathlib import Path
import polars as pl
import pytest
from navab.culturalbench import read_culturalbench, read_culturalbench_hard, CB_HUB
from navab.normad import read_normad, NA_HUB
from navab.tasks import get_task, task_names

NAVAB = [str(Path(sys.executable).parent / 'navab')]
FIVE = {'CN': 59, 'US': 20, 'UK': 25, 'FR': 14, 'DE': 32}


def test_registered():
    assert {'culturalbench', 'culturalbench-hard', 'normad'} <= set(task_names())
    out = subprocess.run(NAVAB + ['tasks'], capture_output=True, text=True, check=True).stdout
    for name in ('culturalbench ', 'culturalbench-hard ', 'normad '): assert name in out


def test_culturalbench_real_counts(shared):
    f = shared / 'culturalbench' / 'CulturalBench-Easy.csv'
    c = read_culturalbench(f)
    assert c.counts == {'in': 150, 'out': 150, 'quarantined': 0}
    assert dict(c.valid['nation'].value_counts().iter_rows()) == FIVE
    assert c.valid.filter(pl.col('nation') == 'CN')['country'].unique().to_list() == ['China']    # Hong Kong and Taiwan are their own rows
    h = read_culturalbench_hard(f, 'DE')
    assert (h.counts['out'], set(h.valid['truth'].str.count_matches('T'))) == (32, {1})
    assert h.valid['id'].to_list() == read_culturalbench(f, 'DE').valid['id'].to_list()        # the same questions, the same ids


def _hub(tmp_path, monkeypatch, parts: dict):
    "Save DatasetDicts in the hub's layout (name -> config -> split -> rows) and make `datasets.load_dataset` read them."
    import datasets
    for (name, cfg), splits in parts.items():
        datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(tmp_path / name.replace('/', '__') / str(cfg)))
    calls = []
    def fake(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        d = tmp_path / path.replace('/', '__') / str(name)
        if not d.exists(): raise FileNotFoundError(f"no cached dataset {path}:{name}")
        return datasets.load_from_disk(str(d))[split]
    monkeypatch.setattr(datasets, 'load_dataset', fake)
    return calls


def test_hub_names_offline(shared, tmp_path, monkeypatch):
    easy = pl.read_csv(shared / 'culturalbench' / 'CulturalBench-Easy.csv', infer_schema_length=0).to_dicts()
    hard = [dict(data_idx=f"{r['question_idx']}-{k}", question_idx=r['question_idx'], prompt_question=r['prompt_question'], prompt_option=r[f'prompt_option_{l}'],
                 answer=r['answer'] == l.upper(), country=r['country']) for r in easy for k, l in enumerate('abcd')]
    na = pl.read_csv(shared / 'normad' / 'normad_etiquette.sample14.csv', infer_schema_length=0).to_dicts()
    calls = _hub(tmp_path, monkeypatch, {(CB_HUB, 'CulturalBench-Easy'): {'test': easy}, (CB_HUB, 'CulturalBench-Hard'): {'test': hard},
                                         (NA_HUB, None): {'train': na}})
    e = read_culturalbench(CB_HUB, 'UK')
    h = read_culturalbench_hard(CB_HUB, 'UK')
    assert (e.counts['out'], h.counts['out'], e.file) == (25, 25, f'{CB_HUB}:CulturalBench-Easy/test')
    assert h.valid['truth'].to_list() == [''.join('T' if l == a else 'F' for l in 'ABCD') for a in e.valid['answer']]
    assert read_culturalbench(f'{CB_HUB}:CulturalBench-Easy/test', 'FR').counts['out'] == 14     # config and split in the name
    assert read_normad(NA_HUB).valid['id'].to_list() == ['normad-1838']
    assert calls[:2] == [(CB_HUB, 'CulturalBench-Easy', 'test'), (CB_HUB, 'CulturalBench-Hard', 'test')]
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match='offline, the dataset must be in the datasets cache'):
        read_culturalbench(CB_HUB)


BAD_CB = [dict(question_idx=1, prompt_question='In France, what is eaten at breakfast?', prompt_option_a='Croissant', prompt_option_b='Rice',
               prompt_option_c='Soup', prompt_option_d='Noodles', answer='A', country='France'),
          dict(question_idx=2, prompt_question='', prompt_option_a='a', prompt_option_b='b', prompt_option_c='c', prompt_option_d='d', answer='B', country='France'),
          dict(question_idx=3, prompt_question='In France, who pays?', prompt_option_a='a', prompt_option_b='b', prompt_option_c='c', prompt_option_d='d', answer='F', country='France'),
          dict(question_idx=4, prompt_question='In Peru, what?', prompt_option_a='a', prompt_option_b='b', prompt_option_c='c', prompt_option_d='d', answer='A', country='Peru')]


@pytest.mark.parametrize('task', ['culturalbench', 'culturalbench-hard'])
def test_bad_rows_cli(task, tiny_model, tmp_path):
    f = tmp_path / 'cb.csv'
    pl.DataFrame(BAD_CB).write_csv(f)
    r = subprocess.run(NAVAB + ['evaluate', '--task', task, '--samples', str(f), '--nation', 'FR', '--model', str(tiny_model), '--out', str(tmp_path / 'run')],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert f'{f}:3: prompt_question: missing or empty' in r.stderr                          # file, row (the file's line), field, reason
    q = pl.read_parquet(tmp_path / 'run' / 'quarantine.parquet')
    assert sorted(set(q['row'])) == [3, 4] and 'answer' in set(q['field'])
    s = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert (s['n'], s['task']['name']) == (1, task)                                        # the valid question is scored; Peru is no nation of the study
    assert '3 in, 1 out, 2 quarantined' in r.stdout


def test_normad_bad_rows(tmp_path):
    f = tmp_path / 'na.csv'
    base = dict(ID=0, Country='germany', Background='', Axis='Etiquette', Subaxis='x', Value='Punctuality.', Explanation='')
    pl.DataFrame([dict(base, ID=0, **{'Rule-of-Thumb': 'Be on time.', 'Story': 'Anna came late. Acceptable?', 'Gold Label': 'no'}),
                  dict(base, ID=1, **{'Rule-of-Thumb': '', 'Story': 'Tom came early. Acceptable?', 'Gold Label': 'yes'}),
                  dict(base, ID=2, **{'Rule-of-Thumb': 'Be on time.', 'Story': 'Eva came on time. Acceptable?', 'Gold Label': 'sure'}),
                  dict(base, ID=3, Country='united_states_of_america', **{'Rule-of-Thumb': 'Tip.', 'Story': 'Sam tipped. Acceptable?', 'Gold Label': 'neutral'})]).write_csv(f)
    c = read_normad(f)
    assert c.counts == {'in': 4, 'out': 2, 'quarantined': 2}
    assert sorted(c.quarantine.select('row', 'field').rows()) == [(3, 'Rule-of-Thumb'), (4, 'Gold Label')]
    assert c.valid.select('nation', 'label').rows() == [('DE', 'no'), ('US', 'neither')]
    with pytest.raises(ValueError, match='levels .*a comma-separated choice of country, value, rot'):
        from navab.evaluate import evaluate
        evaluate(c.valid, 'unused-model', tmp_path / 'x', task='normad', options=dict(levels='country,background'))


def test_grid_real_models(shared, tmp_path):
    """CulturalBench (five nations), CulturalBench-Hard, NormAd (its German row) and BLEnD (China, US, UK) through the grid on both embedded
    models, with no NaVAB samples; the study report's agreement section over them."""
    from navab.grid import run_grid
    cb, na, bl = shared / 'culturalbench' / 'CulturalBench-Easy.csv', shared / 'normad' / 'normad_etiquette.sample14.csv', shared / 'blend'
    idx = run_grid(['smollm2-135m', 'gemma3-270m'], list(FIVE), {}, ['culturalbench', 'culturalbench-hard', 'normad', 'blend'], tmp_path / 'g', progress=False,
                   limits={'culturalbench': 3, 'culturalbench-hard': 2, 'blend': 2}, data={'culturalbench': cb, 'normad': na, 'blend': bl},
                   options={'levels': 'country,rot', 'blend.max_new_tokens': 8})
    recs = json.loads((tmp_path / 'g' / 'grid.json').read_text())['records']
    assert [r['name'] for r in recs if r['status'] != 'ok'] == [], [r.get('error') for r in recs if r['status'] != 'ok']
    runs = tmp_path / 'g' / 'runs'
    for m in ('smollm2-135m', 'gemma3-270m'):
        for n in FIVE:
            s = json.loads((runs / m / n / 'culturalbench' / 'summary.json').read_text())
            assert (s['n'], s['n_orders'], s['order']) == (3, 4, 'both')                    # the settings' order=both: all four rotations
            assert 0 <= s['ci_low'] <= s['accuracy'] <= s['ci_high'] <= 1
            h = json.loads((runs / m / n / 'culturalbench-hard' / 'summary.json').read_text())
            assert (h['n'], h['accuracy_row']['n']) == (2, 8)
            assert (runs / m / n / 'blend').exists() == (n in ('CN', 'US', 'UK'))           # BLEnD has no France or Germany: no run, no error
        assert not (runs / m / 'FR' / 'normad').exists()                                     # NormAd's real rows hold no French story
        s = json.loads((runs / m / 'DE' / 'normad' / 'summary.json').read_text())
        assert ([b['level'] for b in s['by_level']], s['n_requests']) == (['country', 'rot'], 6)
        b = json.loads((runs / m / 'CN' / 'blend' / 'summary.json').read_text())
        assert (b['n'], b['options']['max_new_tokens'], [x['lang'] for x in b['by_lang']]) == (2, 8, ['en', 'zh'])
    assert json.loads((runs / 'smollm2-135m' / 'US' / 'blend' / 'summary.json').read_text())['options']['chat'] is True    # its chat template
    html = (tmp_path / 'g' / 'study.html').read_text()
    assert 'Do the benchmarks agree?' in html and 'culturalbench-hard' in html and 'Kendall' in html
    assert idx.is_file()
