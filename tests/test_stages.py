"""Conflict reduction, source judgment and sample construction (extraction stages 4-7): unit tests with a fake
generator, and small runs of the real embedded models on real data (demo corpus and labels, navab-hk)."""
import csv, json, random, re
from pathlib import Path
import polars as pl
import pytest
from navab import conflict as C, source as S, samples as SM
from navab.data import read_navab
from navab.schema import validate_frame

ROOT = Path(__file__).resolve().parent.parent


class FakeGen:
    "A generator with the contract's two methods: `choose` and `complete` answer by rules on the prompt text."
    name = hash = 'fake'

    def __init__(self, choose=None, complete=None):
        self._choose, self._complete, self.calls = choose, complete, []

    def choose(self, prompts, options, progress=True):
        self.calls.append(('choose', len(prompts)))
        return [self._choose(p, o) for p, o in zip(prompts, options)]

    def complete(self, prompts, *, max_new_tokens=64, stop='\n', seed=0, prefix='', progress=True, **kw):
        self.calls.append(('complete', len(prompts)))
        return [self._complete(p + prefix, seed) for p in prompts]


def _last(p, key):
    "The text after the last `key:` in a prompt."
    return p.rsplit(key + ':', 1)[1].split('\n')[0]


def contra_gen():
    "A pair contradicts when exactly one side holds 'not': judge prompts (calibration pair scores 0) and connective ones."
    neg = lambda x: 'not' in x.split()
    def ch(p, opts):
        if 'Statement A:' in p:
            a, b = _last(p, 'Statement A'), _last(p, 'Statement B')
            if 'N/A' in a: return [0.0, 0.0]
            return [0.0, 3.0] if neg(a) != neg(b) else [3.0, 0.0]
        contrary = p.endswith(C.CONNECTIVE['en'][1])
        a = p[:-len(C.CONNECTIVE['en'][1 if contrary else 0])]
        return [0.0 if (neg(a) != neg(opts[0])) == contrary else -3.0]
    return FakeGen(choose=ch)


def stmts(rows):
    cols = ['id', 'article_id', 'nation', 'lang', 'topic', 'statement', 'source_type', 'outlet']
    return pl.DataFrame([dict(zip(cols, r)) for r in rows], schema={c: (pl.Int64 if c == 'topic' else pl.String) for c in cols}, orient='row')


# ---- conflict reduction ---------------------------------------------------------------------------------------------
def test_conflict_keeps_prevailing_stance_and_records_why():
    df = stmts([('s1', 'a1', 'US', 'en', 1, 'Taxes should rise.', 'official', 'X'),
                ('s2', 'a2', 'US', 'en', 1, 'Taxes should rise for the rich.', 'official', 'Y'),
                ('s3', 'a3', 'US', 'en', 1, 'Taxes should not rise.', 'quoted', 'Z'),
                ('s4', 'a4', 'US', 'en', 2, 'Parks should not close.', 'quoted', 'Z'),
                ('s5', 'a5', 'US', 'en', 1, '', 'official', 'Z')])
    frame, q = C.conflict(df, contra_gen(), nation='US', lang='en', progress=False)
    assert q['row'].to_list() == ['s5'] and q['stage'].to_list() == ['conflict']
    assert len(frame) + len(q) == len(df)
    r = {x['id']: x for x in frame.iter_rows(named=True)}
    assert r['s1']['kept'] and r['s2']['kept'] and not r['s3']['kept'] and r['s4']['kept']
    assert r['s3']['conflicts_with'] in ('s1', 's2') and 'weighs 4 against 1' in r['s3']['removed_reason']
    assert r['s1']['stance'] == r['s2']['stance'] != r['s3']['stance']
    assert r['s4']['stance_weight'] == 1.0 and r['s4']['removed_reason'] is None   # another topic: never compared
    assert r['s1']['removed_reason'] is None and r['s1']['n_contradictions'] == 1


def test_conflict_without_reduction_keeps_every_statement():
    "reduce=False (navab extract --no-conflict: the ablation's pair set) asks the detector nothing and keeps every statement."
    df = stmts([('s1', 'a1', 'US', 'en', 1, 'Taxes should rise.', 'official', 'X'),
                ('s3', 'a3', 'US', 'en', 1, 'Taxes should not rise.', 'quoted', 'Z')])
    class Mute:
        hash = 'mute'
        def __getattr__(self, k): raise AssertionError(f"the detector was asked ({k})")
    frame, q = C.conflict(df, Mute(), nation='US', lang='en', progress=False, reduce=False)
    assert frame['kept'].to_list() == [True, True] and frame['removed_reason'].null_count() == 2 and len(q) == 0
    frame, _ = C.conflict(df, contra_gen(), nation='US', lang='en', progress=False)
    assert frame['kept'].to_list().count(False) == 1                 # with reduction one of them goes


def test_conflict_counts_an_article_once_and_is_order_free():
    # two official statements of ONE article (weight 2) against three quoted statements of three articles (weight 3)
    rows = [('s1', 'a1', 'FR', 'en', 1, 'Rents should be capped.', 'official', 'X'),
            ('s2', 'a1', 'FR', 'en', 1, 'Rents should be capped now.', 'official', 'X'),
            ('s3', 'a2', 'FR', 'en', 1, 'Rents should not be capped.', 'quoted', 'Y'),
            ('s4', 'a3', 'FR', 'en', 1, 'Rents should not be capped at all.', 'quoted', 'Z'),
            ('s5', 'a4', 'FR', 'en', 1, 'Rents should not be capped by law.', 'quoted', 'W')]
    frame, _ = C.conflict(stmts(rows), contra_gen(), nation='FR', lang='en', progress=False)
    kept = set(frame.filter('kept')['id'])
    assert kept == {'s3', 's4', 's5'}
    random.Random(1).shuffle(rows)
    frame2, _ = C.conflict(stmts(rows), contra_gen(), nation='FR', lang='en', progress=False)
    assert set(frame2.filter('kept')['id']) == kept
    # with the official voice weighing 4, the single article wins (4 > 3)
    frame3, _ = C.conflict(stmts(rows), contra_gen(), nation='FR', lang='en', progress=False, official_weight=4.0)
    assert set(frame3.filter('kept')['id']) == {'s1', 's2'}


def test_detector_measurement_functions():
    pairs = C.read_pairs()
    assert pairs.group_by('lang', 'label').len()['len'].min() >= 15 and set(pairs['lang']) == {'zh', 'en', 'fr', 'de'}
    f = C.contradiction_features(pairs.filter(pl.col('lang') == 'en'), contra_gen(), methods=('judge',))
    cfg = C.fit_detector(f, 'judge')
    t = C.pr_table(f.with_columns((C.detector_score(f, cfg) >= cfg['threshold']).alias('contradict')))
    assert t.filter(pl.col('lang') == 'all')['n'].item() == 32
    cv = C.cross_validate(f, 'judge', seed=0)
    assert len(cv) == 32 and cv['fold'].value_counts()['count'].to_list() == [16, 16]


def test_read_pairs_names_file_row_field(tmp_path):
    p = tmp_path / 'p.csv'
    p.write_text("id,lang,label,kind,a,b,synthetic\nx,en,maybe,k,A,B,true\n", encoding='utf-8')
    with pytest.raises(ValueError, match=r"p.csv: row 2, field 'label'"): C.read_pairs(p)


# ---- source judgment ------------------------------------------------------------------------------------------------
def source_gen(p_quoted=0.5):
    import math
    return FakeGen(choose=lambda p, o: [math.log(1 - p_quoted), math.log(p_quoted)], complete=lambda p, s: 'Nobody')


def test_source_cues_and_llm_combined():
    art = ('Maria Delgado opened a bakery in 2014. "Anyone who works hard can build something of their own," '
           'Delgado said on Tuesday.')
    df = pl.DataFrame({'id': ['s1', 's2', 's3', 's4'], 'article_id': ['a1', 'a2', 'a3', 'a4'], 'lang': 'en',
                       'statement': ['Anyone who works hard can build something of their own.',
                                     'The council should keep its standards strong.', 'Taxes, said Ann Lee, must fall.', None]})
    arts = pl.DataFrame({'id': ['a1', 'a2', 'a3', 'a4'], 'text': [art, 'We believe the council should keep its standards strong.', '', '']})
    frame, q = S.source(df, source_gen(0.5), nation='US', lang='en', articles=arts, progress=False)
    assert q['row'].to_list() == ['s4'] and len(frame) == 3
    r = {x['id']: x for x in frame.iter_rows(named=True)}
    assert r['s1']['source_type'] == 'quoted' and r['s1']['speaker'] == 'Maria Delgado' and r['s1']['source_cue'] == 'article:named'
    assert r['s2']['source_type'] == 'official' and r['s2']['speaker'] is None
    assert r['s3']['speaker'] == 'Ann Lee'
    # a confident LLM cannot make a statement quoted without a name that occurs in the text ('Nobody' is not there)
    frame, _ = S.source(df.head(2), source_gen(0.99), nation='US', lang='en', articles=arts, progress=False)
    assert frame.filter(pl.col('id') == 's2')['source_type'].item() == 'official'
    assert frame.filter(pl.col('id') == 's2')['source_cue'].item() == 'none:no-named-speaker'


def test_source_speaker_per_language():
    assert S.find_speaker("« Il faut baisser les taxes », a déclaré Paul Morel.", 'fr') == 'Paul Morel'
    assert S.find_speaker("Laut Gewerkschafter Tom Becker sollte die Steuer sinken.", 'de') == 'Gewerkschafter Tom Becker'
    assert S.find_speaker("王毅：中國對市場經濟地位的重要性在於「請遵守承諾」。", 'zh') == '王毅'
    assert S.find_speaker("自由黨梁劉柔芬用私己錢讀課程，引發質疑。", 'zh') is None


# ---- samples --------------------------------------------------------------------------------------------------------
def qrs_gen(bad=()):
    "Completes the prefilled JSON with a question and a negated reverse; statements containing a word of `bad` get junk."
    def comp(p, seed):
        s = p.rsplit('<statement>', 1)[1].split('</statement>')[0]
        if any(b in s for b in bad): return 'oops'
        if 'COPY' in s: return f'Is it so?", "reverse_statement": "{s}"}}'
        return f'Is it true that {s.rstrip(".").lower()}?", "reverse_statement": "It is not true that {s.rstrip(".").lower()}."}}'
    return FakeGen(choose=contra_gen()._choose, complete=comp)   # the reversal judges: a flipped 'not' contradicts


def sample_input():
    return pl.DataFrame({'id': ['s1', 's2', 's3', 's4', 's5', 's6'], 'article_id': ['a1', 'a2', 'a3', 'a4', 'a5', 'a6'],
                         'nation': 'US', 'lang': 'en', 'topic': [1, 1, 2, 2, 3, 3], 'topic_label': 'economy',
                         'source_type': ['official', 'quoted', 'official', 'official', 'official', 'official'],
                         'speaker': [None, 'Ann Lee', None, None, None, None],
                         'statement': ['The city should build more homes.', 'Workers deserve higher wages.',
                                       'The city should build more homes!', 'Broken answer here.', 'COPY this one.',
                                       'Rail should stay public.']})


def test_samples_validate_dedup_quarantine_and_writers(tmp_path):
    frame, q = SM.samples(sample_input(), qrs_gen(bad=('Broken',)), nation='US', lang='en', seed=0, progress=False)
    assert q['row'].to_list() == ['s4'] and 'retry' in q['reason'].item()
    assert len(frame) + len(q) == 6
    r = {x['id']: x for x in frame.iter_rows(named=True)}
    assert r['s5']['drop_reason'].startswith('reverse_statement equals') or 'near-copy' in r['s5']['drop_reason']
    dup = [i for i in ('s1', 's3') if r[i]['drop_reason'] and 'near-duplicate' in r[i]['drop_reason']]
    assert len(dup) == 1 and sum(r[i]['kept'] for i in ('s1', 's3')) == 1
    kept = frame.filter('kept')
    assert validate_frame(kept, 'samples').counts['quarantined'] == 0
    # NaVAB release format round trip
    recs = SM.to_navab_format(frame, tmp_path / 'navab_format.json')
    back = read_navab(tmp_path / 'navab_format.json', 'US')
    assert back.counts['out'] == len(kept) == len(recs)
    assert back.valid.select('question', 'statement', 'reverse_statement', 'source_type').rows() == \
        kept.select('question', 'statement', 'reverse_statement', 'source_type').rows()
    assert set(recs[0]) == set(json.loads((ROOT.parent / 'shared/data/navab-hk/official_statement_result.json').read_text())[0]) \
        if (ROOT.parent / 'shared/data/navab-hk').exists() else True
    dpo = SM.to_dpo_pairs(frame, tmp_path / 'dpo.jsonl')
    lines = [json.loads(x) for x in (tmp_path / 'dpo.jsonl').read_text().splitlines()]
    assert lines == dpo and set(lines[0]) == {'id', 'prompt', 'chosen', 'rejected'} and len(lines) == len(kept)


def test_samples_seeded_dedup():
    a, _ = SM.samples(sample_input(), qrs_gen(), nation='US', lang='en', seed=3, progress=False)
    b, _ = SM.samples(sample_input().reverse(), qrs_gen(), nation='US', lang='en', seed=3, progress=False)
    assert set(a.filter('kept')['id']) == set(b.filter('kept')['id'])


def test_review_round_trip_and_errors(tmp_path):
    frame, _ = SM.samples(sample_input(), qrs_gen(), nation='US', lang='en', seed=0, progress=False)
    sheet = tmp_path / 'review.csv'
    SM.review_export(frame, sheet)
    rows = list(csv.DictReader(sheet.open(encoding='utf-8-sig')))
    assert [r['id'] for r in rows] == frame.filter('kept')['id'].to_list() and all(r['decision'] == '' for r in rows)
    rows[0]['decision'] = 'drop'; rows[0]['note'] = 'off topic'
    rows[1]['decision'] = 'edit'; rows[1]['edited_reverse_statement'] = 'Workers do not deserve higher wages.'
    rows[2]['decision'] = 'keep'
    def write(rs):
        with sheet.open('w', encoding='utf-8', newline='') as f:
            w = csv.DictWriter(f, fieldnames=SM.REVIEW_COLUMNS); w.writeheader(); w.writerows(rs)
    write(rows)
    out = SM.review_import(frame, sheet)
    r = {x['id']: x for x in out.iter_rows(named=True)}
    assert not r[rows[0]['id']]['kept'] and r[rows[0]['id']]['drop_reason'] == 'reviewer: off topic'
    assert r[rows[1]['id']]['reverse_statement'] == 'Workers do not deserve higher wages.' and r[rows[1]['id']]['edited'] == 'reverse_statement'
    assert r[rows[2]['id']]['review'] == 'keep' and r[rows[2]['id']]['kept']
    bad = [dict(rows[0]), *rows[1:]]; bad[0]['decision'] = 'maybe'
    write(bad)
    with pytest.raises(ValueError, match=r"review.csv: row 2, field 'decision'"): SM.review_import(frame, sheet)
    bad = [*rows]; bad[1] = {**rows[1], 'edited_reverse_statement': rows[1]['statement']}
    write(bad)
    with pytest.raises(ValueError, match=r"row 3, field 'edited_reverse_statement'.*equals"): SM.review_import(frame, sheet)
    bad = [*rows]; bad[2] = {**rows[2], 'id': 'nope'}
    write(bad)
    with pytest.raises(ValueError, match=r"row 4, field 'id': unknown sample id"): SM.review_import(frame, sheet)


# ---- real embedded model on real data (small: a few pairs, statements and articles) ---------------------------------
@pytest.fixture(scope='module')
def gemma_gen(tmp_path_factory):
    "The embedded multilingual Gemma-3-270M behind the Generator interface, with a fresh cache (nothing reused)."
    from navab.llm import get_generator
    return get_generator('gemma3-270m', run_dir=tmp_path_factory.mktemp('gemma-run'))


def demo_articles():
    return pl.concat([pl.read_ndjson(ROOT / f'data/demo/corpus/{n}.jsonl') for n in ('CN', 'US', 'UK', 'FR', 'DE')])


def test_real_detector_precision_recall(gemma_gen):
    pairs = C.read_pairs().filter(pl.col('id').str.ends_with('-01') | pl.col('id').str.ends_with('-22'))  # paraphrase / negation
    t = C.detector_scores(pairs, gemma_gen)
    print(t)
    assert t['lang'].to_list() == ['de', 'en', 'fr', 'zh', 'all'] and t['n'].to_list() == [2, 2, 2, 2, 8]
    assert (t['tp'] + t['fn']).to_list() == [1, 1, 1, 1, 4] and (t['tp'] + t['fp'] + t['fn'] + t['tn'] == t['n']).all()


def test_real_conflict_on_demo_topic(gemma_gen):
    lab = pl.read_csv(ROOT / 'data/demo/labels.csv')
    # FR economy: two editorials, the editorial that contradicts fr-003 (Sunday rest) and fr-003 itself
    arts = demo_articles().join(lab.select('id', 'topic', 'kind', 'contradicts'), on='id').filter(pl.col('id').is_in(['fr-001', 'fr-002', 'fr-003', 'fr-006']))
    assert arts.filter(pl.col('id') == 'fr-006')['contradicts'].item() == 'fr-003'
    df = arts.select(pl.concat_str('id', pl.lit('-s1')).alias('id'), pl.col('id').alias('article_id'), 'nation', 'lang', 'topic',
                     pl.col('title').alias('statement'), 'outlet')
    frame, q = C.conflict(df, gemma_gen, nation='FR', lang='fr', progress=False)
    print(frame.select('id', 'statement', 'stance', 'stance_weight', 'kept', 'conflicts_with'))
    assert len(frame) + len(q) == len(df) and len(q) == 0
    kept = set(frame.filter('kept')['id'])
    for r in frame.filter(~pl.col('kept')).iter_rows(named=True):
        assert r['conflicts_with'] in kept and r['removed_reason'].startswith('contradicts')
    assert frame['stance'].null_count() == 0 and (frame['stance_weight'] >= 1).all()


def test_real_source_agreement(gemma_gen, shared):
    from navab.stats import agreement
    d = json.loads((shared / 'navab-hk/source_statement_result.json').read_text(encoding='utf-8'))
    pick = [r for r in d if r['source'].strip() == 'unknown'][:2] + [r for r in d if r['source'].strip() in ('張炳良', '博雷利')]
    hk = pl.DataFrame({'id': [f'hk{i}' for i in range(len(pick))], 'lang': 'zh', 'statement': [r['statement'].strip() for r in pick]})
    f, q = S.source(hk, gemma_gen, nation='CN', lang='zh', progress=False)
    gold = ['official' if r['source'].strip() == 'unknown' else 'quoted' for r in pick]
    a = agreement(gold, f['source_type'].to_list())
    print('navab-hk', a, f.select('statement', 'source_type', 'speaker', 'source_p_llm').rows())
    assert len(f) == 4 and a['agreement'] >= 3 / 4
    assert f.filter(pl.col('source_type') == 'quoted')['speaker'].null_count() == 0
    lab = pl.read_csv(ROOT / 'data/demo/labels.csv')
    demo = demo_articles().join(lab.select('id', 'kind', 'speaker'), on='id').filter(pl.col('id').is_in(['de-001', 'de-005']))
    f3, _ = S.source(demo.select('id', 'lang', pl.col('text').alias('statement')), gemma_gen, nation='DE', lang='de', progress=False)
    got = f3.join(demo.select('id', 'kind', pl.col('speaker').alias('gold_speaker')), on='id')
    print(got.select('id', 'kind', 'source_type', 'speaker', 'gold_speaker'))
    assert got['source_type'].to_list() == got['kind'].to_list() and S._same_speaker(got.filter(pl.col('kind') == 'quoted')['speaker'].item(), 'Sabine Köhler')


def test_real_samples_round_trip(gemma_gen, shared, tmp_path):
    d = json.loads((shared / 'navab-hk/filtered_statement_result.json').read_text(encoding='utf-8'))
    zh = sorted((r['statement'].strip() for r in d[:40] if re.search('[\u4e00-\u9fff]', r['statement'] or '')), key=len)[:1]
    df = pl.DataFrame({'id': ['hk-1'], 'article_id': ['hk'], 'nation': ['CN'], 'lang': ['zh'], 'topic': [1],
                       'source_type': 'official', 'statement': zh})
    frame, q = SM.samples(df, gemma_gen, nation='CN', lang='zh', progress=False, max_new_tokens=40)
    print(frame.select('id', 'question', 'reverse_statement', 'drop_reason').rows(), q.rows())
    assert len(frame) + len(q) == 1 and set(frame['id']) | set(q['row']) == {'hk-1'}
    for r in frame.filter('kept').iter_rows(named=True):
        assert SM.validate_sample(r['question'], r['statement'], r['reverse_statement'], r['lang']) is None
    for r in q.iter_rows(named=True): assert r['reason'] and r['raw'].startswith('{"question": "')
    kept = frame.filter('kept')
    SM.to_navab_format(kept, tmp_path / 'n.json')
    assert read_navab(tmp_path / 'n.json', 'CN').counts['out'] == len(kept)


def test_stages_accept_an_empty_frame():
    df = stmts([('s1', 'a1', 'US', 'en', 1, 'x', 'official', 'X')]).clear()
    for fn, gen in ((C.conflict, contra_gen()), (S.source, source_gen()), (SM.samples, qrs_gen())):
        frame, q = fn(df, gen, nation='US', lang='en', progress=False)
        assert len(frame) == 0 and len(q) == 0 and 'kept' in frame.columns


def test_calibrate_detector_fits_a_threshold_for_a_generator():
    cfg = C.calibrate_detector(contra_gen(), 'judge', C.read_pairs().filter(pl.col('lang') == 'en'))
    assert cfg['model'] == 'fake' and cfg['method'] == 'judge' and isinstance(cfg['threshold'], float)
