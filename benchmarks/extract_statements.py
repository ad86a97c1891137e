"""Which embedded model should extract statements for each language? On the demo corpus (first N articles of each
nation), count how many statements parse (strict JSON, after one retry) and are in the nation's language, per model;
then how screening separates value statements from filler (labels.csv kind=filler).
Usage: python benchmarks/extract_statements.py [N] [models...] [--no-screen]   (writes benchmarks/out/extract_statements.json)"""
import json, sys, time
from pathlib import Path
import polars as pl
from navab.data import load_articles
from navab.llm import get_generator
from navab.statements import extract_statements, screen

ROOT = Path(__file__).resolve().parent.parent
N = int(sys.argv[1]) if len(sys.argv) > 1 else 8
MODELS = [m for m in sys.argv[2:] if m != '--no-screen'] or ['smollm2-135m', 'gemma3-270m']
SCREEN = '--no-screen' not in sys.argv
LANGS = dict(CN='zh', US='en', UK='en', FR='fr', DE='de')
labels = pl.read_csv(ROOT / 'data/demo/labels.csv')
out = []
for m in MODELS:
    gen = get_generator(m, run_dir=ROOT / 'benchmarks/out/extract_cache' / m)
    for nation, lang in LANGS.items():
        arts = load_articles(ROOT / f'data/demo/corpus/{nation}.jsonl', nation).valid
        arts = arts.head(N)
        t = time.time()
        st, q = extract_statements(arts, gen, nation=nation, lang=lang, progress=False)
        t_ex = time.time() - t
        wrong_lang = sum('wrong language' in r for r in q['reason'])
        sc, _ = screen(st, gen, nation=nation, lang=lang, progress=False, reasons=False) if len(st) and SCREEN else (st.with_columns(pl.lit(None, pl.Float64).alias('screen_p_yes'), pl.lit(None, pl.Boolean).alias('kept')), None)
        kinds = dict(labels.select('id', 'kind').rows())
        val = [p for i, p in zip(sc['article_id'], sc['screen_p_yes']) if kinds.get(i) != 'filler'] if len(st) and SCREEN else []
        fil = [p for i, p in zip(sc['article_id'], sc['screen_p_yes']) if kinds.get(i) == 'filler'] if len(st) and SCREEN else []
        auc = (sum((v > f) + 0.5 * (v == f) for v in val for f in fil) / (len(val) * len(fil))) if val and fil else None
        row = dict(model=m, nation=nation, lang=lang, articles=len(arts), parsed=len(st), first_try=int((st['attempts'] == 1).sum()) if len(st) else 0,
                   quarantined=len(q), wrong_lang_after_retry=wrong_lang, extract_s=round(t_ex, 1),
                   screen_kept=int(sc['kept'].sum()) if len(st) and SCREEN else None, screen_auc_value_vs_filler=auc,
                   examples=st['statement'].head(2).to_list(), reasons=q['reason'].head(2).to_list())
        print(json.dumps(row, ensure_ascii=False), flush=True)
        out.append(row)
p = ROOT / 'benchmarks/out/extract_statements.json'
p.parent.mkdir(parents=True, exist_ok=True)
p.write_text(json.dumps(out, ensure_ascii=False, indent=1))
