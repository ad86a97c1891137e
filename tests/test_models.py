"""Model naming, loading offline, recorded info, and the real embedded models in four languages."""
import math, os, subprocess, sys
from pathlib import Path
import pytest
from navab.models import load_model, resolve, sentence_logprob, SENTENCES, EMBEDDED, model_table
from navab.settings import cache_dir

NAVAB = str(Path(sys.executable).parent / 'navab')


def test_tiny_model_loads_and_scores(tiny_model):
    m, tok, info = load_model(str(tiny_model))
    assert info.kind == 'local' and info.start_token == '<s>' and info.n_params > 0 and len(info.hash) == 64
    assert math.isfinite(sentence_logprob(m, tok, 'Die Regierung muss die Umwelt schützen.', info.start_token_id))
    m16, _, i16 = load_model(str(tiny_model), dtype='bfloat16')
    assert i16.dtype == 'bfloat16' and next(m16.parameters()).dtype.__str__() == 'torch.bfloat16'


def test_trust_remote_code_is_off_unless_asked(tiny_model, monkeypatch):
    import transformers
    seen = []
    orig = transformers.AutoModelForCausalLM.from_pretrained
    def spy(*a, **k):
        seen.append(k.get('trust_remote_code')); return orig(*a, **k)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, 'from_pretrained', spy)
    import navab.models
    navab.models._LOADED.clear()                   # load for real (not from navab's in-process model cache)
    load_model(str(tiny_model)); load_model(str(tiny_model), trust_remote_code=True)
    assert seen == [False, True]


def test_hostile_model_names_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv('NAVAB_CACHE', str(tmp_path / 'cache'))
    assert cache_dir() == tmp_path / 'cache'
    for bad in ('../../x', '/etc/passwd', 'a/../../b', '..', 'x/y/z'):
        r = subprocess.run([NAVAB, 'models', 'fetch', bad], capture_output=True, text=True, cwd=tmp_path,
                           env=dict(os.environ, NAVAB_CACHE=str(tmp_path / 'cache')))
        assert r.returncode == 1 and r.stderr.startswith('navab: error:') and r.stderr.count('\n') == 1, (bad, r.stderr)
    assert not (tmp_path / 'cache').exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    assert resolve('smollm2-135m').path == str(tmp_path / 'cache' / 'models' / 'smollm2-135m')


def test_models_cli_lists_and_locates():
    r = subprocess.run([NAVAB, 'models', 'list'], capture_output=True, text=True, check=True)
    assert 'smollm2-135m' in r.stdout and 'gemma3-270m' in r.stdout and 'NAVAB_CACHE' in r.stdout
    r = subprocess.run([NAVAB, 'models', 'path', 'gemma3-270m'], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == str(cache_dir() / 'models' / 'gemma3-270m')


def test_model_table_covers_embedded_models():
    t = model_table()
    assert set(EMBEDDED) <= set(t['model']) and t['source'].str.len_chars().min() > 10


@pytest.mark.slow
@pytest.mark.parametrize('name,start', [('smollm2-135m', '<|endoftext|>'), ('gemma3-270m', '<bos>')])
def test_embedded_models_offline_four_languages(name, start):
    assert os.environ.get('HF_HUB_OFFLINE') == '1'
    m, tok, info = load_model(name)
    assert info.start_token == start and info.kind == 'embedded' and info.dtype == 'float32'
    assert 100e6 < info.n_params < 300e6
    lps = {lang: sentence_logprob(m, tok, s, info.start_token_id) for lang, s in SENTENCES.items()}
    assert all(math.isfinite(v) and v < 0 for v in lps.values()), lps
    # a real model prefers a real sentence to the same words shuffled, in every language
    for lang, s in SENTENCES.items():
        words = list(s) if lang == 'zh' else s.split()
        shuffled = ('' if lang == 'zh' else ' ').join(words[::-1])
        assert sentence_logprob(m, tok, shuffled, info.start_token_id) < lps[lang], (name, lang)
