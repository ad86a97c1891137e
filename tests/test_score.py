"""The scoring engine against a brute-force reference written here, independently of navab.score: boundary tokens,
batch-size independence, padding on either side with a reused KV cache, sliding windows, GPT-2, and the resumable cache
(an exception and a real SIGKILL mid-run)."""
import dataclasses, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import polars as pl
import pytest
import torch
import navab.score as S
import navab.cache as C
from navab.models import load_model, make_tiny_model
from navab.score import score, read_results, request_key
from conftest import ROOT


def brute(model, tok, start_id, context, continuation):
    "One request, no cache, one full forward of start + context + continuation: (logprob, n_tokens, is_greedy)."
    n = len(context) - len(context.rstrip())          # lm-evaluation-harness: trailing whitespace joins the continuation
    if n: context, continuation = context[:-n], context[-n:] + continuation
    whole = tok.encode(context + continuation, add_special_tokens=False)
    ctx = tok.encode(context, add_special_tokens=False)
    ids = torch.tensor([[start_id] + whole])
    # ids[p + 1] == whole[p] is predicted at position p; the continuation is whole[len(ctx):]
    pos = list(range(len(ctx), len(whole)))
    with torch.inference_mode(): logp = model(ids).logits[0, pos].double().log_softmax(-1)
    lp = sum(logp[n, whole[p]].item() for n, p in enumerate(pos))
    return lp, len(pos), all(logp[n].argmax().item() == whole[p] for n, p in enumerate(pos))


def brute_frame(reqs, model, tok, info):
    out = [brute(model, tok, info.start_token_id, c, x) for c, x in zip(reqs['context'], reqs['continuation'])]
    return pl.DataFrame({'logprob': [o[0] for o in out], 'n_tokens': [o[1] for o in out], 'is_greedy': [o[2] for o in out]},
                        schema={'logprob': pl.Float64, 'n_tokens': pl.Int64, 'is_greedy': pl.Boolean})


def assert_matches(got, want, tol):
    assert got['n_tokens'].to_list() == want['n_tokens'].to_list()
    assert got['is_greedy'].to_list() == want['is_greedy'].to_list()
    d = (got['logprob'] - want['logprob']).abs().max()
    assert d < tol, f"max |engine - reference| = {d}"


QS = ["The nation values freedom and fairness.", "Le gouvernement doit protéger le climat.",
      "Die Regierung muss die Umwelt schützen.", "政府应当保护环境和人民的健康。", "Question: Answer: A B 1 2"]


def mixed_requests():
    "Answer mode (shared question, options of different lengths), navab pairs, odd cases, a duplicate."
    rows = []
    for n, q in enumerate(QS):
        rows += [dict(context=f"Question: {q}\nA. 1\nB. 2\nAnswer:", continuation=c, group=None)
                 for c in (' A', ' B', ' A B 1', ' 2')]
        rows += [dict(context='', continuation=f"{q} A or B? Answer: {c}", group=f'pair{n}') for c in 'AB']
        rows += [dict(context=f"{q[:12]} ", continuation=q[12:], group=None)]      # trailing space in the context
    rows += [dict(context='', continuation='1 2', group=None), dict(context='Answer:', continuation='', group=None),
             dict(context=QS[0], continuation=' ' + QS[1], group='g'), dict(context=QS[2], continuation=QS[3], group='g'),
             rows[0]]
    return pl.DataFrame(rows)


@pytest.fixture(scope='module')
def tiny(tiny_model):
    return load_model(str(tiny_model))


@pytest.fixture(scope='module')
def tiny_gpt2(tmp_path_factory):
    return load_model(str(make_tiny_model(tmp_path_factory.mktemp('gpt2') / 'tiny-gpt2', arch='gpt2')))


def test_boundary_tokens(tiny):
    m, tok, info = tiny
    (ids, s), = S.encode_requests(tok, ['Question: A or B?\nAnswer: '], ['A'], info.start_token_id)
    assert ids[0] == info.start_token_id
    assert ids[s:] == tok.encode(' A', add_special_tokens=False)
    (ids0, s0), = S.encode_requests(tok, [''], ['Answer: A'], info.start_token_id)
    assert s0 == 1 and ids0 == [info.start_token_id] + tok.encode('Answer: A', add_special_tokens=False)


@pytest.mark.parametrize('which', ['tiny', 'tiny_gpt2'])
def test_equals_brute_force_at_any_batch_size_and_padding(which, request):
    m, tok, info = request.getfixturevalue(which)
    reqs = mixed_requests()
    want = brute_frame(reqs, m, tok, info)
    runs = {}
    for bs in (1, 7, 32):
        for side in ('right', 'left'):
            got = score(reqs, m, tok, info, batch_size=bs, padding=side, progress=False)
            assert got.select(reqs.columns).equals(reqs)                 # same rows, same order
            assert got['logprob'].dtype == pl.Float64 and got['n_tokens'].dtype == pl.Int64
            assert_matches(got, want, 1e-4)
            runs[bs, side] = got
    base = runs[1, 'right']
    for got in runs.values():                                            # results do not move with the batch size
        assert (got['logprob'] - base['logprob']).abs().max() < 1e-4
        assert got['is_greedy'].to_list() == base['is_greedy'].to_list()


def test_prefix_reuse_and_batching_plan(tiny):
    m, tok, info = tiny
    reqs = mixed_requests()
    seqs, starts = zip(*S.encode_requests(tok, reqs['context'], reqs['continuation'], info.start_token_id))
    units = S._plan(seqs, S._group_keys(reqs), batch_size=4)
    groups = [g for u in units for g in u]
    assert all(len(u) <= 4 for u in units)
    assert sorted(i for g in groups for i in g.members) == list(range(len(reqs)))
    pairs = [g for g in groups if len(g.members) == 2 and reqs['group'][g.members[0]] is not None
             and reqs['group'][g.members[0]].startswith('pair')]
    assert len(pairs) == len(QS) and all(g.suffix == 0 for g in pairs)   # a navab pair: one forward, no suffix run
    answers = [g for g in groups if len(g.members) >= 4]
    assert len(answers) == len(QS) and all(g.k >= starts[g.members[0]] - 1 for g in answers)
    ks = [g.k for g in groups]
    assert ks == sorted(ks, reverse=True)                                # sorted by length


def test_sliding_window_model_equals_brute_force(tiny):
    "A model whose attention window is shorter than the requests: prefix reuse must not cross the window."
    from transformers import MistralConfig, MistralForCausalLM
    _, tok, info = tiny
    torch.manual_seed(0)
    m = MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, sliding_window=6,
                                         max_position_embeddings=256, pad_token_id=1)).eval()
    info = dataclasses.replace(info, hash='tiny-mistral')
    reqs = mixed_requests()
    want = brute_frame(reqs, m, tok, info)
    for bs in (1, 7):
        assert_matches(score(reqs, m, tok, info, batch_size=bs, progress=False), want, 1e-4)


def test_bad_requests_fail_clearly(tiny):
    m, tok, info = tiny
    reqs = mixed_requests()
    with pytest.raises(ValueError, match="'context' column"): score(reqs.drop('context'), m, tok, info)
    with pytest.raises(ValueError, match='row 0'):
        score(reqs.with_columns(pl.lit(None, pl.String).alias('continuation')), m, tok, info)
    with pytest.raises(ValueError, match='batch_size'): score(reqs, m, tok, info, batch_size=0)
    assert len(score(reqs[:0], m, tok, info, progress=False)) == 0


class Killed(Exception):
    pass


def test_resume_after_an_interrupted_run(tiny, tiny_model, tmp_path, monkeypatch):
    m, tok, info = tiny
    reqs = mixed_requests()
    whole = score(reqs, m, tok, info, batch_size=2, progress=False)
    real_write, written = C.write_part, []

    def dying_write(run_dir, kind, df, name=None):
        if len(written) == 3: raise Killed()
        written.append(len(df)); return real_write(run_dir, kind, df, name)
    monkeypatch.setattr(C, 'write_part', dying_write)
    with pytest.raises(Killed): score(reqs, m, tok, info, run_dir=tmp_path, batch_size=2, progress=False)
    monkeypatch.setattr(C, 'write_part', real_write)
    stored = read_results(tmp_path)
    n_unique = len(set(zip(reqs['context'], reqs['continuation'])))
    assert len(stored) == sum(written) and 0 < len(stored) < n_unique

    real_run, computed = S._run_unit, []

    def counting_run(*a, **kw):
        r = real_run(*a, **kw); computed.extend(r[0]); return r
    monkeypatch.setattr(S, '_run_unit', counting_run)
    again = score(reqs, m, tok, info, run_dir=tmp_path, batch_size=2, progress=False)
    assert again.equals(whole)                                           # exactly the uninterrupted table
    assert len(computed) == n_unique - len(stored)                      # nothing stored was recomputed
    assert len(read_results(tmp_path)) == n_unique and len(C.cache_parts(tmp_path, 'score')) == 1

    computed.clear()
    assert score(reqs, m, tok, info, run_dir=tmp_path, progress=False).equals(whole) and computed == []


def test_stale_results_are_never_reused(tiny, tmp_path, monkeypatch):
    m, tok, info = tiny
    reqs = mixed_requests()[:6]
    score(reqs, m, tok, info, run_dir=tmp_path, progress=False)
    # poison the store: a wrong value under every key of this model
    bad = read_results(tmp_path).with_columns(pl.lit(123.0).alias('logprob'))
    for p in C.cache_parts(tmp_path, 'score'): p.unlink()
    C.write_part(tmp_path, 'score', bad)
    assert (score(reqs, m, tok, info, run_dir=tmp_path, progress=False)['logprob'] == 123.0).all()   # it is read back...
    other = dataclasses.replace(info, hash='0' * 64)                     # ...but not for other weights,
    assert (score(reqs, m, tok, other, run_dir=tmp_path, progress=False)['logprob'] != 123.0).all()
    for change in (dict(dtype='bfloat16'), dict(start_token='</s>')):   # another dtype or start token,
        assert request_key(dataclasses.replace(info, **change), 'a', 'b') != request_key(info, 'a', 'b')
    edited = reqs.with_columns(pl.col('continuation') + '.')            # or other text
    assert (score(edited, m, tok, info, run_dir=tmp_path, progress=False)['logprob'] != 123.0).all()


KILLABLE = """
import os, sys, time
os.environ['HF_HUB_OFFLINE'] = '1'
import polars as pl
import navab.score as S
from navab.models import load_model
sys.path.insert(0, {tests!r})
from test_score import mixed_requests
run = S._run_unit
def slow_run(*a, **kw):
    time.sleep(0.3); return run(*a, **kw)
S._run_unit = slow_run
m, tok, info = load_model({model!r})
print('started', flush=True)
S.score(mixed_requests(), m, tok, info, run_dir={run_dir!r}, batch_size=1, progress=False)
"""


def test_resume_after_sigkill(tiny, tiny_model, tmp_path, monkeypatch):
    m, tok, info = tiny
    reqs = mixed_requests()
    run_dir = tmp_path / 'run'
    code = KILLABLE.format(tests=str(ROOT / 'tests'), model=str(tiny_model), run_dir=str(run_dir))
    p = subprocess.Popen([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while len(C.cache_parts(run_dir, 'score')) < 3 and p.poll() is None and time.time() - t0 < 120: time.sleep(0.05)
        assert p.poll() is None, f"the run ended before it could be killed: {p.stderr.read().decode()[-2000:]}"
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    assert p.returncode == -signal.SIGKILL
    stored = read_results(run_dir)
    n_unique = len(set(zip(reqs['context'], reqs['continuation'])))
    assert 0 < len(stored) < n_unique
    real, calls = S._run_unit, []

    def counting_run(*a, **kw):
        r = real(*a, **kw); calls.extend(r[0]); return r
    monkeypatch.setattr(S, '_run_unit', counting_run)
    again = score(reqs, m, tok, info, run_dir=run_dir, batch_size=1, progress=False)
    assert len(calls) == n_unique - len(stored)                        # only the missing rows
    assert again.equals(score(reqs, m, tok, info, batch_size=1, progress=False))
    assert len(read_results(run_dir)) == n_unique


def navab_requests(samples, mode):
    "MC-like requests from NaVAB samples in both option orders: answer letters, or whole prompts ending in A/B."
    rows = []
    for r in samples.iter_rows(named=True):
        for order, (a, b) in (('ab', (r['statement'], r['reverse_statement'])), ('ba', (r['reverse_statement'], r['statement']))):
            q, g = f"{r['question']}\nA. {a.strip()}\nB. {b.strip()}\nAnswer:", f"{r['id']}-{order}"
            rows += [dict(context=q, continuation=f' {x}', group=g) if mode == 'answer' else
                     dict(context='', continuation=f'{q} {x}', group=g) for x in 'AB']
    return pl.DataFrame(rows)


@pytest.mark.slow
@pytest.mark.parametrize('name,n', [('smollm2-135m', 3), ('gemma3-270m', 2)])
def test_real_model_equals_brute_force_on_navab_hk(name, n, shared, request):
    from navab.data import read_navab
    m, tok, info = request.getfixturevalue({'smollm2-135m': 'smollm2', 'gemma3-270m': 'gemma3'}[name])
    samples = read_navab(shared / 'navab-hk' / 'human_statement_result.json', 'CN').valid[:n]
    for mode in ('answer', 'navab'):
        reqs = navab_requests(samples, mode)
        got = score(reqs, m, tok, info, batch_size=7, progress=False)
        assert_matches(got, brute_frame(reqs, m, tok, info), 1e-3)
