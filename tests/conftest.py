"""Shared fixtures: offline environment, a tiny random model, the real data in ../shared/data."""
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
from pathlib import Path
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
def smollm2():
    "The real embedded SmolLM2-135M-Instruct: (model, tokenizer, info)."
    from navab.models import load_model
    return load_model('smollm2-135m')


@pytest.fixture(scope='session')
def gemma3():
    "The real embedded Gemma-3-270M: (model, tokenizer, info)."
    from navab.models import load_model
    return load_model('gemma3-270m')
