"""Reports: the papermill grid over tiny models (runs, index, skip on rerun, a failing report, kill -9 and rerun),
escaping, the pages in headless Chromium, the notebooks through JupyterLab's REST API, and the real embedded model."""
import base64, json, os, re, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import polars as pl
import pytest
from conftest import PWN   # the `study` fixture (a finished tiny grid) lives in conftest: test_faults kills it too

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
def _records(out: Path) -> dict:
    return {r['name']: r for r in json.loads((out/'grid.json').read_text())['records']}


def test_grid_runs_and_rerun_skips(study):
    out = study['dir']/'reports'
    recs = _records(out)
    assert set(recs) == {'run-tiny-a-FR', 'run-tiny-b-FR', 'study'}
    assert all(r['status'] == 'ok' for r in recs.values()), recs
    page = study['index'].read_text(encoding='utf-8')
    for name in recs: assert f'href="{name}.html"' in page and f'href="{name}.ipynb"' in page
    assert 'MC ' in recs['run-tiny-a-FR']['headline'] and '(n=6)' in recs['run-tiny-a-FR']['headline']
    run_html = (out/'run-tiny-a-FR.html').read_text(encoding='utf-8')
    assert 'Robustness: ' in run_html and 'labels_12' in run_html, 'the robustness section (variations table) is in the run report'
    for name in recs:   # each executed notebook kept beside its HTML
        assert (out/f'{name}.html').stat().st_size > 10_000 and (out/f'{name}.ipynb').is_file()
    study_html = (out/'study.html').read_text(encoding='utf-8')
    assert 'share coefficient' in study_html and 'correct ~ share' in study_html and study_html.count('<img') >= 3   # heatmaps, fit plot
    assert not re.search(r'(src|href)="https?://', study_html)          # nothing fetched from the network
    from navab.grid import run_grid
    t = time.time(); run_grid(out=out, **study['kw']); again = time.time() - t
    assert all(r['skipped'] for r in _records(out).values())
    assert (out/'index.html').read_text(encoding='utf-8') == page
    assert again < study['first_s'] / 3, (again, study['first_s'])


def test_escaping(study):
    out = study['dir']/'reports'
    page = (out/'run-tiny-a-FR.html').read_text(encoding='utf-8')
    assert PWN not in page and '<b>gras</b>' not in page
    assert '&lt;script&gt;window.__pwned=1&lt;/script&gt;' in page      # the question shows, as text


def test_failing_report_fails_alone(study, tmp_path):
    from navab.grid import run_grid
    out = tmp_path/'reports'
    shutil.copytree(study['dir']/'reports', out)
    (out/'runs'/'tiny-a'/'FR'/'mc'/'summary.json').write_text('{not json', encoding='utf-8')
    idx = run_grid(out=out, **dict(study['kw'], workers=2))   # in worker processes; one failed report does not fail the grid
    recs = _records(out)
    assert recs['run-tiny-a-FR']['status'] == 'failed' and 'JSONDecodeError' in recs['run-tiny-a-FR']['error']
    assert recs['run-tiny-b-FR']['status'] == 'ok' and recs['run-tiny-b-FR']['skipped']     # untouched: skipped
    assert recs['study']['status'] == 'ok' and recs['study']['skipped']                       # reads only scores: not redone
    page = idx.read_text(encoding='utf-8')
    assert 'class="failed"' in page and 'JSONDecodeError' in page and '2 ok, 1 failed' in page
    assert 'JSONDecodeError' in (out/'run-tiny-a-FR.html').read_text(encoding='utf-8')   # the failed notebook is published, traceback included


# ---- a person's view: headless Chromium over the pages ----

def _chromium():
    "Debian's chromium, installed when missing (as root, with apt-get); None when it cannot be had."
    exe = shutil.which('chromium') or shutil.which('chromium-browser')
    if exe: return exe
    if os.geteuid() == 0 and shutil.which('apt-get'):
        subprocess.run(['apt-get', 'install', '-y', '-q', 'chromium'], capture_output=True, timeout=600)
    return shutil.which('chromium')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


class _CDP:
    "A tiny Chrome DevTools Protocol client over websocket-client (already a dependency of jupyter_server)."
    def __init__(self, ws_url):
        import websocket
        self.ws, self.n, self.events = websocket.create_connection(ws_url, timeout=60, suppress_origin=True), 0, []

    def __call__(self, method, **params):
        self.n += 1; self.ws.send(json.dumps(dict(id=self.n, method=method, params=params)))
        while True:
            m = json.loads(self.ws.recv())
            if m.get('id') == self.n:
                if 'error' in m: raise RuntimeError(f"{method}: {m['error']}")
                return m.get('result', {})
            self.events.append(m)

    def wait(self, event, timeout=60):
        t = time.time()
        while time.time() - t < timeout:
            if any(e.get('method') == event for e in self.events): return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    exe = _chromium()
    if not exe: pytest.skip('chromium is not installed and could not be installed (apt-get install chromium needs root and the Debian archive)')
    port, prof = _free_port(), tmp_path_factory.mktemp('chrome')
    p = subprocess.Popen([exe, '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', f'--remote-debugging-port={port}',
                          f'--user-data-dir={prof}', '--remote-allow-origins=*', '--window-size=1280,1600', 'about:blank'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        t, ws = time.time(), None
        while time.time() - t < 60 and not ws:
            try: ws = next((x['webSocketDebuggerUrl'] for x in json.loads(urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=2).read())
                           if x['type'] == 'page'), None)
            except OSError: time.sleep(0.3)
        if not ws: pytest.skip('chromium started but exposed no page to drive')
        yield _CDP(ws)
    finally:
        os.killpg(p.pid, signal.SIGKILL); p.wait()


def _visit(cdp: _CDP, path: Path, shot: Path) -> dict:
    "Open a local page, wait for it to load, screenshot it; its images and its JavaScript/console errors."
    cdp.events.clear()
    for d in ('Page', 'Runtime', 'Log'): cdp(f'{d}.enable')
    cdp('Page.navigate', url=path.resolve().as_uri()); cdp.wait('Page.loadEventFired')
    imgs = json.loads(cdp('Runtime.evaluate', expression="JSON.stringify(Array.from(document.images).map(i => [i.src.slice(0, 40), i.complete, i.naturalWidth]))",
                          returnByValue=True)['result']['value'])
    pwned = cdp('Runtime.evaluate', expression='window.__pwned === undefined ? "no" : "yes"', returnByValue=True)['result']['value']
    text = cdp('Runtime.evaluate', expression='document.body.innerText', returnByValue=True)['result']['value']
    shot.write_bytes(base64.b64decode(cdp('Page.captureScreenshot', format='png')['data']))
    errors = [e for e in cdp.events if e.get('method') == 'Runtime.exceptionThrown'
              or (e.get('method') == 'Log.entryAdded' and e['params']['entry']['level'] == 'error')
              or (e.get('method') == 'Runtime.consoleAPICalled' and e['params']['type'] == 'error')]
    return dict(images=imgs, errors=errors, pwned=pwned, text=text)


def test_pages_in_chromium(study, browser, tmp_path):
    out = study['dir']/'reports'
    idx = _visit(browser, out/'index.html', tmp_path/'index.png')
    assert not idx['errors'], idx['errors']
    assert 'run-tiny-a-FR' in idx['text'] and 'study' in idx['text'] and (tmp_path/'index.png').stat().st_size > 5_000
    for name in ('run-tiny-a-FR', 'study'):
        r = _visit(browser, out/f'{name}.html', tmp_path/f'{name}.png')
        assert not r['errors'], (name, r['errors'])
        assert len(r['images']) >= 2 and all(ok and w > 0 for _, ok, w in r['images']), r['images']   # every plot loaded
        assert r['pwned'] == 'no'                                   # the <script> in the data did not run...
        assert name == 'study' or PWN in r['text']                  # ...it shows as text
        assert (tmp_path/f'{name}.png').stat().st_size > 20_000


# ---- JupyterLab: `make lab` serves the report notebooks ----

def test_jupyterlab_lists_reports(tmp_path):
    port, token = _free_port(), 'navab-test-token'
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path/'rt'), JUPYTER_CONFIG_DIR=str(tmp_path/'cfg'))
    p = subprocess.Popen([str(BIN/'jupyter'), 'lab', '--no-browser', '--allow-root', f'--port={port}', '--ServerApp.ip=127.0.0.1',
                          f'--ServerApp.token={token}', f'--ServerApp.root_dir={ROOT}'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=env, start_new_session=True)
    try:
        t, listing = time.time(), None
        while time.time() - t < 90 and listing is None:
            if p.poll() is not None: pytest.fail(f'jupyter lab exited with {p.returncode}')
            try:
                req = urllib.request.Request(f'http://127.0.0.1:{port}/api/contents/nbs/reports', headers={'Authorization': f'token {token}'})
                listing = json.loads(urllib.request.urlopen(req, timeout=3).read())
            except OSError: time.sleep(0.5)
        assert listing is not None, 'JupyterLab did not answer within 90 s'
        names = {c['name'] for c in listing['content']}
        assert {'run.ipynb', 'study.ipynb'} <= names, names
        with pytest.raises(urllib.error.HTTPError):    # the token is required
            urllib.request.urlopen(f'http://127.0.0.1:{port}/api/contents/nbs/reports', timeout=3)
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try: p.wait(20)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert p.returncode is not None


# ---- the real embedded model on real data ----

def test_real_model_on_navab_hk(shared, tmp_path):
    from navab.grid import run_grid
    out = tmp_path/'reports'
    idx = run_grid(['smollm2-135m'], ['CN'], {'CN': [shared/'navab-hk'/'human_statement_result.json', shared/'navab-hk'/'official_statement_result.json']},
                   methods=['mc', 'aj'], out=out, limit=4, aj_limit=2, max_new_tokens=6, progress=False)
    recs = _records(out)
    assert recs['run-smollm2-135m-CN']['status'] == 'ok', recs['run-smollm2-135m-CN']
    assert recs['study']['status'] == 'ok', recs['study']
    assert 'MC ' in recs['run-smollm2-135m-CN']['headline'] and '(n=4)' in recs['run-smollm2-135m-CN']['headline']
    s = json.loads((out/'runs'/'smollm2-135m'/'CN'/'mc'/'summary.json').read_text())
    assert s['n'] == 4 and s['model'] == 'smollm2-135m'
    html = (out/'run-smollm2-135m-CN.html').read_text(encoding='utf-8')
    q = pl.read_parquet(out/'samples'/'CN.parquet')
    assert 70 <= len(q) <= 75 and 'smollm2-135m' in idx.read_text(encoding='utf-8')
    import html as H
    for m in ('mc', 'aj'):   # every sample the model got wrong is in the worst-samples table, its real question shown
        sc = pl.read_parquet(out/'runs'/'smollm2-135m'/'CN'/m/'scores.parquet')
        assert sc['correct'].null_count() < len(sc)
        wrong = q.filter(pl.col('id').is_in(sc.filter(pl.col('correct') == False)['sample_id'].to_list()))['question'].to_list()
        assert all(H.escape(x)[:15] in html for x in wrong), m
