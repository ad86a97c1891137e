"""Scoring over HTTP: navab's `openai` backend against lm-evaluation-harness's `local-completions` client on the same
`navab serve` process and the same requests (the real NaVAB HK samples' MC requests), and against scoring in process
(`hf`: what the HTTP path costs).

    .venv/bin/python benchmarks/bench_http.py [--model smollm2-135m] [--samples 74] [--repeats 1] [--concurrency 8]

One server process (started here on 127.0.0.1, stopped at the end) serves every HTTP contender in turn; nothing is
cached between contenders (no run folder). Printed: each contender's wall time and requests/s, the log-prob agreement,
the ratios, and the floor: scoring in process is the least time any client of this server on this machine can take
(the server runs the same engine and must also parse, tokenise and serialise), so `lm-eval time / in-process time` is the
highest ratio a client could reach against lm-eval here.
"""
import argparse, os, socket, subprocess, sys, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRANSFORMERS_OFFLINE', '1'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import polars as pl

DATA = Path(__file__).resolve().parent.parent.parent / 'shared' / 'data' / 'navab-hk'
NAVAB = str(Path(sys.executable).parent / 'navab')


def _port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def serve(model: str, *args):
    "Start `navab serve` on a free port (more flags in `args`); return (url, process) once it answers."
    import httpx
    port = _port()
    p = subprocess.Popen([NAVAB, 'serve', '--model', model, '--port', str(port), *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    for _ in range(1200):
        try:
            if httpx.get(url + '/v1/models', timeout=1).status_code == 200: return url, p
        except httpx.HTTPError: time.sleep(0.1)
    p.kill(); sys.exit('bench_http: navab serve did not come up')


def timed(f):
    t = time.perf_counter(); r = f(); return r, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', default='smollm2-135m'); ap.add_argument('--samples', type=int, default=74)
    ap.add_argument('--repeats', type=int, default=1); ap.add_argument('--concurrency', type=int, default=8)
    ap.add_argument('--batch-size', type=int, default=16)
    a = ap.parse_args()
    if not DATA.exists(): print(f"bench_http: skipped, the real data is not at {DATA}"); return
    from navab.data import read_navab
    from navab.evaluate import mc_prompts, mc_requests
    from navab.backend import get_backend, HFBackend
    from navab.models import convert_embedded, EMBEDDED
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    S = pl.concat([read_navab(DATA / f, 'CN').valid for f in ('human_statement_result.json', 'official_statement_result.json')]).head(a.samples)
    R = mc_requests(mc_prompts(S), 'answer')
    path = str(convert_embedded(a.model)) if a.model in EMBEDDED else a.model
    # lm-eval conditions on the context as it is; navab puts the model's start token first (SmolLM2: <|endoftext|>; without it
    # log-probs move by up to 0.4 nats). lm-eval gets the start token in its context, so both score the same token sequence.
    from transformers import AutoTokenizer
    from navab.models import start_token
    st = start_token(AutoTokenizer.from_pretrained(path), a.model)
    insts = [Instance('loglikelihood', {}, (st + c, x), i) for i, (c, x) in enumerate(zip(R['context'], R['continuation']))]
    print(f"{a.model}: {len(S)} HK samples, {len(R)} MC requests (answer mode); batch {a.batch_size}; {os.cpu_count()} CPUs; "
          f"lm-eval's contexts begin with the start token {st!r}, as navab's do", flush=True)
    url, proc = serve(a.model)
    url1, proc1 = serve(a.model, '--max-batch', '1')            # the peer: the same server answering one request per engine call
    times = {}
    try:
        nb = get_backend(f"{url}/v1#{a.model}", concurrency=a.concurrency)
        nb1 = get_backend(f"{url1}/v1#{a.model}", concurrency=a.concurrency)
        lm1 = LocalCompletionsAPI(base_url=f"{url}/v1/completions", model=a.model, tokenizer_backend='huggingface', tokenizer=path,
                                  tokenized_requests=True, max_retries=3)                       # lm-eval's defaults: 1 in flight, 1 a call
        lmc = LocalCompletionsAPI(base_url=f"{url}/v1/completions", model=a.model, tokenizer_backend='huggingface', tokenizer=path,
                                  tokenized_requests=True, max_retries=3, num_concurrent=a.concurrency)
        hf = HFBackend(a.model)
        nb.score(R.head(2), progress=False); nb1.score(R.head(2), progress=False); lm1.loglikelihood(insts[:2], disable_tqdm=True)
        hf.score(R.head(2), progress=False)  # warm-up
        runs = {'navab openai': lambda: nb.score(R, batch_size=a.batch_size, progress=False)['logprob'].to_list(),
                'navab openai, server --max-batch 1': lambda: nb1.score(R, batch_size=a.batch_size, progress=False)['logprob'].to_list(),
                'lm-eval local-completions': lambda: [x for x, _ in lm1.loglikelihood(insts, disable_tqdm=True)],
                f'lm-eval local-completions num_concurrent={a.concurrency}': lambda: [x for x, _ in lmc.loglikelihood(insts, disable_tqdm=True)],
                'navab hf (in process)': lambda: hf.score(R, batch_size=a.batch_size, progress=False)['logprob'].to_list()}
        out = {}
        for k in range(a.repeats):
            for name, f in runs.items():
                out[name], t = timed(f)
                times.setdefault(name, []).append(t)
    finally:
        for p in (proc, proc1): p.terminate(); p.wait(20)
    med = {n: sorted(ts)[len(ts) // 2] for n, ts in times.items()}
    for n, t in med.items():
        d = max(abs(x - y) for x, y in zip(out[n], out['navab hf (in process)']))
        print(f"  {n:<48} {t:7.2f} s  {len(R) / t:7.1f} req/s   max |logprob - in-process| {d:.1e}")
    nbt, ip = med['navab openai'], med['navab hf (in process)']
    for n in med:
        if n.startswith('lm-eval'): print(f"navab openai vs {n}: x{med[n] / nbt:.2f}  (floor: at most x{med[n] / ip:.2f} reachable by any client)")
    print(f"server batching: navab openai against a server answering one request per engine call: x{med['navab openai, server --max-batch 1'] / nbt:.2f}")
    print(f"HTTP overhead: navab openai takes x{nbt / ip:.2f} the in-process time (floor x1.00)")


if __name__ == '__main__':
    main()
