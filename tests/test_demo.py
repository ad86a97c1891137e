"""navab demo's own parts: the nations' extractions side by side in worker processes give what one process gives."""
import polars as pl
from navab.demo import _extract_all
from navab.extract import EchoGenerator
from navab.settings import repo_root


def test_parallel_extraction_equals_sequential(tmp_path):
    corpus = repo_root() / 'data' / 'demo' / 'corpus'
    kw = dict(generator=EchoGenerator('en'), seed=0, limit=8, progress=False)
    one = _extract_all(['US', 'UK'], corpus, tmp_path / 'one', workers=1, **kw)
    two = _extract_all(['US', 'UK'], corpus, tmp_path / 'two', workers=2, **kw)
    assert set(one) == set(two) == {'US', 'UK'}
    for n in ('US', 'UK'):
        assert one[n][0] == two[n][0] and one[n][1] > 0, n                       # the same counts, and the time of each
        a, b = (pl.read_parquet(tmp_path / d / n / 'samples_all.parquet') for d in ('one', 'two'))
        assert len(a) and a.equals(b), n
