"""Benchmark of the non-LLM extraction stages (load, validate, tokenise, embed, topics) on synthetic corpora.

Usage:  nice -n 5 .venv/bin/python benchmarks/bench_extract.py --sizes 10000 100000
        [--embedding tfidf|default] [--max-fit 5000] [--batch 5000] [--llm smollm2-135m --llm-n 16]

The corpora are made by recombining the sentences of the demo corpus (data/demo/corpus), seeded: each synthetic
article takes a nation (in turn), a topic of that nation, and 2-5 sentences drawn from that nation's demo articles on
that topic. They are written to benchmarks/out/synth-<N>.jsonl (JSONL, like a real corpus).

Every stage of every size runs in its own subprocess, reading its input from the previous stage's file in batches
and writing its output in batches, so its peak RSS is that stage's own. Memory must stay flat as the corpus grows:
- load:     JSONL -> Parquet, `--batch` lines at a time (json.loads)
- validate: navab.schema.validate_records on each batch (the articles contract), valid rows -> Parquet
- tokenise: navab.topics.tokenize per article in its nation's language -> Parquet (space-joined tokens)
- embed:    per nation, TF-IDF/LSA fitted on a seeded sample of `--max-fit` articles, then applied batch by batch
            into a memory-mapped .npy (100 float32 per article)
- topics:   per nation, BERTopic (umap + hdbscan) fitted on the same seeded sample, the rest assigned batch by batch
            (UMAP transform + HDBSCAN approximate_predict, outliers to the nearest topic centroid) -> Parquet
With `--embedding default` the embed stage uses each language's chosen embedder (MiniLM/Gemma for some languages):
far slower on CPU; the default `tfidf` keeps the run within minutes and is what the figures below measure.
Results: benchmarks/out/bench_extract.json (written after every stage) and a table on stdout: wall and CPU seconds
and peak RSS MiB per stage and size, with the load average (other work on the machine slows the wall clock).
Optional `--llm NAME`: statements/s of the LLM statement stage batched vs one prompt at a time (needs navab.llm).
"""
from __future__ import annotations
import argparse, json, os, random, re, resource, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / 'benchmarks' / 'out'
NATIONS = ('CN', 'US', 'UK', 'FR', 'DE')
STAGES = ('load', 'validate', 'tokenise', 'embed', 'topics')
_SENT = {'zh': re.compile(r'(?<=[。！？])'), None: re.compile(r'(?<=[.!?])\s+')}


def _sentences(text, lang):
    return [s.strip() for s in _SENT['zh' if lang == 'zh' else None].split(text) if s.strip()]


def generate(n: int, seed: int = 0, path: Path | None = None) -> Path:
    "Write a synthetic corpus of `n` articles recombined from the demo corpus sentences (seeded), line by line."
    import csv
    path = path or OUT / f'synth-{n}.jsonl'
    if path.exists() and path.stat().st_size: return path
    topic = {r['id']: r['topic'] for r in csv.DictReader(open(ROOT / 'data/demo/labels.csv', encoding='utf-8'))}
    pools = {}
    for nat in NATIONS:
        for line in open(ROOT / f'data/demo/corpus/{nat}.jsonl', encoding='utf-8'):
            a = json.loads(line)
            p = pools.setdefault(nat, {}).setdefault(topic[a['id']], {'titles': [], 'sents': [], 'lang': a['lang'], 'outlets': []})
            p['titles'].append(a['title']); p['outlets'].append(a['outlet']); p['sents'] += _sentences(a['text'], a['lang'])
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')
    with open(tmp, 'w', encoding='utf-8') as fh:
        for i in range(n):
            nat = NATIONS[i % len(NATIONS)]
            t = rng.choice(sorted(pools[nat]))
            p = pools[nat][t]
            k = rng.randint(2, 5)
            sents = [rng.choice(p['sents']) for _ in range(k)]
            sep = '' if p['lang'] == 'zh' else ' '
            fh.write(json.dumps({'id': f'{nat.lower()}-s{i:07d}', 'nation': nat, 'lang': p['lang'], 'outlet': rng.choice(p['outlets']),
                                 'published': f'2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}', 'title': rng.choice(p['titles']),
                                 'text': sep.join(sents), 'topic_truth': t}, ensure_ascii=False) + '\n')
    os.replace(tmp, path)
    return path


def _writer(path, schema):
    import pyarrow.parquet as pq
    return pq.ParquetWriter(str(path), schema)


def _batches(path, batch, columns=None, nation=None):
    "Record batches of a Parquet file (optionally one nation's rows), never the whole file."
    import pyarrow.parquet as pq, pyarrow.compute as pc
    for b in pq.ParquetFile(str(path)).iter_batches(batch_size=batch, columns=columns):
        if nation is not None: b = b.filter(pc.equal(b.column('nation'), nation))
        if b.num_rows: yield b


def stage_load(n, a):
    import pyarrow as pa
    src, dst = OUT / f'synth-{n}.jsonl', OUT / f'synth-{n}.raw.parquet'
    w, buf, rows = None, [], 0
    def flush():
        nonlocal w
        t = pa.Table.from_pylist(buf)
        w = w or _writer(dst, t.schema); w.write_table(t); buf.clear()
    with open(src, 'rb') as fh:
        for i, line in enumerate(fh, 1):
            r = json.loads(line); r['_row'] = i; buf.append(r); rows += 1
            if len(buf) >= a.batch: flush()
    if buf: flush()
    w.close()
    return {'rows': rows}


def stage_validate(n, a):
    import pyarrow as pa
    from navab.schema import validate_records
    from navab.settings import load_settings
    nations = tuple(load_settings().nations)
    dst = OUT / f'synth-{n}.valid.parquet'
    w, seen, good, bad = None, {}, 0, 0
    for b in _batches(OUT / f'synth-{n}.raw.parquet', a.batch):
        recs = [(r.pop('_row'), r) for r in b.to_pylist()]
        c = validate_records(recs, 'articles', f'synth-{n}.jsonl', 'articles', nations, seen=seen)
        t = c.valid.to_arrow()
        w = w or _writer(dst, t.schema); w.write_table(t.cast(w.schema))
        good += len(c.valid); bad += c.counts['quarantined']
    w.close()
    return {'rows': good, 'quarantined': bad}


def stage_tokenise(n, a):
    import pyarrow as pa
    from navab.topics import tokenize
    dst = OUT / f'synth-{n}.tokens.parquet'
    schema = pa.schema([('id', pa.string()), ('nation', pa.string()), ('lang', pa.string()), ('text', pa.string()), ('tokens', pa.string())])
    w, rows = _writer(dst, schema), 0
    for b in _batches(OUT / f'synth-{n}.valid.parquet', a.batch, ['id', 'nation', 'lang', 'title', 'text']):
        d = b.to_pydict()
        docs = [f'{h}\n{x}' if h else x for h, x in zip(d['title'], d['text'])]
        toks = [' '.join(tokenize(x, l)) for x, l in zip(docs, d['lang'])]
        w.write_table(pa.table({'id': d['id'], 'nation': d['nation'], 'lang': d['lang'], 'text': docs, 'tokens': toks}, schema=schema))
        rows += len(docs)
    w.close()
    return {'rows': rows}


def _sample_idx(path, nation, max_fit, seed):
    "Row numbers (within the nation) of a seeded sample of at most `max_fit`, and the nation's row count."
    import numpy as np
    total = sum(b.num_rows for b in _batches(path, 50_000, ['nation'], nation))
    idx = np.sort(np.random.default_rng(seed).choice(total, max_fit, replace=False)) if total > max_fit else np.arange(total)
    return idx, total


def _gather(path, nation, idx, columns, batch):
    "The rows `idx` (sorted, within the nation) of a Parquet file, read batch by batch."
    import numpy as np
    want, out, off = set(idx.tolist()), {c: [] for c in columns}, 0
    for b in _batches(path, batch, ['nation', *columns], nation):
        d = b.to_pydict()
        for j in range(b.num_rows):
            if off + j in want:
                for c in columns: out[c].append(d[c][j])
        off += b.num_rows
    return out


def stage_embed(n, a):
    import numpy as np
    from navab.settings import load_settings
    from navab.topics import embedder
    src = OUT / f'synth-{n}.tokens.parquet'
    langs, info = load_settings().langs, {}
    for nat in NATIONS:
        lang = langs[nat]
        emb = embedder(lang, None if a.embedding == 'default' else a.embedding, a.seed)
        col = 'tokens' if emb.reads == 'tokens' else 'text'
        idx, total = _sample_idx(src, nat, a.max_fit, a.seed)
        emb.fit(_gather(src, nat, idx, [col], a.batch)[col])
        dim = emb.transform(['x y'] if col == 'tokens' else ['x']).shape[1]
        mm = np.lib.format.open_memmap(OUT / f'synth-{n}.emb-{nat}.npy', mode='w+', dtype=np.float32, shape=(total, dim))
        off = 0
        for b in _batches(src, a.batch, ['nation', col], nat):
            E = emb.transform(b.column(col).to_pylist()); mm[off:off + len(E)] = E; off += len(E)
        mm.flush(); del mm
        np.save(OUT / f'synth-{n}.fit-{nat}.npy', idx)
        info[nat] = {'rows': total, 'embedding': emb.name, 'dim': dim}
    return info


def stage_topics(n, a):
    import numpy as np, pyarrow as pa
    from navab.settings import load_settings
    from navab.topics import TopicModel, _bertopic, _centroids, embedder, _keyword_label
    src = OUT / f'synth-{n}.tokens.parquet'
    langs, info = load_settings().langs, {}
    schema = pa.schema([('id', pa.string()), ('nation', pa.string()), ('topic', pa.int64()), ('topic_outlier', pa.bool_())])
    w = _writer(OUT / f'synth-{n}.topics.parquet', schema)
    import warnings
    warnings.simplefilter('ignore')
    for nat in NATIONS:
        lang = langs[nat]
        E = np.load(OUT / f'synth-{n}.emb-{nat}.npy', mmap_mode='r')
        idx = np.load(OUT / f'synth-{n}.fit-{nat}.npy')
        joined = _gather(src, nat, idx, ['tokens'], a.batch)['tokens']
        Ef = np.ascontiguousarray(E[idx])
        m = _bertopic(len(idx), a.seed, None, 8)
        t = np.asarray(m.fit_transform(joined, Ef)[0])
        ids = sorted(set(t.tolist()) - {-1})
        tm = TopicModel(lang, a.seed, 'bertopic-sample', None, m, {k: [] for k in ids}, centroids=_centroids(Ef, t, ids))
        out = t == -1
        if out.any():
            t[out] = tm.nearest(Ef[out])
            m.update_topics(joined, topics=t.tolist(), top_n_words=8, vectorizer_model=m.vectorizer_model, ctfidf_model=m.ctfidf_model)
        off, counts, n_out = 0, {}, 0
        for b in _batches(src, a.batch, ['id', 'nation', 'tokens'], nat):
            Eb = np.ascontiguousarray(E[off:off + b.num_rows]); off += b.num_rows
            tb, ob = tm.assign(None, b.column('tokens').to_pylist(), emb=Eb)
            w.write_table(pa.table({'id': b.column('id'), 'nation': b.column('nation'), 'topic': tb, 'topic_outlier': ob}, schema=schema))
            for k in tb.tolist(): counts[k] = counts.get(k, 0) + 1
            n_out += int(ob.sum())
        info[nat] = {'rows': off, 'fit_on': len(idx), 'topics': len(ids), 'outliers_assigned': n_out,
                     'largest_topic_share': round(max(counts.values()) / off, 3),
                     'labels': [_keyword_label([x for x, _ in m.get_topic(k)][:3], lang) for k in ids[:3]]}
    w.close()
    return info


def run_stage(stage, n, a):
    "Run one stage (in this process) and print its figures as JSON."
    t0 = time.perf_counter()
    info = globals()[f'stage_{stage}'](n, a)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({'stage': stage, 'size': n, 'wall_s': round(wall, 2), 'cpu_s': round(ru.ru_utime + ru.ru_stime, 2),
                      'peak_rss_mib': round(ru.ru_maxrss / 1024, 1), 'load_avg': round(os.getloadavg()[0], 1), 'info': info}, ensure_ascii=False))


def bench_llm(a):
    "Statements per second of the statement stage, batched vs one prompt at a time (needs navab.llm and navab.statements)."
    try:
        from navab.llm import get_generator
    except ImportError:
        return {'skipped': 'navab.llm is not there'}
    import tempfile
    arts = [json.loads(l) for l in open(ROOT / 'data/demo/corpus/US.jsonl', encoding='utf-8')][:a.llm_n]
    prompts = [f"Article: {x['text']}\nThe value statement of this article, in one sentence:" for x in arts]
    res = {}
    for mode, bs in (('batched', a.llm_batch), ('one_at_a_time', 1)):
        with tempfile.TemporaryDirectory() as d:  # a fresh cache: no free answers
            gen = get_generator(a.llm, run_dir=d, seed=a.seed)
            try: gen.batch_size = bs
            except Exception: pass
            t0 = time.perf_counter()
            if bs == 1:
                for p in prompts: gen.complete([p], max_new_tokens=48, progress=False)
            else: gen.complete(prompts, max_new_tokens=48, progress=False)
            res[mode] = round(len(prompts) / (time.perf_counter() - t0), 3)
    res['speedup'] = round(res['batched'] / res['one_at_a_time'], 2)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000])
    ap.add_argument('--batch', type=int, default=5000)
    ap.add_argument('--max-fit', type=int, default=5000, help='articles per nation the embedder and BERTopic are fitted on')
    ap.add_argument('--embedding', default='tfidf', help="tfidf, minilm, gemma, or 'default' (each language's chosen one)")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--stage', help=argparse.SUPPRESS)
    ap.add_argument('--llm', help='also time the LLM statement stage with this generator (e.g. smollm2-135m)')
    ap.add_argument('--llm-n', type=int, default=16); ap.add_argument('--llm-batch', type=int, default=8)
    a = ap.parse_args(argv)
    if a.stage: return run_stage(a.stage, a.sizes[0], a)
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for n in a.sizes:
        t0 = time.perf_counter(); generate(n, a.seed); print(f'corpus {n}: generated in {time.perf_counter() - t0:.1f}s', flush=True)
        for st in STAGES:
            cmd = [sys.executable, __file__, '--stage', st, '--sizes', str(n), '--batch', str(a.batch), '--max-fit', str(a.max_fit),
                   '--embedding', a.embedding, '--seed', str(a.seed)]
            p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'TOKENIZERS_PARALLELISM': 'false'})
            if p.returncode: sys.exit(f'{st} at {n} failed:\n{p.stderr[-3000:]}')
            r = json.loads(p.stdout.strip().splitlines()[-1]); results.append(r)
            print(f"{n:>7} {st:<9} {r['wall_s']:>8.1f} s wall {r['cpu_s']:>8.1f} s cpu {r['peak_rss_mib']:>8.0f} MiB  (load {r['load_avg']})", flush=True)
            out = {'sizes': a.sizes, 'batch': a.batch, 'max_fit': a.max_fit, 'embedding': a.embedding, 'stages': results}
            (OUT / 'bench_extract.json').write_text(json.dumps(out, indent=1, ensure_ascii=False))
    if a.llm: out['llm'] = bench_llm(a); print('llm statements/s:', out['llm'])
    (OUT / 'bench_extract.json').write_text(json.dumps(out, indent=1, ensure_ascii=False))
    print('\nstage     ' + ''.join(f'   {n:>7}: wall    cpu   peak' for n in a.sizes))
    for st in STAGES:
        cells = [next(r for r in results if r['stage'] == st and r['size'] == n) for n in a.sizes]
        print(f'{st:<10}' + ''.join(f"{c['wall_s']:>14.1f}s {c['cpu_s']:>6.1f}s {c['peak_rss_mib']:>5.0f}M" for c in cells))


if __name__ == '__main__':
    main()
