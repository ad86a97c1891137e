"""GlobalOpinionQA in its released form (Anthropic/llm_global_opinions: a row per question, `selections` and `options` as
Python text): the same items as the long form, from a file, a saved dataset or the hub name; bad text quarantined, never run."""
import json
from collections import defaultdict
import polars as pl
import pytest
from navab.cli import main
from navab.data import check_file, guess_kind, read_opinions

HUB = 'Anthropic/llm_global_opinions'
NATIONS = ('CN', 'US', 'UK', 'FR', 'DE')


def released_rows(long: list) -> list:
    "The released form of long records: a row per question (first-seen order), `selections` the repr of a defaultdict of the countries' shares, `options` the repr of the list."
    by = {}
    for r in long: by.setdefault(r['question'], []).append(r)
    rows = []
    for q, rs in by.items():
        assert all(r['options'] == rs[0]['options'] for r in rs), q      # one list of options per question, as the release has
        sel = defaultdict(list, {r['country']: r['distribution'] for r in rs})
        wvs = 'Great Britain' in sel or any('Other missing' in str(o) for o in rs[0]['options'])   # the WVS's UK name, or its missing-answer code
        rows.append(dict(question=q, selections=repr(sel), options=repr(rs[0]['options']), source='GAS' if 'Britain' in sel or not wvs else 'WVS'))
    return rows


def write_forms(rows: list, d) -> dict:
    "The released rows as JSONL, CSV, Parquet and a folder saved by `DatasetDict.save_to_disk`."
    import datasets
    f = dict(jsonl=d / 'goqa.jsonl', csv=d / 'goqa.csv', parquet=d / 'goqa.parquet', hf=d / 'goqa-hf')
    f['jsonl'].write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')
    pl.DataFrame(rows).write_csv(f['csv']); pl.DataFrame(rows).write_parquet(f['parquet'])
    datasets.DatasetDict({'train': datasets.Dataset.from_list(rows)}).save_to_disk(str(f['hf']))
    return f


@pytest.fixture(scope='module')
def goqa(shared, tmp_path_factory):
    "The real eval.json, its released form in four formats, and the released rows."
    src = shared / 'global-opinions' / 'eval.json'
    rows = released_rows(json.loads(src.read_text(encoding='utf-8')))
    return src, write_forms(rows, tmp_path_factory.mktemp('goqa')), rows


def same_items(a: pl.DataFrame, b: pl.DataFrame):
    "Two item frames hold the same items: ids, nations, countries, questions, options equal, distributions to 1e-12."
    a, b = a.sort('id'), b.sort('id')
    for col in ('id', 'nation', 'country', 'question', 'options'): assert a[col].to_list() == b[col].to_list(), col
    for x, y in zip(a['distribution'].to_list(), b['distribution'].to_list()):
        assert len(x) == len(y) and max(abs(p - q) for p, q in zip(x, y)) <= 1e-12


@pytest.mark.parametrize('fmt', ['jsonl', 'csv', 'parquet', 'hf'])
def test_released_form_gives_the_long_form_items(goqa, fmt):
    src, files, rows = goqa
    assert len(rows) == 1301 and guess_kind(files[fmt]) == 'opinions'
    long, rel = read_opinions(src), read_opinions(files[fmt])
    same_items(long.valid, rel.valid)
    assert dict(rel.valid['nation'].value_counts().rows()) == {'CN': 33, 'US': 103, 'UK': 109, 'FR': 94, 'DE': 115}
    source = {r['question']: r['source'] for r in rows}
    assert rel.valid['source'].to_list() == [source[q] for q in rel.valid['question']]
    assert set(rel.valid.filter(country='Britain')['source']) == {'GAS'} and set(rel.valid.filter(country='Great Britain')['source']) == {'WVS'}
    # the two all-zero answers (China's and France's to one question) are one row of the released file, its two reasons named by country
    assert long.counts == {'in': 456, 'out': 454, 'quarantined': 2} and rel.counts == {'in': 455, 'out': 454, 'quarantined': 1}
    q = rel.quarantine
    assert q['field'].to_list() == ['selections'] * 2 and (q['file'] == str(files[fmt])).all() and q['row'].n_unique() == 1
    assert sorted(q['reason']) == [f'{c}: shares must be non-negative numbers with a positive sum' for c in ('China', 'France')]
    if fmt == 'jsonl':   # each nation on its own, as the opinions task reads it
        for n in NATIONS:
            a, b = read_opinions(src, [n]), read_opinions(files[fmt], [n])
            same_items(a.valid, b.valid)
            assert set(b.valid['nation']) == {n} and b.counts['in'] == b.counts['out'] + b.counts['quarantined']


def test_hub_name_goes_through_load_dataset(tmp_path, monkeypatch, capsys):
    import datasets
    rows = [dict(question='Q1', selections="defaultdict(<class 'list'>, {'Britain': [1, 3], 'Mexico': [0.5, 0.5]})", options="['Yes', 'No']", source='GAS'),
            dict(question='Q2', selections="defaultdict(<class 'list'>, {'Great Britain': [0.2, 0.8], 'France': [0.5, 0.5]})", options='[1.0, 2.0]', source='WVS')]
    datasets.DatasetDict({'train': datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / 'goqa'))
    calls = []
    def fake(path, name=None, split=None, **kw):
        calls.append((path, name, split)); return datasets.load_from_disk(str(tmp_path / 'goqa'))[split]
    monkeypatch.setattr(datasets, 'load_dataset', fake)
    c = read_opinions(HUB)
    assert calls == [(HUB, None, 'train')] and c.file == HUB and c.counts == {'in': 3, 'out': 3, 'quarantined': 0}
    assert c.valid.select('nation', 'country', 'options', 'distribution', 'source').rows() == [
        ('UK', 'Britain', ['Yes', 'No'], [0.25, 0.75], 'GAS'), ('UK', 'Great Britain', ['1', '2'], [0.2, 0.8], 'WVS'),
        ('FR', 'France', ['1', '2'], [0.5, 0.5], 'WVS')]
    long = tmp_path / 'long.json'   # the same answers in the long form: the same ids
    long.write_text(json.dumps([dict(country='Britain', question='Q1', options=['Yes', 'No'], distribution=[1, 3]),
                                dict(country='Great Britain', question='Q2', options=[1.0, 2.0], distribution=[0.2, 0.8]),
                                dict(country='France', question='Q2', options=[1.0, 2.0], distribution=[0.5, 0.5])]))
    same_items(read_opinions(long).valid, c.valid)
    assert guess_kind(HUB) == 'opinions' and check_file(HUB, nation='FR').counts == {'in': 1, 'out': 1, 'quarantined': 0}
    capsys.readouterr()
    assert main(['data', 'check', HUB, '--nation', 'UK']) == 0 and f'opinions {HUB}: 2 in, 2 out, 0 quarantined' in capsys.readouterr().out
    monkeypatch.undo()
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', tmp_path / 'no-cache')    # not found even where a real copy is cached
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(tmp_path / 'no-hub-cache'))
    with pytest.raises(FileNotFoundError, match=rf'{HUB}: no such file, and not a loadable Hugging Face dataset .*must be in the datasets cache'):
        read_opinions(HUB)


def test_bad_released_rows_are_quarantined_never_run(tmp_path, capsys):
    marker = tmp_path / 'pwned'
    ok = "['Yes', 'No', \"Don't know\"]"
    dd = "defaultdict(<class 'list'>, {%s})"
    rows = [dict(question='good', selections=dd % "'France': [0.2, 0.3, 0.5], 'Germany': [1, 1, 2]", options=ok, source='GAS'),
            dict(question='code', selections=f"__import__('os').system('touch {marker}')", options=ok, source='GAS'),
            dict(question='code inside', selections=dd % f"'France': __import__('os').system('touch {marker}')", options=ok, source='GAS'),
            dict(question='code options', selections=dd % "'France': [0.5, 0.5]", options=f"[open('{marker}', 'w').name]", source='GAS'),
            dict(question='cut', selections="defaultdict(<class 'list'>, {'France': [0.2, 0.3, 0.5]", options=ok, source='WVS'),
            dict(question='length', selections=dd % "'France': [0.5, 0.5], 'Germany': [0.2, 0.3, 0.5]", options=ok, source='WVS'),
            dict(question='negative', selections=dd % "'China': [0.5, -0.2, 0.7], 'United States': [0.1, 0.1, -0.2]", options=ok, source='GAS'),
            dict(question='elsewhere', selections=dd % "'Peru': [1, 2]", options='not parsed, and not counted in', source='WVS')]
    for fmt, f in write_forms(rows, tmp_path).items():
        c = read_opinions(f)
        assert not marker.exists()
        assert c.valid.select('country', 'question').rows() == [('France', 'good'), ('Germany', 'good'), ('Germany', 'length')], fmt
        assert c.counts == {'in': 9, 'out': 3, 'quarantined': 6}, fmt
        q = c.quarantine.sort('row', 'reason')
        assert (q['file'] == str(f)).all() and (q['stage'] == 'opinions').all()
        got = list(zip(q['row'].to_list(), q['field'].to_list(), q['reason'].to_list()))
        head = 1 if fmt == 'csv' else 0    # a CSV's rows are its lines, after its header
        assert [(r - head, k, why) for r, k, why in got] == [
            (2, 'selections', 'not a dict literal: it holds a name, a call or other code (only literals are read)'),
            (3, 'selections', 'not a dict literal: it holds a name, a call or other code (only literals are read)'),
            (4, 'options', 'not a list literal: it holds a name, a call or other code (only literals are read)'),
            (5, 'selections', 'not a dict literal: the defaultdict(...) text is unbalanced (no closing parenthesis)'),
            (6, 'selections', 'France: 2 shares for 3 options'),
            (7, 'selections', 'China: shares must be non-negative numbers with a positive sum'),
            (7, 'selections', 'United States: shares must be non-negative numbers with a positive sum')], fmt
    capsys.readouterr()
    assert main(['data', 'check', str(tmp_path / 'goqa.jsonl')]) == 1
    out = capsys.readouterr().out
    assert 'opinions' in out and '9 in, 3 out, 6 quarantined' in out and f'{tmp_path / "goqa.jsonl"}:6: selections: France: 2 shares for 3 options' in out
    assert not marker.exists()


def test_evaluate_opinions_on_the_released_form(goqa, tiny_model, tmp_path, capsys):
    "navab evaluate --task opinions reads the released form; the same items in the long form score the same."
    src, files, _ = goqa
    assert main(['evaluate', '--task', 'opinions', '--samples', str(files['jsonl']), '--nation', 'US', '--model', str(tiny_model),
                 '--limit', '4', '--out', str(tmp_path / 'rel')]) == 0
    a = pl.read_parquet(tmp_path / 'rel' / 'scores.parquet')
    long = {(r['country'], r['question']): r for r in json.loads(src.read_text(encoding='utf-8'))}
    items = read_opinions(files['jsonl'], ['US']).valid.head(4)
    assert a['sample_id'].to_list() == items['id'].to_list() and set(a['nation']) == {'US'}
    f = tmp_path / 'us.json'   # those four answers in the long form, in the same order
    f.write_text(json.dumps([long[('United States', q)] for q in items['question']]))
    assert main(['evaluate', '--task', 'opinions', '--samples', str(f), '--nation', 'US', '--model', str(tiny_model), '--out', str(tmp_path / 'long')]) == 0
    b = pl.read_parquet(tmp_path / 'long' / 'scores.parquet')
    assert a['sample_id'].to_list() == b['sample_id'].to_list()
    for col in ('country_dist', 'model_dist'):
        for x, y in zip(a[col].to_list(), b[col].to_list()): assert max(abs(p - q) for p, q in zip(x, y)) <= 1e-9, col
    assert ((a['similarity'] - b['similarity']).abs() <= 1e-9).all() and a['similarity'].is_between(0, 1).all()
    summ = json.loads((tmp_path / 'rel' / 'summary.json').read_text())
    assert summ['n'] == 4 and 0 < summ['similarity'] < 1
