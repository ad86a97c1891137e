"""What a NaVAB-scale study costs: per-core throughput of the non-LLM extraction stage and of HTTP scoring, and the
projected cost of extracting from 10M articles and of evaluating 10 models x 5 nations.

Usage:  nice -n 5 .venv/bin/python benchmarks/bench_scale.py [--articles 50000] [--model smollm2-135m] [--requests 64]
        [--url http://127.0.0.1:8000/v1#MODEL]   (score against a server already running instead of starting `navab serve`)

1. Non-LLM extraction: a synthetic corpus (`--articles` articles of ~2 KB of random words, 8 JSONL shards) is read,
   validated and written as Parquet partitioned by nation and shard (`navab.data.write_partitions`, the load stage of
   `navab extract` for sharded corpora) in a subprocess; articles per CPU-second of that process is the per-core rate.
   The floor beside it: reading the same bytes and `json.loads` of every line, nothing else, in the same process.
   Then the streamed topics stage (`navab extract --stages topics` on the glob) for the UK's fifth of the corpus, with
   the language's default embedder: articles per CPU-second and peak RSS.
2. Scoring: the same MC requests (2 per sample: the question with both options, scored on the answer letter) are scored
   in-process by navab's engine (batched), and over HTTP against `navab serve` (started here on 127.0.0.1, stopped
   after) one request at a time and with 2 concurrent clients. The lm-eval payload (echo + logprobs, max_tokens 1) is
   sent; a server that answers without log-probs (navab serve before the backend issue lands) is measured on the
   same payload anyway (one forward over the prompt plus one generated token: the work of scoring it) and the output
   says so.
3. The extraction's LLM stages (topics, statements, screen, conflict, source, samples): their CPU seconds per article from
   a finished `navab extract` run folder (`--llm-run DIR`, default the 222-article HK run that
   `benchmarks/bench_grounding.py --limit 222 --skip-demo` writes under benchmarks/out/grounding/hk/run), i.e. timings.json
   and counts.json of real news through the default generator.
4. The projection, with its assumptions printed: figures scale linearly in articles and requests and divide over
   cores; model cost scales with parameter count.
Results: benchmarks/out/bench_scale.json and a table on stdout, with the load average (other work slows the wall clock;
CPU seconds are what the per-core rates use).
"""
from __future__ import annotations
import argparse, json, os, re, socket, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / 'benchmarks' / 'out'
NAVAB_SAMPLES = {'CN': 52_400, 'UK': 6_400, 'US': 2_040, 'FR': 1_940}   # NaVAB's released samples per nation (>60k in all)

_STAGE = r'''
import json, resource, sys, time
from navab.data import write_partitions
t = time.time(); r0 = resource.getrusage(resource.RUSAGE_SELF)
if sys.argv[1] == 'floor':      # read the bytes and parse every line: what any loader must do
    import glob
    n = 0
    for f in sorted(glob.glob(sys.argv[2])):
        with open(f, 'rb') as fh:
            for line in fh: json.loads(line); n += 1
    m = {'in': n}
else: m = write_partitions(sys.argv[2], sys.argv[3], None, batch=20000)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps(dict(wall=time.time() - t, cpu=(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), n=m['in'])))
'''


def corpus(n: int, seed: int = 0, shards: int = 8) -> Path:
    "Write `n` synthetic articles (~2 KB of random words, nations in turn) as JSONL shards under benchmarks/out/scale-N/."
    import numpy as np, polars as pl
    d = OUT / f'scale-{n}'
    if d.is_dir() and len(list(d.glob('*.jsonl'))) == shards: return d
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = np.array([''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), rng.integers(3, 10))) for _ in range(5000)])
    nations = ['CN', 'US', 'UK', 'FR', 'DE']
    for k in range(shards):
        m = n // shards + (k < n % shards)
        words = vocab[rng.integers(0, len(vocab), (m, 300))]
        pl.DataFrame(dict(id=[f'a{k}-{i}' for i in range(m)], nation=[nations[(k + i) % 5] for i in range(m)],
                          text=[' '.join(w) + '.' for w in words])).write_ndjson(d / f'part-{k}.jsonl')
    return d


def bench_extract(n: int) -> dict:
    "Articles per CPU-second of the load stage (read, validate, partition) and of the floor (read + json.loads)."
    d = corpus(n)
    size = sum(f.stat().st_size for f in d.glob('*.jsonl'))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = lambda *a: json.loads(subprocess.run([sys.executable, '-c', _STAGE, *a], env=env, check=True, capture_output=True, text=True).stdout)
    floor = run('floor', str(d / '*.jsonl'))
    import shutil
    shutil.rmtree(OUT / f'scale-{n}-parts', ignore_errors=True)
    st = run('stage', str(d / '*.jsonl'), str(OUT / f'scale-{n}-parts'))
    assert st['n'] == floor['n'] == n, (st, floor, n)
    return dict(articles=n, bytes=size, stage=st, floor=floor, stage_per_core=n / st['cpu'], floor_per_core=n / floor['cpu'])


_TOPICS = r'''
import json, re, resource, sys, time
from navab.extract import extract, EchoGenerator
t = time.time(); r0 = resource.getrusage(resource.RUSAGE_SELF)
c = extract(sys.argv[1], sys.argv[2], sys.argv[3], generator=EchoGenerator('en'), stages='topics', progress=False)
r1 = resource.getrusage(resource.RUSAGE_SELF)
hwm = int(re.search(r'VmHWM:\s+(\d+) kB', open('/proc/self/status').read()).group(1)) * 1024
print(json.dumps(dict(wall=time.time() - t, cpu=(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), n=c['topics']['in'], peak=hwm,
                      timings=json.load(open(sys.argv[3] + '/timings.json')))))
'''


def bench_topics(n: int, nation: str = 'UK') -> dict:
    "The streamed load + topics stages (tokenise, embed with the language's default embedder, fit on a 5,000 sample, assign) for one nation of the synthetic corpus: CPU seconds per article and peak RSS."
    import shutil
    d = corpus(n)
    out = OUT / f'scale-{n}-topics'
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = json.loads(subprocess.run([sys.executable, '-c', _TOPICS, str(d / '*.jsonl'), nation, str(out)], env=env, check=True,
                                  capture_output=True, text=True).stdout)
    t = r['timings']['topics']
    return dict(nation=nation, articles=r['n'], peak=r['peak'], wall=r['wall'], cpu=r['cpu'], topics_cpu=t['cpu_seconds'], topics_wall=t['seconds'],
                per_core=r['n'] / t['cpu_seconds'])


def _free_port() -> int:
    s = socket.socket(); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); return p


def _requests(k: int):
    "2k MC requests (2 per sample: navab's own MC prompts) for k synthetic English samples."
    import polars as pl
    from navab.evaluate import mc_prompts, mc_requests
    rows = [dict(id=f's{i}', nation='US', lang='en', source_type='official', topic=None,
                 question=f'Should the government fund public project number {i} this year?',
                 statement=f'The government should fund public project {i} this year.',
                 reverse_statement=f'The government should not fund public project {i} this year.') for i in range(k)]
    return mc_requests(mc_prompts(pl.DataFrame(rows), seed=0))


def bench_scoring(model: str, k: int, url: str | None = None) -> dict:
    "Requests per second scoring the same MC requests in-process (batched) and over HTTP (1 and 2 clients)."
    import httpx
    from concurrent.futures import ThreadPoolExecutor
    from navab.models import load_model
    from navab.score import score
    req = _requests(k // 2)
    m, tok, info = load_model(model)
    score(_requests(4), m, tok, info, batch_size=16, progress=False)          # warm-up (first calls pay one-time costs)
    t, c0 = time.time(), time.process_time()
    score(req, m, tok, info, batch_size=16, progress=False)
    inproc = dict(n=len(req), wall=time.time() - t, cpu=time.process_time() - c0)
    del m
    proc, served = None, None
    if url is None:
        port = _free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE='1')
        proc = subprocess.Popen([sys.executable, '-c', 'import sys; from navab.cli import main; sys.exit(main())', 'serve', '--model', model, '--port', str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url, served = f'http://127.0.0.1:{port}/v1', model
    else:
        url, _, served = url.partition('#')
    try:
        cl = httpx.Client(timeout=120)
        for _ in range(600):
            try:
                if cl.get(f'{url}/models').status_code == 200: break
            except httpx.HTTPError: pass
            if proc is not None and proc.poll() is not None: raise RuntimeError(f"navab serve exited: {proc.stderr.read()[-2000:]}")
            time.sleep(0.5)
        prompts = [c + x for c, x in zip(req['context'], req['continuation'])]
        body = lambda p: dict(model=served, prompt=p, temperature=0, max_tokens=1, logprobs=1, echo=True, seed=0)
        first = cl.post(f'{url}/completions', json=body(prompts[0])).json()
        lp = (first.get('choices') or [{}])[0].get('logprobs')
        scored = bool(lp and lp.get('token_logprobs'))
        def cpu():
            "CPU seconds the server process has used (None when it is not ours)."
            if proc is None: return None
            return sum(float(x) for x in open(f'/proc/{proc.pid}/stat').read().rsplit(')', 1)[1].split()[11:13]) / os.sysconf('SC_CLK_TCK')
        for p in prompts[:4]: cl.post(f'{url}/completions', json=body(p))         # warm-up
        res = {}
        for conc in (1, 2):
            t, c0 = time.time(), cpu()
            with ThreadPoolExecutor(conc) as ex:
                codes = list(ex.map(lambda p: cl.post(f'{url}/completions', json=body(p)).status_code, prompts))
            assert all(c == 200 for c in codes), codes
            res[conc] = dict(n=len(prompts), wall=time.time() - t, server_cpu=None if c0 is None else cpu() - c0)
        return dict(model=model, url=url, echo_logprobs=scored, inproc=inproc, http=res)
    finally:
        if proc is not None: proc.terminate(); proc.wait(30)


def _params(model: str) -> float:
    "Parameters of a navab model name (for scaling; 135M and 270M for the embedded ones)."
    m = re.search(r'(\d+(?:\.\d+)?)([mb])', model.lower())
    return float(m.group(1)) * (1e6 if m.group(2) == 'm' else 1e9) if m else float('nan')


def llm_stages(run) -> dict | None:
    "CPU seconds per article of each extraction stage in a finished run folder (timings.json, counts.json), and the generator it used."
    run = Path(run) if run else None
    if not run or not (run / 'timings.json').is_file() or not (run / 'counts.json').is_file(): return None
    t, c = json.loads((run / 'timings.json').read_text()), json.loads((run / 'counts.json').read_text())
    n = c['load']['out']
    per = {st: dict(cpu_per_article=v['cpu_seconds'] / n, n_in=v['n_in'], seconds=v['seconds']) for st, v in t.items()}
    samples = c.get('samples', {}).get('out')
    return dict(run=str(run), articles=n, stages=per, samples=samples)


def project(ex: dict, sc: dict, cores: int, llm: dict | None = None, generator: str = 'gemma3-270m') -> list:
    "The projection rows (what, core-hours, wall hours on `cores` cores) with their assumptions."
    rows, notes = [], []
    n_art = 10_000_000
    per_core = ex['stage_per_core']
    rows.append(('extraction, load stage (read, validate, partition), 10M articles', n_art / per_core / 3600))
    notes.append(f"load stage: {per_core:,.0f} articles per CPU-second measured on {ex['articles']:,} synthetic articles of "
                 f"{ex['bytes'] / ex['articles']:,.0f} bytes (NaVAB's news articles are assumed of that order); linear in articles")
    if tp := ex.get('topics'):
        rows.append((f"extraction, topics stage (tokenise, embed, fit on 5,000, assign), 10M articles", n_art / tp['per_core'] / 3600))
        notes.append(f"topics stage: {tp['per_core']:,.0f} articles per CPU-second, measured streamed on the {tp['articles']:,} {tp['nation']} "
                     f"articles of the same corpus with that language's default embedder, peak RSS {tp['peak'] / 2**30:.1f} GiB (it does not "
                     "grow with the corpus: tests/test_corpus.py); the fit on a 5,000-article sample is a fixed cost, so the rate is "
                     "a lower bound at 10M")
    n_samples = sum(NAVAB_SAMPLES.values()) + NAVAB_SAMPLES['FR']
    n_req = 2 * n_samples * 10
    h = sc['http'][1]
    http1 = h['n'] / h['server_cpu'] if h.get('server_cpu') else h['n'] / h['wall']
    cpu_rate = sc['inproc']['n'] / sc['inproc']['cpu']
    p = _params(sc['model'])
    rows.append((f"evaluation, 10 models x 5 nations, MC, {sc['model']}-sized models, in-process engine", n_req / cpu_rate / 3600))
    rows.append((f"evaluation, same, over HTTP one request at a time ({sc['model']}-sized, server CPU)", n_req / http1 / 3600))
    for size in (1e9, 8e9):
        rows.append((f"evaluation, 10 models x 5 nations, MC, {size / 1e9:.0f}B-parameter models on CPU, in-process", n_req / cpu_rate * size / p / 3600))
    notes.append(f"samples: China 52.4k, UK 6.4k, US 2.04k, French 1.94k (NaVAB's release) and German assumed as many as French "
                 f"(1.94k): {n_samples:,} samples; 2 requests per MC sample; 10 models: {n_req:,} requests")
    notes.append(f"scoring: {cpu_rate:,.1f} requests per CPU-second in-process (batch 16, {sc['model']}, ~{p / 1e6:.0f}M parameters); "
                 f"HTTP 1 client {http1:,.1f} requests per server-CPU-second" + ('' if sc['echo_logprobs'] else
                 " (this navab serve answers without log-probs: one forward over the prompt and one generated token, the same work)"))
    gpu = ROOT / 'benchmarks' / 'gpu_results' / 'qwen7b_b64_x30.json'     # benchmarks/gpu_check.sh --scale qwen2.5-7b on a lent H200
    if gpu.is_file():
        g = json.loads(gpu.read_text())['bf16']
        rate = g['timed_requests'] / g['seconds']
        notes.append(f"on a GPU: navab's hf engine scored a Qwen2.5-7B-shaped model in bf16 at {rate:,.0f} requests/s on one H200 (batch 64, "
                     f"HK MC requests, {g['tokens_fed'] / g['timed_requests']:,.0f} tokens fed each, {g['share_of_peak']:.0%} of the measured bf16 "
                     f"matmul rate; {gpu.relative_to(ROOT)}): the {n_req:,} requests of 10 such models take {n_req / rate / 3600:.1f} GPU-hours")
    notes.append("bigger models: CPU cost scaled by parameter count (a forward is ~2 x params FLOPs per token); real studies run "
                 "8B models on GPUs behind vLLM (`--executor ray`, `--gpus-per-run`): measure that server's requests/s with --url and rerun")
    if llm:
        gen_stages = {st: v for st, v in llm['stages'].items() if st != 'topics'}   # topics calls no generator (llm_labels off): projected above
        tot = sum(v['cpu_per_article'] for v in gen_stages.values())
        gp = _params(generator)
        for st, v in gen_stages.items():
            rows.append((f"extraction, {st} stage, 10M articles, {generator} generator on CPU", n_art * v['cpu_per_article'] / 3600))
        rows.append((f"extraction, all LLM stages, 10M articles, {generator} generator on CPU", n_art * tot / 3600))
        rows.append((f"extraction, all LLM stages, 10M articles, an 8B generator on CPU (scaled by parameters)", n_art * tot * 8e9 / gp / 3600))
        notes.append(f"LLM stages: CPU seconds per article from {llm['run']} ({llm['articles']} real HK articles, {llm['samples']} samples kept): "
                     + ', '.join(f"{st} {v['cpu_per_article']:.2f}" for st, v in gen_stages.items())
                     + f" (total {tot:.2f} CPU-s per article; its topics stage, no generator, {llm['stages'].get('topics', {}).get('cpu_per_article', float('nan')):.2f}: "
                       "the topics rows above are measured on 10,000 articles, not 222); later stages see only what earlier ones keep, so the per-article figure "
                       "holds for news with the same value density; conflict compares at most 200 statement pairs per topic, so it "
                       "stays linear while topics stay of bounded size")
        notes.append(f"an 8B generator: the {generator} figures scaled by parameter count; on GPUs behind vLLM the cost is the server's "
                     "(`--generator http://...`; measure its requests/s and rerun)")
    else: notes.append("extraction's LLM stages: not projected (no run folder: run benchmarks/bench_grounding.py --limit 222 --skip-demo, or pass --llm-run DIR)")
    notes.append(f"wall hours divide core-hours over {cores} cores; Ray spreads runs over machines the same way (one model x nation x method per task)")
    return rows, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--articles', type=int, default=50_000); ap.add_argument('--model', default='smollm2-135m')
    ap.add_argument('--requests', type=int, default=64); ap.add_argument('--url'); ap.add_argument('--cores', type=int, default=64)
    ap.add_argument('--report', action='store_true', help='reprint the saved results')
    ap.add_argument('--llm-run', default=str(OUT / 'grounding' / 'hk' / 'run'), help='a finished navab extract run folder: its LLM stage costs')
    ap.add_argument('--generator', default='gemma3-270m', help="the generator that run used (settings [extract]), for scaling")
    a = ap.parse_args(argv)
    os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    OUT.mkdir(parents=True, exist_ok=True)
    res_path = OUT / 'bench_scale.json'
    if a.report:
        r = json.loads(res_path.read_text())
        r['scoring']['http'] = {int(k): v for k, v in r['scoring']['http'].items()}   # JSON keys are strings
    else:
        load0 = os.getloadavg()[0]
        ex = bench_extract(a.articles)
        ex['topics'] = bench_topics(a.articles)
        sc = bench_scoring(a.model, a.requests, a.url)
        r = dict(extract=ex, scoring=sc, load_avg=[load0, os.getloadavg()[0]], cpus=os.cpu_count(), cores=a.cores)
        res_path.write_text(json.dumps(r, indent=1))
    ex, sc = r['extract'], r['scoring']
    print(f"machine: {r['cpus']} CPUs, load average {r['load_avg'][0]:.1f} at start, {r['load_avg'][1]:.1f} at end (wall clocks suffer; CPU seconds less)")
    print(f"\nnon-LLM load stage on {ex['articles']:,} articles ({ex['bytes'] / 2**20:.0f} MiB, 8 JSONL shards):")
    print(f"  read+validate+partition  {ex['stage_per_core']:>10,.0f} articles/CPU-s   ({ex['stage']['cpu']:.1f} CPU s, {ex['stage']['wall']:.1f} s wall)")
    print(f"  floor: read+json.loads   {ex['floor_per_core']:>10,.0f} articles/CPU-s   ({ex['floor']['cpu']:.1f} CPU s): the stage is "
          f"{ex['floor_per_core'] / ex['stage_per_core']:.1f}x the floor's cost")
    if tp := ex.get('topics'):
        print(f"  topics, streamed ({tp['nation']}, {tp['articles']:,} articles) {tp['per_core']:>6,.0f} articles/CPU-s   ({tp['topics_cpu']:.1f} CPU s, "
              f"{tp['topics_wall']:.1f} s wall, peak RSS {tp['peak'] / 2**30:.2f} GiB)")
    print(f"\nscoring {sc['inproc']['n']} MC requests with {sc['model']}:")
    print(f"  in-process (batch 16)    {sc['inproc']['n'] / sc['inproc']['cpu']:>8.1f} requests/CPU-s   ({sc['inproc']['wall']:.1f} s wall)")
    for c, v in sc['http'].items():
        per = f", {v['n'] / v['server_cpu']:.1f} requests/server-CPU-s" if v.get('server_cpu') else ''
        print(f"  HTTP, {c} client(s)        {v['n'] / v['wall']:>8.1f} requests/s wall    ({v['wall']:.1f} s{per})")
    print(f"  server returned echo+logprobs: {sc['echo_logprobs']}" + ('' if sc['echo_logprobs'] else
          " (navab serve on this checkout generates only; the backend issue adds scoring: then rerun)"))
    rows, notes = project(ex, sc, r['cores'], llm_stages(a.llm_run), a.generator)
    print(f"\nprojected cost (core-hours; wall hours on {r['cores']} cores):")
    for what, ch in rows: print(f"  {what:<92} {ch:>12,.1f} core-h {ch / r['cores']:>10,.2f} h")
    print("\nassumptions:")
    for n in notes: print(f"  - {n}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
