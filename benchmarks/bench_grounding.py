"""navab's extraction measured against the original NaVAB pipeline (issue 18): runs `navab.extract.extract` on the HK
articles of ../shared/data/navab-hk/filtered_statement_result.json (the articles the original pipeline, Llama-3-8B-
Instruct, extracted its statements from) and on the demo corpus, and prints per stage: rows, yield, grounding rate,
ROUGE-L (characters, simplified, punctuation dropped) with the upstream statement of the same article, the share of RS
the validator accepts; the validator's verdict on the upstream 75 final samples; the funnel by reason; wall time.
Resumable (rerun the same command: finished stages are read back).
Usage: python benchmarks/bench_grounding.py [--limit 222] [--demo-articles 8] [--nations CN,US,UK,FR,DE] [--generator gemma3-270m]
       [--out benchmarks/out/grounding] [--skip-hk] [--skip-demo]"""
import argparse, json, os, time
from pathlib import Path
import polars as pl
from navab.extract import extract
from navab.llm import get_generator
from navab.measure import hk_upstream, write_corpus, stage_table, upstream_row, upstream_verdicts, demo_table

ROOT = Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument('--limit', type=int, default=222, help='first N HK articles (222: all)')
ap.add_argument('--demo-articles', type=int, default=8, help='first N articles of each demo nation (0: all 40)')
ap.add_argument('--nations', default='CN,US,UK,FR,DE')
ap.add_argument('--generator', default=None, help='default: settings [extract]')
ap.add_argument('--out', default=str(ROOT / 'benchmarks/out/grounding'))
ap.add_argument('--skip-hk', action='store_true'); ap.add_argument('--skip-demo', action='store_true')
a = ap.parse_args()
out, res = Path(a.out), {}
pl.Config.set_tbl_rows(40); pl.Config.set_tbl_cols(12)
print(f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f} (a busy machine stretches every time below)")
shared = ROOT.parent / 'shared' / 'data'
if not a.skip_hk:
    if not (shared / 'navab-hk').exists(): raise SystemExit(f"{shared}/navab-hk not found: run with --skip-hk")
    up = hk_upstream(shared)
    corpus = write_corpus(up['articles'], out / 'hk' / 'hk.jsonl', limit=a.limit)
    t = time.time()
    counts = extract(corpus, 'CN', out / 'hk' / 'run', generator=a.generator, limit=a.limit)
    wall = time.time() - t
    arts = {k: up['articles'][k] for k in list(up['articles'])[:a.limit]}
    tab = pl.concat([pl.DataFrame([upstream_row({**up, 'articles': arts, 'statements': {k: up['statements'][k] for k in arts}})]),
                     stage_table(out / 'hk' / 'run', arts, 'zh', reference=up['statements'])], how='diagonal_relaxed')
    gen = get_generator(a.generator, run_dir=out / 'hk' / 'run' / 'cache', lang='zh')
    ver = upstream_verdicts(up['finals'], gen)
    print(f"\nHK: first {a.limit} articles, navab extract (wall {wall:.0f} s)\n{tab}")
    print("funnel:", json.dumps({k: v.get('reasons') for k, v in counts.items() if isinstance(v, dict)}, ensure_ascii=False))
    print(f"validator on the upstream {ver['n']} final samples: form accepts {ver['form_ok']}, with the judges' votes {ver['judged_ok']}; reasons {ver['reasons']}; votes {ver['votes']}")
    res['hk'] = dict(limit=a.limit, wall_s=wall, table=tab.to_dicts(), counts=counts, upstream_verdicts=ver)
if not a.skip_demo:
    runs, walls, counts = {}, {}, {}
    for n in a.nations.split(','):
        t = time.time()
        counts[n] = extract(ROOT / f'data/demo/corpus/{n}.jsonl', n, out / 'demo' / n, generator=a.generator, limit=a.demo_articles or None, seed=42)
        walls[n], runs[n] = time.time() - t, out / 'demo' / n
    dt = demo_table(runs, pl.read_csv(ROOT / 'data/demo/labels.csv')).with_columns(pl.Series('wall_s', [round(walls[n]) for n in runs]))
    print(f"\ndemo: first {a.demo_articles or 40} articles per nation\n{dt}")
    for n in runs: print(n, json.dumps({k: v.get('reasons') for k, v in counts[n].items() if isinstance(v, dict)}, ensure_ascii=False))
    res['demo'] = dict(articles=a.demo_articles, table=dt.to_dicts(), counts=counts)
out.mkdir(parents=True, exist_ok=True)
(out / 'result.json').write_text(json.dumps(res, ensure_ascii=False, indent=1, default=str))
print(f"wrote {out / 'result.json'}")
