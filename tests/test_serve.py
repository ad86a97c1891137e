"""The HTTP generation backend against a real `navab serve` process serving the real embedded SmolLM2, on loopback."""
import socket, subprocess, sys, time
from pathlib import Path
import httpx
import pytest
from navab.backend import generate_http
from navab.generate import generate

NAVAB = str(Path(sys.executable).parent / 'navab')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.mark.slow
def test_http_backend_against_real_server(smollm2, tmp_path):
    port = _free_port()
    p = subprocess.Popen([NAVAB, 'serve', '--model', 'smollm2-135m', '--port', str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(240):
            try:
                if httpx.get(url + '/v1/models', timeout=1).status_code == 200: break
            except httpx.HTTPError: time.sleep(0.25)
        else: pytest.fail('navab serve did not come up: ' + p.stdout.read1().decode()[-500:])
        listing = httpx.get(url + '/v1/models').text
        assert 'smollm2-135m' in listing and str(smollm2[2].path) not in listing and '.cache' not in listing   # the name and hash, not the cache folder
        qs = ['The capital of France is', 'Cities should plant more trees because']
        got = generate_http(qs, url, 'smollm2-135m', run_dir=tmp_path, max_new_tokens=12, progress=False)
        m, tok, info = smollm2
        assert got == generate(qs, m, tok, info, max_new_tokens=12, progress=False)
        assert 'Paris' in got[0]
    finally:
        p.terminate(); p.wait(10)
    # the server is gone: the cache answers, and a fresh prompt fails with one clear line after its retries
    assert generate_http(qs, url, 'smollm2-135m', run_dir=tmp_path, max_new_tokens=12, retries=0, progress=False) == got
    with pytest.raises(ConnectionError, match='after 2 tries'):
        generate_http(['new'], url, 'smollm2-135m', run_dir=tmp_path, retries=1, backoff=0.01, progress=False)


# ---- navab serve that holds up (issue 26): real `navab serve` processes on 127.0.0.1, started and stopped here ----

import json, os, re, shutil, threading
from contextlib import contextmanager
import psutil

READY = re.compile(r"navab serve: serving '[^']*' at (http://127\.0\.0\.1:(\d+))/v1")


@contextmanager
def served(tmp_path, *args, env=None, timeout=240):
    "A real `navab serve --port 0 ARGS` process: (process, base URL, log file), stopped on exit."
    log = tmp_path / f'serve-{time.monotonic_ns()}.log'
    with open(log, 'w') as f:
        p = subprocess.Popen([NAVAB, 'serve', '--port', '0', *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        t = time.monotonic()
        while not (m := READY.search(log.read_text())):
            if p.poll() is not None or time.monotonic() - t > timeout: pytest.fail(f'navab serve did not come up: {log.read_text()[-800:]}')
            time.sleep(0.1)
        yield p, m.group(1), log
    finally:
        p.terminate()
        try: p.wait(15)
        except subprocess.TimeoutExpired: p.kill(); p.wait(5)


def _rss_mb(p) -> float:
    return psutil.Process(p.pid).memory_info().rss / 2**20


def _post(url, body, timeout=60, **kw):
    "POST a body as JSON text (json.dumps escapes a lone surrogate, as any client's JSON does)."
    return httpx.post(url + '/v1/completions', content=json.dumps(body), timeout=timeout,
                      headers={'Content-Type': 'application/json', **kw.pop('headers', {})}, **kw)


@pytest.fixture(scope='module')
def tiny8k(tiny_model, tmp_path_factory):
    "The tiny model with 8192 positions, so that one request can ask for a long generation."
    d = tmp_path_factory.mktemp('tiny8k') / 'tiny8k'
    shutil.copytree(tiny_model, d)
    c = json.loads((d / 'config.json').read_text()); c['max_position_embeddings'] = 8192
    (d / 'config.json').write_text(json.dumps(c))
    return d


def test_oversized_requests_are_refused_and_rss_returns_to_idle(tiny_model, tmp_path):
    with served(tmp_path, '--model', str(tiny_model)) as (p, url, log):
        for _ in range(3):                                                   # warm: both paths have run
            assert _post(url, dict(prompt='Hello there', max_tokens=0, echo=True, logprobs=1)).status_code == 200
            assert _post(url, dict(prompt='Hello there', max_tokens=4)).status_code == 200
        idle = _rss_mb(p)
        t = time.monotonic()
        big = b'{"prompt": "' + b'x' * (50 * 2**20) + b'"}'                  # 50 MB, with its length
        r = httpx.post(url + '/v1/completions', content=big, headers={'Content-Type': 'application/json'}, timeout=120)
        assert r.status_code == 413 and 'max-body-mb' in r.json()['message']
        chunks = (b'x' * 2**20 for _ in range(50))                            # 50 MB streamed, no length given
        r = httpx.post(url + '/v1/completions', content=chunks, headers={'Content-Type': 'application/json'}, timeout=120)
        assert r.status_code == 413
        for body, field in ((dict(prompt=['y' * 2**20] * 3, max_tokens=4), 'prompt[0]'),              # 3 MB of prompts: refused by length
                            (dict(prompt=['a'] * 129, max_tokens=1), 'prompt'),                          # more prompts than a request may hold
                            (dict(prompt=[[5] * 300_000], max_tokens=0, echo=True), 'prompt[0]'),        # 300k token ids
                            (dict(prompt='word ' * 800, max_tokens=1), 'prompt[0]')):                  # 4,000 characters, too many tokens once tokenised
            for _ in range(3):
                r = _post(url, body)
                assert (r.status_code, r.json()['param']) == (400, field), r.text[:300]
        took = time.monotonic() - t
        time.sleep(1)
        after = _rss_mb(p)
        assert _post(url, dict(prompt='Hello there', max_tokens=4)).status_code == 200   # still serving
        print(f"RSS idle {idle:.0f} MiB, after 2 x 50 MB bodies and 12 oversized requests {after:.0f} MiB ({took:.1f} s)")
        assert after < idle + 64, (idle, after)
        assert 'Traceback' not in log.read_text()


def test_fields_typed_wrong_are_400_naming_the_field(tiny_model, tmp_path):
    from navab.backend import Client
    with served(tmp_path, '--model', str(tiny_model), '--max-tokens-cap', '300') as (p, url, log):
        for body, field in ((dict(prompt='x', max_tokens='5'), 'max_tokens'), (dict(prompt='x', temperature='0.5'), 'temperature'),
                            (dict(prompt='x', seed='7'), 'seed'), (dict(prompt='x', max_tokens=-5), 'max_tokens'),
                            (dict(prompt='x', max_tokens=1_000_000_000), 'max_tokens'), (dict(prompt='x', max_tokens=301), 'max_tokens'),
                            (dict(prompt='ok \ud800'), 'prompt[0]'), (dict(prompt=['a', 'b\udc00']), 'prompt[1]'),
                            (dict(prompt='x', echo=True, max_tokens=0, logprobs=9), 'logprobs'),
                            (dict(prompt='x', echo=True, max_tokens=0, logprobs=-1), 'logprobs'),
                            (dict(prompt='x', stream=True), 'stream'), (dict(prompt='x', n=2), 'n'), (dict(prompt='x', best_of=3), 'best_of'),
                            (dict(prompt='x', top_p=0.9), 'top_p'), (dict(prompt='x', stop=[1]), 'stop'), (dict(prompt='x', max_tokns=5), 'max_tokns'),
                            (dict(prompt='x', echo='yes'), 'echo'), (dict(prompt=None), 'prompt'), (dict(prompt='x', max_tokens=True), 'max_tokens')):
            t = time.monotonic()
            r = _post(url, body)
            assert time.monotonic() - t < 10                                  # refused at once, not after a long generation
            assert r.status_code == 400 and r.headers['content-type'].startswith('application/json'), (body, r.status_code, r.text[:200])
            assert r.json()['param'] == field and r.json()['message'].startswith(field), (body, r.json())
        r = httpx.post(url + '/v1/completions', content=b'{"prompt": ', headers={'Content-Type': 'application/json'})
        assert r.status_code == 400 and 'not valid JSON' in r.json()['message']
        r = _post(url, dict(prompt='x', max_tokens=290))                       # within the cap but not the tiny model's 256 positions
        assert r.status_code == 400 and 'positions' in r.json()['message']
        t = time.monotonic()                                                  # navab's own client takes a 4xx as final: one try, no backoff
        with pytest.raises(ValueError, match='HTTP 400: max_tokens'):
            Client(url + '/v1', retries=4, backoff=5).call('/completions', dict(prompt='x', max_tokens='5'))
        assert time.monotonic() - t < 3
        assert 'Traceback' not in log.read_text()


def test_unexpected_error_is_json_500_without_traceback(tiny_model, caplog):
    from navab.serve import Server, make_app
    with Server(make_app(str(tiny_model))) as s:
        s.server.config.app.state.batcher.fn = lambda ps, k: {}['boom']     # an engine failure nobody foresaw
        r = _post(s.url, dict(prompt='x', echo=True, max_tokens=0, logprobs=1))
    assert r.status_code == 500 and r.headers['content-type'].startswith('application/json')
    assert 'KeyError' in r.json()['message'] and 'Traceback' not in r.text and 'boom' not in r.text
    logged = [x for x in caplog.records if x.name == 'navab.serve']
    assert len(logged) == 1 and logged[0].exc_info                            # logged once, with its traceback, on the server


def test_long_generation_does_not_block_scoring(tiny8k, tmp_path):
    with served(tmp_path, '--model', str(tiny8k), '--max-tokens-cap', '8000') as (p, url, log):
        score = dict(prompt='Question: A or B?\nAnswer: A', max_tokens=0, echo=True, logprobs=1)
        t = time.monotonic(); assert _post(url, score).status_code == 200; alone = time.monotonic() - t
        ended, gen_err = [], []
        def long_generation():                                               # its client gives up after 4 s; 8000 tokens take far longer
            try: _post(url, dict(prompt='Count: 1, 2, 3,', max_tokens=8000), timeout=4)
            except httpx.TimeoutException as e: gen_err.append(e)
            ended.append(time.monotonic())
        g = threading.Thread(target=long_generation); g.start()
        time.sleep(1.5)
        t = time.monotonic(); r = _post(url, score); waited = time.monotonic() - t
        assert r.status_code == 200 and not ended, 'the generation should still be running'
        g.join(30)
        assert gen_err, 'an 8000-token generation should outlast its 4 s client timeout'
        t = time.monotonic(); r = _post(url, dict(prompt='Hi', max_tokens=3)); next_gen = time.monotonic() - t   # the gone client's work stopped
        print(f"scoring alone {alone:.2f} s; while an 8000-token generation runs {waited:.2f} s; a generation after its client left {next_gen:.2f} s")
        assert r.status_code == 200 and waited < 6 and next_gen < 10, (alone, waited, next_gen)


def test_deadline_stops_a_request(tiny8k, tmp_path):
    with served(tmp_path, '--model', str(tiny8k), '--timeout', '2') as (p, url, log):
        t = time.monotonic(); r = _post(url, dict(prompt='Count: 1, 2, 3,', max_tokens=2048)); took = time.monotonic() - t
        assert r.status_code == 504 and 'deadline' in r.json()['message'] and took < 8, (r.status_code, took)
        assert _post(url, dict(prompt='Hi', max_tokens=3), timeout=10).status_code == 200


CHAT_T = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<s>assistant:{% endif %}"


def test_chat_generation_lets_scoring_in_and_has_a_deadline(tiny8k, tmp_path):
    "/v1/chat/completions runs as the batcher's job too: scoring between its tokens, a 504 at --timeout, the server free right after."
    tpl = tmp_path / 'chat.jinja'; tpl.write_text(CHAT_T)
    with served(tmp_path, '--model', str(tiny8k), '--chat-template', str(tpl), '--timeout', '3') as (p, url, log):
        score = dict(prompt='Question: A or B?\nAnswer: A', max_tokens=0, echo=True, logprobs=1)
        chat = dict(messages=[{'role': 'user', 'content': 'Count: 1, 2, 3,'}], max_tokens=1024)
        assert httpx.post(url + '/v1/chat/completions', json=dict(chat, max_tokens=2), timeout=30).status_code == 200
        got = {}
        def long_chat():
            t = time.monotonic(); r = httpx.post(url + '/v1/chat/completions', json=chat, timeout=30); got.update(status=r.status_code, body=r.json(), took=time.monotonic() - t)
        g = threading.Thread(target=long_chat); g.start()
        time.sleep(1)
        t = time.monotonic(); r = _post(url, score); waited = time.monotonic() - t
        g.join(30)
        print(f"scoring while a chat answer ran: {waited:.2f} s; the chat request: HTTP {got.get('status')} after {got.get('took', 0):.1f} s")
        assert r.status_code == 200 and waited < 2, waited
        if got['status'] == 504: assert 'deadline' in got['body']['message'] and got['took'] < 8, got   # the 1024-token answer outlived --timeout 3
        else: assert got['status'] == 200 and got['took'] <= 4, got                                        # or it finished first, within it
        assert httpx.post(url + '/v1/chat/completions', json=[1, 2], timeout=10).status_code == 400
        assert _post(url, score, timeout=10).status_code == 200


def test_api_key_and_host(tiny_model, tmp_path):
    key = 'k-' + os.urandom(8).hex()
    for args, env in (((('--api-key', key)), None), ((), {**os.environ, 'NAVAB_SERVE_API_KEY': key})):
        with served(tmp_path, '--model', str(tiny_model), *args, env=env) as (p, url, log):
            body = dict(prompt='x', max_tokens=2)
            assert _post(url, body).status_code == 401
            assert _post(url, body, headers={'Authorization': 'Bearer wrong'}).status_code == 401
            assert httpx.get(url + '/v1/models').status_code == 401 and httpx.get(url + '/docs').status_code == 401
            assert httpx.get(url + '/health').status_code == 200
            assert _post(url, body, headers={'Authorization': f'Bearer {key}'}).status_code == 200
            assert httpx.get(url + '/v1/models', headers={'Authorization': f'Bearer {key}'}).status_code == 200
            assert key not in log.read_text()
    t = time.monotonic()
    r = subprocess.run([NAVAB, 'serve', '--model', str(tiny_model), '--host', '0.0.0.0', '--port', '0'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and time.monotonic() - t < 60
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and '--insecure' in lines[0] and '--api-key' in lines[0] and 'loading' not in r.stdout, r


def test_models_names_the_model_not_its_path(tiny_model, tmp_path):
    from navab.models import load_model
    with served(tmp_path, '--model', str(tiny_model), '--served-name', 'tiny') as (p, url, log):
        listing = httpx.get(url + '/v1/models')
    entry = listing.json()['data'][0]
    assert entry['id'] == entry['root'] == 'tiny' and entry['hash'] == entry['revision'] == load_model(str(tiny_model))[2].hash
    assert str(tiny_model.parent) not in listing.text                        # the weights' folder is not told


def test_port_in_use_and_ready_line(tiny_model, tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0)); taken.listen(); port = taken.getsockname()[1]
        t = time.monotonic()
        r = subprocess.run([NAVAB, 'serve', '--model', str(tiny_model), '--port', str(port)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and r.stderr.strip() == f"navab: error: port {port} is in use on 127.0.0.1: stop what listens there or choose another --port"
        assert 'loading' not in r.stdout and time.monotonic() - t < 60      # checked before the model loads
    with served(tmp_path, '--model', str(tiny_model)) as (p, url, log):    # the address is printed once it answers
        assert httpx.get(url + '/health', timeout=5).json() == {'status': 'ok'}
        text = log.read_text()
        assert text.index('is free; loading') < text.index('serving'), text


# ---- the two argument checks of issue 26: navab grid's --samples mapping, navab align's ranges ----

@pytest.mark.parametrize('spec, says', [('XX=/no/such/file.json', "unknown nation 'XX'"), ('FR=/no/such/file.json', '/no/such/file.json not found'),
                                        ('US={f}', "US is not one of the grid's nations (FR)"), ('/no/such/folder', '/no/such/folder not found')])
def test_grid_samples_mapping_is_one_error_line(tmp_path, capsys, spec, says):
    from navab.cli import main
    f = tmp_path / 'us.json'; f.write_text('[]')
    assert main(['grid', '--nations', 'FR', '--samples', spec.format(f=f), '--out', str(tmp_path / 'out'), '--no-progress']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / 'out' / 'grid.json').exists()


@pytest.mark.parametrize('flag, value, says', [('--test-frac', '2', '--test-frac 2: must be a share strictly between 0 and 1'),
                                               ('--test-frac', '0', '--test-frac 0'), ('--steps', '-1', '--steps -1: must be at least 1'),
                                               ('--steps', '0', '--steps 0'), ('--lr', '-0.1', '--lr -0.1'), ('--batch-size', '0', '--batch-size 0')])
def test_align_ranges_are_one_error_line(tiny_model, tmp_path, capsys, flag, value, says):
    from navab.cli import main
    pairs = tmp_path / 'dpo_pairs.jsonl'
    pairs.write_text('\n'.join(json.dumps(dict(id=f'p{i}', prompt=f'Q {i}?', chosen='Yes.', rejected='No.')) for i in range(8)))
    assert main(['align', '--pairs', str(pairs), '--model', str(tiny_model), '--nation', 'US', '--out', str(tmp_path / 'o'), flag, value]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"navab: error: {says}"] or (len(err) == 1 and says in err[0]), err
    assert not (tmp_path / 'o').exists()                                     # refused before anything is written
