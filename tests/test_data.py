"""Data contracts on real and malformed files, through the `navab data check` command and the loaders."""
import json, subprocess, sys
from pathlib import Path
import polars as pl
import pytest
from navab.data import load_articles, read_navab, read_opinions
from conftest import ROOT

NAVAB = str(Path(sys.executable).parent / 'navab')


def check(*args):
    r = subprocess.run([NAVAB, 'data', 'check', *map(str, args)], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize('name,counts,rc', [
    ('official_statement_result.json', '40 in, 39 out, 1 quarantined', 1),   # one English statement in a zh file
    ('human_statement_result.json', '35 in, 35 out, 0 quarantined', 0),
    ('source_statement_result.json', '88 in, 87 out, 1 quarantined', 1),
    ('filtered_statement_result.json', '222 in, 217 out, 5 quarantined', 1)])
def test_data_check_navab_hk(shared, name, counts, rc):
    code, out, err = check(shared / 'navab-hk' / name, '--nation', 'CN')
    assert code == rc and counts in out, out + err
    if rc: assert ':1: statement: no Chinese characters' in out or 'statement: no Chinese characters' in out


def test_navab_release_needs_a_nation(shared):
    code, out, err = check(shared / 'navab-hk' / 'human_statement_result.json')
    assert code == 1 and err.startswith('navab: error:') and '--nation' in err and err.count('\n') == 1


def test_navab_samples_are_clean(shared):
    c = read_navab(shared / 'navab-hk' / 'human_statement_result.json', 'CN')
    v = c.valid
    for col in ('statement', 'question', 'reverse_statement'):
        assert (v[col] == v[col].str.strip_chars()).all() and (v[col].str.len_chars() > 0).all()
    assert v['id'].is_unique().all() and set(v['source_type']) == {'quoted'} and set(v['lang']) == {'zh'}
    assert (v['statement'] != v['reverse_statement']).all()


def test_global_opinions_five_nations(shared):
    c = read_opinions(shared / 'global-opinions' / 'eval.json')
    n = dict(c.valid['nation'].value_counts().rows())
    assert set(n) == {'CN', 'US', 'UK', 'FR', 'DE'} and n['UK'] == 85 + 24
    assert c.counts['in'] == c.counts['out'] + c.counts['quarantined']
    assert ((c.valid['distribution'].list.sum() - 1).abs() < 1e-9).all()
    assert c.valid['options'].list.eval(pl.element().str.len_chars() > 0).list.all().all()


def test_malformed_jsonl_keeps_valid_rows(tmp_path):
    f = tmp_path / 'news.jsonl'
    good = [{'id': f'g{i}', 'nation': 'US', 'text': f'Story {i}.'} for i in range(3)]
    lines = [json.dumps(good[0]).encode(), b'{"id": "b1", "nation": "US", "text": "cut',        # bad JSON
             json.dumps({'id': 'b2', 'nation': 'US'}).encode(),                                # missing field
             b'{"id": "b3", "nation": "US", "text": "caf\xe9"}',                              # not UTF-8
             json.dumps({'id': 'b4', 'nation': 'US', 'text': '   '}).encode(),                 # empty text
             json.dumps(good[1]).encode(), json.dumps({'id': 'b5', 'nation': 'ZZ', 'text': 'x'}).encode(),  # unknown nation
             json.dumps({'id': 'g0', 'nation': 'US', 'text': 'again'}).encode(),               # duplicate id
             json.dumps(good[2]).encode()]
    f.write_bytes(b'\n'.join(lines) + b'\n')
    code, out, err = check(f, '--out', tmp_path / 'ok.parquet', '--quarantine', tmp_path / 'q.parquet')
    assert code == 1 and '9 in, 3 out, 6 quarantined' in out, out + err
    for row, what in [(2, '(row): invalid JSON'), (3, 'text: missing or empty'), (4, '(row): not UTF-8'),
                      (5, 'text: missing or empty'), (7, "nation: 'ZZ' is not one of"), (8, "id: duplicate id 'g0'")]:
        assert f'{f}:{row}: {what}' in out, (row, out)
    assert pl.read_parquet(tmp_path / 'ok.parquet')['id'].to_list() == ['g0', 'g1', 'g2']
    q = pl.read_parquet(tmp_path / 'q.parquet')
    assert sorted(q['row']) == [2, 3, 4, 5, 7, 8] and (q['file'] == str(f)).all() and q['reason'].str.len_chars().min() > 5


def test_bad_files_fail_with_one_line(tmp_path):
    (tmp_path / 'empty.jsonl').write_bytes(b'')
    (tmp_path / 'broken.json').write_text('[{"a": 1},\n{"b": ')
    (tmp_path / 'd').mkdir()
    for p, msg in [(tmp_path / 'empty.jsonl', 'empty file'), (tmp_path / 'broken.json', 'row 2: invalid JSON'),
                   (tmp_path / 'nope.csv', 'no such file'), (tmp_path / 'd', 'no .jsonl/.json/.csv/.parquet files')]:
        code, out, err = check(p)
        assert code == 1 and err.count('\n') == 1 and msg in err and str(p) in err, (p, err)


def test_demo_corpus_is_valid():
    c = load_articles(ROOT / 'data' / 'demo' / 'corpus')
    assert c.counts == {'in': 200, 'out': 200, 'quarantined': 0}
    assert dict(c.valid.group_by('nation').agg(pl.col('lang').first()).rows()) == dict(CN='zh', US='en', UK='en', FR='fr', DE='de')
