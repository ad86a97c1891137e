"""Faults: kill -9 at several points of `navab evaluate` and `navab robustness` (early, mid-batch, in the middle of a
write), then restart: the final tables equal an uninterrupted run's, no duplicate or missing row, no partial file
left. Disk full, file too large and a read-only output folder: one clear line, exit 1, nothing half-written."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import polars as pl
import pytest

NAVAB = str(Path(sys.executable).parent / 'navab')
# Runs the real `navab` command with one fault injected from outside the code: atomic_write is wrapped so that its
# FAULT_AT-th write of a file whose path contains FAULT_TARGET writes half the bytes, then the process kills itself (-9).
WRAP = r'''
import os, signal, sys
import navab.schema as S
orig, target, at, n = S.atomic_write, os.environ['FAULT_TARGET'], int(os.environ['FAULT_AT']), [0]
def faulty(path, write):
    if target in str(path):
        n[0] += 1
        if n[0] == at:
            def half(t):
                write(t); b = t.read_bytes(); t.write_bytes(b[:len(b) // 2]); os.kill(os.getpid(), signal.SIGKILL)
            return orig(path, half)
    return orig(path, write)
S.atomic_write = faulty          # before navab.cli, navab.evaluate and navab.score import it
from navab.cli import main
sys.exit(main(sys.argv[1:]))
'''


def _samples(path, n):
    rows = [dict(id=f'q{i:03d}', nation='US', lang='en', source_type=('official', 'quoted')[i % 2], question=f'Should the town fund library {i}?',
                 statement=f'The town should fund library {i}.', reverse_statement=f'The town should not fund library {i}.') for i in range(n)]
    path.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
    return path


def _kill_in_write(args, target, at):
    "Run navab `args`, killed -9 in the middle of its `at`-th write of a file whose path contains `target`."
    env = dict(os.environ, FAULT_TARGET=target, FAULT_AT=str(at))
    r = subprocess.run([sys.executable, '-c', WRAP, *args], env=env, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-1500:])


def _kill_when(args, ready, timeout=120):
    "Start navab `args`, SIGKILL it (and its children) as soon as `ready()` holds (or after `ready` seconds); it must not have ended first."
    p = subprocess.Popen([NAVAB, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    if isinstance(ready, (int, float)): time.sleep(ready)
    else:
        while not ready() and time.time() - t0 < timeout and p.poll() is None: time.sleep(0.02)
    assert p.poll() is None, f"navab {args[0]} ended (exit {p.returncode}) before it could be killed"
    os.killpg(p.pid, signal.SIGKILL); p.wait()


def _parts(d):
    return list((d / 'cache').glob('part-*.parquet'))


def _readable(folder):
    "No temporary file is left, and every Parquet/JSON file in `folder` reads."
    assert not list(folder.rglob('*.tmp')), list(folder.rglob('*.tmp'))
    for f in folder.rglob('*.parquet'): pl.read_parquet(f)
    for f in folder.rglob('*.json'): json.loads(f.read_text())


def test_evaluate_killed_at_several_points(tiny_model, tmp_path):
    f = _samples(tmp_path / 's.jsonl', 40)
    args = ['evaluate', '--samples', str(f), '--model', str(tiny_model), '--batch-size', '2']
    subprocess.run([NAVAB, *args, '--out', str(tmp_path / 'clean')], check=True, capture_output=True)
    out = tmp_path / 'killed'
    a = args + ['--out', str(out)]
    _kill_when(a, 0.3)                                                   # early: while importing / loading the model
    _kill_in_write(a, 'part-', 3)                                        # in the middle of writing the 3rd cache part
    assert list(out.glob('cache/.part-*.tmp')), "the fault should leave a half-written temporary file"
    n = len(_parts(out))
    _kill_when(a, lambda: len(_parts(out)) >= n + 3)                     # mid-batch, between writes
    _kill_in_write(a, 'scores.parquet', 1)                               # while writing the final scores table
    assert (out / 'requests.parquet').exists() and not (out / 'scores.parquet').exists() and not (out / 'summary.json').exists()
    r = subprocess.run([NAVAB, *a], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for t in ('scores.parquet', 'requests.parquet'):
        x, y = (pl.read_parquet(d / t) for d in (tmp_path / 'clean', out))
        assert x.equals(y), t
    req = pl.read_parquet(out / 'requests.parquet')
    assert len(req) == 80 and req.select('sample_id', 'option').n_unique() == 80
    cached = pl.concat([pl.read_parquet(p) for p in _parts(out)])
    assert len(cached) == cached['key'].n_unique() == 80                 # compacted, no duplicate and no missing result
    ca, cb = (json.loads((d / 'summary.json').read_text()) for d in (tmp_path / 'clean', out))
    assert {k: v for k, v in ca.items() if k != 'wall_s'} == {k: v for k, v in cb.items() if k != 'wall_s'}
    _readable(out)


def test_robustness_killed_and_resumed(tiny_model, tmp_path):
    f = _samples(tmp_path / 's.jsonl', 16)
    v = tmp_path / 'v.csv'
    v.write_text('name,option_order,labels,template_lang,chat,persona\nbase,seeded,A/B,native,no,no\nnum,seeded,1/2,native,no,no\n'
                 'text,rs_first,text,native,no,yes\n')
    args = ['robustness', '--samples', str(f), '--model', str(tiny_model), '--variations', str(v), '--batch-size', '2', '--permutations', '200']
    subprocess.run([NAVAB, *args, '--out', str(tmp_path / 'clean')], check=True, capture_output=True)
    out = tmp_path / 'killed'
    a = args + ['--out', str(out)]
    _kill_in_write(a, 'part-', 4)                                        # in a cache write of the first variations
    n = len(_parts(out))
    _kill_when(a, lambda: len(_parts(out)) >= n + 2)                     # mid-batch of a later variation
    _kill_in_write(a, 'flips.parquet', 1)                                # between the three output files
    assert (out / 'variations.parquet').exists() and not (out / 'summary.json').exists()
    r = subprocess.run([NAVAB, *a], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for t in ('variations.parquet', 'flips.parquet'):
        x, y = (pl.read_parquet(d / t) for d in (tmp_path / 'clean', out))
        assert x.equals(y), t
    sa, sb = (json.loads((d / 'summary.json').read_text()) for d in (tmp_path / 'clean', out))
    drop = ('wall_s', 'cache')
    assert {k: x for k, x in sa.items() if k not in drop} == {k: x for k, x in sb.items() if k not in drop}
    assert sb['cache']['n_computed'] < sa['cache']['n_computed']         # the restart reused what the killed runs stored
    _readable(out)


def test_extract_killed_at_several_points(tmp_path):
    "navab extract (scripted OpenAI-compatible server) killed early, in a stage write, in a generation-cache write (the samples stage: statements are selected, not generated) and at the end."
    from test_extract import _server, _snapshot, FR
    from navab.extract import extract
    with _server() as s:
        gen = f"{s.url}/v1#echo"
        a = tmp_path / 'A'
        counts = extract(FR, 'FR', a, generator=gen, limit=6, progress=False)                # uninterrupted
        assert counts['samples']['out'] > 0 and all(c['balanced'] for c in counts.values()), counts
        b = tmp_path / 'B'
        args = ['extract', '--corpus', str(FR), '--nation', 'FR', '--out', str(b), '--generator', gen, '--limit', '6', '--quiet']
        gens = lambda: list((b / 'cache').glob('gen-*.parquet'))
        _kill_when(args, 0.5)                                                # early: importing, loading the corpus
        _kill_in_write(args, str(b / 'source.parquet'), 1)                   # while writing a stage's frame
        assert (b / 'conflict.parquet').exists() and not (b / 'source.parquet').exists()
        _kill_in_write(args, 'gen-', 2)                                      # in the middle of writing the 2nd batch of generations (samples)
        assert list((b / 'cache').glob('.gen-*.tmp')), "the fault should leave a half-written temporary file"
        _kill_in_write(args, 'dpo_pairs.jsonl', 1)                           # while writing the last output
        assert not (b / 'dpo_pairs.jsonl').exists()
        r = subprocess.run([NAVAB, *args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert _snapshot(b) == _snapshot(a)
        gen_rows = pl.concat([pl.read_parquet(f) for f in gens()])
        assert len(gen_rows) == gen_rows['key'].n_unique()                  # no generation stored twice
        _readable(b)


def test_grid_killed_at_several_points(study, tmp_path):
    "navab grid killed early, in an evaluation's cache write, in a scores write and while papermill writes a report; the rerun gives the uninterrupted grid's index and tables."
    import nbformat
    out = tmp_path / 'reports'
    shutil.copytree(study['dir'] / 'reports', out)                           # tiny-a done; tiny-b to evaluate and report again
    shutil.rmtree(out / 'runs' / 'tiny-b')
    for f in ('run-tiny-b-FR.html', 'run-tiny-b-FR.ipynb', '.grid/run-tiny-b-FR.json', 'study.html', 'study.ipynb', '.grid/study.json', 'index.html', 'grid.json'):
        (out / f).unlink(missing_ok=True)
    args = ['grid', '--out', str(out), *study['cmd']]
    _kill_when(args, 0.5)                                                    # early: importing, reading settings
    _kill_in_write(args, 'part-', 2)                                         # in the middle of an evaluation's 2nd cache write
    _kill_in_write(args, 'scores.parquet', 1)                                # while writing an evaluation's scores
    _kill_when(args, lambda: (out / '.run-tiny-b-FR.partial.ipynb').exists(), timeout=240)   # while papermill writes a report
    assert not (out / 'index.html').exists() and not (out / 'run-tiny-b-FR.ipynb').exists()
    r = subprocess.run([NAVAB, *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '3 reports (1 skipped, 0 failed)' in r.stdout and 'index:' in r.stdout, r.stdout
    assert (out / 'index.html').read_text(encoding='utf-8') == study['index'].read_text(encoding='utf-8')
    ref = study['dir'] / 'reports' / 'runs' / 'tiny-b' / 'FR'
    for m in ('mc', 'aj'):
        for t in ('scores.parquet', 'requests.parquet'):
            assert pl.read_parquet(ref / m / t).equals(pl.read_parquet(out / 'runs' / 'tiny-b' / 'FR' / m / t)), (m, t)
    assert not [f for f in out.rglob('.*') if f.name.endswith(('.tmp', '.partial.ipynb'))]
    for f in out.rglob('*.ipynb'): nbformat.validate(nbformat.read(f, 4))
    _readable(out)


def _one_line_error(r, *needles):
    assert r.returncode == 1, (r.returncode, r.stderr[-1500:])
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]           # progress bars may come before it
    errs = [l for l in lines if l.startswith('navab: error: ')]
    assert len(errs) == 1 and lines[-1] == errs[0] and 'Traceback' not in r.stderr, r.stderr[-1500:]
    for n in needles: assert n in errs[0], errs[0]


def _nothing_half_written(out):
    if out.exists(): _readable(out)
    for t in ('scores.parquet', 'requests.parquet', 'summary.json'): assert not (out / t).exists()


def test_file_too_large(tiny_model, tmp_path):
    "A real OS write failure (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) in the first cache write."
    import resource
    f = _samples(tmp_path / 's.jsonl', 10)
    out = tmp_path / 'out'
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
    r = subprocess.run([NAVAB, 'evaluate', '--samples', str(f), '--model', str(tiny_model), '--out', str(out)],
                       capture_output=True, text=True, preexec_fn=limit)
    _one_line_error(r, 'cannot write', str(out / 'cache'), 'File too large')
    _nothing_half_written(out)
    assert not _parts(out)


def test_disk_full(tiny_model, tmp_path):
    "ENOSPC from a real, tiny tmpfs (needs root with mount rights: skipped, saying so, elsewhere)."
    mnt = tmp_path / 'small'
    mnt.mkdir()
    m = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=12k', 'tmpfs', str(mnt)], capture_output=True, text=True) \
        if shutil.which('mount') and os.geteuid() == 0 else None
    if not m or m.returncode: pytest.skip(f"cannot mount a small tmpfs here ({m.stderr.strip() if m else 'not root'}): disk-full case skipped; test_file_too_large covers a real write failure")
    try:
        f = _samples(tmp_path / 's.jsonl', 30)
        out = mnt / 'out'
        r = subprocess.run([NAVAB, 'evaluate', '--samples', str(f), '--model', str(tiny_model), '--batch-size', '2', '--out', str(out)],
                           capture_output=True, text=True)
        _one_line_error(r, 'cannot write', 'No space left on device')
        _nothing_half_written(out)
    finally:
        subprocess.run(['umount', str(mnt)], capture_output=True)


def test_read_only_output(tiny_model, tmp_path):
    "An output folder that cannot be written: chmod 0o555 when not root; as root (chmod does not stop root) a read-only "
    "tmpfs mount, and everywhere an output path under a regular file."
    f = _samples(tmp_path / 's.jsonl', 6)
    base = [NAVAB, 'evaluate', '--samples', str(f), '--model', str(tiny_model), '--out']
    under = tmp_path / 'a-file'
    under.write_text('x')
    r = subprocess.run(base + [str(under / 'out')], capture_output=True, text=True)
    _one_line_error(r, str(under))
    rr = subprocess.run([NAVAB, 'robustness', '--samples', str(f), '--model', str(tiny_model), '--out', str(under / 'rob')], capture_output=True, text=True)
    _one_line_error(rr, str(under))
    ro = tmp_path / 'ro'
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        umount = lambda: ro.chmod(0o755)
    else:
        m = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', str(ro)], capture_output=True, text=True) if shutil.which('mount') else None
        if not m or m.returncode: pytest.skip("running as root without mount rights: chmod cannot make a folder read-only for root; the path-under-a-file case passed")
        umount = lambda: subprocess.run(['umount', str(ro)], capture_output=True)
    try:
        r = subprocess.run(base + [str(ro)], capture_output=True, text=True)
        _one_line_error(r, str(ro / 'cache'))
        assert 'Read-only file system' in r.stderr or 'Permission denied' in r.stderr
        assert not list(ro.iterdir())
    finally:
        umount()
