"""Write the stored values the scores-unchanged test compares with (tests/test_golden.py).

Run once, on the code before a change to the evaluation layer, from the repo root:
    python tests/golden/make_golden.py [EXTRACT_DIR]
It evaluates both embedded models on 12 NaVAB-HK samples, the demo corpus's samples (EXTRACT_DIR/<NATION>/samples.parquet
from `navab extract --limit 12`, 4 per nation; stored here so the test needs no extraction) and 6 GlobalOpinionQA items,
with every method, and stores the requests, log-probs, token counts and decisions in tests/golden/*.parquet."""
import sys, json
from pathlib import Path
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent/'shared'/'data'
OUT = Path(__file__).resolve().parent
MODELS = ('smollm2-135m', 'gemma3-270m')
CASES = [('mc', {}), ('mc-navab', dict(scoring='navab')), ('aj', dict(max_new_tokens=12)), ('pref', {}), ('opinions', {})]
COLS = ['id', 'nation', 'lang', 'topic', 'source_type', 'question', 'statement', 'reverse_statement']


def golden_samples(extract_dir=None) -> pl.DataFrame:
    "The stored samples: 6 of each HK file, then 4 of each demo nation extracted (only when making them)."
    p = OUT/'samples.parquet'
    if p.exists() or extract_dir is None: return pl.read_parquet(p)
    from navab.data import load_samples
    fr = [load_samples(SHARED/'navab-hk'/f, 'CN').valid.head(6) for f in ('human_statement_result.json', 'official_statement_result.json')]
    fr += [pl.read_parquet(Path(extract_dir)/n/'samples.parquet').head(4) for n in ('US', 'FR', 'DE') if (Path(extract_dir)/n/'samples.parquet').exists()]
    df = pl.concat([f.select([pl.col(c).cast(pl.String) if c in f.columns else pl.lit(None, pl.String).alias(c) for c in COLS]) for f in fr])
    df.write_parquet(p)
    return df


def golden_opinions() -> pl.DataFrame:
    "Six GlobalOpinionQA items: three of CN, three of FR."
    from navab.data import read_opinions
    v = read_opinions(SHARED/'global-opinions'/'eval.json', ['CN', 'FR']).valid
    return pl.concat([v.filter(pl.col('nation') == n).head(3) for n in ('CN', 'FR')])


def run_case(model: str, case: str, opts: dict, out: Path, evaluate_fn) -> tuple:
    "Evaluate one model x method: (requests, scores) frames with the compared columns."
    method = case.split('-')[0]
    data = golden_opinions() if method == 'opinions' else golden_samples()
    evaluate_fn(data, model, out, method=method, seed=0, progress=False, **opts)
    req = pl.read_parquet(out/'requests.parquet')
    sc = pl.read_parquet(out/'scores.parquet')
    keep = [c for c in ('sample_id', 'pred', 'correct', 'margin', 'answer', 'mc_pred', 'similarity') if c in sc.columns]
    return req.select([c for c in ('sample_id', 'stage', 'option', 'context', 'continuation', 'logprob', 'n_tokens') if c in req.columns]), sc.select(keep)


if __name__ == '__main__':
    import tempfile
    from navab.evaluate import evaluate
    golden_samples(sys.argv[1] if len(sys.argv) > 1 else None)
    for m in MODELS:
        for case, opts in CASES:
            with tempfile.TemporaryDirectory() as d:
                req, sc = run_case(m, case, opts, Path(d), evaluate)
            req.write_parquet(OUT/f'{m}-{case}-requests.parquet'); sc.write_parquet(OUT/f'{m}-{case}-scores.parquet')
            print(m, case, len(req), len(sc))
