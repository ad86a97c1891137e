"""Chat-only scoring against full log-likelihoods: on the HK samples, MC by label log-probs and by generation through
`navab serve`'s chat endpoint, against MC by the full log-likelihood of the answer label (the hf backend).

Usage:  OMP_NUM_THREADS=1 PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_chat.py
        [--samples FILE ...] [--models smollm2-135m,gemma3-270m] [--limit N]

The samples: the two final files of ../shared/data/navab-hk (human_statement_result.json, 35 quoted samples, and
official_statement_result.json, 39 official ones after its one quarantined row): 74 HK samples, nation CN.

For each model: `evaluate` MC (`--order`, default seeded; answer scoring; seed 0) in process (hf, `loglik`: the prompt, then the
label's log-likelihood), and for models with a chat template also hf in that template (`loglik-chat`: the same prompt
as one user turn); then a real `navab serve` process on 127.0.0.1 and `evaluate` through `chat+http://...#model` with
chat scoring `label-logprob` (the first answer token's top 20) and `generation` (a 16-token answer, its letter parsed).
A model without a chat template is first asked as it is (the 400 is printed), then served with
`--chat-template benchmarks/gemma3_chat_template.jinja` (Gemma's turn format). Fresh run folders under
benchmarks/out/chat/ (nothing cached). Results: benchmarks/out/bench_chat-ORDER.json and a table on stdout: n, accuracy with
its 95% bootstrap CI, ties (loglik), answers missing a letter from the top 20 (label-logprob), unparsed answers
(generation), and the decision agreement with the hf loglik run (share of samples with the same decision, a tie or an
unparsed answer counting as a decision of its own; Cohen's kappa), the Pearson correlation of the per-sample margins
with the loglik run's (not for generation, whose margins are not log-probs), the most frequent letter and its share,
position consistency (--order both), and wall seconds.

Measured: see the chat chapter (nbs/04e_chat.ipynb, "Measured") for the table this prints.
"""
from __future__ import annotations
import argparse, json, os, shutil, socket, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / 'benchmarks' / 'out'
NAVAB = str(Path(sys.executable).parent / 'navab')
GEMMA_TEMPLATE = ROOT / 'benchmarks' / 'gemma3_chat_template.jinja'


def _port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


class Serve:
    "A `navab serve` process on 127.0.0.1 for the length of a with-block."
    def __init__(self, model: str, *args):
        self.port, self.args, self.model = _port(), args, model
    def __enter__(self):
        import httpx
        self.p = subprocess.Popen([NAVAB, 'serve', '--model', self.model, '--port', str(self.port), *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.url = f'http://127.0.0.1:{self.port}'
        for _ in range(3000):
            if self.p.poll() is not None: raise RuntimeError(f'navab serve {self.model} exited with {self.p.returncode}')
            try:
                if httpx.get(self.url + '/v1/models', timeout=1).status_code == 200: return self
            except httpx.HTTPError: time.sleep(0.1)
        raise RuntimeError('navab serve did not come up')
    def __exit__(self, *a):
        self.p.terminate(); self.p.wait(30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    hk = ROOT.parent / 'shared' / 'data' / 'navab-hk'
    p.add_argument('--samples', nargs='+', default=[str(hk / 'human_statement_result.json'), str(hk / 'official_statement_result.json')])
    p.add_argument('--nation', default='CN')
    p.add_argument('--models', default='smollm2-135m,gemma3-270m')
    p.add_argument('--limit', type=int)
    p.add_argument('--order', default='seeded', choices=('seeded', 'both'), help="MC's option order: seeded, or both (S as A and as B, the decision debiased)")
    a = p.parse_args(argv)
    import httpx
    import polars as pl
    from navab.data import read_samples
    from navab.evaluate import evaluate
    from navab.backend import load_tokenizer
    from navab.stats import agreement
    S = pl.concat([read_samples(f, a.nation).valid for f in a.samples], how='diagonal_relaxed')
    if a.limit: S = S.head(a.limit)
    print(f"{len(S)} samples from {', '.join(a.samples)} ({a.nation})")
    rows, notes = [], []
    for model in a.models.split(','):
        tok, _ = load_tokenizer(model)
        runs = {}
        def run(kind, spec, **kw):
            out = OUT / 'chat' / f'{model}-{a.order}-{kind}'
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.time()
            s = evaluate(S, spec, out, progress=False, seed=0, order=a.order, **kw)
            runs[kind] = (s, pl.read_parquet(out / 'scores.parquet'), round(time.time() - t0, 1))
            print(f"  {model} {kind}: accuracy {s['accuracy']:.3f} in {runs[kind][2]} s", flush=True)
        run('loglik', model)
        if getattr(tok, 'chat_template', None): run('loglik-chat', model, chat=True)
        extra = ()
        if not getattr(tok, 'chat_template', None):
            with Serve(model) as sv:
                r = httpx.post(sv.url + '/v1/chat/completions', json=dict(model=model, messages=[{'role': 'user', 'content': 'hi'}]))
                notes.append(f"{model}: navab serve without --chat-template answers HTTP {r.status_code}: {r.json()['message']}")
                print('  ' + notes[-1])
            extra = ('--chat-template', str(GEMMA_TEMPLATE))
            notes.append(f"{model}: served with --chat-template {GEMMA_TEMPLATE.relative_to(ROOT)} (Gemma's turn format; the embedded model is the base model)")
        with Serve(model, *extra) as sv:
            spec = f'chat+{sv.url}/v1#{model}'
            run('label-logprob', spec, chat_scoring='label-logprob')
            run('generation', spec, chat_scoring='generation')
        base = runs['loglik'][1].select('sample_id', pl.col('pred').alias('ref'), pl.col('margin').alias('ref_margin'))
        for kind, (s, sc, wall) in runs.items():
            j = base.join(sc.select('sample_id', 'pred', 'margin'), on='sample_id', how='inner')
            r_ = j.select(pl.corr('ref_margin', 'margin'))[0, 0] if kind != 'generation' else None   # generation margins are +-NOT_CHOSEN, not log-probs
            ag = agreement(j['ref'].fill_null('tie').to_list(), j['pred'].fill_null('none').to_list())
            rows.append(dict(model=model, kind=kind, scoring_kind=s['scoring_kind'], n=s['n'], accuracy=s['accuracy'], ci_low=s['ci_low'], ci_high=s['ci_high'],
                             order=a.order, margin_r=r_, ties=s['n_ties'], bounded=s.get('n_answers_bounded'), unparsed=s.get('n_unparsed'),
                             unparsed_examples=s.get('unparsed_examples'), agreement=ag['agreement'], kappa=ag['kappa'],
                             both_decided=int((j['ref'].is_not_null() & j['pred'].is_not_null()).sum()),
                             top_letter=s.get('top_letter'), top_letter_share=s.get('top_letter_share'), consistency=(s.get('position_consistency') or {}).get('estimate'), api=s.get('api'), wall_s=wall))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f'bench_chat-{a.order}.json').write_text(json.dumps(dict(samples=a.samples, nation=a.nation, order=a.order, n=len(S), rows=rows, notes=notes,
                                                         load=os.getloadavg()), indent=1, default=str))
    print(f"\n{'model':<13} {'scoring':<14} {'n':>3}  {'accuracy [95% CI]':<22} {'ties':>4} {'no-letter':>9} {'unparsed':>8}  "
          f"{'agree w/ loglik':>15} {'kappa':>6} {'margin r':>8}  {'top letter':<10} {'consist.':>8} {'wall s':>6}")
    for r in rows:
        na = lambda x: '-' if x is None else str(x)
        print(f"{r['model']:<13} {r['kind']:<14} {r['n']:>3}  {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]  {r['ties']:>4} {na(r['bounded']):>9} "
              f"{na(r['unparsed']):>8}  {r['agreement']:>15.3f} {r['kappa']:>6.3f} {'-' if r['margin_r'] is None else format(r['margin_r'], '.3f'):>8}  "
              f"{na(r['top_letter'])} {r['top_letter_share'] or 0:.0%}  {'-' if r['consistency'] is None else format(r['consistency'], '.3f'):>8} {r['wall_s']:>6}")
    for n in notes: print(n)
    return 0


if __name__ == '__main__':
    sys.exit(main())
