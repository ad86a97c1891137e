"""benchmarks/gpu_check.sh without a GPU: its CPU reference and a `--device cpu` dry run of the whole check on tiny models
(real weights and the random-weights fallback), with polars made unimportable as on the GPU machine."""
import gzip, json, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT

PY = sys.executable


@pytest.fixture(scope='module')
def tiny_pair(tmp_path_factory):
    "Two tiny random Llamas with room for the HK prompts: one stays on disk, one is deleted after its reference is made."
    from navab.models import make_tiny_model
    d = tmp_path_factory.mktemp('gpu-check')
    out = []
    for i, name in enumerate(('tiny-kept', 'tiny-gone')):
        p = make_tiny_model(d / name, seed=i)
        cfg = json.loads((p / 'config.json').read_text()); cfg['max_position_embeddings'] = 2048
        (p / 'config.json').write_text(json.dumps(cfg))
        out.append(p)
    return d, out


def test_gpu_check_dry_run_on_cpu(shared, tiny_pair):
    d, (kept, gone) = tiny_pair
    refs = d / 'refs'
    r = subprocess.run(['bash', str(ROOT / 'benchmarks' / 'gpu_check.sh'), '--cpu-reference', '--models', f'{kept},{gone}', '--refs', str(refs), '--limit', '3'],
                       capture_output=True, text=True, env={**__import__('os').environ, 'PYTHON': PY, 'NAVAB_SHARED': str(shared)})
    assert r.returncode == 0, r.stderr[-2000:]
    ref = json.loads(gzip.decompress((refs / 'tiny-kept.json.gz').read_bytes()))
    assert len(ref['seqs']) == 3 * 2 * 2 and {q['mode'] for q in ref['requests']} == {'answer', 'navab'}   # 3 HK samples x A/B x 2 modes
    shutil.rmtree(gone)                                   # its weights are not "on the machine": the check builds them from config.json
    code = ("import sys, runpy; sys.modules['polars'] = None; "   # as on the GPU machine: no polars
            f"sys.argv = ['gpu_check.py', '--device', 'cpu', '--refs', {str(refs)!r}, '--out', {str(d / 'out')!r}]; "
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_check.py')!r}, run_name='__main__')")
    r = subprocess.run([PY, '-c', code], capture_output=True, text=True, cwd=d)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'placeholder module' in r.stdout and 'matmul rate' in r.stdout
    res = {Path(x['model']).name: x for x in json.loads((d / 'out' / 'gpu_check.json').read_text())['results']}
    assert res['tiny-kept']['weights'] == 'real' and res['tiny-gone']['weights'].startswith('random')
    for x in res.values():
        assert x['fp32']['max_abs_logprob_diff'] < 1e-4 and x['fp32']['decisions_same'] == 1.0      # same weights, same device
        assert 0 < x['bf16']['max_abs_logprob_diff'] < 5, x['bf16']                                     # bf16 really ran
        assert x['bf16']['flops_per_s'] > 0 and x['bf16']['tokens_fed'] > 0


def test_gpu_check_scale_and_repeat_on_cpu(tiny_pair, monkeypatch):
    "`--scale` (a model shape built on the device, bf16 against fp32 there) and `--repeat` (a timed workload N times the requests), on a shrunken shape."
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    import gpu_check as g
    monkeypatch.setitem(g.SCALE_CONFIGS, 'tiny', dict(g.SCALE_CONFIGS['qwen2.5-7b'], hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                     num_attention_heads=4, num_key_value_heads=2))
    ref = ROOT / 'benchmarks' / 'gpu_ref' / 'smollm2-135m.json.gz'
    d, _ = tiny_pair
    row = g.main(['--scale', 'tiny', '--device', 'cpu', '--repeat', '2', '--out', str(d / 'scale')])
    n = len(json.loads(gzip.decompress(ref.read_bytes()))['seqs'])
    assert row['fp32']['timed_requests'] == n and row['bf16']['timed_requests'] == 2 * n
    assert row['fp32']['max_abs_logprob_diff_vs_fp32'] == 0 and 0 < row['bf16']['max_abs_logprob_diff_vs_fp32'] < 5
    assert json.loads((d / 'scale' / 'scale_tiny.json').read_text())['bf16']['tokens_fed'] == row['bf16']['tokens_fed'] > 0


def test_gpu_check_install_check_keeps_torch(tmp_path):
    "`--install-check`: `pip install -e .` (no index, no deps) into a venv that sees this machine's torch keeps that torch, and every requirement is met here."
    r = subprocess.run([PY, str(ROOT / 'benchmarks' / 'gpu_check.py'), '--install-check', '--out', str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / 'install_check.json').read_text())
    import torch
    assert res['rc'] == 0 and res['torch_before'] == res['torch_after'] == torch.__version__
    assert not res['missing'] and not res['off'] and any(x.startswith('torch ') for x in res['ok'])
