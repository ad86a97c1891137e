"""`navab serve` under load: 64 concurrent clients against one real server process, latency percentiles and the server's
memory before and after, beside the floor (one request alone); then a small scoring request while a long generation runs.

    .venv/bin/python benchmarks/bench_serve.py [--model smollm2-135m] [--clients 64] [--requests 4] [--gen-tokens 256]
                                               [--src DIR] [--no-abuse] [--out FILE.json]

The server is started here (`navab serve` on 127.0.0.1, a free port; stopped at the end) from this checkout, or from
`--src DIR` (another checkout's navab, e.g. the code before a change: `git archive REV navab | tar -x -C DIR`), so the
same figures can be taken before and after. Each client sends `--requests` scoring requests one after another (echo +
logprobs, max_tokens 0, the two options of one MC question, as navab's `openai` backend sends them; the real NaVAB HK
MC prompts when ../shared/data is there, else synthetic ones of the same shape). Printed:

- the floor: one scoring request alone (median of 10), one short generation alone;
- under load: requests/s, latency p50/p95/p99/max, errors, and RSS idle / peak / after;
- the long-request check: a small scoring request's latency while a `--gen-tokens` generation runs (the generation's
  own time beside it);
- unless `--no-abuse`: RSS after a 50 MB body and three 1 MB prompts (refused), against idle.
"""
import argparse, json, os, re, socket, statistics, subprocess, sys, threading, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import httpx, psutil

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / 'shared' / 'data' / 'navab-hk'
NAVAB = [sys.executable, '-c', 'import sys; from navab.cli import main; sys.exit(main())']


def _port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def serve(model: str, src: Path, log: Path):
    "Start `navab serve` from `src` on a free port; (url, process) once it answers (polling /v1/models: any navab version)."
    port, env = _port(), {**os.environ, 'PYTHONPATH': str(src)}
    with open(log, 'w') as f:
        p = subprocess.Popen([*NAVAB, 'serve', '--model', model, '--port', str(port)], stdout=f, stderr=subprocess.STDOUT, env=env)
    url, t = f'http://127.0.0.1:{port}', time.monotonic()
    while time.monotonic() - t < 600:
        if p.poll() is not None: sys.exit(f"bench_serve: navab serve exited: {log.read_text()[-500:]}")
        try:
            if httpx.get(url + '/v1/models', timeout=2).status_code == 200: return url, p
        except httpx.HTTPError: time.sleep(0.2)
    p.kill(); sys.exit('bench_serve: navab serve did not come up')


def questions(n: int, synthetic: bool = False) -> list:
    "n MC questions as (context, [continuations]): the real NaVAB HK ones when the shared data is there (and not `synthetic`)."
    if DATA.exists() and not synthetic:
        import polars as pl
        from navab.data import read_navab
        from navab.evaluate import mc_prompts, mc_requests
        S = pl.concat([read_navab(DATA / f, 'CN').valid for f in ('human_statement_result.json', 'official_statement_result.json')])
        R = mc_requests(mc_prompts(S), 'answer')
        by = {}
        for c, x in zip(R['context'], R['continuation']): by.setdefault(c, []).append(x)
        qs = list(by.items())
        return [qs[i % len(qs)] for i in range(n)], 'NaVAB HK MC'
    return [(f"Question {i}: should the state act on issue {i}? A. It should act. B. It should not.\nAnswer:", [' A', ' B']) for i in range(n)], 'synthetic MC'


def body(model: str, q) -> dict:
    ctx, conts = q
    return dict(model=model, prompt=[ctx + x for x in conts], max_tokens=0, echo=True, logprobs=1, temperature=0)


def pct(xs: list, p: float) -> float:
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def rss(p) -> float:
    return psutil.Process(p.pid).memory_info().rss / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', default='smollm2-135m'); ap.add_argument('--clients', type=int, default=64)
    ap.add_argument('--requests', type=int, default=4, help='scoring requests each client sends, one after another')
    ap.add_argument('--gen-tokens', type=int, default=256, help='the long generation of the long-request check')
    ap.add_argument('--src', default=str(ROOT), help="the checkout whose navab serves (default: this one)")
    ap.add_argument('--synthetic', action='store_true', help='synthetic MC prompts even where the real data is (short: for a tiny model)')
    ap.add_argument('--no-abuse', action='store_true', help='skip the oversized requests (the code before the limits can take GBs for them)')
    ap.add_argument('--out', help='also write the figures as JSON here')
    a = ap.parse_args()
    qs, kind = questions(a.clients * a.requests, a.synthetic)
    log = Path(os.environ.get('TMPDIR', '/tmp')) / f'bench_serve_{os.getpid()}.log'
    print(f"navab serve {a.model} from {a.src}: {a.clients} clients x {a.requests} scoring requests ({kind}, 2 prompts each); "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
    url, proc = serve(a.model, Path(a.src), log)
    R = dict(model=a.model, src=a.src, clients=a.clients, requests=a.requests, prompts=kind, cpus=os.cpu_count())
    try:
        with httpx.Client(timeout=None) as h:
            post = lambda b: h.post(url + '/v1/completions', json=b)
            for r in [post(body(a.model, q)) for q in qs[:3]] + [post(dict(model=a.model, prompt='The capital of France is', max_tokens=8))]:   # warm
                if r.status_code != 200: sys.exit(f"bench_serve: the server answered HTTP {r.status_code}: {r.text[:300]}")
            R['rss_idle_mib'] = idle = rss(proc)
            one = []
            for q in qs[:10]:
                t = time.perf_counter(); post(body(a.model, q)); one.append(time.perf_counter() - t)
            t = time.perf_counter(); post(dict(model=a.model, prompt='The capital of France is', max_tokens=16)); gen16 = time.perf_counter() - t
        R['floor'] = dict(score_p50_s=statistics.median(one), score_min_s=min(one), generate16_s=gen16)
        print(f"floor (alone): scoring request p50 {statistics.median(one):.3f} s (min {min(one):.3f}); a 16-token generation {gen16:.2f} s; RSS idle {idle:.0f} MiB", flush=True)

        lat, errors, peak, stop = [], [], [idle], threading.Event()
        def watch():
            while not stop.is_set(): peak.append(rss(proc)); time.sleep(0.1)
        def client(i):
            with httpx.Client(timeout=600) as h:
                for j in range(a.requests):
                    t = time.perf_counter()
                    try:
                        r = h.post(url + '/v1/completions', json=body(a.model, qs[i * a.requests + j]))
                        (lat if r.status_code == 200 else errors).append(time.perf_counter() - t if r.status_code == 200 else r.status_code)
                    except httpx.HTTPError as e: errors.append(type(e).__name__)
        w = threading.Thread(target=watch, daemon=True); w.start()
        ts = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
        t0 = time.perf_counter()
        for t in ts: t.start()
        for t in ts: t.join()
        wall = time.perf_counter() - t0
        stop.set(); w.join(); time.sleep(1)
        R['load'] = dict(wall_s=wall, ok=len(lat), errors=errors[:10], n_errors=len(errors), req_per_s=len(lat) / wall,
                         p50_s=pct(lat, 50), p95_s=pct(lat, 95), p99_s=pct(lat, 99), max_s=max(lat) if lat else None,
                         rss_peak_mib=max(peak), rss_after_mib=rss(proc))
        L = R['load']
        print(f"load: {len(lat)} ok, {len(errors)} errors in {wall:.1f} s ({L['req_per_s']:.1f} req/s); latency p50 {L['p50_s']:.2f} s, "
              f"p95 {L['p95_s']:.2f} s, p99 {L['p99_s']:.2f} s, max {L['max_s']:.2f} s (floor {R['floor']['score_p50_s']:.3f} s alone); "
              f"RSS idle {idle:.0f} -> peak {L['rss_peak_mib']:.0f} -> after {L['rss_after_mib']:.0f} MiB", flush=True)

        gen = {}
        def long_gen():
            t = time.perf_counter()
            with httpx.Client(timeout=None) as h:
                r = h.post(url + '/v1/completions', json=dict(model=a.model, prompt='Count: 1, 2, 3, 4, 5,', max_tokens=a.gen_tokens))
            gen.update(status=r.status_code, s=time.perf_counter() - t)
        g = threading.Thread(target=long_gen); g.start(); time.sleep(2)
        with httpx.Client(timeout=None) as h:
            small = []
            for q in qs[:3]:
                t = time.perf_counter(); r = h.post(url + '/v1/completions', json=body(a.model, q)); small.append(time.perf_counter() - t)
                if gen: break
        running = not gen
        g.join()
        R['long'] = dict(gen_tokens=a.gen_tokens, generation_s=gen['s'], generation_status=gen['status'], small_scoring_s=small,
                         generation_still_running=running)
        print(f"long request: a small scoring request took {', '.join(f'{x:.2f}' for x in small)} s while a {a.gen_tokens}-token generation ran "
              f"({gen['s']:.1f} s in all, HTTP {gen['status']}){'' if running else '; the generation had ended before the scoring request was answered'}", flush=True)

        if not a.no_abuse:
            big = b'{"prompt": "' + b'x' * (50 * 2**20) + b'"}'
            c1 = httpx.post(url + '/v1/completions', content=big, headers={'Content-Type': 'application/json'}, timeout=600).status_code
            c2 = httpx.post(url + '/v1/completions', json=dict(model=a.model, prompt=['y' * 2**20] * 3, max_tokens=4), timeout=600).status_code
            time.sleep(1)
            R['abuse'] = dict(status_50mb_body=c1, status_3x1mb_prompts=c2, rss_after_mib=rss(proc), rss_idle_mib=idle)
            print(f"oversized: a 50 MB body -> HTTP {c1}, three 1 MB prompts -> HTTP {c2}; RSS idle {idle:.0f} -> after {R['abuse']['rss_after_mib']:.0f} MiB", flush=True)
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
    R['load_average_end'] = os.getloadavg()[0]
    if a.out: Path(a.out).write_text(json.dumps(R, indent=1))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}; load average at the end {R['load_average_end']:.1f}")


if __name__ == '__main__':
    main()
