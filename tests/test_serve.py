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
