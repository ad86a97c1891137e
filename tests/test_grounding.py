"""Grounding of statements, long statements, and the reversal validator (issue 18): unit tests on real sentences per
language, and real-model runs (Gemma-3-270M, the default generator) on the first 20 HK articles and on demo articles.
The real runs keep their generation cache under navab's cache folder (tests/), so a rerun costs seconds."""
import json
from pathlib import Path
import polars as pl
import pytest
from navab import statements as ST, samples as SM
from navab.settings import cache_dir

ROOT = Path(__file__).resolve().parent.parent


# ---- the grounding measure ------------------------------------------------------------------------------------------
def test_support_per_language():
    assert ST.support('发展经济不能以牺牲环境为代价', '他說發展經濟不能以犧牲環境為代價。', 'zh') == 1.0   # traditional article
    assert ST.support('每个孩子都应当上学', '今日天氣晴朗，氣溫二十度。', 'zh') == 0.0
    assert ST.support('Rural bus routes must be saved.', 'The council wants to cut the rural bus route to Elm.', 'en') >= 0.75
    assert ST.support("L'accès à la culture est un droit.", "Le maire a inauguré le pont.", 'fr') == 0.0
    assert ST.support('Wohnen ist ein Grundrecht.', 'Die Stadt sagt: Wohnen sei ein Grundrecht für alle.', 'de') == 1.0


def test_ground_rejects_prompt_copies_and_unsupported_with_reasons():
    hk = '黎智英昨日表示，香港人應當捍衛新聞自由，政府不應打壓傳媒。'
    for lang in ('zh', 'en', 'fr', 'de'):   # every example statement of every prompt is caught on an unrelated article
        for _, s in ST.EXTRACT_PROMPT[lang]['shots']:
            g, e, why = ST.ground(s, hk if lang != 'zh' else '今日天氣晴朗。', lang)
            assert why and why.startswith('prompt-copy') and e == 1.0, (lang, s, why)
    assert ST.ground('香港人应当捍卫新闻自由。', hk, 'zh')[2] is None
    assert ST.ground('政府应该减税。', hk, 'zh')[2].startswith('unsupported')


def test_long_statements_salvaged_at_sentence_boundary():
    assert ST.salvage_sentence('香港必須捍衛新聞自由。政府亦應當尊重') == '香港必須捍衛新聞自由。'
    assert ST.salvage_sentence('Taxes must fall. And the state') == 'Taxes must fall.'
    assert ST.salvage_sentence('Die Steuern müssen') is None
    assert ST.BUDGET['zh'] > ST.BUDGET['en']


# ---- the reversal validator -----------------------------------------------------------------------------------------
TRUNC = [("Le travail doit permettre de vivre dignement, et non de survivre d'un mois à l'autre.", "Le travail doit permettre de vivre dignement.", 'fr'),
         ("Public transport must be free for children and pensioners.", "Public transport must be free for children", 'en'),
         ("Die Stadt muss die Bibliothek erhalten, weil Bildung allen gehört.", "Die Stadt muss die Bibliothek erhalten.", 'de'),
         ("政府应当增加公共房屋供应，让市民安居乐业。", "政府应当增加公共房屋供应。", 'zh')]
RESTATE = [("Taxes should rise.", "Taxes should rise!", 'en'), ("Il faut protéger les forêts.", "Il faut vraiment protéger les forêts.", 'fr'),
           ("Wohnen ist ein Grundrecht.", "Wohnen ist wirklich ein Grundrecht.", 'de'), ("应当保护环境。", "应当更加努力地保护环境。", 'zh')]
NEGATED = [("Taxes should rise.", "Taxes should not rise.", 'en'), ("Il faut protéger les forêts.", "Il ne faut pas protéger les forêts.", 'fr'),
           ("Wohnen ist ein Grundrecht.", "Wohnen ist kein Grundrecht.", 'de'), ("政府应当提高税收。", "政府不应当提高税收。", 'zh'),
           ("政府不应当提高税收。", "政府应当提高税收。", 'zh'), ("The city should not close libraries.", "The city should close libraries.", 'en')]


@pytest.mark.parametrize('s,rs,lang', TRUNC)
def test_truncation_always_rejected(s, rs, lang):
    assert SM.reversal_form(s, rs, lang).startswith('truncation')
    assert SM.validate_reversal('?', s, rs, lang, votes=3).startswith(('truncation', 'question'))   # whatever the judges say


@pytest.mark.parametrize('s,rs,lang', RESTATE)
def test_restatement_rejected(s, rs, lang):
    assert SM.reversal_form(s, rs, lang).startswith('restatement')


@pytest.mark.parametrize('s,rs,lang', NEGATED)
def test_negation_passes_form(s, rs, lang):
    assert SM.reversal_form(s, rs, lang) is None


# ---- real model ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_hk20_nothing_copied_or_unsupported_survives(shared):
    "The issue's case: the first 20 HK articles, the default generator; later stages only drop rows, so what the statements stage keeps is what can survive."
    from navab.llm import get_generator
    from navab.measure import hk_upstream
    arts = dict(list(hk_upstream(shared)['articles'].items())[:20])
    df = pl.DataFrame({'id': list(arts), 'nation': 'CN', 'lang': 'zh', 'title': '', 'text': list(arts.values())})
    gen = get_generator(None, run_dir=cache_dir() / 'tests' / 'grounding-hk20', lang='zh')   # generations cached: reruns take seconds
    st, q = ST.extract_statements(df, gen, nation='CN', lang='zh', progress=False)
    print(st.select('article_id', 'statement', 'grounding', 'drop_reason').rows(), q.rows())
    assert len(st) + q['row'].n_unique() == 20
    examples = {s for l in ST.EXTRACT_PROMPT for _, s in ST.EXTRACT_PROMPT[l]['shots']}
    for r in st.filter('kept').iter_rows(named=True):
        assert r['statement'] not in examples
        assert ST.ground(r['statement'], arts[r['article_id']], 'zh')[2] is None and r['grounding'] >= 0.5, r
    for r in st.filter(~pl.col('kept')).iter_rows(named=True):   # every rejection says why, with its score
        assert r['drop_reason'].startswith(('prompt-copy', 'unsupported')) and r['grounding'] is not None
    # floor (measured 2026-12-04, nbs/09a_measure.ipynb): 9 of 20 articles give a grounded statement, 6 prompt copies are
    # dropped with the reason, 5 answers are quarantined
    assert int(st['kept'].sum()) >= 8, st.select('article_id', 'drop_reason').rows()


@pytest.mark.slow
@pytest.mark.parametrize('nation, lang', [('CN', 'zh'), ('US', 'en'), ('UK', 'en'), ('FR', 'fr'), ('DE', 'de')])
def test_real_demo_samples_are_reversals(nation, lang):
    "The demo's extraction of a nation (all 40 articles, the defaults, as `make demo` runs it): every sample's validator verdict is read; every kept RS reverses its S (no truncation or restatement), every dropped one says why, and at least 10 samples are kept."
    from navab.extract import extract
    run = cache_dir() / 'tests' / f'grounding-demo-{nation}'   # the case: the demo's FR run kept a truncation as RS
    extract(ROOT / f'data/demo/corpus/{nation}.jsonl', nation, run, seed=42, progress=False)
    allsam = pl.read_parquet(run / 'samples_all.parquet')
    kept = allsam.filter('kept')
    for r in kept.iter_rows(named=True):
        assert r['rs_verdict'] == 'reversal' and r['rs_votes'] >= 1
        assert SM.reversal_form(r['statement'], r['reverse_statement'], lang) is None, r
        assert SM.validate_reversal(r['question'], r['statement'], r['reverse_statement'], lang, r['rs_votes']) is None
    for r in allsam.filter(~pl.col('kept')).iter_rows(named=True): assert r['drop_reason'] and r['rs_verdict'] != 'reversal' or 'near-duplicate' in r['drop_reason']
    dpo = [json.loads(l) for l in (run / 'dpo_pairs.jsonl').read_text(encoding='utf-8').splitlines()]
    assert {d['id'] for d in dpo} == set(kept['id'])
    # floor (measured 2026-12-05, nbs/09a_measure.ipynb): CN 15, US 15, UK 15, FR 20, DE 14 kept; the issue asks for at least 10
    assert len(kept) >= 10, allsam.select('id', 'drop_reason').rows()


@pytest.mark.slow
def test_real_hk20_selected_statements_are_the_articles_own(shared):
    "The default method on the issue's case: every selected statement comes from its own article (full support), none from a prompt; articles without a value sentence are dropped with the reason."
    from navab.llm import get_generator
    from navab.measure import hk_upstream
    from navab.language import negate
    arts = dict(list(hk_upstream(shared)['articles'].items())[:20])
    df = pl.DataFrame({'id': list(arts), 'nation': 'CN', 'lang': 'zh', 'title': '', 'text': list(arts.values())})
    gen = get_generator(None, run_dir=cache_dir() / 'tests' / 'grounding-hk20', lang='zh')
    st, q = ST.extract_statements(df, gen, nation='CN', lang='zh', progress=False, method='select', fallback=False)
    print(st.select('article_id', 'statement', 'grounding', 'drop_reason').rows())
    assert len(st) == 20 and len(q) == 0
    examples = {s for l in ST.EXTRACT_PROMPT for _, s in ST.EXTRACT_PROMPT[l]['shots']}
    kept = st.filter('kept')
    for r in kept.iter_rows(named=True):
        assert r['statement'] not in examples and r['grounding'] >= 0.95 and r['method'] == 'select', r
        assert negate(r['statement'], 'zh'), r                         # a rule can reverse it
    for r in st.filter(~pl.col('kept')).iter_rows(named=True):
        assert r['drop_reason'].startswith(('no-value-sentence', 'prompt-copy', 'unsupported')), r
    assert len(kept) >= 5, st.select('article_id', 'drop_reason').rows()   # measured 2026-12-04: see the print
