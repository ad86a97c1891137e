"""Scaling up (issue 15): devices and dtypes resolved and recorded, the released NaVAB named by ID[:CONFIG[/SPLIT]] for
all five nations (a DatasetDict saved in the release's layout, offline), and a CUDA check where a GPU is present."""
import csv, json, re
from pathlib import Path
import polars as pl
import pytest
import torch
from navab.cli import main
from navab.data import load_samples, release_nations, RELEASE_CONFIGS
from navab.models import load_model, resolve_device, resolve_dtype, ModelInfo

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / 'data' / 'demo'
NO_GPU = not torch.cuda.is_available()


# ---- devices and dtypes ----

@pytest.mark.skipif(not NO_GPU, reason='checks what `auto` means on a machine without a GPU')
def test_auto_is_cpu_float32_without_a_gpu(tiny_model, tmp_path, capsys):
    m, tok, info = load_model(str(tiny_model))
    assert (info.device, info.dtype, str(m.device), m.dtype) == ('cpu', 'float32', 'cpu', torch.float32)
    # asking for a GPU here is one clear line and exit 1, before anything is read
    capsys.readouterr()
    rc = main(['evaluate', '--samples', str(_fr_samples(tmp_path / 's.jsonl')), '--model', str(tiny_model), '--device', 'cuda', '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err
    assert rc == 1 and err.count('\n') == 1 and 'no CUDA GPU' in err, err


def test_bfloat16_on_cpu_is_recorded(tiny_model, tmp_path):
    from navab.evaluate import evaluate
    S = load_samples(_fr_samples(tmp_path / 's.jsonl')).valid
    s16 = evaluate(S, str(tiny_model), tmp_path / 'bf16', dtype='bfloat16', device='cpu', progress=False)
    s32 = evaluate(S, str(tiny_model), tmp_path / 'auto', progress=False)
    assert (s16['device'], s16['dtype']) == ('cpu', 'bfloat16')
    assert s32['dtype'] == ('float32' if NO_GPU else 'bfloat16') and s32['device'] == ('cpu' if NO_GPU else 'cuda:0')
    on_disk = json.loads((tmp_path / 'bf16' / 'summary.json').read_text())
    assert (on_disk['device'], on_disk['dtype']) == ('cpu', 'bfloat16')
    import polars as pl   # the score cache keeps the concrete dtype: the two runs share no key
    c16, c32 = (pl.read_parquet(list((tmp_path / d / 'cache').glob('*.parquet'))) for d in ('bf16', 'auto'))
    assert set(c16['dtype']) == {'bfloat16'} and not set(c16['key']) & set(c32['key'])


def test_auto_on_a_gpu_machine_loads_onto_the_gpu(tiny_model, monkeypatch):
    "With torch.cuda faked: `auto` picks cuda:0 in bfloat16, and cuda:all (device_map='auto') when the weights do not fit."
    import transformers, navab.models as M
    seen = []
    orig = transformers.AutoModelForCausalLM.from_pretrained
    def spy(path, **kw):
        seen.append((kw.pop('device_map', None), kw['dtype'])); return orig(path, **kw)   # loads on the CPU: no GPU here
    monkeypatch.setattr(transformers.AutoModelForCausalLM, 'from_pretrained', spy)
    for name, v in dict(is_available=True, device_count=2, is_bf16_supported=True, current_device=0).items():
        monkeypatch.setattr(torch.cuda, name, lambda *a, v=v: v)
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda *a: (80 << 30, 80 << 30))
    M._LOADED.clear()
    _, _, info = load_model(str(tiny_model))
    assert (info.device, info.dtype, seen[-1]) == ('cuda:0', 'bfloat16', ('cuda:0', torch.bfloat16))
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda *a: (1000, 1000))        # too small for the weights: spread
    _, _, info = load_model(str(tiny_model))
    assert (info.device, seen[-1][0]) == ('cuda:all', 'auto')
    _, _, info = load_model(str(tiny_model), device='cuda:1', dtype='float16')
    assert (info.device, info.dtype, seen[-1]) == ('cuda:1', 'float16', ('cuda:1', torch.float16))
    M._LOADED.clear()


@pytest.mark.skipif(NO_GPU, reason='no CUDA GPU visible to torch on this machine: the GPU check runs where one is (benchmarks/gpu_check.sh)')
def test_cuda_scores_match_cpu(tiny_model):
    import polars as pl
    from navab.score import score
    req = pl.DataFrame(dict(context=['Question: A or B?'] * 4, continuation=[' A', ' B', ' A B', ' 1 2']))
    cpu = score(req, *load_model(str(tiny_model), device='cpu'), progress=False)['logprob'].to_numpy()
    m, tok, info = load_model(str(tiny_model), device='cuda', dtype='float32')
    assert info.device.startswith('cuda:') and m.device.type == 'cuda'
    gpu = score(req, m, tok, info, progress=False)['logprob'].to_numpy()
    assert abs(cpu - gpu).max() < 1e-3
    assert load_model(str(tiny_model), device='auto')[2].dtype in ('bfloat16', 'float16')


# ---- the released NaVAB by name ----

def _fr_samples(path: Path) -> Path:
    rows = [dict(id=f'f{i}', nation='FR', lang='fr', source_type=('official', 'quoted')[i % 2], question=f"L'État doit-il agir {i} ?",
                 statement=f"L'État doit agir {i}.", reverse_statement=f"L'État ne doit pas agir {i}.") for i in range(6)]
    path.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')
    return path


def _sentences(text: str) -> list:
    return [s.strip() for s in re.split(r'(?<=[.!?])\s+', text) if s.strip()]


def _demo_rows(nation: str, per_split: int = 3) -> dict:
    "Release-format rows in the nation's own language from the demo corpus (synthetic articles, real language): split -> rows."
    kind = {r['id']: r for r in csv.DictReader(open(DEMO / 'labels.csv', encoding='utf-8'))}
    arts = [json.loads(l) for l in open(DEMO / 'corpus' / f'{nation}.jsonl', encoding='utf-8')]
    out = {'quoted': [], 'official': []}
    for a, b in zip(arts, arts[1:] + arts[:1]):
        k = kind[a['id']]['kind']
        if k not in out or len(out[k]) >= per_split: continue
        q = a['title'] + (' ?' if nation == 'FR' else '?')
        out[k].append({'raw_news': a['text'], 'statement': ' ' + _sentences(a['text'])[-1], 'generated Q': q,
                       'generated reverse statement': _sentences(b['text'])[-1],
                       'source': ' ' + (kind[a['id']]['speaker'] or 'unknown'), 'filter_flag': 'demo ## yes'})
    return out


@pytest.fixture(scope='module')
def release(shared, tmp_path_factory):
    "A DatasetDict per config saved in the release's layout: China from the real HK files, the others from the demo corpus."
    import datasets
    d = tmp_path_factory.mktemp('release') / 'NaVAB'
    hk = shared / 'navab-hk'
    splits = {'China': {'quoted': json.loads((hk / 'human_statement_result.json').read_text())[:6],      # the first rows (long prompts):
                        'official': json.loads((hk / 'official_statement_result.json').read_text())[:6]}}  # the English one among them
    for cfg, code in RELEASE_CONFIGS.items():
        if code != 'CN': splits[cfg] = _demo_rows(code)
    for cfg, sp in splits.items():
        datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in sp.items()}).save_to_disk(str(d / cfg))
    return d



def test_release_by_name_all_five_nations(release, tiny_long, tmp_path, capsys):
    tiny_model = tiny_long
    assert release_nations(release) == ['CN', 'US', 'UK', 'FR', 'DE']
    langs = dict(CN='zh', US='en', UK='en', FR='fr', DE='de')
    for cfg, code in RELEASE_CONFIGS.items():
        out = tmp_path / cfg
        rc = main(['evaluate', '--samples', f'{release}:{cfg}', '--model', str(tiny_model), '--method', 'mc', '--out', str(out)])
        err = capsys.readouterr().err
        s = json.loads((out / 'summary.json').read_text())
        assert [r['nation'] for r in s['by_nation']] == [code], cfg                       # the config named the nation
        assert {r['source_type'] for r in s['by_source_type']} == {'quoted', 'official'}   # both splits, typed
        assert s['dtype'] == ('float32' if NO_GPU else 'bfloat16') and s['device'] == ('cpu' if NO_GPU else 'cuda:0')
        sc = __import__('polars').read_parquet(out / 'scores.parquet')
        if code == 'CN':   # the real HK release rows: 11 valid, 1 English statement quarantined under the spec's name
            assert rc == 1 and s['n'] == 11 and f'{release}:China/official:' in err and 'statement' in err, err
            q = __import__('polars').read_parquet(out / 'quarantine.parquet')
            assert q.select('file', 'field').row(0) == (f'{release}:China/official', 'statement')
        else:
            assert rc == 0 and s['n'] == 6, (cfg, err)
        assert sc['sample_id'].str.starts_with(cfg.lower() + '-').all()
    lang = {r['nation']: r['lang'] for r in load_samples(release).valid.iter_rows(named=True)}
    assert lang == langs                                                                  # every config, nations and languages


def test_release_split_and_nation_flag(release):
    c = load_samples(f'{release}:German/quoted')
    assert set(c.valid['source_type']) == {'quoted'} and set(c.valid['nation']) == {'DE'} and c.counts == {'in': 3, 'out': 3, 'quarantined': 0}
    assert set(load_samples(release, 'UK').valid['nation']) == {'UK'}                     # --nation picks the config
    with pytest.raises(ValueError, match='config French is nation FR, not DE'):
        load_samples(f'{release}:French', 'DE')


def test_hub_id_goes_through_load_dataset(release, monkeypatch):
    import datasets
    calls = []
    def fake(path, name=None, split=None, **kw):
        calls.append((path, name, split)); return datasets.load_from_disk(str(release / name))[split]
    monkeypatch.setattr(datasets, 'load_dataset', fake)
    c = load_samples('JadenGGGeee/NaVAB:French')
    assert calls == [('JadenGGGeee/NaVAB', 'French', 'quoted'), ('JadenGGGeee/NaVAB', 'French', 'official')]
    assert c.counts['out'] == 6 and set(c.valid['nation']) == {'FR'} and c.file == 'JadenGGGeee/NaVAB:French'
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match=r'JadenGGGeee/NaVAB:German/quoted: not loadable'):   # offline, not cached
        load_samples('JadenGGGeee/NaVAB:German/quoted')


def test_grid_takes_every_nation_from_one_name(release, tmp_path, monkeypatch):
    import navab.grid as G, navab.runs as R
    found = R.find_samples(release_nations(release), R.parse_samples([str(release)]))
    assert {n: [str(f) for f in fs] for n, fs in found.items()} == {c: [f'{release}:{cfg}'] for cfg, c in RELEASE_CONFIGS.items()}
    p, k, bad = R.nation_samples(found['DE'], 'DE', tmp_path)
    assert (k, bad) == (6, 0)
    seen = {}
    def fake_run_grid(models, nations, samples, *a, **kw):    # what `navab grid --samples NAME` asks the grid for
        seen.update(nations=nations, samples=samples, device=kw.get('device'), dtype=kw.get('dtype'))
        (tmp_path / 'g').mkdir(exist_ok=True); (tmp_path / 'g' / 'grid.json').write_text(json.dumps(dict(records=[], notes=[])))
        return tmp_path / 'g' / 'index.html'
    monkeypatch.setattr(G, 'run_grid', fake_run_grid)
    assert main(['grid', '--samples', f'{release}', '--models', 'x', '--out', str(tmp_path / 'g'), '--dtype', 'bfloat16']) == 0
    assert seen['nations'] == ['CN', 'US', 'UK', 'FR', 'DE'] and seen['dtype'] == 'bfloat16' and seen['device'] == 'auto'
    main(['grid', '--samples', f'{release}:French/quoted', '--models', 'x', '--out', str(tmp_path / 'g')])
    assert seen['nations'] == ['FR']


def test_align_reads_the_release_by_name(release, tiny_long, tmp_path):
    "navab align --pairs ID[:CONFIG[/SPLIT]]: the rows evaluate reads, each pair traced to its config, split and row; a tiny run trains on them."
    from navab.align import read_pairs
    P, Q, n = read_pairs(f'{release}:China', 'CN')                 # the real HK release rows, both splits
    assert (n, len(P), Q.select('file', 'row').n_unique()) == (12, 11, 1)
    assert Q.select('file', 'field').row(0) == (f'{release}:China/official', 'statement')
    assert set(P['file']) == {f'{release}:China/quoted', f'{release}:China/official'} and P['row'].null_count() == 0
    assert P.filter(pl.col('file').str.ends_with('/quoted'))['row'].sort().to_list() == list(range(1, 7))
    P2, _, n2 = read_pairs(release, 'FR')                          # no config: the nation picks it
    assert (n2, len(P2)) == (6, 6) and set(P2['nation']) == {'FR'} and set(P2['lang']) == {'fr'}
    with pytest.raises(ValueError, match='config French is nation FR, not DE'):
        read_pairs(f'{release}:French', 'DE')
    out = tmp_path / 'al'
    assert main(['align', '--pairs', f'{release}:French', '--model', str(tiny_long), '--nation', 'FR', '--out', str(out), '--steps', '2',
                 '--save-steps', '2', '--batch-size', '2', '--methods', 'mc', '--no-progress', '--device', 'cpu']) == 0
    s = json.loads((out / 'align.json').read_text())
    assert s['counts']['pairs']['out'] == 6 and sum(r['n'] for r in s['results'] if r['arm'] == 'base') == 2, s['counts']
