"""The capability probe: servers that fail in odd ways (zero log-probs, log-probs shifted by one, a 500 for a validation
error, no answer at all) are refused with one line naming the fault, within the timeout and without retry storms,
nothing cached; a server that takes one text prompt a request (llama-cpp-python's way) is adapted to and scores as the
engine does; a real `navab serve` passes the probe and equals the in-process backend."""
import json, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import polars as pl
import pytest
from navab.backend import get_backend, HFBackend, OpenAIBackend, ProbeError, probe_server
from navab.cache import cache_parts
from navab.cli import main
from navab.serve import Server, echo_choices, _as_prompts
from conftest import _samples
from test_backend import serve, _requests, _same

PYDANTIC = ("2 validation errors for CreateCompletionRequest\nprompt.str\n  Input should be a valid string [type=string_type, "
            "input_value=[[0, 40, 41]], input_type=list]")   # what llama-cpp-python's server sends, with HTTP 500, for token-id prompts
SHIFTED = "prompt log-probs are shifted by one position: the server's echo is not usable for scoring (llama-cpp-python issue #1983)"


def _shifted(m, tok, choice: dict, seq: list) -> dict:
    "llama-cpp-python's echo (its issue #1983): position i's log-prob and top log-probs read from the distribution after token i."
    import torch
    with torch.inference_mode(): lp = m(torch.tensor([seq])).logits[0].float().log_softmax(-1)
    n = len(seq)
    L = choice['logprobs']
    L['token_logprobs'][:n] = [lp[i, t].item() for i, t in enumerate(seq)]
    L['top_logprobs'][:n] = [{tok.decode([int(lp[i].argmax())]): lp[i].max().item(), tok.decode([t]): lp[i, t].item()} for i, t in enumerate(seq)]
    return choice


def fake_app(loaded, kind: str, log: list, served: str = 'tiny'):
    """An OpenAI-compatible completions server over a loaded model (navab serve's own echo), wrong in one way: `good`,
    `zeros` (every log-prob 0), `shifted` (llama-cpp-python's echo), `llamacpp` (text prompts only, a 500 with a pydantic
    error for token ids, a 500 with an empty message for more than one prompt: llama-cpp-python's server), `llamacpp-shifted`
    (both), `invalid` (a 500 validation error for everything), `hang8` (no answer to a request of 8 prompts or more),
    `zeros4` (zeros for requests of 4 to 7 prompts: a server that passes the probe, answers a batch of 8, then changes).
    `log` gets `(prompts, status)` for each completions request."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    m, tok, info = loaded
    app = FastAPI()

    @app.get('/v1/models')
    def models(): return {'object': 'list', 'data': [{'id': served, 'revision': info.hash}]}   # the revision navab serve reports

    @app.post('/v1/completions')
    def completions(req: dict):
        ps = _as_prompts(req.get('prompt'))
        def refuse(msg):
            log.append((len(ps), 500)); return JSONResponse({'error': {'message': msg, 'type': 'internal_server_error'}}, status_code=500)
        if kind == 'invalid': return refuse(PYDANTIC)
        if kind.startswith('llamacpp'):
            if not all(isinstance(p, str) for p in ps): return refuse(PYDANTIC)
            if len(ps) > 1: return refuse('')                           # `assert len(body.prompt) <= 1`
        log.append((len(ps), 200))
        if kind == 'hang8' and len(ps) >= 8: time.sleep(3)
        ch = echo_choices(m, tok, ps, int(req.get('max_tokens') or 0))
        for c, p in zip(ch, ps):
            L = c['logprobs']
            if kind == 'zeros' or (kind == 'zeros4' and 4 <= len(ps) < 8):
                L['token_logprobs'] = [None if x is None else 0.0 for x in L['token_logprobs']]
                L['top_logprobs'] = [None if t is None else {k: 0.0 for k in t} for t in L['top_logprobs']]
            if kind.endswith('shifted'): _shifted(m, tok, c, tok(p).input_ids if isinstance(p, str) else p)
        return {'object': 'text_completion', 'model': served, 'choices': ch}
    return app


@pytest.fixture(scope='module')
def tiny(tiny_model):
    from navab.models import load_model
    return load_model(str(tiny_model))


def _evaluate(url: str, tiny_model, samples: Path, out: Path, *more) -> tuple:
    "navab evaluate against a server, in this process: (exit code, the lines on stderr)."
    import contextlib, io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(['evaluate', '--samples', str(samples), '--model', f"{url}/v1#tiny", '--tokenizer', str(tiny_model), '--out', str(out), *more])
    return rc, err.getvalue().strip().splitlines()


def test_zero_logprob_server_is_refused_nothing_cached_then_a_good_server_scores(tiny, tiny_model, tmp_path):
    "All-zero log-probs: exit 1 with one line, nothing cached; the same served name and revision on a correct server then scores as in process."
    from navab.evaluate import evaluate
    f, out = _samples(tmp_path / 'fr.parquet'), tmp_path / 'run'
    log = []
    with Server(fake_app(tiny, 'zeros', log)) as s:
        t = time.time()
        rc, err = _evaluate(s.url, tiny_model, f, out)
    assert rc == 1 and len(err) == 1 and err[0].startswith('navab: error: ') and 'all prompt log-probs are 0' in err[0], err
    assert time.time() - t < 60 and len(log) <= 5
    assert not list(out.rglob('*.parquet')) and not (out / 'summary.json').exists()     # nothing scored, nothing cached
    with Server(fake_app(tiny, 'good', log)) as s:
        rc, err = _evaluate(s.url, tiny_model, f, out)
    assert rc == 0, err
    ref = tmp_path / 'hf'
    evaluate(pl.read_parquet(f), str(tiny_model), ref, progress=False)
    a, b = (pl.read_parquet(d / 'requests.parquet') for d in (ref, out))
    assert (a['logprob'] - b['logprob']).abs().max() <= 1e-4 and a['n_tokens'].to_list() == b['n_tokens'].to_list()
    sa, sb = (json.loads((d / 'summary.json').read_text()) for d in (ref, out))
    assert sa['accuracy'] == sb['accuracy'] and sb['config']['timeout'] == 60


@pytest.mark.parametrize('kind, mode', [('shifted', 'tokens'), ('llamacpp-shifted', 'text')])
def test_a_server_with_logprobs_shifted_by_one_is_refused(kind, mode, tiny, tiny_model, tmp_path):
    "llama-cpp-python's echo (the log-prob of token i after token i), through token ids or, as that server takes them, one text prompt a request."
    log = []
    with Server(fake_app(tiny, kind, log)) as s:
        with pytest.raises(ProbeError) as e:
            get_backend(f"{s.url}/v1#tiny", tokenizer=str(tiny_model))
        rc, err = _evaluate(s.url, tiny_model, _samples(tmp_path / 'fr.parquet'), tmp_path / 'run')
    assert str(e.value) == f"{s.url}/v1 (tiny): {SHIFTED}"
    assert rc == 1 and err == [f"navab: error: {s.url}/v1 (tiny): {SHIFTED}"]
    assert not list((tmp_path / 'run').rglob('*.parquet'))


def test_one_prompt_a_request_server_is_adapted_to_without_retry_storms(tiny, tiny_model, tmp_path):
    "llama-cpp-python's server: text only (a 500 for token ids), one prompt a request (a 500 for more): each refusal asked once, then scores = in process."
    log, req = [], _requests(24)
    with Server(fake_app(tiny, 'llamacpp', log)) as s:
        b = get_backend(f"{s.url}/v1#tiny", tokenizer=str(tiny_model), concurrency=2)
        assert (b.mode, b.per_request, b.probe['alignment']) == ('text', 1, 'ok')
        assert 'validation error' in b.probe['tokens_refused']
        got = b.score(req, run_dir=tmp_path, batch_size=8, progress=False)
    _same(got, HFBackend(str(tiny_model)).score(req, progress=False))
    assert [n for n, st in log if st == 500] == [1, 3]             # the token-id prompt and the batch of three: once each
    assert all(n == 1 for n, st in log if st == 200) and len(log) == 2 + 1 + 3 + len(req)


def test_a_validation_error_500_is_not_retried(tiny, tiny_model):
    "A server that answers every completions request with a 500 validation error: refused after one request, naming the server's message."
    log = []
    with Server(fake_app(tiny, 'invalid', log)) as s:
        t = time.time()
        with pytest.raises(ProbeError, match=r'refuses a scoring request \(echo with logprobs; HTTP 500: 2 validation errors for CreateCompletionRequest'):
            get_backend(f"{s.url}/v1#tiny", tokenizer=str(tiny_model), backoff=2.0)
    assert len(log) == 1 and time.time() - t < 10


class _Silent(BaseHTTPRequestHandler):
    "Lists its model, then holds every POST without an answer."
    stop = threading.Event()
    def do_GET(self):
        body = json.dumps({'data': [{'id': 'tiny'}]}).encode()
        self.send_response(200); self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        type(self).posts += 1
        self.rfile.read(int(self.headers.get('Content-Length') or 0)); self.stop.wait(30)
    def log_message(self, *a): pass


def test_a_silent_server_is_refused_within_the_timeout(tiny_model, tmp_path):
    "A server that never answers: navab evaluate --timeout 2 exits 1 within a few seconds, saying what it waited for, after one request."
    _Silent.posts = 0
    srv = ThreadingHTTPServer(('127.0.0.1', 0), _Silent)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        t = time.time()
        rc, err = _evaluate(url, tiny_model, _samples(tmp_path / 'fr.parquet'), tmp_path / 'run', '--timeout', '2')
        took = time.time() - t
    finally:
        _Silent.stop.set(); srv.shutdown()
    assert rc == 1 and err == [f"navab: error: no answer from {url}/v1/completions within 2 s to a scoring request of 1 prompt (--request-timeout sets the limit)"], err
    assert 2 <= took < 10 and _Silent.posts == 1, (took, _Silent.posts)


def test_a_scoring_request_left_unanswered_names_its_size(tiny, tiny_model, tmp_path):
    "A server that passes the probe, then holds a request of 8 prompts: one TimeoutError naming the request, nothing of that batch stored."
    log = []
    with Server(fake_app(tiny, 'hang8', log)) as s:
        b = get_backend(f"{s.url}/v1#tiny", tokenizer=str(tiny_model), timeout=1, concurrency=1)
        with pytest.raises(TimeoutError, match=rf"no answer from {s.url}/v1/completions within 1 s to a scoring request of 8 prompts"):
            b.score(_requests(16), run_dir=tmp_path, batch_size=8, progress=False)
    assert not cache_parts(tmp_path, 'score') and sum(n == 8 for n, _ in log) == 1


def test_zeros_after_the_probe_are_refused_before_they_are_stored(tiny, tiny_model, tmp_path):
    "A server that passes the probe, then answers a scoring request with zeros: refused at that answer; only the good batches are stored."
    log = []
    with Server(fake_app(tiny, 'zeros4', log)) as s:
        b = get_backend(f"{s.url}/v1#tiny", tokenizer=str(tiny_model), concurrency=1)
        with pytest.raises(ValueError, match="all prompt log-probs are 0 in a scoring answer"):
            b.score(_requests(12), run_dir=tmp_path, batch_size=8, progress=False)     # a call of 8, then one of 4
    from navab.score import read_results
    got = read_results(tmp_path)
    assert len(got) == 8 and (got['logprob'] < 0).all()


def test_a_real_navab_serve_passes_the_probe_and_equals_in_process(tiny_model, tmp_path):
    "A navab serve process (token ids, any number of prompts a request) passes the probe in well under a minute; its scores = hf's, in both prompt modes."
    req = _requests(40)
    with serve(str(tiny_model), None, '--served-name', 'tiny') as (url, _):
        b = get_backend(f"{url}/v1#tiny", tokenizer=str(tiny_model), concurrency=2)
        tb = OpenAIBackend(f"{url}/v1#tiny", tokenizer=str(tiny_model), prompt_mode='text')
        got, text = b.score(req, run_dir=tmp_path, batch_size=4, progress=False), tb.score(req, progress=False)
    for x, mode in ((b, 'tokens'), (tb, 'text')):
        assert (x.probe['mode'], x.probe['per_request'], x.probe['alignment']) == (mode, None, 'ok') and x.probe['probe_s'] < 60, x.probe
    ref = HFBackend(str(tiny_model)).score(req, progress=False)
    _same(got, ref); _same(text, ref)


def test_the_timeout_travels_from_the_command_lines():
    "evaluate --timeout and grid --request-timeout reach the backend options."
    from navab.cli import parser
    a = parser().parse_args(['evaluate', '--samples', 'x', '--model', 'm', '--out', 'o', '--timeout', '7'])
    assert a.request_timeout == 7
    g = parser().parse_args(['grid', '--request-timeout', '9'])
    assert g.request_timeout == 9 and g.timeout == 900               # the grid's --timeout stays the report cells' limit


# ---- real: the embedded SmolLM2 ----

@pytest.mark.slow
def test_smollm2_the_repeated_sentence_shows_the_shift(smollm2):
    """A trained model: through a correct echo the second copy of the sentence is far likelier than the first and the top
    token is mostly the prompt's own; through llama-cpp-python's echo that fit moves one position, and both of the probe's
    checks (the changed number and the repeated sentence) name the shift."""
    from navab.backend import ProbeError
    log = []
    with Server(fake_app(smollm2, 'good', log, served='smollm2-135m')) as s:
        ok = get_backend(f"{s.url}/v1#smollm2-135m").probe
    with Server(fake_app(smollm2, 'shifted', log, served='smollm2-135m')) as s:
        with pytest.raises(ProbeError, match='shifted by one position') as e:
            get_backend(f"{s.url}/v1#smollm2-135m")
    bad = e.value.findings
    print('correct echo', ok, '\nshifted echo', bad)
    assert ok['verdict'] == 'seen' and ok['alignment'] == 'ok' and ok['margin'] > 1.0 and ok['fit'] > 0.5 > ok['fit_shifted']
    assert bad['verdict'] == 'shifted' and bad['alignment'] == 'shifted' and bad['fit_shifted'] > 0.5 > bad['fit']
