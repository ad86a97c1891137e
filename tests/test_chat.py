"""The chat backend (`chat+http(s)://...`): a fake chat API written here (label log-probs, a missing letter, no
log-probs, unparseable answers, 429 + Retry-After, a request budget, the API key), and the real thing: `navab serve`'s
chat endpoint over the embedded SmolLM2 on a few real HK samples (MC by both kinds, and AJ)."""
import json, math, os, socket, subprocess, sys, time
from contextlib import contextmanager
from pathlib import Path
import httpx
import polars as pl
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from navab.serve import Server
from navab.cli import main
from navab.evaluate import evaluate
from navab.chat import ChatClient, RateLimiter, label_logprobs, parse_letter, NOT_CHOSEN

NAVAB = str(Path(sys.executable).parent / 'navab')
KEY_ENV, KEY = 'NAVAB_CHAT_TEST_KEY', 'sk-navab-test-7f3a9c41d2'

# what the fake API's first answer token's top list holds, per marker in the prompt, and what it says in words
TOP = {'both': [('A', -0.5), (' B', -1.5), ('The', -2.0)], 'onlyA': [('A', -0.3), ('The', -1.0), ('Hmm', -3.0)],
       'none': [('The', -0.1), ('I', -2.0)], 'opall': [('A', -0.2), ('B', -1.0), (' C', -2.0)], 'opmiss': [('A', -0.2), ('B', -1.0)]}
WORDS = {'both': 'B', 'onlyA': 'The answer is A.', 'none': 'I would rather not say.'}


def fake_api(seen: list, logprobs: bool = True, busy: int = 0, key: str | None = KEY):
    "A chat API: checks the key, answers by the marker in the prompt, keeps each request's body in `seen`; its first `busy` requests get 429 + Retry-After: 1."
    app, n = FastAPI(), [0]

    @app.get('/v1/models')
    def models(request: Request):
        if key and request.headers.get('authorization') != f'Bearer {key}': return JSONResponse({'error': {'message': 'bad key'}}, status_code=401)
        return {'data': [{'id': 'fake-chat', 'revision': 'r1'}]}

    @app.post('/v1/chat/completions')
    def chat(req: dict, request: Request):
        if key and request.headers.get('authorization') != f'Bearer {key}': return JSONResponse({'error': {'message': 'bad key'}}, status_code=401)
        n[0] += 1
        if n[0] <= busy: return JSONResponse({'error': {'message': 'slow down'}}, status_code=429, headers={'Retry-After': '1'})
        seen.append(req)
        p = req['messages'][-1]['content']
        mark = next((k for k in TOP if k in p), None)
        if req.get('logprobs') and logprobs:
            top = TOP[mark]
            lp = {'content': [{'token': top[0][0], 'logprob': top[0][1], 'bytes': list(top[0][0].encode()),
                               'top_logprobs': [{'token': t, 'logprob': v, 'bytes': list(t.encode())} for t, v in top]}]}
            text = top[0][0]
        else: lp, text = None, WORDS.get(mark, 'A plain answer.\nSecond line.')
        return {'id': 'x', 'object': 'chat.completion', 'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': text},
                'logprobs': lp, 'finish_reason': 'stop'}], 'usage': {'prompt_tokens': 40, 'completion_tokens': 1, 'total_tokens': 41}}
    return app


@contextmanager
def api(**kw):
    seen = []
    with Server(fake_api(seen, **kw)) as s: yield f'chat+{s.url}/v1#fake-chat', seen


def _samples(path: Path, marks=('both', 'onlyA', 'none', 'both')) -> Path:
    "English samples whose question carries the fake API's marker."
    n = len(marks)
    pl.DataFrame(dict(id=[f'en{i}' for i in range(n)], nation=['US'] * n, lang=['en'] * n, topic=['t'] * n, source_type=['official'] * n,
                      question=[f'Should the state act ({m})?' for m in marks], statement=[f'The state should act, point {i}.' for i in range(n)],
                      reverse_statement=[f'The state should not act, point {i}.' for i in range(n)])).write_parquet(path)
    return path


def _run(args, capsys) -> tuple:
    "`navab ARGS` in this process: (exit code, stdout, stderr)."
    rc = main(args)
    o = capsys.readouterr()
    return rc, o.out, o.err


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


# ---- fast: a fake chat API ----

def test_label_logprobs_and_a_missing_letter(tmp_path, key, capsys):
    "MC by label log-probs: one request per sample, each label's log-prob from the first token's top list, a missing letter bounded and counted."
    with api() as (spec, seen):
        rc, out, err = _run(['evaluate', '--samples', str(_samples(tmp_path/'s.parquet')), '--model', spec, '--api-key-env', KEY_ENV,
                             '--out', str(tmp_path/'run')], capsys)
    assert rc == 0, err
    assert len(seen) == 4 and all(b['max_tokens'] == 1 and b['logprobs'] is True and b['top_logprobs'] == 20 for b in seen)
    s = json.loads((tmp_path/'run'/'summary.json').read_text())
    assert (s['scoring_kind'], s['backend'], s['model_hash']) == ('label-logprob', 'chat', 'chat|fake-chat@r1')
    assert (s['n_label_bounded'], s['n_answers_bounded']) == (3, 2)             # onlyA misses B; none misses both
    assert s['api']['requests'] == 4 and s['api']['prompt_tokens'] == 160
    assert 'scored by label-logprob; 2 answers missing a letter' in out
    r = pl.read_parquet(tmp_path/'run'/'requests.parquet')
    got = {(q, o): (lp, b) for q, o, lp, b in zip(r['sample_id'], r['option'], r['logprob'], r['label_bounded'])}
    assert got[('en0', 'A')] == (-0.5, False) and got[('en0', 'B')] == (-1.5, False)
    assert got[('en1', 'B')] == (-3.0, True) and got[('en2', 'A')] == got[('en2', 'B')] == (-2.0, True)
    sc = pl.read_parquet(tmp_path/'run'/'scores.parquet')
    assert sc['pred'].to_list() == ['A', 'A', None, 'A']                           # both letters missing: a tie, no decision


def test_no_logprobs_falls_back_to_generation(tmp_path, key, capsys):
    "An API without log-probs: found out by the first request, MC answered in words, letters parsed, an unparseable answer counted and shown."
    with api(logprobs=False) as (spec, seen):
        rc, out, err = _run(['evaluate', '--samples', str(_samples(tmp_path/'s.parquet')), '--model', spec, '--api-key-env', KEY_ENV,
                             '--out', str(tmp_path/'run')], capsys)
    assert rc == 0, err
    assert 'returns no log-probs for fake-chat: MC is scored by generation' in out
    assert len(seen) == 1 + 4 and all('logprobs' not in b for b in seen[1:])     # the probe, then one answer per sample
    s = json.loads((tmp_path/'run'/'summary.json').read_text())
    assert (s['scoring_kind'], s['n_unparsed'], s['unparsed_examples']) == ('generation', 1, ['I would rather not say.'])
    assert '1 answers unparsed' in out
    sc = pl.read_parquet(tmp_path/'run'/'scores.parquet')
    assert sc['pred'].to_list() == ['B', 'A', None, 'B'] and sc['correct'].to_list()[2] is False   # never guessed
    r = pl.read_parquet(tmp_path/'run'/'requests.parquet').filter(pl.col('sample_id') == 'en1')
    assert r['logprob'].to_list() == [0.0, NOT_CHOSEN] and r['answer'][0] == 'The answer is A.'


def test_retry_after_is_honoured(tmp_path, key):
    "A 429 with Retry-After: 1 is waited out (not the client's own short backoff) and counted."
    with api(busy=1) as (spec, seen):
        t0 = time.time()
        s = evaluate(pl.read_parquet(_samples(tmp_path/'s.parquet', ('both',))), spec, tmp_path/'run', api_key_env=KEY_ENV, progress=False)
        assert time.time() - t0 >= 1.0
    assert (s['api']['retries'], s['api']['requests']) == (1, 1) and s['api']['waited_s'] >= 1.0


def test_rate_limit_holds_requests_back():
    "Two requests a second: the third waits for the first to leave the window."
    with api(key=None) as (spec, seen):
        c = ChatClient(spec.removeprefix('chat+').split('#')[0], limiter=RateLimiter(rpm=2, window=1.0))
        body = dict(model='fake-chat', messages=[{'role': 'user', 'content': 'both'}], max_tokens=1)
        t0 = time.time()
        for _ in range(3): c.call('/chat/completions', body)
        assert time.time() - t0 >= 0.9 and c.stats()['requests'] == 3


def test_max_requests_stops_and_a_rerun_resumes(tmp_path, key, capsys):
    "A budget of 2 requests stops the run with one line and nothing written but the cache; the same command without it asks only for the rest."
    args = ['evaluate', '--samples', str(_samples(tmp_path/'s.parquet', ('both', 'onlyA', 'none', 'both x', 'onlyA x'))), '--model', None,
            '--api-key-env', KEY_ENV, '--out', str(tmp_path/'run')]
    with api() as (spec, seen):
        args[4] = spec
        rc, out, err = _run(args + ['--max-requests', '2'], capsys)
        assert rc == 1 and len(seen) == 2
        assert 'navab: error: --max-requests 2 spent: 1 of the 4 answers this step still needed were asked and cached in' in err
        assert 'run the same command again to go on' in err and not (tmp_path/'run'/'summary.json').exists()
        rc, out, err = _run(args, capsys)
        assert rc == 0, err
        assert len(seen) == 5                                                    # 2 before, 3 now: nothing asked twice
    s = json.loads((tmp_path/'run'/'summary.json').read_text())
    assert s['n'] == 5 and s['api']['requests'] == 3


def test_the_key_is_never_written(tmp_path, key, capsys):
    "The key goes only into the Authorization header: no file of the run (cache, requests, scores, summary, generations) and no output holds it."
    with api() as (spec, seen):
        samples = str(_samples(tmp_path/'s.parquet'))
        rc, out, err = _run(['evaluate', '--samples', samples, '--model', spec, '--task', 'aj', '--api-key-env', KEY_ENV, '--max-new-tokens', '8',
                             '--out', str(tmp_path/'run')], capsys)
        assert rc == 0, err
        s = json.loads((tmp_path/'run'/'summary.json').read_text())
        assert s['config']['api_key_env'] == KEY_ENV and s['scoring_kind'] == 'label-logprob'
        files = [p for p in (tmp_path/'run').rglob('*') if p.is_file()]
        assert any(p.name.startswith('gen-') for p in files) and any(p.name == 'requests.parquet' for p in files)
        assert not [p for p in files if KEY.encode() in p.read_bytes()], 'the API key was written to a file'
        assert KEY not in out + err
        rc, out, err = _run(['evaluate', '--samples', samples, '--model', spec, '--api-key-env', 'NAVAB_NO_SUCH_VAR', '--out', str(tmp_path/'r2')], capsys)
        assert rc == 1 and 'the environment variable NAVAB_NO_SUCH_VAR is not set' in err
        rc, out, err = _run(['evaluate', '--samples', samples, '--model', spec, '--out', str(tmp_path/'r3')], capsys)   # no key: the API's 401, once
        assert rc == 1 and 'HTTP 401: bad key' in err


def test_pref_and_navab_scoring_are_refused_in_one_line(tmp_path, key, capsys):
    with api() as (spec, seen):
        samples = str(_samples(tmp_path/'s.parquet'))
        rc, out, err = _run(['evaluate', '--samples', samples, '--model', spec, '--task', 'pref', '--api-key-env', KEY_ENV, '--out', str(tmp_path/'p')], capsys)
        assert rc == 1 and err.strip() == ('navab: error: pref needs full log-likelihoods, which chat APIs do not return: '
                                           'use a completions server (openai backend) or the hf backend')
        rc, out, err = _run(['evaluate', '--samples', samples, '--model', spec, '--scoring', 'navab', '--api-key-env', KEY_ENV, '--out', str(tmp_path/'n')], capsys)
        assert rc == 1 and "scoring 'navab'" in err and len(err.strip().splitlines()) == 1
    assert seen == []                                                            # refused before any request


def test_opinions_by_label_logprobs_or_refused(tmp_path, key):
    "GlobalOpinionQA by the option letters' log-probs when the top list holds them all; refused in one line when one is missing."
    def items(mark):
        return pl.DataFrame(dict(id=['q1'], nation=['US'], country=['United States'], question=[f'How good is it ({mark})?'],
                                 options=[['Good', 'Bad', 'Unsure']], distribution=[[0.5, 0.3, 0.2]]))
    with api() as (spec, seen):
        s = evaluate(items('opall'), spec, tmp_path/'ok', task='opinions', api_key_env=KEY_ENV, progress=False)
        sc = pl.read_parquet(tmp_path/'ok'/'scores.parquet')
        p = [math.exp(x) for x in (-0.2, -1.0, -2.0)]
        assert sc['model_dist'][0].to_list() == pytest.approx([x / sum(p) for x in p]) and s['scoring_kind'] == 'label-logprob'
        with pytest.raises(ValueError, match="opinions needs every option letter's log-prob: the API's top 20 first tokens missed a letter for 1 of 1 items"):
            evaluate(items('opmiss'), spec, tmp_path/'miss', task='opinions', api_key_env=KEY_ENV, progress=False)
    with api(logprobs=False) as (spec, seen):
        with pytest.raises(ValueError, match="opinions needs every option letter's log-prob"):
            evaluate(items('opall'), spec, tmp_path/'gen', task='opinions', api_key_env=KEY_ENV, progress=False, chat_scoring='generation')
        assert seen == []


def test_the_openai_completions_backend_takes_the_key_too(tmp_path, key, tiny_model):
    "--api-key-env works for http(s):// completions servers as well: every request carries the key as a Bearer token."
    app, auth = FastAPI(), []
    @app.get('/v1/models')
    def models(request: Request):
        auth.append(request.headers.get('authorization')); return {'data': [{'id': 'tiny', 'revision': 'r1'}]}
    @app.post('/v1/completions')
    def completions(req: dict, request: Request):
        auth.append(request.headers.get('authorization')); return JSONResponse({'message': 'echo is not supported'}, status_code=400)
    with Server(app) as s:
        with pytest.raises(ValueError, match='echo is not supported'):
            evaluate(pl.read_parquet(_samples(tmp_path/'s.parquet')), f'{s.url}/v1#tiny', tmp_path/'run', tokenizer=str(tiny_model),
                     api_key_env=KEY_ENV, progress=False)
    assert len(auth) >= 2 and set(auth) == {f'Bearer {KEY}'}


def test_grid_with_a_chat_model_writes_no_key(tmp_path, key, capsys):
    "navab grid --api-key-env: a chat model's runs, reports and index are made, and none of their files holds the key."
    with api() as (spec, seen):
        rc, out, err = _run(['grid', '--models', spec, '--nations', 'US', '--samples', f"US={_samples(tmp_path/'s.parquet')}", '--tasks', 'mc',
                             '--order', 'seeded', '--api-key-env', KEY_ENV, '--out', str(tmp_path/'reports'), '--no-progress'], capsys)
    assert rc == 0, out + err
    assert 'run-fake-chat_chat-' in out and len(seen) == 4
    files = [p for p in (tmp_path/'reports').rglob('*') if p.is_file()]
    assert any(p.suffix == '.html' for p in files) and any(p.name == 'summary.json' for p in files)
    assert not [p for p in files if KEY.encode() in p.read_bytes()], 'the API key was written to a file'
    s = json.loads(next(p for p in files if p.name == 'summary.json').read_text())
    assert (s['scoring_kind'], s['config']['api_key_env']) == ('label-logprob', KEY_ENV)


# ---- real: navab serve's chat endpoint over the embedded SmolLM2, a few real HK samples ----

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@contextmanager
def serve(model: str, *args):
    "A real `navab serve` process on 127.0.0.1; stopped on exit. Yields its URL."
    port = _free_port()
    p = subprocess.Popen([NAVAB, 'serve', '--model', model, '--port', str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(1200):
            if p.poll() is not None: pytest.fail('navab serve exited: ' + p.stdout.read().decode()[-500:])
            try:
                if httpx.get(url + '/v1/models', timeout=1).status_code == 200: break
            except httpx.HTTPError: time.sleep(0.1)
        else: pytest.fail('navab serve did not come up')
        yield url
    finally:
        if p.poll() is None: p.terminate()
        p.wait(20)


@pytest.mark.slow
def test_real_chat_endpoint_on_hk_samples(shared, smollm2, tmp_path):
    "SmolLM2 behind navab serve's chat endpoint on three real HK samples: MC by label log-probs (= the model's next-token log-probs after its chat template, here), MC by generation, and AJ."
    import torch
    from navab.data import read_samples
    hk = read_samples(shared/'navab-hk'/'human_statement_result.json', 'CN').valid
    hk = hk.with_columns((pl.col('question') + pl.col('statement') + pl.col('reverse_statement')).str.len_chars().alias('_n')).sort('_n', 'id').head(3).drop('_n')
    m, tok, info = smollm2
    with serve('smollm2-135m') as url:
        spec = f'chat+{url}/v1#smollm2-135m'
        a = evaluate(hk, spec, tmp_path/'label', progress=False)
        g = evaluate(hk, spec, tmp_path/'gen', progress=False, chat_scoring='generation')
        j = evaluate(hk, spec, tmp_path/'aj', task='aj', max_new_tokens=8, progress=False)
    assert (a['scoring_kind'], g['scoring_kind'], j['scoring_kind']) == ('label-logprob', 'generation', 'label-logprob')
    assert (a['api']['requests'], g['api']['requests'], j['api']['requests']) == (3, 3, 9)   # AJ: MC, the answers, the judge
    r = pl.read_parquet(tmp_path/'label'/'requests.parquet')
    for ctx, grp in r.group_by('context', maintain_order=True):                   # each label log-prob is the model's own, read in process
        ids = tok(tok.apply_chat_template([{'role': 'user', 'content': ctx[0]}], tokenize=False, add_generation_prompt=True), add_special_tokens=False).input_ids
        with torch.inference_mode(): lp = torch.log_softmax(m(torch.tensor([ids])).logits[0, -1].float(), -1)
        v, i = lp.topk(20)
        want, _ = label_logprobs([[tok.decode([t]), x] for t, x in zip(i.tolist(), v.tolist())], grp['option'].to_list())
        assert grp['logprob'].to_list() == pytest.approx(want, abs=1e-4)
    r = pl.read_parquet(tmp_path/'gen'/'requests.parquet')
    sc = pl.read_parquet(tmp_path/'gen'/'scores.parquet').join(r.filter(pl.col('option') == 'A').select('sample_id', 'answer'), on='sample_id')
    assert [parse_letter(x, ['A', 'B']) for x in sc['answer']] == sc['pred'].to_list()   # each decision is its answer's letter, or none
    assert g['n_unparsed'] == sc['pred'].null_count()
    aj = pl.read_parquet(tmp_path/'aj'/'scores.parquet')
    assert len(aj) == 3 and all(isinstance(x, str) for x in aj['answer'])
    print({'label': (a['accuracy'], a.get('n_answers_bounded', 0)), 'generation': (g['accuracy'], g['n_unparsed']), 'aj': j['accuracy']})
