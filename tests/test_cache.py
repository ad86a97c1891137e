"""The one cache (navab.cache): scores, generations and choices, from the `hf` and `openai` backends and extraction's
server generator, go through one key function and one reader/writer; keys differ by dtype, backend and parameters;
a write killed by SIGKILL leaves a readable cache; a run folder in the layout navab wrote before the cache chapter
existed reads as it is, its answers reused, not recomputed."""
import dataclasses, hashlib, json, os, signal, subprocess, sys, textwrap, time, uuid
from pathlib import Path
import polars as pl
import pytest
import navab.cache as C
from navab.cache import KINDS, Cached, cache_key, cache_parts, read_cache
from navab.score import score, request_key
from navab.generate import generate, generation_key
from navab.backend import HFBackend, get_backend, generate_http
from navab.llm import HttpGenerator
from navab.serve import make_app, Server

REQ = pl.DataFrame({'context': ['Question: A or B?\nAnswer:'] * 2 + ['', 'Q: '], 'continuation': [' A', ' B', 'Le gouvernement doit agir.', 'yes'],
                    'group': ['q', 'q', 'n', 'y']})
PROMPTS = ['Question: Should the nation protect the climate?\nAnswer:', 'Frage: Soll der Staat sparen?\nAntwort:']


def _sha(x) -> str:
    return hashlib.sha256(json.dumps(x).encode()).hexdigest()


def _echo_server():
    "A server with no /v1/models (so no tokenizer is looked for): echo requests get -1 per character after the first (vLLM's shape), completions get 'yes'."
    from fastapi import FastAPI
    app, calls = FastAPI(), []

    @app.post('/v1/completions')
    def comp(req: dict):
        calls.append(req)
        ps = req['prompt'] if isinstance(req['prompt'], list) else [req['prompt']]
        if req.get('echo'):
            return {'choices': [{'index': i, 'text': p, 'logprobs': {'tokens': list(p), 'text_offset': list(range(len(p))),
                                                                       'token_logprobs': [None] + [-1.0] * (len(p) - 1)}} for i, p in enumerate(ps)]}
        return {'choices': [{'index': i, 'text': ' yes\nmore', 'finish_reason': 'stop'} for i in range(len(ps))]}
    return Server(app), calls


def test_the_three_kinds_share_one_reader_and_writer(tiny_model, tmp_path, monkeypatch):
    "hf and openai scoring and generation, and extraction's choose and complete over a server, all write through cache.write_part into one folder and read through cache.read_cache."
    d = tmp_path / 'cache'
    writes, reads = [], []
    real_write, real_read = C.write_part, C.read_cache
    monkeypatch.setattr(C, 'write_part', lambda run_dir, kind, rows, name=None: writes.append((kind, real_write(run_dir, kind, rows, name))) or writes[-1][1])
    monkeypatch.setattr(C, 'read_cache', lambda run_dir, kind: reads.append(kind) or real_read(run_dir, kind))
    hf = HFBackend(str(tiny_model))
    got = {'hf': (hf.score(REQ, run_dir=d, batch_size=2, progress=False), hf.generate(PROMPTS, run_dir=d, max_new_tokens=4, progress=False))}
    with Server(make_app(str(tiny_model), served_name='tiny')) as s:
        ob = get_backend(f"{s.url}/v1#tiny", tokenizer=str(tiny_model), concurrency=2)
        got['openai'] = (ob.score(REQ, run_dir=d, batch_size=2, progress=False), ob.generate(PROMPTS, run_dir=d, max_new_tokens=4, progress=False))
    srv, _ = _echo_server()
    with srv as s:
        h = HttpGenerator(s.url, 'm', run_dir=d)
        ch = h.choose(['Q: ok? A:', 'Hi'], [[' yes', ' no'], ['!']], progress=False)
        done = h.complete(['Q: ok? A:'], max_new_tokens=3, progress=False)
    assert h.choose_mode == 'logprobs' and ch == [[-4.0, -3.0], [-1.0]] and done == ['yes']
    assert {k for k, _ in writes} == set(KINDS) and set(reads) == set(KINDS)
    on_disk = {p for p in d.iterdir()}
    assert on_disk <= {p for _, p in writes}                                  # every file there came from write_part
    assert sorted(p.name.split('-')[0] for p in on_disk) == ['choose', 'gen', 'part']   # compacted: one part per kind
    sc, gen = read_cache(d, 'score'), read_cache(d, 'generate')
    assert set(sc['model_hash']) == {hf.info.hash, ob.info.hash} and len(sc) == 2 * len(REQ)
    assert set(gen['model_hash']) == {hf.info.hash, ob.info.hash, h.hash} and len(gen) == 2 * len(PROMPTS) + 1
    for b, info in (('hf', hf.info), ('openai', ob.info)):                    # the stored values are the returned ones
        res, texts = got[b]
        by = dict(zip(sc['key'], sc['logprob']))
        assert [by[request_key(info, c, x)] for c, x in zip(REQ['context'], REQ['continuation'])] == res['logprob'].to_list()
        assert sorted(gen.filter(pl.col('model_hash') == info.hash)['text']) == sorted(texts)
    assert sorted(read_cache(d, 'choose')['logprob']) == [-4.0, -3.0, -1.0]
    assert max(abs(a - b) for a, b in zip(got['hf'][0]['logprob'], got['openai'][0]['logprob'])) < 1e-4   # same model, two backends


def test_keys_differ_by_dtype_backend_and_params_and_keep_their_old_recipes(tiny_model):
    "One key function: another dtype, backend, start token or parameter gives another key; each kind's key is still the one its hand-made recipe gave."
    hf = HFBackend(str(tiny_model))
    info = hf.info
    c, x = 'Question: A or B?\nAnswer:', ' A'
    k = request_key(info, c, x)
    assert k == _sha(['navab-score-2', info.hash, info.dtype, info.start_token, c, x])           # the score chapter's old recipe
    assert k != request_key(dataclasses.replace(info, dtype='bfloat16'), c, x)                  # dtype
    assert k != request_key(dataclasses.replace(info, start_token='</s>'), c, x)                # start token
    with Server(make_app(str(tiny_model), served_name='tiny')) as s:
        ob = get_backend(f"{s.url}/v1#tiny", tokenizer=str(tiny_model))
    assert ob.info.hash.startswith('openai|tiny@') and k != request_key(ob.info, c, x)         # backend (same weights)
    p = dict(max_new_tokens=8, temperature=0.0, seed=0, chat=False, stop='\n')
    g = generation_key(info, 'Q?', p)
    assert g == _sha(['navab-generate-2', info.hash, info.dtype, 'Q?', sorted(p.items())])      # the generate chapter's old recipe
    for change in (dict(max_new_tokens=9), dict(seed=1), dict(stop=None), dict(chat=True), dict(temperature=0.5), dict(stops=['"}'])):
        assert generation_key(info, 'Q?', {**p, **change}) != g, change
    assert generation_key(dataclasses.replace(info, dtype='float16'), 'Q?', p) != g
    assert generation_key(ob.info, 'Q?', p) != g and cache_key('generate', ob.ident, 'remote', ('Q?',), p) != g
    assert cache_key('choose', 'http|u|m', None, ('Q?', ' yes')) == _sha(['navab-choose-1', 'http|u|m', 'Q?', ' yes'])   # extraction's old recipe
    assert cache_key('choose', 'http|u|m', None, ('Q?', ' yes')) != cache_key('choose', 'http|u|m', None, ('Q?', ' no'))
    with pytest.raises(ValueError, match="unknown cache kind 'logits'"): cache_key('logits', 'h', 'float32', ('x',))


KILLED = """
import os, signal, sys
import polars as pl
import navab.schema as S
orig, n, at = S.atomic_write, [0], int(sys.argv[2])
def faulty(path, write):
    n[0] += 1
    if n[0] == at:           # this write: half the bytes, then kill -9, in the middle of the write
        def half(t):
            write(t); b = t.read_bytes(); t.write_bytes(b[:len(b) // 2]); os.kill(os.getpid(), signal.SIGKILL)
        return orig(path, half)
    return orig(path, write)
S.atomic_write = faulty
import navab.cache as C
for i in range(4):
    C.write_part(sys.argv[1], 'score', pl.DataFrame({'key': [f's{i}'], 'logprob': [-1.0 * i], 'n_tokens': [1], 'is_greedy': [True], 'model_hash': 'h', 'dtype': 'float32'}))
    C.write_part(sys.argv[1], 'generate', pl.DataFrame({'key': [f'g{i}'], 'text': [f't{i}'], 'prompt': [f'p{i}'], 'model_hash': 'h', 'params': '{}'}))
    C.write_part(sys.argv[1], 'choose', pl.DataFrame({'key': [f'c{i}'], 'logprob': [-0.5 * i]}))
"""


@pytest.mark.parametrize('at', [1, 5, 12])
def test_a_write_killed_midway_leaves_a_readable_cache(tmp_path, at):
    "A process killed by SIGKILL in the middle of its `at`-th part write (of 12): every kind reads the whole parts written before, nothing else; the next write sweeps the debris."
    d = tmp_path / 'cache'
    r = subprocess.run([sys.executable, '-c', textwrap.dedent(KILLED), str(d), str(at)], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert len(list(d.glob('.*.tmp'))) == 1                                  # the half-written part, never renamed into place
    whole = at - 1
    want = {'score': [f's{i}' for i in range(4) if 3 * i < whole], 'generate': [f'g{i}' for i in range(4) if 3 * i + 1 < whole],
            'choose': [f'c{i}' for i in range(4) if 3 * i + 2 < whole]}
    for kind, keys in want.items():
        assert read_cache(d, kind)['key'].to_list() == keys, kind
    all_keys = [f's{i}' for i in range(4)]
    c = Cached(d, 'score', all_keys)                                          # a restarted call computes exactly the rest
    assert [all_keys[i] for i in c.missing()] == [k for k in all_keys if k not in want['score']]
    todo = c.missing()
    c.add(pl.DataFrame({'key': [all_keys[i] for i in todo], 'logprob': -9.0, 'n_tokens': 1, 'is_greedy': True, 'model_hash': 'h', 'dtype': 'float32'}))
    c.close()
    assert sorted(read_cache(d, 'score')['key']) == all_keys
    assert len(cache_parts(d, 'score')) == (1 if todo else 4)                 # merged when the call added answers; nothing written otherwise
    if todo: assert not list(d.glob('.*.tmp'))                                # the dead writer's temporary file is swept by the next write


def _old_part(d: Path, prefix: str, frame: pl.DataFrame):
    "A part as navab wrote it before the cache chapter: `PREFIX-TIME-RANDOM.parquet`, the frame as it was."
    frame.write_parquet(d / f"{prefix}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet")


def test_an_old_run_folder_reads(tiny_model, tmp_path):
    "A folder written by the three hand-made caches (old names, columns and key recipes, values marked): every answer is read back, nothing is recomputed or rewritten."
    from navab.models import load_model
    m, tok, info = load_model(str(tiny_model))
    d = tmp_path / 'old'
    d.mkdir()
    ks = [_sha(['navab-score-2', info.hash, info.dtype, info.start_token, c, x]) for c, x in zip(REQ['context'], REQ['continuation'])]
    RES = {'key': pl.String, 'logprob': pl.Float64, 'n_tokens': pl.Int64, 'is_greedy': pl.Boolean, 'model_hash': pl.String, 'dtype': pl.String}
    _old_part(d, 'part', pl.DataFrame({'key': ks[:3], 'logprob': [-123.0, -124.0, -125.0], 'n_tokens': [1, 1, 7], 'is_greedy': False,
                                       'model_hash': info.hash, 'dtype': info.dtype}, schema=RES))
    _old_part(d, 'part', pl.DataFrame({'key': ks[2:], 'logprob': [-125.0, -126.0], 'n_tokens': [7, 1], 'is_greedy': False,
                                       'model_hash': info.hash, 'dtype': info.dtype}, schema=RES))
    p = dict(max_new_tokens=5, temperature=0.0, seed=0, chat=False, stop='\n')
    _old_part(d, 'gen', pl.DataFrame({'key': [_sha(['navab-generate-2', info.hash, info.dtype, q, sorted(p.items())]) for q in PROMPTS],
                                      'text': ['OLD-1', 'OLD-2'], 'prompt': PROMPTS, 'model_hash': info.hash, 'params': json.dumps(p)}))
    url = 'http://127.0.0.1:9/v1'                                              # nothing listens there: only the cache can answer
    _old_part(d, 'gen', pl.DataFrame({'key': [_sha(['navab-generate-2', f'http|{url}|m', 'remote', q, sorted(p.items())]) for q in PROMPTS],
                                      'text': ['HTTP-1', 'HTTP-2'], 'prompt': PROMPTS, 'model_hash': f'http|{url}|m', 'params': json.dumps(p)}))
    _old_part(d, 'choose', pl.DataFrame({'key': [_sha(['navab-choose-1', f'http|{url}|m', 'Q:', o]) for o in (' yes', ' no')], 'logprob': [-7.0, None]},
                                        schema={'key': pl.String, 'logprob': pl.Float64}))
    before = sorted(f.name for f in d.iterdir())
    got = score(REQ, m, tok, info, run_dir=d, progress=False)
    assert got['logprob'].to_list() == [-123.0, -124.0, -125.0, -126.0] and got['n_tokens'].to_list() == [1, 1, 7, 1]
    assert HFBackend(None, loaded=(m, tok, info)).score(REQ, run_dir=d, progress=False)['logprob'].to_list() == got['logprob'].to_list()
    assert generate(PROMPTS, m, tok, info, run_dir=d, max_new_tokens=5, progress=False) == ['OLD-1', 'OLD-2']
    assert generate_http(PROMPTS, url, 'm', run_dir=d, max_new_tokens=5, retries=0, progress=False) == ['HTTP-1', 'HTTP-2']
    h = HttpGenerator(url, 'm', run_dir=d, retries=0)
    assert h.complete(PROMPTS, max_new_tokens=5, stop='\n', progress=False) == ['HTTP-1', 'HTTP-2']
    h.choose_mode = 'logprobs'                                                  # as found on a first use, before the restart
    assert h.choose(['Q:'], [[' yes', ' no']], progress=False) == [[-7.0, None]]
    assert sorted(f.name for f in d.iterdir()) == before                       # nothing computed, so nothing written
    assert score(REQ[:1].with_columns(pl.lit(' C').alias('continuation')), m, tok, info, run_dir=d, progress=False)['logprob'][0] != -123.0
    assert len(read_cache(d, 'score')) == 5 and len(cache_parts(d, 'score')) == 1   # a new answer: the old parts merged with it
    (d / 'choose-0-older.parquet').write_bytes(b'PAR1 not really')
    with pytest.raises(ValueError, match=r'choose-0-older.parquet: not a readable choose cache part .*delete it'):
        h.choose(['Q:'], [[' yes']], progress=False)
