"""BLEnD with a real model: accuracy per nation and language on the first items of each, with the time each took.

Usage:  OMP_NUM_THREADS=1 PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_blend.py [--data ../shared/data/blend]
        [--model smollm2-135m] [--limit 30] [--chat both|on|off] [--max-new-tokens 24] [--device auto]

Reads BLEnD with navab.blend.read_blend, takes the first `--limit` items of each (nation, language) in file order, and runs
`navab.evaluate.evaluate(..., task='blend')` once per group (the model loaded once, fresh run folders under
benchmarks/out/blend/, so nothing is cached). With `--chat both` every group runs twice: the raw inst-4 prompt, and the
prompt in the model's chat template. Results: benchmarks/out/bench_blend.json and a table on stdout (n, accuracy with its
95% bootstrap CI, answers that were empty, wall and CPU seconds, load average). On a busy 2-core machine set
OMP_NUM_THREADS=1: two torch threads competing with other work ran ten times slower.

Measured (2026-12-07, smollm2-135m, CPU, 2 shared cores at load 6-7, OMP_NUM_THREADS=1, the command above with its defaults:
the first 30 items of each nation and language, max_new_tokens 24, seed 0; accuracy with its 95% bootstrap CI):

    nation lang  prompt  n   accuracy [95% CI]       weighted  empty  wall s  CPU s
    CN     zh    raw     30  0.033 [0.000, 0.100]    0.033      0      43.2   20.2
    CN     en    raw     30  0.000 [0.000, 0.000]    0.000     25      15.7    5.1
    UK     en    raw     30  0.000 [0.000, 0.000]    0.000     25      19.7    5.1
    US     en    raw     30  0.000 [0.000, 0.000]    0.000     26      19.2    5.2
    CN     zh    chat    30  0.000 [0.000, 0.000]    0.000      0     111.9   20.7
    CN     en    chat    30  0.133 [0.033, 0.267]    0.107      0      78.0   17.4
    UK     en    chat    30  0.300 [0.133, 0.467]    0.246      0      68.1   16.6
    US     en    chat    30  0.367 [0.200, 0.533]    0.317      0      22.9   15.3

On the raw inst-4 prompt the instruct model mostly ends its turn at once in English (empty answers, scored wrong); in its
chat template it answers in a sentence that restates the question ("The most popular sport played in a team at school in
the US is football."), credited when an annotator answer is in it. In Chinese it restates the question and the 24 tokens
run out before an answer. Run instruct models with chat on (navab evaluate --chat; the task option chat=True).
"""
from __future__ import annotations
import argparse, json, os, shutil, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / 'benchmarks' / 'out'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default=str(ROOT.parent / 'shared' / 'data' / 'blend'))
    p.add_argument('--model', default='smollm2-135m')
    p.add_argument('--limit', type=int, default=30)
    p.add_argument('--chat', choices=('both', 'on', 'off'), default='both')
    p.add_argument('--max-new-tokens', type=int, default=24)
    p.add_argument('--device', default='auto')
    a = p.parse_args(argv)
    import polars as pl
    from navab.blend import read_blend
    from navab.evaluate import evaluate
    from navab.backend import get_backend
    c = read_blend(a.data)
    print(c)
    groups = [(k, g.head(a.limit)) for k, g in c.valid.group_by('nation', 'lang', maintain_order=True)]
    B = get_backend(a.model, device=a.device)
    rows = []
    for chat in {'both': (False, True), 'on': (True,), 'off': (False,)}[a.chat]:
        for (nation, lang), items in groups:
            out = OUT / 'blend' / f"{Path(a.model).name}-{nation}-{lang}-{'chat' if chat else 'raw'}"
            shutil.rmtree(out, ignore_errors=True)
            t, cpu = time.time(), time.process_time()
            s = evaluate(items, B, out, task='blend', chat=chat, max_new_tokens=a.max_new_tokens, progress=False)
            sc = pl.read_parquet(out / 'scores.parquet')
            rows.append(dict(model=a.model, nation=nation, lang=lang, chat=chat, n=s['n'], accuracy=s['accuracy'], ci_low=s['ci_low'], ci_high=s['ci_high'],
                             weighted=s['weighted']['estimate'], n_empty=s['n_empty'], wall_s=round(time.time() - t, 1), cpu_s=round(time.process_time() - cpu, 1),
                             load=round(os.getloadavg()[0], 1), device=s['device'], examples=sc.select('sample_id', 'answer', 'matched').head(3).to_dicts()))
            r = rows[-1]
            print(f"{nation} {lang} chat={str(chat):<5} n={r['n']:>3} accuracy={r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
                  f"empty={r['n_empty']:>2} wall={r['wall_s']:>6.1f}s cpu={r['cpu_s']:>6.1f}s load={r['load']}", flush=True)
            OUT.mkdir(parents=True, exist_ok=True)
            (OUT / 'bench_blend.json').write_text(json.dumps(dict(argv=sys.argv, rows=rows), indent=1, ensure_ascii=False), encoding='utf-8')
    return 0


if __name__ == '__main__':
    sys.exit(main())
