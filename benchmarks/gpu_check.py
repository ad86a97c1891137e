"""navab's hf engine on a CUDA GPU: log-probs against a CPU run, and achieved FLOP/s against the GPU's bf16 matmul rate.

Run through benchmarks/gpu_check.sh (its header says what runs where). Two halves:

- `--cpu-reference` (on a machine with navab's full environment and the embedded models): builds the MC requests of the
  real NaVAB HK samples (answer and navab modes) with navab's own code, tokenises them with each model's real
  tokenizer, scores them on the CPU in float32, and writes benchmarks/gpu_ref/<model>.json.gz: token ids, group keys,
  the model's config.json, and the CPU log-probs. A few hundred KB: it travels where the weights cannot.
- the check (on the GPU machine, which needs only torch, transformers and navab's source): for each reference, the
  model's real weights when they are there (the converted folder in $NAVAB_CACHE/models, or a folder given with
  --weights), else the same architecture (its config.json) with seeded random weights. The CPU reference is then the
  same weights scored on that machine's CPU in float32, in the same run. It scores the same token ids with navab's
  engine on the GPU in float32 and bfloat16, compares log-probs and MC decisions, times the bfloat16 run, and measures
  the GPU's bf16 matmul rate.
"""
from __future__ import annotations
import argparse, gzip, json, os, sys, time, types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # navab's source tree: no install needed


def _no_polars():
    "navab's engine core (encode_requests, _score_tokens) uses no DataFrames, but its modules import polars at the top: give them a placeholder where polars is absent."
    try: import polars  # noqa: F401
    except ImportError:
        class _Any:
            def __init__(self, *a, **k): pass
            def __call__(self, *a, **k): return _Any()
            def __getattr__(self, n): return _Any()
        def attr(n):
            if n.startswith('__'): raise AttributeError(n)       # a module's own dunders stay absent (import machinery asks)
            return _Any
        stub = types.ModuleType('polars'); stub.__getattr__ = attr
        sys.modules['polars'] = stub
        return True
    return False


# ---- the CPU reference (navab's full environment) ----

def cpu_reference(models, out: Path, limit: int | None, shared: Path):
    import torch
    from navab.data import load_samples
    from navab.evaluate import mc_prompts, mc_requests
    from navab.models import load_model
    from navab.score import encode_requests, _group_keys, _score_tokens
    hk = shared / 'navab-hk'
    if not hk.is_dir(): sys.exit(f"gpu_check: {hk} not found (the real HK samples): the reference needs them")
    import polars as pl
    S = pl.concat([load_samples(hk / f, 'CN').valid for f in ('human_statement_result.json', 'official_statement_result.json')], how='diagonal_relaxed')
    if limit: S = S.head(limit)
    P = mc_prompts(S, seed=0)
    out.mkdir(parents=True, exist_ok=True)
    for name in models:
        m, tok, info = load_model(name, device='cpu', dtype='float32')
        reqs, seqs, starts, keys = [], [], [], []
        for mode in ('answer', 'navab'):
            R = mc_requests(P, mode)
            enc = encode_requests(tok, R['context'], R['continuation'], info.start_token_id)
            gk = _group_keys(R)
            for r, (s, st), k in zip(R.iter_rows(named=True), enc, gk):
                reqs.append(dict(mode=mode, sample_id=r['sample_id'], option=r['option'])); seqs.append(s); starts.append(st); keys.append([mode, *k])
        lp, gr = _score_all(m, seqs, starts, keys)
        cfg = json.loads((Path(info.path) / 'config.json').read_text())
        ref = dict(model=name, hash=info.hash, config=cfg, start_token_id=info.start_token_id, torch=torch.__version__,
                   requests=reqs, seqs=seqs, starts=starts, keys=keys, cpu_logprob=lp, cpu_greedy=gr)
        f = out / f"{Path(name).name}.json.gz"
        f.write_bytes(gzip.compress(json.dumps(ref).encode(), 9))
        print(f"{name}: {len(seqs)} requests ({len(S)} HK samples x 2 options x answer/navab), {sum(map(len, seqs)):,} tokens -> {f} ({f.stat().st_size / 1e3:.0f} kB)")


def _score_all(model, seqs, starts, keys, batch_size: int = 16):
    "navab's engine over token lists: log-probs and greedy flags in request order."
    from navab.score import _score_tokens
    lp, gr = [0.0] * len(seqs), [False] * len(seqs)
    for idx, l, n, g in _score_tokens(model, seqs, starts, [tuple(k) for k in keys], batch_size):
        for i, a, b in zip(idx, l, g): lp[i], gr[i] = a, bool(b)
    return lp, gr


# ---- the check (the GPU machine) ----

def _model(ref, weights: str | None):
    "The reference's model: real weights when present, else its architecture with seeded random weights; (model, source)."
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    cands = [Path(weights)] if weights else []
    cache = Path(os.environ.get('NAVAB_CACHE', Path.home() / '.cache' / 'navab'))
    cands += [cache / 'models' / ref['model'], Path(ref['model'])]
    for c in cands:
        if (c / 'config.json').is_file() and any(c.glob('*.safetensors')):
            return AutoModelForCausalLM.from_pretrained(c, dtype=torch.float32).eval(), f'real weights ({c})'
    cfg = AutoConfig.for_model(**{k: v for k, v in ref['config'].items() if k not in ('transformers_version', '_name_or_path')})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval(), 'its architecture, seeded random weights (the real ones are not on this machine)'


def _decisions(ref, lp):
    "MC decisions per (mode, sample): the option with the higher summed log-prob (answer) or per-token mean (navab)."
    best = {}
    for r, s, st, l in zip(ref['requests'], ref['seqs'], ref['starts'], lp):
        v = l / max(1, len(s) - st) if r['mode'] == 'navab' else l
        k = (r['mode'], r['sample_id'])
        if k not in best or v > best[k][0]: best[k] = (v, r['option'])
    return {k: o for k, (v, o) in best.items()}


def _matmul_rate(device: str, dtype, n: int = 8192, reps: int = 20) -> float:
    "Measured FLOP/s of one n x n x n matmul in `dtype` on `device`."
    import torch
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3): a @ b
    _sync(device); t = time.perf_counter()
    for _ in range(reps): a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def _rate(x: float) -> str:
    "FLOP/s in readable units."
    return f"{x / 1e12:.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def _sync(device):
    import torch
    if str(device).startswith('cuda'): torch.cuda.synchronize()


def _timed(model, ref, device, dtype, batch_size, repeat: int = 1):
    "Score the reference on `device`/`dtype`: log-probs and greedy flags, then a timed pass over the requests `repeat` times (distinct groups, after a warm-up): seconds, tokens fed, FLOPs."
    import torch
    m = model.to(device=device, dtype=dtype)
    fed = [0]
    h = m.base_model.register_forward_hook(lambda mod, args, kw, out: fed.__setitem__(0, fed[0] + kw['input_ids'].numel()), with_kwargs=True)
    seqs, starts = ref['seqs'] * repeat, ref['starts'] * repeat
    keys = [(c, *k) for c in range(repeat) for k in ref['keys']]          # each copy its own prefix group: no sharing across copies
    try:
        lp, gr = _score_all(m, ref['seqs'], ref['starts'], ref['keys'], batch_size)      # the answers compared, and a warm-up
        fed[0] = 0; _sync(device); t = time.perf_counter()
        _score_all(m, seqs, starts, keys, batch_size)
        _sync(device); sec = time.perf_counter() - t
    finally: h.remove()
    emb = m.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in m.base_model.parameters()) - emb                     # the lookup table does no FLOPs
    head = m.get_output_embeddings().weight.numel()
    picked = sum(len(s) - st for s, st in zip(seqs, starts))                           # rows the engine runs the head on
    flops = 2 * body * fed[0] + 2 * head * picked                                       # dense matmuls; attention's own FLOPs left out
    return lp, gr, sec, fed[0], flops


def check(refs, device: str, batch_size: int, weights: str | None, out: Path | None, repeat: int = 1):
    import torch, transformers
    from navab.models import resolve_device, resolve_dtype
    dev = resolve_device(device)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, Python {sys.version.split()[0]}; device {device} -> {dev}, "
          f"auto dtype {resolve_dtype('auto', dev)}" + (f"; GPU {torch.cuda.get_device_name(dev)}" if dev.startswith('cuda') else ''))
    peak = _matmul_rate(dev, torch.bfloat16 if dev.startswith('cuda') else torch.float32, n=8192 if dev.startswith('cuda') else 1024, reps=20 if dev.startswith('cuda') else 3)
    print(f"measured matmul rate ({'bf16' if dev.startswith('cuda') else 'fp32'}): {_rate(peak)} (the floor any engine's FLOP/s is read against)")
    results = []
    for f in refs:
        ref = json.loads(gzip.decompress(Path(f).read_bytes()))
        model, source = _model(ref, weights)
        print(f"\n{ref['model']}: {len(ref['seqs'])} requests, {sum(map(len, ref['seqs'])):,} tokens; weights: {source}")
        real = source.startswith('real')
        t = time.perf_counter()
        cpu, _ = (ref['cpu_logprob'], None) if real and not os.environ.get('GPU_CHECK_LOCAL_CPU') else _score_all(model.to('cpu', torch.float32), ref['seqs'], ref['starts'], ref['keys'], batch_size)
        cpu_s = time.perf_counter() - t
        row = dict(model=ref['model'], weights='real' if real else 'random (same architecture)', n_requests=len(ref['seqs']), peak_flops=peak,
                   cpu_reference='the reference file (navab venv, torch ' + ref['torch'] + ')' if real and not os.environ.get('GPU_CHECK_LOCAL_CPU') else f'this machine\'s CPU, float32 ({cpu_s:.1f} s)')
        dc = _decisions(ref, cpu)
        for name, dt in (('fp32', torch.float32), ('bf16', torch.bfloat16)):
            lp, gr, sec, fed, flops = _timed(model, ref, dev, dt, batch_size, repeat)
            d = max(abs(a - b) for a, b in zip(lp, cpu))
            dd = _decisions(ref, lp)
            same = sum(dd[k] == dc[k] for k in dc) / len(dc)
            row[name] = dict(max_abs_logprob_diff=d, decisions_same=same, timed_requests=len(ref['seqs']) * repeat, seconds=sec, tokens_fed=fed, flops=flops, flops_per_s=flops / sec,
                             share_of_peak=flops / sec / peak)
            print(f"  {name} on {dev}: max |logprob - CPU fp32| {d:.2e}, MC decisions identical {same:.1%}, timed {len(ref['seqs']) * repeat:,} requests in {sec:.2f} s ({len(ref['seqs']) * repeat / sec:,.0f}/s), "
                  f"{fed:,} tokens fed, {_rate(flops / sec)} = {flops / sec / peak:.1%} of the measured {'bf16' if dev.startswith('cuda') else 'fp32'} matmul rate")
        results.append(row)
        model.to('cpu'); del model
        if dev.startswith('cuda'): torch.cuda.empty_cache()
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / 'gpu_check.json').write_text(json.dumps(dict(device=dev, torch=torch.__version__, transformers=transformers.__version__, results=results), indent=1))
        print(f"\n-> {out / 'gpu_check.json'}")
    return results


def install_check(root: Path = HERE.parent):
    "`pip install -e .` into a venv over this machine's own packages (no index, no deps): does it keep their torch, and which of navab's requirements do they already meet?"
    import subprocess, tempfile, venv
    env = Path(tempfile.mkdtemp()) / 'venv'
    venv.EnvBuilder(with_pip=False).create(env)
    py = env / 'bin' / 'python'
    import site                                  # this interpreter's packages (torch among them) seen from the new venv, as if installed there first
    sp = subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True).stdout.strip()
    (Path(sp) / 'machine.pth').write_text('\n'.join(site.getsitepackages()) + '\n')
    def torch_version(): return subprocess.run([py, '-c', 'import torch; print(torch.__version__)'], capture_output=True, text=True).stdout.strip()
    before = torch_version()
    r = subprocess.run([sys.executable, '-m', 'pip', '--python', str(py), 'install', '-q', '--no-index', '--no-deps', '--no-build-isolation', '-e', str(root)],
                       capture_output=True, text=True)
    print(f"pip install -e . into a venv over Python {sys.version.split()[0]}'s packages: rc {r.returncode}" + (f"\n{r.stderr[-1500:]}" if r.returncode else ''))
    code = ('''import importlib.metadata as m, json
from packaging.requirements import Requirement
ok, missing, off = [], [], []
import sys, sysconfig
nv = next(d for d in m.distributions(path=[sysconfig.get_paths()["purelib"]]) if d.metadata["Name"] == "navab")   # the one just installed
for q in map(Requirement, nv.requires or []):
    if q.marker and not q.marker.evaluate({"extra": ""}): continue
    try: v = m.version(q.name)
    except m.PackageNotFoundError: missing.append(q.name); continue
    (ok if q.specifier.contains(v, prereleases=True) else off).append(f"{q.name} {v} (wants {q.specifier})")
print(json.dumps(dict(ok=ok, missing=missing, off=off)))''')
    q = subprocess.run([py, '-c', code], capture_output=True, text=True)
    res = json.loads(q.stdout) if q.returncode == 0 else dict(error=q.stderr[-800:])
    after = torch_version()
    print(f"torch before {before}, after {after}: {'kept' if before == after else 'CHANGED'}")
    for k in ('ok', 'off', 'missing'): print(f"  requirements {k}: {len(res.get(k, []))}: {', '.join(res.get(k, []))}")
    return dict(rc=r.returncode, torch_before=before, torch_after=after, **res)


# A 7B model's shape (Qwen2.5-7B-Instruct's config.json: the size a national-values study scores), for the engine's FLOP/s at scale.
SCALE_CONFIGS = {'qwen2.5-7b': dict(model_type='qwen2', vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                    num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6,
                                    rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act='silu')}


def scale_check(ref_file: Path, name: str, device: str, batch_size: int, repeat: int, out: Path | None):
    "The engine on a 7B-shaped model (seeded random weights, built on the GPU): bf16 against fp32 on the same GPU, and achieved FLOP/s."
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    ref = json.loads(gzip.decompress(Path(ref_file).read_bytes()))          # its token ids: real HK requests (they fit any larger vocabulary)
    cfg = AutoConfig.for_model(**SCALE_CONFIGS[name])
    assert max(max(x) for x in ref['seqs']) < cfg.vocab_size
    peak = _matmul_rate(device, torch.bfloat16, **({} if device.startswith("cuda") else dict(n=1024, reps=3)))
    torch.manual_seed(0)
    t = time.perf_counter()
    with torch.device(device): model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    n = sum(p.numel() for p in model.parameters())
    print(f"\n{name}-shaped model, {n / 1e9:.2f}B parameters, seeded random weights built on {device} in {time.perf_counter() - t:.1f} s; "
          f"{len(ref['seqs'])} requests from {Path(ref_file).name} x {repeat}; matmul rate (bf16) {_rate(peak)}")
    row = dict(model=f'{name} shape (random weights)', params=n, peak_flops=peak, reference='fp32 on the same GPU')
    base = None
    for nm, dt in (('fp32', torch.float32), ('bf16', torch.bfloat16)):
        lp, gr, sec, fed, flops = _timed(model, ref, device, dt, batch_size, repeat if nm == 'bf16' else 1)
        base = base or lp
        d = max(abs(a - b) for a, b in zip(lp, base))
        row[nm] = dict(max_abs_logprob_diff_vs_fp32=d, timed_requests=len(ref['seqs']) * (repeat if nm == 'bf16' else 1), seconds=sec,
                       tokens_fed=fed, flops_per_s=flops / sec, share_of_peak=flops / sec / peak)
        print(f"  {nm}: max |logprob - fp32| {d:.2e}; timed {row[nm]['timed_requests']:,} requests in {sec:.2f} s "
              f"({row[nm]['timed_requests'] / sec:,.0f}/s, {fed / sec:,.0f} tokens/s), {_rate(flops / sec)} = {flops / sec / peak:.1%} of the measured bf16 matmul rate")
    if out:
        out.mkdir(parents=True, exist_ok=True); (out / f'scale_{name}.json').write_text(json.dumps(row, indent=1))
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cpu-reference', action='store_true', help='write the CPU reference (navab venv, real models, real HK samples)')
    p.add_argument('--models', default='smollm2-135m,gemma3-270m', help='models of the reference (embedded names or folders)')
    p.add_argument('--refs', default=str(HERE / 'gpu_ref'), help='folder of the reference files')
    p.add_argument('--limit', type=int, help='only the first N HK samples (reference)')
    p.add_argument('--device', default='cuda', help="where the check runs (cuda, cuda:N; 'cpu' for a dry run of the whole path)")
    p.add_argument('--weights', help='a folder of real weights for a single reference')
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--out', help='write gpu_check.json here')
    p.add_argument('--repeat', type=int, default=1, help='time the requests this many times over (distinct prefix groups): a workload large enough to leave launch overhead behind')
    p.add_argument('--install-check', action='store_true', help="`pip install -e .` over this machine's packages (no network): is its torch kept?")
    p.add_argument('--scale', choices=sorted(SCALE_CONFIGS), help="time the engine on this model's shape instead (random weights built on the device; bf16 vs fp32 there)")
    a = p.parse_args(argv)
    if a.scale:
        _no_polars()
        return scale_check(Path(a.refs) / 'smollm2-135m.json.gz', a.scale, a.device, a.batch_size, a.repeat, Path(a.out) if a.out else None)
    if a.install_check:
        res = install_check()
        if a.out: Path(a.out).mkdir(parents=True, exist_ok=True); (Path(a.out) / 'install_check.json').write_text(json.dumps(res, indent=1))
        return
    if a.cpu_reference:
        shared = Path(os.environ.get('NAVAB_SHARED', HERE.parent.parent / 'shared' / 'data'))
        return cpu_reference([m.strip() for m in a.models.split(',') if m.strip()], Path(a.refs), a.limit, shared)
    stub = _no_polars()
    if stub: print("polars is not installed here: navab's engine core runs without it (a placeholder module stands in)")
    refs = sorted(Path(a.refs).glob('*.json.gz'))
    if not refs: sys.exit(f"gpu_check: no reference files in {a.refs}: run `benchmarks/gpu_check.sh --cpu-reference` first (in navab's venv)")
    check(refs, a.device, a.batch_size, a.weights, Path(a.out) if a.out else None, a.repeat)


if __name__ == '__main__':
    main()
