"""Bad and hostile input through the real `navab` command: each bad input gives a clear line naming file, row and field
(or one error line when the whole file is unreadable), a non-zero exit, and the valid rows kept (in = out + quarantined).
Hostile model names cannot make navab write outside its cache or run folder; trust_remote_code stays off unless asked."""
import json, os, re, resource, shutil, subprocess, sys, time
from pathlib import Path
import polars as pl
import pytest

NAVAB = str(Path(sys.executable).parent / 'navab')
GOOD = [dict(id=f'q{i}', nation='US', lang='en', source_type='official', question=f'Should road {i} be built?',
             statement=f'Road {i} should be built.', reverse_statement=f'Road {i} should not be built.') for i in range(4)]


def _navab(*args, cwd=None, env=None):
    return subprocess.run([NAVAB, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


ARTICLES = [dict(id=f'a{i}', nation='US', title=f'Title {i}', text=f'The council met on day {i}.') for i in range(4)]


def _write(path, bad_line: bytes, at: int = 3, rows=GOOD):
    "A JSONL file: four valid rows (samples, or `rows`) with `bad_line` as line `at`."
    lines = [json.dumps(r).encode() for r in rows]
    lines.insert(at - 1, bad_line)
    path.write_bytes(b'\n'.join(lines) + b'\n')
    return path


def _error_line(r, *needles):
    assert r.returncode != 0, r.stdout[-1000:]
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]           # progress bars may come before it
    errs = [l for l in lines if l.startswith('navab: error: ')]
    assert len(errs) == 1 and lines[-1] == errs[0] and 'Traceback' not in r.stderr, r.stderr[-1500:]
    for n in needles: assert n in errs[0], errs[0]
    return errs[0]


def _bad(base=None, **change):
    r = dict(base or GOOD[0], id='bad')
    r.update(change)
    return json.dumps({k: v for k, v in r.items() if v is not ...}).encode()


A = ARTICLES[0]
ROW_CASES = {   # name: (line 3 of an articles file, field named, reason); `navab data check` has no samples kind (see the evaluate test)
    'malformed JSONL': (b'{"id": "bad", "nation": "US", text: }', '(row)', 'invalid JSON: Expecting property name'),
    'missing field': (_bad(A, text=...), 'text', 'missing or empty'),
    'wrong type': (_bad(A, text=123), 'text', 'expected a string, got int'),
    'wrong type (list)': (_bad(A, title=['a', 'b']), 'title', 'expected a string, got list'),
    'empty text': (_bad(A, text='   '), 'text', 'missing or empty'),
    'unknown nation code': (_bad(A, nation='XX'), 'nation', "'XX' is not one of CN, US, UK, FR, DE"),
    'non-UTF-8 bytes': (b'{"id": "bad", "text": "caf\xe9"}', '(row)', 'not UTF-8 (byte'),
    'duplicate id': (json.dumps(dict(ARTICLES[1], text='Same id again.')).encode(), 'id', "duplicate id 'a1'"),
    'not an object': (b'[1, 2, 3]', '(row)', 'expected an object, got list'),
}


@pytest.mark.parametrize('case', list(ROW_CASES))
def test_bad_row_is_named_and_valid_rows_kept(case, tmp_path):
    line, field, reason = ROW_CASES[case]
    f = _write(tmp_path / 's.jsonl', line, rows=ARTICLES)
    r = _navab('data', 'check', f, '--kind', 'articles', '--out', tmp_path / 'ok.parquet', '--quarantine', tmp_path / 'q.parquet')
    assert r.returncode == 1
    assert f"{f}:3: {field}: {reason}" in r.stdout, r.stdout
    n_in, n_out, n_q = map(int, re.search(r'(\d+) in, (\d+) out, (\d+) quarantined', r.stdout).groups())
    ok, q = pl.read_parquet(tmp_path / 'ok.parquet'), pl.read_parquet(tmp_path / 'q.parquet')
    assert (n_in, n_out, n_q) == (5, 4, 1) and len(ok) == 4 and q.select('file', 'row').n_unique() == 1 and n_in == len(ok) + n_q


FILE_CASES = {  # name: (file name, bytes or a callable making the path, words the one error line holds)
    'malformed JSON file': ('s.json', b'[{"id": "a"},\n {"id": ]', ['s.json: row 2: invalid JSON']),
    'non-UTF-8 JSON file': ('s.json', b'[{"id": "caf\xe9"}]', ['s.json: row 1: not UTF-8']),
    'empty file': ('s.jsonl', b'', ['s.jsonl: empty file']),
    'JSON that is not a list': ('s.json', b'"just a string"', ['s.json: expected a list of records, got str']),
    'unknown format': ('s.txt', b'hello', ["s.txt: unknown format 'txt'"]),
    'missing file': ('nope.jsonl', None, ['nope.jsonl: no such file']),
}


@pytest.mark.parametrize('case', list(FILE_CASES))
def test_unreadable_file_is_one_line(case, tmp_path):
    name, body, needles = FILE_CASES[case]
    f = tmp_path / name
    if body is not None: f.write_bytes(body)
    _error_line(_navab('data', 'check', f, '--kind', 'articles'), *needles)


def test_directory_and_nation_argument(tmp_path):
    d = tmp_path / 'adir'
    d.mkdir()
    _error_line(_navab('data', 'check', d, '--kind', 'articles'), str(d), 'a folder with no .jsonl/.json/.csv/.parquet files')
    _error_line(_navab('evaluate', '--samples', d, '--model', 'x', '--out', tmp_path / 'o'), str(d), 'is a directory, expected a file')
    f = _write(tmp_path / 's.jsonl', json.dumps(GOOD[0] | {'id': 'z'}).encode())
    _error_line(_navab('data', 'check', f, '--kind', 'articles', '--nation', 'XX'), "unknown nation code 'XX'", 'CN, US, UK, FR, DE')


def test_a_100_MB_line(tmp_path):
    "One line of 100 MB among valid lines: quarantined with its size, others kept; memory stays bounded (measured)."
    f = tmp_path / 'big.jsonl'
    with open(f, 'wb') as fh:
        fh.write(json.dumps(A).encode() + b'\n{"id": "huge", "nation": "US", "text": "')
        for _ in range(100): fh.write(b'x' * (1 << 20))
        fh.write(b'"}\n' + json.dumps(ARTICLES[1]).encode() + b'\n')
    t0 = time.time()
    # The peak is read inside the child (VmHWM of its own address space): a forked child's ru_maxrss starts at its parent's.
    probe = ("import sys; from navab.cli import main; rc = main(sys.argv[1:]); "
             "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))); sys.exit(rc)")
    r = subprocess.run([sys.executable, '-c', probe, 'data', 'check', str(f), '--kind', 'articles'], capture_output=True, text=True)
    secs, peak_mb = time.time() - t0, int(re.search(r'VmHWM:\s+(\d+) kB', r.stdout).group(1)) / 1024
    print(f"100 MB line: {secs:.1f} s, peak RSS of navab data check {peak_mb:.0f} MB")
    size = f.stat().st_size - len(json.dumps(A)) - len(json.dumps(ARTICLES[1])) - 2        # line 2, its newline included
    assert r.returncode == 1 and f"{f}:2: (row): line of {size:,} bytes is longer than the 16,777,216-byte limit" in r.stdout, r.stdout
    assert '3 in, 2 out, 1 quarantined' in r.stdout
    assert peak_mb < 250                     # reading the line whole took 358 MB; skipping it in chunks keeps the process near its import size


def test_evaluate_keeps_valid_rows_and_quarantines(tiny_model, tmp_path):
    f = tmp_path / 's.jsonl'
    f.write_bytes(b'\n'.join([json.dumps(r).encode() for r in GOOD] + [_bad(question=123), b'{oops', _bad(id='q0')]) + b'\n')
    out = tmp_path / 'run'
    r = _navab('evaluate', '--samples', f, '--model', tiny_model, '--out', out)
    _error_line(r, f"{f}:5: question: expected a string", '3 of 7 rows quarantined', '4 valid ones scored')   # exit 1, valid rows kept
    assert '7 in, 4 out, 3 quarantined' in r.stdout and f"{f}:5: question: expected a string" in r.stdout
    d = _navab('data', 'check', f)                                      # samples files are recognised by their fields
    assert d.returncode == 1 and '7 in, 4 out, 3 quarantined' in d.stdout and f"{f}:5: question: expected a string" in d.stdout, d.stdout
    q, sc = pl.read_parquet(out / 'quarantine.parquet'), pl.read_parquet(out / 'scores.parquet')
    assert sorted(q['row']) == [5, 6, 7] and 'duplicate id' in q.filter(pl.col('row') == 7)['reason'].item()
    assert len(sc) == 4 and sorted(sc['sample_id']) == ['q0', 'q1', 'q2', 'q3']
    g = tmp_path / 'allbad.jsonl'
    g.write_bytes(b'{oops\n' + _bad(nation='XX') + b'\n')
    _error_line(_navab('evaluate', '--samples', g, '--model', tiny_model, '--out', tmp_path / 'run2'), str(g), 'no valid samples', 'row 1')


def _tree(root):
    return {p for p in Path(root).rglob('*')}


@pytest.mark.parametrize('name', ['../../x', '../../../../../../tmp/evil', '/nonexistent/abs/model', 'a/../../b'])
def test_hostile_model_names_write_nothing(name, tmp_path):
    work = tmp_path / 'a' / 'b'
    work.mkdir(parents=True)
    f = _write(work / 's.jsonl', json.dumps(GOOD[0] | {'id': 'z'}).encode())
    env = dict(os.environ, NAVAB_CACHE=str(tmp_path / 'cache'))
    before = _tree(tmp_path)
    for args in (['models', 'fetch', name], ['models', 'path', name],
                 ['evaluate', '--samples', f, '--model', name, '--out', work / 'run']):
        _error_line(_navab(*args, cwd=work, env=env), 'model')
    new = _tree(tmp_path) - before
    assert all(work / 'run' in p.parents or p == work / 'run' for p in new), new   # only the run folder the user named
    assert not (tmp_path / 'x').exists() and not Path('/tmp/evil').exists()


def test_relative_model_folder_is_read_not_written(tiny_model, tmp_path):
    "`../../x` that really is a model folder is loaded; navab writes only into --out, never into it or beside it."
    shutil.copytree(tiny_model, tmp_path / 'x')
    work = tmp_path / 'a' / 'b'
    work.mkdir(parents=True)
    f = _write(work / 's.jsonl', json.dumps(GOOD[0] | {'id': 'z'}).encode())
    before = _tree(tmp_path)
    r = _navab('evaluate', '--samples', f, '--model', '../../x', '--out', 'run', cwd=work, env=dict(os.environ, NAVAB_CACHE=str(tmp_path / 'cache')))
    assert r.returncode == 0, r.stderr[-1500:]
    new = _tree(tmp_path) - before
    assert new and all(work / 'run' in p.parents or p == work / 'run' for p in new), new


def test_trust_remote_code_only_with_the_flag(tiny_model, monkeypatch, capsys):
    import transformers
    from navab.cli import main
    monkeypatch.setattr('navab.models._LOADED', {})      # a model an earlier test loaded in this process would not be read again
    seen = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        orig = cls.from_pretrained
        monkeypatch.setattr(cls, 'from_pretrained', lambda *a, _o=orig, _c=cls.__name__, **k: (seen.append((_c, k.get('trust_remote_code'))), _o(*a, **k))[1])
    assert main(['models', 'show', str(tiny_model)]) == 0
    assert seen and all(v is False for _, v in seen)
    seen.clear()
    assert main(['models', 'show', str(tiny_model), '--trust-remote-code']) == 0
    assert {c for c, _ in seen} == {'AutoModelForCausalLM', 'AutoTokenizer'} and all(v is True for _, v in seen)
    seen.clear()
    capsys.readouterr()
    import navab.models
    navab.models._LOADED.clear()                                     # load again (not from navab's in-process model cache)
    tmp = Path(str(tiny_model)).parent
    f = _write(tmp / 'trc.jsonl', json.dumps(GOOD[0] | {'id': 'z'}).encode())
    assert main(['evaluate', '--samples', str(f), '--model', str(tiny_model), '--out', str(tmp / 'trc-run')]) == 0
    assert seen and all(v is False for _, v in seen)                 # evaluate has no flag: always off
    import navab
    assert not [p.name for p in Path(navab.__file__).parent.glob('*.py') if 'trust_remote_code=True' in p.read_text()]
