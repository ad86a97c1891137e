"""Scores unchanged: every task gives the same requests, log-probs (1e-6) and decisions as the stored values, which were
written by tests/golden/make_golden.py on the code before the task layer (both embedded models; NaVAB-HK samples, the
demo corpus's extracted samples and GlobalOpinionQA items)."""
import sys
from pathlib import Path
import polars as pl
import pytest

GOLDEN = Path(__file__).resolve().parent/'golden'
sys.path.insert(0, str(GOLDEN))
import make_golden as G


@pytest.mark.parametrize('model', G.MODELS)
def test_scores_unchanged(model, shared, tmp_path):
    "Requests (exact texts), log-probs and token counts, and per-sample decisions equal the stored ones for mc, mc-navab, aj, pref, opinions."
    from navab.evaluate import evaluate
    for case, opts in G.CASES:
        req, sc = G.run_case(model, case, opts, tmp_path/case, evaluate)
        old_req = pl.read_parquet(GOLDEN/f'{model}-{case}-requests.parquet')
        old_sc = pl.read_parquet(GOLDEN/f'{model}-{case}-scores.parquet')
        assert len(req) == len(old_req) and len(sc) == len(old_sc), case
        for c in ('sample_id', 'option', 'context', 'continuation', 'n_tokens'):
            assert req[c].to_list() == old_req[c].to_list(), (case, c)
        if 'stage' in old_req.columns: assert req['stage'].to_list() == old_req['stage'].to_list(), case
        d = (req['logprob'] - old_req['logprob']).abs().max()
        assert d <= 1e-6, (case, d)
        for c in old_sc.columns:
            if old_sc[c].dtype == pl.Float64: assert (sc[c] - old_sc[c]).abs().max() <= 1e-6, (case, c)
            else: assert sc[c].to_list() == old_sc[c].to_list(), (case, c)
