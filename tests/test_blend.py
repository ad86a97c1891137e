"""BLEnD (issue 25): the soft match on hand examples, the loader's quarantine on a tiny file, the real files of China,
the US and the UK (counts per nation and language), the hub by name through `datasets.load_dataset`, the task through
`evaluate` with the real smollm2-135m, and the grid's `--data blend=PATH` input."""
import json
from pathlib import Path
import polars as pl
import pytest
import navab.blend as NB                     # registers the task `blend`
from navab.blend import read_blend, soft_match, match_clusters, normalise, INST4, BLEND_CONFIG, BLEND_QUESTIONS


@pytest.fixture(scope='module')
def blend_dir(shared):
    "The real BLEnD files in ../shared/data/blend (skipped, saying so, when absent)."
    d = shared / 'blend'
    if not (d / 'annotations').is_dir(): pytest.skip(f"BLEnD not found at {d}")
    return d


# ---- the soft match ----

def test_soft_match_english():
    "Plurals, articles and stop words are folded; words match whole, in any order; not substrings."
    assert soft_match('Peanuts.', ['peanut']) == 'peanut' and soft_match('peanut', ['peanuts']) == 'peanuts'
    assert soft_match('Candies', ['candy']) == 'candy' and soft_match('potatoes', ['the potato']) == 'the potato'
    assert soft_match('The fish and chips', ['Fish & Chips']) == 'Fish & Chips'
    assert soft_match('jelly and peanut butter sandwich', ['peanut butter and jelly']) == 'peanut butter and jelly'
    assert soft_match('peanut butter', ['peanut butter and jelly']) is None          # every word of the answer
    assert soft_match('A steak', ['tea']) is None and soft_match('Pineapple', ['apple']) is None
    assert soft_match('Crème brûlée', ['creme brulee']) == 'creme brulee'            # accents, NFKC
    assert soft_match('ＰＩＺＺＡ', ['pizza']) == 'pizza'


def test_soft_match_chinese():
    "Chinese: characters in order without spaces or punctuation; one character only as a whole jieba word."
    assert soft_match('我觉得是花生。', ['花生米', '花生']) == '花生'
    assert soft_match('花 生！', ['花生']) == '花生' and soft_match('生花', ['花生']) is None
    assert soft_match('娃哈哈AD钙奶', ['ad钙奶']) == 'ad钙奶'
    assert soft_match('糖醋排骨', ['糖']) is None and soft_match('糖。', ['糖']) == '糖' and soft_match('我喜欢吃梨', ['梨']) == '梨'
    assert soft_match('peanuts', ['花生', 'peanuts']) == 'peanuts'                   # the English variant of a Chinese cluster


def test_soft_match_empty_and_single_letters():
    "An empty answer is wrong; a one-letter answer matches a whole word only, and an article never."
    for r in ('', '   ', '...', None): assert soft_match(r, ['rice', 'a', 'x']) is None
    assert soft_match('rice', ['', ' ', 'the']) is None                              # answers that normalise to nothing
    assert [soft_match(r, ['a']) for r in ('a', 'A', 'apple', 'a banana', 'anything at all')] == [None] * 5
    assert [soft_match(r, ['x']) for r in ('Malcolm X', 'xylophone', 'Xmas', 'box')] == ['x', None, None, None]
    assert [soft_match(r, ['3']) for r in ('3 years', 'about 13', '30', '三')] == ['3', None, None, None]
    assert normalise('The, a. An!') == ()


def test_match_clusters_order_and_weight():
    "Clusters by count, the item's language first; the matched cluster's count gives the paper's weight."
    cl = [dict(answers=['花生米', '花生'], en_answers=['peanuts'], count=3), dict(answers=['炸鸡'], en_answers=['fried chicken'], count=1)]
    assert match_clusters('fried chicken and peanuts', cl, 'en') == ('peanuts', 3)
    assert match_clusters('炸鸡', cl, 'zh') == ('炸鸡', 1) and match_clusters('beer', cl, 'en') == (None, 0)


# ---- the loader ----

TINY = {'q1': {'question': '在中国，有什么受欢迎的食物可以搭配啤酒吃？', 'en_question': 'What is a popular food to go with beer in China?',
               'annotations': [{'answers': ['花生米', '花生'], 'en_answers': ['peanuts'], 'count': 3}], 'idks': {'idk': 0, 'no-answer': 0, 'not-applicable': 0}},
        'q2': {'question': '  ', 'en_question': 'What do people drink in China?', 'annotations': [{'answers': ['茶'], 'en_answers': ['tea'], 'count': 2}]},
        'q3': {'question': '中国人最常吃的水果？', 'en_question': 'Most eaten fruit in China?', 'annotations': [],
               'idks': {'idk': 4, 'no-answer': 1, 'not-applicable': 0}},
        'q4': {'question': '问题？', 'en_question': 'Question?', 'annotations': [{'answers': ['米饭', 7], 'en_answers': ['rice'], 'count': 1}]},
        'q5': {'question': '问题五？', 'en_question': 'Question five?', 'annotations': [{'answers': ['面条'], 'en_answers': 'noodles', 'count': 1}]},
        'q6': {'en_question': 'No annotations key?'},
        'q7': ['not', 'an', 'object']}


def test_loader_quarantines_bad_rows(tmp_path):
    "Each bad question is quarantined per language with file, row (its place), field and reason; in = out + quarantined."
    f = tmp_path / 'China_data.json'
    f.write_text(json.dumps(TINY, ensure_ascii=False), encoding='utf-8')
    c = read_blend(f)
    assert c.counts == {'in': 14, 'out': 3, 'quarantined': 11}
    assert c.valid.select('id', 'nation', 'lang', 'gold').rows() == [('blend-cn-q1-zh', 'CN', 'zh', '花生米'), ('blend-cn-q1-en', 'CN', 'en', 'peanuts'),
                                                                       ('blend-cn-q2-en', 'CN', 'en', 'tea')]
    assert c.valid['answers'][0].to_list() == ['花生米', '花生', 'peanuts'] and c.valid['template'][0] == INST4['zh']
    q = {(r['file'].rsplit('#', 1)[1], r['row']): (r['field'], r['reason']) for r in c.quarantine.iter_rows(named=True)}
    assert set(c.quarantine['file'].str.split('#').list.first()) == {str(f)}
    assert q[('zh', 2)] == ('question', 'question q2: missing or empty') and ('en', 2) not in q          # only its Chinese item
    assert q[('zh', 3)][0] == 'annotations' and q[('en', 3)] == q[('zh', 3)]
    assert q[('zh', 3)][1] == 'question q3: no annotation clusters: the annotators gave no answer (idk 4, no answer 1, not applicable 0)'
    assert q[('en', 4)] == ('annotations[0].answers', 'question q4: expected a list of strings, item 1 is int')
    assert q[('zh', 5)] == ('annotations[0].en_answers', 'question q5: expected a list of strings, got str')
    assert q[('zh', 6)] == ('question', 'question q6: missing or empty') and q[('en', 6)] == ('annotations', 'question q6: missing')
    assert q[('zh', 7)] == ('', 'expected an object, got list')
    assert json.loads(c.quarantine.filter(pl.col('row') == 3)['raw'][0])['idks']['idk'] == 4                # the record itself


def test_loader_one_language_and_errors(tmp_path):
    "A nation whose language is English gets one item a question; wrong nations, unknown names and bad JSON are clear errors."
    us = {'q1': {'question': 'What is a popular food to go with beer in the US?', 'en_question': 'What is a popular food to go with beer in US?',
                 'annotations': [{'answers': ['nuts'], 'en_answers': ['nuts'], 'count': 2}], 'idks': {'idk': 5, 'no-answer': 0, 'not-applicable': 0}}}
    (tmp_path / 'annotations').mkdir()
    f = tmp_path / 'annotations' / 'US_data.json'
    f.write_text(json.dumps(us), encoding='utf-8')
    (tmp_path / 'annotations' / 'Mexico_data.json').write_text('{}', encoding='utf-8')                    # not a study nation: not counted
    c = read_blend(tmp_path)
    assert c.counts == {'in': 1, 'out': 1, 'quarantined': 0}
    r = c.valid.row(0, named=True)
    assert (r['id'], r['lang'], r['question'], r['topic'], r['paper_valid']) == ('blend-us-q1-en', 'en', us['q1']['question'], None, False)
    cn = read_blend(tmp_path, 'CN')                                                  # a nation the folder lacks: nothing in, and the label says why
    assert cn.counts == {'in': 0, 'out': 0, 'quarantined': 0} and 'no BLEnD annotations for CN: it holds Mexico (not studied), US (US)' in cn.file
    with pytest.raises(ValueError, match='holds US \\(US\\), not UK'): read_blend(f, 'UK')
    (tmp_path / 'mine.json').write_text(json.dumps(us), encoding='utf-8')
    with pytest.raises(ValueError, match='cannot tell its country'): read_blend(tmp_path / 'mine.json')
    assert read_blend(tmp_path / 'mine.json', 'UK').valid['id'].to_list() == ['blend-uk-q1-en']          # a nation named by the caller
    (tmp_path / 'UK_data.json').write_text('{"q1": {"question": "x",\n "annotations": [}', encoding='utf-8')
    with pytest.raises(ValueError, match=r'UK_data.json: row 2: invalid JSON'): read_blend(tmp_path / 'UK_data.json')
    with pytest.raises(FileNotFoundError, match='no such file or folder'): read_blend(tmp_path / 'nope')


# ---- the real files ----

def test_real_files_per_nation_and_language(blend_dir):
    "500 questions each; China in Chinese and English; the questions without answers (and China's blank Chinese text) quarantined."
    per = {}
    for n in ('CN', 'US', 'UK'):
        c = read_blend(blend_dir, n)
        langs = ['zh', 'en'] if n == 'CN' else ['en']
        assert c.n_in == 500 * len(langs) and c.counts['in'] == c.counts['out'] + c.counts['quarantined']
        assert set(c.valid['nation']) == {n} and c.valid['lang'].unique(maintain_order=True).to_list() == langs
        assert c.valid['qid'].n_unique() == (494 if n == 'CN' else c.counts['out'])
        assert c.valid['topic'].null_count() == 0 and c.valid['answers'].list.len().min() >= 1
        per.update({(n, l): k for l, k in c.valid.group_by('lang').len().rows()})
    assert per == {('CN', 'zh'): 493, ('CN', 'en'): 494, ('US', 'en'): 495, ('UK', 'en'): 489}
    B = read_blend(blend_dir)
    assert B.counts == {'in': 2000, 'out': 1971, 'quarantined': 29}
    cn = B.valid.filter(pl.col('qid') == 'Al-en-02')
    assert cn.select('lang', 'gold').rows()[:2] == [('zh', '花生米'), ('en', 'peanuts')]
    assert cn['question'][1] == 'What is a popular food to go with beer in China?' and cn['topic'][0] == 'Food'
    assert NB.blend_prompts(cn.head(1))[0] == '阅读以下问题并仅提供一个答案，无需任何解释。\n\n问题：在中国，有什么受欢迎的食物可以搭配啤酒吃？\n答案：'
    assert B.quarantine.filter(pl.col('field') == 'question').select('file', 'row').row(0) == (str(blend_dir / 'annotations' / 'China_data.json') + '#zh', 304)
    assert B.valid.group_by('nation').agg(pl.col('paper_valid').sum()).sort('nation').rows() == [('CN', 947), ('UK', 456), ('US', 461)]


def _hub_copy(blend_dir: Path, out: Path) -> Path:
    "The real files saved as the hub lays them out: configs `annotations` and `short-answer-questions`, one split per BLEnD country code."
    import csv, datasets
    ann, qs = {}, {}
    for code, country in (('CN', 'China'), ('GB', 'UK'), ('US', 'US')):
        d = json.loads((blend_dir / 'annotations' / f'{country}_data.json').read_text(encoding='utf-8'))
        rows = [dict(ID=k, question=v['question'], en_question=v['en_question'], annotations=v['annotations'],
                     idks={**{x: v['idks'][x] for x in ('idk', 'no-answer', 'not-applicable')}, 'other': [x for x in v['idks'] if x not in ('idk', 'no-answer', 'not-applicable')]})
                for k, v in d.items()]
        ann[code] = datasets.Dataset.from_list(rows)
        with open(blend_dir / 'questions' / f'{country}_questions.csv', encoding='utf-8', newline='') as fh:
            qs[code] = datasets.Dataset.from_list([{k: r[k] for k in ('ID', 'Topic', 'Source', 'Question', 'Translation')} for r in csv.DictReader(fh)])
    datasets.DatasetDict(ann).save_to_disk(str(out / BLEND_CONFIG))
    datasets.DatasetDict(qs).save_to_disk(str(out / BLEND_QUESTIONS))
    return out


def test_hub_name_goes_through_load_dataset(blend_dir, tmp_path, monkeypatch):
    "nayeon212/BLEnD: load_dataset(name, 'annotations', split=<country code>) and the topics from 'short-answer-questions'; the same items as the files."
    import datasets
    hub = _hub_copy(blend_dir, tmp_path / 'hub')
    calls = []
    def fake(path, name=None, split=None, **kw):
        calls.append((path, name, split)); return datasets.load_from_disk(str(hub / name))[split]
    monkeypatch.setattr(datasets, 'load_dataset', fake)
    c = read_blend('nayeon212/BLEnD')
    assert calls == [('nayeon212/BLEnD', 'annotations', 'CN'), ('nayeon212/BLEnD', 'short-answer-questions', 'CN'), ('nayeon212/BLEnD', 'annotations', 'GB'),
                     ('nayeon212/BLEnD', 'short-answer-questions', 'GB'), ('nayeon212/BLEnD', 'annotations', 'US'), ('nayeon212/BLEnD', 'short-answer-questions', 'US')]
    local = read_blend(blend_dir)
    assert c.counts == local.counts and c.valid.equals(local.valid)               # the same items, topics and prompts as the repository's files
    assert set(c.quarantine['file']) == {'nayeon212/BLEnD:CN#zh', 'nayeon212/BLEnD:CN#en', 'nayeon212/BLEnD:GB#en', 'nayeon212/BLEnD:US#en'}
    calls.clear()
    uk = read_blend('nayeon212/BLEnD', 'UK')                                        # a nation picks its split
    assert calls[0] == ('nayeon212/BLEnD', 'annotations', 'GB') and set(uk.valid['nation']) == {'UK'} and uk.counts['out'] == 489
    fr = read_blend('nayeon212/BLEnD', 'FR')
    assert fr.counts['in'] == 0 and 'BLEnD has no country for nation FR' in fr.file
    # the brief's other layout: one split whose rows name their country
    rows = [dict(r, country=co) for co, sp in (('China', 'CN'), ('Mexico', 'CN')) for r in datasets.load_from_disk(str(hub / BLEND_CONFIG))[sp].select(range(3)).to_list()]
    monkeypatch.setattr(datasets, 'load_dataset', lambda path, name=None, split=None, **kw: datasets.Dataset.from_list(rows) if name == BLEND_CONFIG
                        else datasets.load_from_disk(str(hub / name))['CN'])
    one = read_blend('someone/blend-copy:train')
    assert one.counts == {'in': 6, 'out': 6, 'quarantined': 0} and set(one.valid['nation']) == {'CN'}   # Mexico's rows are not counted in
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match=r'nayeon212/BLEnD:US \(annotations\): not loadable'):      # offline and not cached
        read_blend('nayeon212/BLEnD', 'US')


# ---- the task ----

def test_task_registered():
    from navab.tasks import get_task
    t = get_task('blend')
    assert t is NB.BLEND and t.data == 'blend' and t.requests == 'generate' and t.metric == 'accuracy' and t.value == 'correct'
    assert t.check({}) == {'max_new_tokens': 24, 'chat': 'auto'}
    with pytest.raises(ValueError, match="takes no option 'order'"): t.check({'order': 'both'})


@pytest.fixture
def one_thread():
    "torch on one thread while the test runs: on a shared 2-core machine two threads thrash (ten times the CPU time, measured)."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_real_model_on_real_items(blend_dir, tmp_path, one_thread):
    "smollm2-135m through evaluate on three items of each nation and language: the summary's keys, n, CIs, and non-empty answers."
    from navab.evaluate import evaluate
    B = read_blend(blend_dir).valid
    items = pl.concat([g.head(3) for _, g in B.group_by('nation', 'lang', maintain_order=True)])
    s = evaluate(items, 'smollm2-135m', tmp_path, task='blend', chat=True, progress=False)   # an instruct model: in its chat template
    assert {'n', 'accuracy', 'ci_low', 'ci_high', 'by_lang', 'by_nation_lang', 'by_nation', 'by_topic', 'weighted', 'paper', 'n_empty'} <= set(s)
    assert s['n'] == 12 and 0 <= s['ci_low'] <= s['accuracy'] <= s['ci_high'] <= 1 and s['options'] == {'max_new_tokens': 24, 'chat': True}
    assert [(r['lang'], r['n']) for r in s['by_lang']] == [('en', 9), ('zh', 3)]
    assert {(r['nation'], r['lang']): r['n'] for r in s['by_nation_lang']} == {('CN', 'en'): 3, ('CN', 'zh'): 3, ('UK', 'en'): 3, ('US', 'en'): 3}
    sc = pl.read_parquet(tmp_path / 'scores.parquet')
    assert sc['sample_id'].to_list() == items['id'].to_list() and sc['model'].unique().to_list() == ['smollm2-135m']
    assert all(isinstance(a, str) and a.strip() and '\n' not in a for a in sc['answer']), sc['answer'].to_list()
    assert s['n_empty'] == 0 and abs(s['accuracy'] - sc['correct'].mean()) < 1e-12
    assert (sc['matched'].is_not_null() == sc['correct']).all()
    for r in sc.filter(pl.col('correct')).iter_rows(named=True):                                 # a credited answer contains what it matched
        assert NB.soft_match(r['answer'], [r['matched']]) == r['matched']
    print({(r['nation'], r['lang']): r['accuracy'] for r in s['by_nation_lang']}, sc['answer'].to_list())


def test_grid_gives_blend_its_data(tiny_model, tmp_path):
    "navab grid --data blend=PATH: evaluate_pair loads the nation's items with the task's loader and runs them."
    from navab.runs import evaluate_pair
    f = tmp_path / 'China_data.json'
    f.write_text(json.dumps(TINY, ensure_ascii=False), encoding='utf-8')
    dirs = evaluate_pair(str(tiny_model), 'CN', None, ['blend'], tmp_path / 'grid', data={'blend': str(f)}, max_new_tokens=4)
    s = json.loads((dirs['blend'] / 'summary.json').read_text())
    assert s['task']['name'] == 'blend' and s['n'] == 3 and s['options'] == {'max_new_tokens': 4, 'chat': False}
    assert pl.read_parquet(dirs['blend'] / 'scores.parquet')['sample_id'].to_list() == ['blend-cn-q1-zh', 'blend-cn-q1-en', 'blend-cn-q2-en']
    assert evaluate_pair(str(tiny_model), 'CN', None, ['blend'], tmp_path / 'grid2', max_new_tokens=4) == {}    # no --data blend: skipped
