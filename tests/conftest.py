"""Shared fixtures: offline environment, a tiny random model, the real data in ../shared/data."""
import json
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import time
from pathlib import Path
import polars as pl
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared():
    "The real data folder ../shared/data; the test is skipped, saying so, when it is absent."
    if not (SHARED / 'navab-hk').exists():
        pytest.skip(f"real data not found at {SHARED} (../shared/data beside the checkout): skipping the real-data test")
    return SHARED


@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory):
    "Path of a tiny random Llama with a byte-level BPE tokenizer, built offline."
    from navab.models import make_tiny_model
    return make_tiny_model(tmp_path_factory.mktemp('tiny') / 'tiny-llama')


@pytest.fixture(scope='session')
def tiny_long(tmp_path_factory):
    "The tiny random Llama told it may read 2048 tokens (rotary positions: only the config's limit changes): HK and demo prompts in its 400-token byte vocabulary run past 256."
    from navab.models import make_tiny_model
    p = make_tiny_model(tmp_path_factory.mktemp('tiny-long') / 'tiny-long')
    cfg = json.loads((p / 'config.json').read_text()); cfg['max_position_embeddings'] = 2048
    (p / 'config.json').write_text(json.dumps(cfg))
    return p


@pytest.fixture(scope='session')
def smollm2():
    "The real embedded SmolLM2-135M-Instruct: (model, tokenizer, info)."
    from navab.models import load_model
    return load_model('smollm2-135m')


@pytest.fixture(scope='session')
def gemma3():
    "The real embedded Gemma-3-270M: (model, tokenizer, info)."
    from navab.models import load_model
    return load_model('gemma3-270m')


# ---- a finished grid over two tiny models (test_reports reads it; test_faults kills a copy of it) ----

PWN = '<script>window.__pwned=1</script>'


def _samples(path: Path) -> Path:
    "Six French samples whose question carries a <script> tag (data, to be shown as text)."
    n = 6
    pl.DataFrame(dict(id=[f'fr{i}' for i in range(n)], nation=['FR'] * n, lang=['fr'] * n, topic=['env', 'env', 'tax', 'tax', 'health', 'health'],
                      source_type=['official', 'quoted'] * 3, question=[f"L'État doit-il agir {i} ? {PWN}" for i in range(n)],
                      statement=[f"L'État doit agir, point {i} & <b>gras</b>." for i in range(n)],
                      reverse_statement=[f"L'État ne doit pas agir, point {i}." for i in range(n)])).write_parquet(path)
    return path


@pytest.fixture(scope='session')
def study(tmp_path_factory):
    "Two tiny models, their metadata table and settings, French samples, and one finished grid over them."
    from navab.models import make_tiny_model
    from navab.grid import run_grid
    d = tmp_path_factory.mktemp('study')
    models = [str(make_tiny_model(d/f'tiny-{x}', seed=i)) for i, x in enumerate('ab')]
    pl.DataFrame(dict(model=['tiny-a', 'tiny-b'], hf_id=['-', '-'], en_share=[0.9, 0.4], zh_share=[0.0, 0.1], fr_share=[0.05, 0.5], de_share=[0.05, 0.0],
                      n_languages=[3, 20], source=['test', 'test'])).write_csv(d/'models.csv')
    ini = (ROOT/'settings.ini').read_text(encoding='utf-8').replace('model_table = data/models.csv', f'model_table = {d/"models.csv"}')
    ini = ini.replace('templates = data/templates.json', f'templates = {ROOT/"data"/"templates.json"}')
    (d/'settings.ini').write_text(ini, encoding='utf-8')
    samples = _samples(d/'fr.parquet')
    kw = dict(models=models, nations=['FR'], samples={'FR': [samples]}, methods=['mc', 'aj', 'robustness'], workers=1, seed=0, max_new_tokens=6,
              progress=False, settings=d/'settings.ini')
    t = time.time()
    idx = run_grid(out=d/'reports', **kw)
    return dict(dir=d, kw=kw, index=idx, first_s=time.time() - t, cmd=['--models', ','.join(models), '--nations', 'FR', '--samples', f'FR={samples}',
                '--methods', 'mc,aj,robustness', '--seed', '0', '--max-new-tokens', '6', '--settings', str(d/'settings.ini'), '--no-progress'])
