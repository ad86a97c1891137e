"""The backend seam: `hf` (in process) and `openai` (a real `navab serve` process on 127.0.0.1, started and stopped here)
give the same log-probs and decisions; a killed server resumes from the cache; 500s are retried; bad answers fail in
one line; lm-evaluation-harness's own `local-completions` client agrees with its `hf` model through navab serve."""
import json, os, signal, socket, subprocess, sys, threading, time
from contextlib import contextmanager
from pathlib import Path
import httpx
import polars as pl
import pytest
from navab.backend import get_backend, HFBackend, OpenAIBackend
from navab.score import read_results
from navab.cache import cache_parts
from navab.serve import make_app, Server

NAVAB = str(Path(sys.executable).parent / 'navab')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@contextmanager
def serve(model: str, port: int | None = None, *args):
    "A real `navab serve` process on 127.0.0.1 (a free port unless given, more flags in `args`); killed on exit. Yields `(url, process)`."
    port = port or _free_port()
    p = subprocess.Popen([NAVAB, 'serve', '--model', model, '--port', str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(600):
            if p.poll() is not None: pytest.fail('navab serve exited: ' + p.stdout.read().decode()[-500:])
            try:
                if httpx.get(url + '/v1/models', timeout=1).status_code == 200: break
            except httpx.HTTPError: time.sleep(0.1)
        else: pytest.fail('navab serve did not come up')
        yield url, p
    finally:
        if p.poll() is None: p.terminate()
        p.wait(20)


def _requests(n: int) -> pl.DataFrame:
    "n distinct MC-like requests, two options per question, grouped."
    qs = [f"Question {i}: should the state act?\nAnswer:" for i in range(n // 2)]
    return pl.DataFrame({'context': [q for q in qs for _ in (0, 1)], 'continuation': [' A', ' B'] * len(qs),
                         'group': [str(i) for i in range(len(qs)) for _ in (0, 1)]})


def _same(a: pl.DataFrame, b: pl.DataFrame, tol: float = 1e-4):
    assert a.select('context', 'continuation', 'n_tokens', 'is_greedy').equals(b.select('context', 'continuation', 'n_tokens', 'is_greedy'))
    d = (a['logprob'] - b['logprob']).abs().max()
    assert d <= tol, f"largest log-prob difference {d}"


# ---- fast: a tiny random model ----

def test_tiny_served_equals_in_process_and_resumes_after_kill(tiny_model, tmp_path):
    "Scored through a navab serve process killed mid-run, then restarted on another port: same results as hf, no row twice or missing."
    req = _requests(160)
    ref = HFBackend(str(tiny_model)).score(req, progress=False)
    cache = tmp_path / 'cache'
    with serve(str(tiny_model)) as (url, p):
        b = get_backend(f"{url}/v1#{tiny_model}", concurrency=2, retries=0)
        assert (b.kind, b.mode) == ('openai', 'tokens')
        def kill():                                                 # kill -9 as soon as the first results are stored
            for _ in range(2000):
                if cache_parts(cache, 'score'): os.kill(p.pid, signal.SIGKILL); return
                time.sleep(0.005)
        t = threading.Thread(target=kill); t.start()
        with pytest.raises(ConnectionError):
            b.score(req, run_dir=cache, batch_size=2, progress=False)
        t.join()
    before = read_results(cache)
    assert 0 < len(before) < len(req), len(before)                  # killed mid-run: some rows stored, not all
    with serve(str(tiny_model)) as (url2, _):                       # a new process, a new port: the cache key holds no URL
        got = get_backend(f"{url2}/v1#{tiny_model}", concurrency=2).score(req, run_dir=cache, batch_size=2, progress=False)
    _same(got, ref)
    rows = pl.concat([pl.read_parquet(f) for f in cache_parts(cache, 'score')])
    assert len(rows) == rows['key'].n_unique() == len(req)          # one row per request: none twice, none missing
    kept = before.join(rows, on='key', suffix='_now')
    assert len(kept) == len(before) and (kept['logprob'] == kept['logprob_now']).all()   # stored rows were not recomputed


def test_grid_and_robustness_through_a_served_model_equal_in_process(tiny_model, tmp_path):
    "navab grid (MC and robustness) on a model behind navab serve (its batcher gathering the client's concurrent requests) gives what the in-process grid gives."
    from conftest import _samples
    from navab.grid import run_grid
    from navab.runs import run_dir
    f = _samples(tmp_path / 'fr.parquet')
    run_grid([str(tiny_model)], ['FR'], {'FR': [f]}, ['mc', 'robustness'], tmp_path / 'local', progress=False, robust_limit=4)
    with serve(str(tiny_model), None, '--served-name', 'tiny-llama', '--batch-wait-ms', '20') as (url, _):
        run_grid([f"{url}/v1#tiny-llama"], ['FR'], {'FR': [f]}, ['mc', 'robustness'], tmp_path / 'http', progress=False, robust_limit=4,
                 backend=dict(tokenizer=str(tiny_model), concurrency=4))
    a, b = (run_dir(tmp_path / k, m, 'FR', 'mc') for k, m in (('local', str(tiny_model)), ('http', f"{url}/v1#tiny-llama")))
    assert a.parts[-3:] == b.parts[-3:] == ('tiny-llama', 'FR', 'mc')
    sa, sb = (pl.read_parquet(d / 'scores.parquet') for d in (a, b))
    assert sa['correct'].to_list() == sb['correct'].to_list() and (sa['margin'] - sb['margin']).abs().max() <= 1e-4
    fa, fb = (pl.read_parquet(d / 'robustness' / 'variations.parquet') for d in (a, b))
    diff = [c for c in fa.columns if not fa[c].dtype.is_float() and c != 'reason' and fa[c].to_list() != fb[c].to_list()]
    assert [str(x).split(' has ')[-1] for x in fa['reason']] == [str(x).split(' has ')[-1] for x in fb['reason']]   # the reason names the model as given
    assert len(fa) == len(fb) > 0 and diff == [], [(x, y) for c in diff for x, y in zip(fa[c], fb[c]) if x != y]
    for c in (c for c in fa.columns if fa[c].dtype.is_float()): assert (fa[c] - fb[c]).abs().max() <= 1e-4, c
    assert json.loads((b / 'summary.json').read_text())['backend'] == 'openai'


def test_server_errors_are_retried_and_nothing_is_lost(tiny_model, tmp_path):
    "A server that answers 500 and 429 for a while during scoring (after its probe), then recovers: every request is scored once, equal to hf."
    app, n, armed = make_app(str(tiny_model), served_name='tiny'), [0], [False]

    @app.middleware('http')
    async def flaky(request, call_next):
        from fastapi.responses import JSONResponse
        if request.url.path.endswith('/completions') and armed[0]:
            n[0] += 1
            if 3 <= n[0] <= 6: return JSONResponse({'message': 'overloaded'}, status_code=500 if n[0] % 2 else 429)
        return await call_next(request)
    req = _requests(40)
    with Server(app) as s:
        b = get_backend(f"{s.url}/v1#tiny", tokenizer=str(tiny_model), concurrency=1, backoff=0.01)
        armed[0] = True
        got = b.score(req, run_dir=tmp_path, batch_size=4, progress=False)
    assert b.per_request is None and n[0] == 4 + 10                # the four failures happened, and each of the 10 batches was then answered
    _same(got, HFBackend(str(tiny_model)).score(req, progress=False))
    assert len(read_results(tmp_path)) == len(req)


def _bad_app(kind: str):
    "A server whose completions answers are broken in one way."
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse
    app = FastAPI()

    @app.get('/v1/models')
    def models(): return {'data': [{'id': 'm'}]}

    @app.post('/v1/completions')
    def comp(req: dict):
        if kind == 'html': return PlainTextResponse('<html>Bad gateway</html>')
        if kind == 'nologprobs': return {'choices': [{'index': 0, 'text': 'x', 'logprobs': None}]}
        return JSONResponse({'error': {'message': 'This model does not support echo.'}}, status_code=400)
    return app


@pytest.mark.parametrize('kind, says', [('html', "the server's answer is not JSON"), ('nologprobs', 'the server returns no prompt log-probs'),
                                        ('400', 'HTTP 400: This model does not support echo.')])
def test_bad_answers_give_one_clear_line(kind, says, tiny_model, tmp_path, capsys):
    from conftest import _samples
    from navab.cli import main
    with Server(_bad_app(kind)) as s:
        rc = main(['evaluate', '--samples', str(_samples(tmp_path / 'fr.parquet')), '--model', f"{s.url}/v1#m",
                   '--tokenizer', str(tiny_model), '--out', str(tmp_path / 'run')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith('navab: error: ') and says in err[0], err


def test_a_server_with_another_tokenizer_is_refused(tiny_model, tmp_path):
    "The served model's tokenizer is not the one navab was told: refused before anything is scored."
    other = tmp_path / 'other'          # a tokenizer of another vocabulary: bytes and few merges, so more tokens
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.BPE()); tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(['x y z'] * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=['<s>', '</s>'], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token='<s>', eos_token='</s>').save_pretrained(other)
    with Server(make_app(str(tiny_model), served_name='tiny')) as s:
        with pytest.raises(ValueError, match='pass --tokenizer'):
            get_backend(f"{s.url}/v1#tiny", tokenizer=str(other))
        assert get_backend(f"{s.url}/v1#tiny", tokenizer=str(tiny_model)).mode == 'tokens'


# ---- real: the embedded models on the real HK samples ----

HK = 12   # samples per check (long Chinese prompts): MC (answer and navab scoring) and AJ, through hf and through a navab serve process


def _hk(shared):
    from navab.data import load_samples
    return load_samples(shared / 'navab-hk' / 'human_statement_result.json', 'CN').valid.head(HK)


def _compare_runs(a: Path, b: Path):
    "Two evaluate runs: identical decisions, log-probs within 1e-3; returns the largest difference."
    sa, sb = pl.read_parquet(a / 'scores.parquet'), pl.read_parquet(b / 'scores.parquet')
    assert sa.select('sample_id', 'pred', 'correct').equals(sb.select('sample_id', 'pred', 'correct'))
    ra, rb = pl.read_parquet(a / 'requests.parquet'), pl.read_parquet(b / 'requests.parquet')
    assert ra.select('sample_id', 'stage', 'option', 'context', 'continuation', 'n_tokens', 'is_greedy').equals(
        rb.select('sample_id', 'stage', 'option', 'context', 'continuation', 'n_tokens', 'is_greedy'))
    d = (ra['logprob'] - rb['logprob']).abs().max()
    assert d <= 1e-3, d
    if 'answer' in sa.columns: assert sa['answer'].to_list() == sb['answer'].to_list()   # AJ: the same generated answers
    return d


@pytest.mark.slow
@pytest.mark.parametrize('model', ['smollm2-135m', 'gemma3-270m'])
def test_hk_samples_hf_equals_openai(model, shared, tmp_path):
    "Real HK samples, both embedded models, MC in answer and navab scoring, AJ (plain and in the chat template) and pref: hf in process = openai via navab serve."
    from navab.evaluate import evaluate
    S = _hk(shared)
    diffs = {}
    with serve(model) as (url, _):
        spec = f"{url}/v1#{model}"
        runs = [('aj', 'answer', False), ('mc', 'navab', False), ('pref', 'answer', False)] + [('aj', 'answer', True)] * (model == 'smollm2-135m')  # the embedded gemma has no chat template
        for method, scoring, chat in runs:     # an AJ run holds its MC requests (answer scoring) too
            kw = dict(method=method, scoring=scoring, max_new_tokens=8, progress=False, chat=chat)
            a, b = tmp_path / f'hf-{method}-{scoring}-{chat}', tmp_path / f'oa-{method}-{scoring}-{chat}'
            evaluate(S, model, a, **kw)
            if (model, method, chat) == ('smollm2-135m', 'aj', False):      # the command a researcher types
                r = subprocess.run([NAVAB, 'evaluate', '--samples', str(shared / 'navab-hk' / 'human_statement_result.json'), '--nation', 'CN',
                                    '--model', spec, '--method', 'aj', '--max-new-tokens', '8', '--limit', str(HK), '--out', str(b)],
                                   capture_output=True, text=True)
                assert r.returncode == 0, r.stderr[-500:]
                assert json.loads((b / 'summary.json').read_text())['backend'] == 'openai'
            else: evaluate(S, spec, b, **kw)
            diffs[(method, scoring, chat)] = _compare_runs(a, b)
            if chat: assert '<|im_start|>' in pl.read_parquet(b / 'requests.parquet')['context'][0]      # the chat template was applied
    print(model, {f'{m}/{s}' + ('/chat' if c else ''): f'{d:.2e}' for (m, s, c), d in diffs.items()})


@pytest.mark.slow
def test_lm_eval_local_completions_agrees_with_its_hf_model(shared):
    """lm-evaluation-harness's own client (local-completions, token-id prompts) through navab serve = lm-eval's hf model on the same weights.

    Continuations are short (answer labels, a prompt's last 12 characters): summed over ~200 tokens, lm-eval's padded hf
    batches and navab's engine drift apart by about 1e-3 (6e-6 a token), which says nothing about the protocol."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    from navab.evaluate import mc_prompts, mc_requests
    from navab.models import convert_embedded
    path = str(convert_embedded('smollm2-135m'))
    R = mc_requests(mc_prompts(_hk(shared).head(8)), 'answer')
    W = mc_requests(mc_prompts(_hk(shared).slice(8, 4)), 'navab')          # and whole prompts cut 12 characters before their end
    R = pl.concat([R, W.with_columns(pl.col('continuation').str.slice(0, pl.col('continuation').str.len_chars() - 12).alias('context'),
                                     pl.col('continuation').str.slice(pl.col('continuation').str.len_chars() - 12))])
    insts = lambda: [Instance('loglikelihood', {}, (c, x), i) for i, (c, x) in enumerate(zip(R['context'], R['continuation']))]
    with serve('smollm2-135m') as (url, _):
        lm = LocalCompletionsAPI(base_url=f"{url}/v1/completions", model='smollm2-135m', tokenizer_backend='huggingface', tokenizer=path,
                                 tokenized_requests=True, num_concurrent=1, max_retries=1)
        remote = lm.loglikelihood(insts(), disable_tqdm=True)
    local = HFLM(pretrained=path, dtype='float32', device='cpu', batch_size=8).loglikelihood(insts(), disable_tqdm=True)
    assert [g for _, g in remote] == [g for _, g in local]
    d = max(abs(a - b) for (a, _), (b, _) in zip(remote, local))
    assert d <= 1e-3, d
    print(f"lm-eval local-completions via navab serve vs lm-eval hf: {len(R)} requests, largest log-prob difference {d:.2e}")
