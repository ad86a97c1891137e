"""Corpora at scale: a corpus given as a glob of Parquet shards and as a file:// URL extracts the same as one file; the
non-LLM load stage (read, validate, partition by nation and shard) streams in bounded memory."""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import polars as pl
from navab.extract import extract, EchoGenerator, run_counts
from navab.data import write_partitions

ROOT = Path(__file__).resolve().parent.parent


def test_shards_glob_and_url_extract_the_same_as_one_file(tmp_path):
    "The French demo corpus as one JSONL file, as 3 Parquet shards through a glob, and through a file:// URL: same samples and counts."
    one = ROOT/'data'/'demo'/'corpus'/'FR.jsonl'
    df = pl.read_ndjson(one)
    (tmp_path/'sh').mkdir()
    for k, part in enumerate(df.iter_slices(len(df) // 3 + 1)): part.write_parquet(tmp_path/'sh'/f'fr-{k}.parquet')
    kw = dict(nation='FR', generator=EchoGenerator('fr'), progress=False, limit=12, seed=0, options={'topics': {'embedding': 'tfidf'}})  # tfidf: seconds, not a minute
    extract(one, out=tmp_path/'one', **kw)
    extract(f"{tmp_path}/sh/*.parquet", out=tmp_path/'glob', **kw)
    extract(f"file://{tmp_path}/sh", out=tmp_path/'url', **kw)
    ref = pl.read_parquet(tmp_path/'one'/'samples.parquet')
    assert len(ref) > 0
    for d in ('glob', 'url'):
        assert pl.read_parquet(tmp_path/d/'samples.parquet').equals(ref), d
        assert json.loads((tmp_path/d/'counts.json').read_text()) == json.loads((tmp_path/'one'/'counts.json').read_text()), d
        assert sorted(p.name for p in (tmp_path/d/'articles'/'nation=FR').iterdir()) == [f'part-0000{k}-00000.parquet' for k in range(3)]
    assert not (tmp_path/'one'/'articles').exists(), 'a small single file is read as before'
    # a rerun reuses the partitions (manifest key) and the stages
    m = (tmp_path/'glob'/'articles'/'_manifest.json').stat().st_mtime_ns
    extract(f"{tmp_path}/sh/*.parquet", out=tmp_path/'glob', **kw)
    assert (tmp_path/'glob'/'articles'/'_manifest.json').stat().st_mtime_ns == m


_PEAK = textwrap.dedent('''
    import json, re, sys
    from navab.data import write_partitions
    if sys.argv[1] != '-': m = write_partitions(sys.argv[1], sys.argv[2], 'FR', batch=int(sys.argv[3]))
    else: m = {}
    hwm = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) * 1024   # this process's own peak (ru_maxrss keeps the parent's)
    print(json.dumps(dict(peak=hwm, **m)))
''')


def test_load_stage_streams_in_bounded_memory(tmp_path):
    "100k synthetic articles (~2 KB each, 8 JSONL shards, ~200 MB): the load stage's peak RSS is that of one shard, far below the corpus."
    rng = np.random.default_rng(0)
    vocab = np.array([''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), rng.integers(3, 10))) for _ in range(5000)])
    n, per = 100_000, 8
    (tmp_path/'c').mkdir()
    for k in range(per):
        m = n // per
        words = vocab[rng.integers(0, len(vocab), (m, 300))]
        text = [' '.join(w) + '.' for w in words]
        pl.DataFrame(dict(id=[f'a{k}-{i}' for i in range(m)], nation=['FR', 'DE'][k % 2:][:1] * m, text=text)).write_ndjson(tmp_path/'c'/f'part-{k}.jsonl')
    size = sum(f.stat().st_size for f in (tmp_path/'c').iterdir())
    assert size > 150e6
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = lambda *a: json.loads(subprocess.run([sys.executable, '-c', _PEAK, *a], env=env, capture_output=True, text=True, check=True).stdout)
    base = run('-')['peak']                                                       # the interpreter with navab.data imported
    one = run(str(tmp_path/'c'/'part-0.jsonl'), str(tmp_path/'p1'), '5000')       # one shard: 1/8 of the corpus
    r = run(f"{tmp_path}/c/*.jsonl", str(tmp_path/'parts'), '5000')               # all eight
    assert (one['in'], r['in'], r['out'], r['nations']) == (n // per, n, n, {'FR': n // 2, 'DE': n // 2}), r
    mib = lambda b: f"{b / 2**20:.0f} MiB"
    print(f"corpus {mib(size)} in {per} shards: peak RSS {mib(r['peak'])} (interpreter {mib(base)}); one shard ({mib(size / per)}): {mib(one['peak'])}")
    per_article = (r['peak'] - one['peak']) / (n - n // per)     # what 7 more shards cost: the id index for cross-shard duplicates, not the texts
    print(f"{per_article:.0f} bytes of memory per added article (article: {size / n:.0f} bytes)")
    assert per_article < 0.3 * size / n, f"each added article cost {per_article:.0f} bytes of memory (article: {size / n:.0f} bytes): not streaming"
    # holding the texts would add at least the 7 more shards' bytes; the fixed cost (polars' reader, one batch) is in `one`
    assert r['peak'] < one['peak'] + 0.25 * size, f"peak {mib(r['peak'])} for a {mib(size)} corpus (one shard: {mib(one['peak'])})"
    assert pl.scan_parquet(tmp_path/'parts'/'nation=DE'/'*.parquet').select(pl.len()).collect().item() == n // 2


class _Dies(EchoGenerator):
    "EchoGenerator (same name and hash, so a rerun resumes) that raises on its `n`-th scoring call: a run killed mid-stage."
    def __init__(self, lang, n):
        super().__init__(lang); self.n = n
    def choose(self, prompts, options, progress=True):
        self.n -= 1
        if self.n == 0: raise KeyboardInterrupt('killed')
        return super().choose(prompts, options, progress)


def test_streamed_stages_equal_in_memory_and_resume(tmp_path):
    """A streamed corpus (Parquet shards through a glob): topics (fitted on a 24-article sample, assigned 8 at a time) and
    statements read the articles 7 at a time and give the frames, samples and counts of the run that holds the whole
    corpus in memory; a run killed inside the streamed statements stage, restarted, gives the same again."""
    one = ROOT/'data'/'demo'/'corpus'/'FR.jsonl'
    df = pl.read_ndjson(one)
    (tmp_path/'sh').mkdir()
    for k, part in enumerate(df.iter_slices(len(df) // 3 + 1)): part.write_parquet(tmp_path/'sh'/f'fr-{k}.parquet')
    opts = {'topics': {'embedding': 'tfidf', 'max_fit': 24, 'assign_batch': 8}}
    kw = dict(nation='FR', progress=False, seed=0, options=opts)
    ref = extract(one, out=tmp_path/'mem', generator=EchoGenerator('fr'), **kw)
    glob = f"{tmp_path}/sh/*.parquet"
    got = extract(glob, out=tmp_path/'st', generator=EchoGenerator('fr'), chunk_rows=7, **kw)
    assert got == ref and ref['topics']['in'] == len(df) == 40 and ref['samples']['out'] > 0
    for st in ('topics', 'statements', 'screen', 'samples_all', 'samples'):
        a, b = pl.read_parquet(tmp_path/'mem'/f'{st}.parquet'), pl.read_parquet(tmp_path/'st'/f'{st}.parquet')
        assert a.equals(b), st
    assert pl.read_parquet(tmp_path/'st'/'topics.parquet')['topic_method'][0] == 'bertopic-sample'
    assert not list((tmp_path/'st').glob('*.streaming')) and not (tmp_path/'st'/'topics.tokens.parquet').exists()
    # killed on its 2nd scoring call: inside the streamed statements stage (tfidf topics ask the generator nothing)
    try: extract(glob, out=tmp_path/'kill', generator=_Dies('fr', 2), chunk_rows=7, **kw); raise AssertionError('the run was not killed')
    except KeyboardInterrupt: pass
    assert (tmp_path/'kill'/'topics.parquet').exists() and not (tmp_path/'kill'/'statements.parquet').exists()
    assert (tmp_path/'kill'/'statements.parquet.streaming').exists()     # the half-written stage is no stage
    m = (tmp_path/'kill'/'topics.parquet').stat().st_mtime_ns
    assert extract(glob, out=tmp_path/'kill', generator=EchoGenerator('fr'), chunk_rows=7, **kw) == ref
    assert (tmp_path/'kill'/'topics.parquet').stat().st_mtime_ns == m, 'the finished topics stage was redone'
    assert pl.read_parquet(tmp_path/'kill'/'samples.parquet').equals(pl.read_parquet(tmp_path/'mem'/'samples.parquet'))


_PEAK_EXTRACT = textwrap.dedent('''
    import json, re, sys
    from navab.extract import extract, EchoGenerator
    c = extract(sys.argv[1], 'FR', sys.argv[2], generator=EchoGenerator('fr'), stages='topics,statements', progress=False, chunk_rows=2000,
                options={'topics': {'embedding': 'tfidf', 'max_fit': 1000}})
    hwm = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) * 1024
    print(json.dumps(dict(peak=hwm, counts=c)))
''')


def test_topics_and_statements_stream_in_bounded_memory(tmp_path):
    """Synthetic French articles (~2 KB each, Parquet shards of 3,000): a streamed corpus's load, topics (fitted on 1,000
    of them) and statements hold one chunk, the sample and the model, not the corpus: 48k articles peak no higher than
    24k plus the added texts' bytes, which holding them would cost at least once over."""
    rng = np.random.default_rng(0)
    words = ['droit', 'état', 'école', 'santé', 'travail', 'impôt', 'climat', 'énergie', 'ville', 'nation', 'famille', 'liberté',
             'justice', 'armée', 'marché', 'culture', 'science', 'langue', 'région', 'budget']
    vocab = np.array(words + [''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), rng.integers(4, 10))) for _ in range(3000)])
    m, per = 3000, 16
    for k in range(per):
        topic = rng.integers(0, 4, m)            # four topics: half of the 300 words from the topic's own quarter of the vocabulary
        w = np.where(rng.random((m, 300)) < 0.5, vocab[(topic[:, None] * 750 + rng.integers(0, 750, (m, 300))) % len(vocab)],
                     vocab[rng.integers(0, len(vocab), (m, 300))])
        for d in (['half', 'all'] if k < per // 2 else ['all']):
            (tmp_path/d).mkdir(exist_ok=True)
            pl.DataFrame(dict(id=[f'a{k}-{i}' for i in range(m)], nation=['FR'] * m, text=[' '.join(x) + '.' for x in w])).write_parquet(tmp_path/d/f'part-{k:02d}.parquet')
    # one allocator arena and one numba thread: the peak is then the same from run to run (within a few MiB)
    env = dict(os.environ, PYTHONPATH=str(ROOT), MALLOC_ARENA_MAX='2', NUMBA_NUM_THREADS='1', OMP_NUM_THREADS='1')
    run = lambda *a: json.loads(subprocess.run([sys.executable, '-c', _PEAK_EXTRACT, *a], env=env, capture_output=True, text=True, check=True).stdout)
    half, full = run(f"{tmp_path}/half/*.parquet", str(tmp_path/'o1')), run(f"{tmp_path}/all/*.parquet", str(tmp_path/'o2'))
    n = m * per
    assert (half['counts']['topics']['in'], full['counts']['topics']['in']) == (n // 2, n), full['counts']['topics']
    assert full['counts']['statements']['in'] == full['counts']['topics']['out'] and all(c['balanced'] for c in full['counts'].values())
    added = pl.scan_parquet(tmp_path/'all'/'*.parquet').select(pl.col('text').str.len_bytes().sum()).collect().item() / 2
    mib = lambda b: f"{b / 2**20:.0f} MiB"
    print(f"topics + statements, streamed: {n // 2} articles peak at {mib(half['peak'])}, {n} at {mib(full['peak'])} "
          f"(the added {n // 2} articles' texts: {mib(added)})")
    # holding the added texts would cost more than their bytes (`added`, 52 MiB) on top of the peak; the peaks of two runs
    # move by tens of MiB from run to run (48k minus 24k articles: +38 MiB in a clean-clone CI run, -19 MiB on this
    # machine), which a quarter of `added` (13 MiB) did not leave room for
    assert full['peak'] - half['peak'] < added, f"doubling the corpus raised the peak by {mib(full['peak'] - half['peak'])}: not streaming"
