"""Scoring speed: navab's engine (`navab.score.score`) against the brute-force reference (`score_reference`: one request
at a time, full forward, full log-softmax) on real NaVAB samples from ../shared/data/navab-hk, in answer mode (a shared
question, answer letters) and navab mode (whole prompts ending in A or B), both option orders.

    .venv/bin/python benchmarks/bench_score.py [--model smollm2-135m] [--samples 50] [--batch-size 8]
"""
import argparse, os, sys, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import polars as pl

DATA = Path(__file__).resolve().parent.parent.parent / 'shared' / 'data' / 'navab-hk'


def requests(samples: pl.DataFrame, mode: str) -> pl.DataFrame:
    "Four requests per sample: options in both orders, answers A and B; grouped by sample and order."
    rows = []
    for r in samples.iter_rows(named=True):
        for order, (a, b) in (('ab', (r['statement'], r['reverse_statement'])), ('ba', (r['reverse_statement'], r['statement']))):
            q, g = f"{r['question']}\nA. {a.strip()}\nB. {b.strip()}\nAnswer:", f"{r['id']}-{order}"
            rows += [dict(context=q, continuation=f' {x}', group=g) if mode == 'answer' else
                     dict(context='', continuation=f'{q} {x}', group=g) for x in 'AB']
    return pl.DataFrame(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', default='smollm2-135m'); ap.add_argument('--samples', type=int, default=50)
    ap.add_argument('--batch-size', type=int, default=8)
    a = ap.parse_args()
    if not DATA.exists(): print(f"bench_score: skipped, the real data is not at {DATA}"); return
    from navab.data import read_navab
    from navab.models import load_model
    from navab.score import score, score_reference
    samples = pl.concat([read_navab(DATA / f, 'CN').valid for f in ('human_statement_result.json', 'official_statement_result.json')])
    samples = samples[:a.samples]
    m, tok, info = load_model(a.model)
    score(requests(samples[:1], 'answer'), m, tok, info, progress=False)   # warm-up
    for mode in ('answer', 'navab'):
        reqs = requests(samples, mode)
        t0 = time.perf_counter(); ref = score_reference(reqs, m, tok, info)
        t1 = time.perf_counter(); got = score(reqs, m, tok, info, batch_size=a.batch_size, progress=False)
        t2 = time.perf_counter()
        diff = (got['logprob'] - ref['logprob']).abs().max()
        ok = diff < 1e-3 and got['is_greedy'].equals(ref['is_greedy'])
        print(f"{a.model} {mode:6s} {len(reqs)} requests, {ref['n_tokens'].mean():.1f} tokens scored each | reference "
              f"{len(reqs) / (t1 - t0):.2f} req/s | engine (batch {a.batch_size}) {len(reqs) / (t2 - t1):.2f} req/s | "
              f"x{(t1 - t0) / (t2 - t1):.2f} | max |diff| {diff:.1e} nats{'' if ok else '  MISMATCH'}", flush=True)
        if not ok: sys.exit(1)


if __name__ == '__main__':
    main()
