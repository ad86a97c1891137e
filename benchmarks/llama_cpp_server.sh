#!/usr/bin/env bash
# navab against a server nobody here wrote: llama-cpp-python's OpenAI-compatible server over the very SmolLM2 GGUF file
# navab's embedded `smollm2-135m` is converted from, used as a researcher would:
#     navab evaluate --model http://127.0.0.1:PORT/v1#smollm2 --tokenizer smollm2-135m ...
# Not run by `make test` (it builds llama-cpp-python from source: about 10 minutes on 2 cores, once).
#
# What it does: (1) a venv of its own (benchmarks/.venv-llamacpp) with llama-cpp-python[server] (idempotent: a second
# run only checks); (2) starts `python -m llama_cpp.server --model <GGUF> --logits_all true` on 127.0.0.1; (3) runs
# `navab evaluate` (MC, 8 real HK samples when ../shared/data is there, else 6 made-up French ones) against it with
# navab's own venv, timing it and keeping its last stderr line; (4) asks the backend directly in text mode (what
# `OpenAIBackend(prompt_mode='text')` finds), the probe's findings included; (5) writes all of it to
# benchmarks/out/llama_cpp_server/result.json and stops the server.
#
# What navab then does (the capability probe of nbs/04d_backend.ipynb; measured by this script, see result.json):
# - the token-id probe gets llama-cpp-python's HTTP 500 with a pydantic validation error: navab takes it as "does not
#   take token ids" (asked once, not retried) and sends text;
# - a request of several prompts gets a 500 (`assert len(body.prompt) <= 1`): navab sends one prompt a request;
# - the probe's pair of counting texts shows each position's log-prob read after its own token (llama-cpp-python issue
#   #1983; SmolLM2's GGUF adds no BOS, so its echo is shifted) and the repeated sentence shows the same: navab refuses,
#   exit 1, within seconds, with the one line
#     navab: error: http://127.0.0.1:PORT/v1 (smollm2): prompt log-probs are shifted by one position: the server's echo
#     is not usable for scoring (llama-cpp-python issue #1983)
#   and scores nothing and caches nothing (before the probe it wrote 0.0 for every continuation and exit 0).
#
# Usage:  bash benchmarks/llama_cpp_server.sh [--port 8091] [--limit 8]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON=${PYTHON:-python3.11}
NAVAB_PY=${NAVAB_PY:-.venv/bin/python}
VENV=benchmarks/.venv-llamacpp
LLAMA=llama-cpp-python==0.3.16
PORT=8091; LIMIT=8
while [ $# -gt 0 ]; do case "$1" in --port) PORT=$2; shift 2;; --limit) LIMIT=$2; shift 2;; *) echo "unknown argument $1"; exit 2;; esac; done
OUT=benchmarks/out/llama_cpp_server; mkdir -p "$OUT"

if [ ! -f "$VENV/.installed" ] || ! grep -qx "$LLAMA" "$VENV/.installed"; then
  echo "llama_cpp_server: installing $LLAMA[server] into $VENV (builds llama.cpp for this CPU: ~10 minutes on 2 cores)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$VENV/bin/pip" install -q "$LLAMA" "llama-cpp-python[server]==${LLAMA#*==}"
  echo "$LLAMA" > "$VENV/.installed"
fi

GGUF=$("$NAVAB_PY" -c "from navab.models import gguf_path; print(gguf_path('smollm2-135m'))")
"$VENV/bin/python" -m llama_cpp.server --model "$GGUF" --model_alias smollm2 --logits_all true --n_ctx 2048 \
  --host 127.0.0.1 --port "$PORT" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "llama_cpp_server: the server exited:"; tail -5 "$OUT/server.log"; exit 1; }
  sleep 1
done
URL="http://127.0.0.1:$PORT/v1#smollm2"

"$NAVAB_PY" - "$URL" "$LIMIT" "$OUT" <<'PY'
import json, subprocess, sys, time
from pathlib import Path
url, limit, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
hk = Path('../shared/data/navab-hk/human_statement_result.json')
if hk.exists(): samples = ['--samples', str(hk), '--nation', 'CN']
else:
    sys.path.insert(0, 'tests'); from conftest import _samples
    samples = ['--samples', str(_samples(out / 'fr.parquet'))]
run = out / 'run'
t = time.time()
r = subprocess.run([str(Path(sys.executable).parent / 'navab'), 'evaluate', *samples, '--model', url, '--tokenizer', 'smollm2-135m',
                    '--limit', str(limit), '--out', str(run)], capture_output=True, text=True)
res = dict(server=url, evaluate=dict(exit=r.returncode, seconds=round(time.time() - t, 1),
           last_stderr_line=(r.stderr.strip().splitlines() or [''])[-1], stdout_tail=r.stdout.strip().splitlines()[-1:],
           cached_parts=len(list(run.rglob('part-*.parquet')))))
from navab.backend import OpenAIBackend, ProbeError
t = time.time()
try: b = OpenAIBackend(url, tokenizer='smollm2-135m', prompt_mode='text'); res['text_mode'] = dict(ok=True, probe=b.probe)
except ProbeError as e: res['text_mode'] = dict(ok=False, error=str(e), findings=e.findings)
except Exception as e: res['text_mode'] = dict(ok=False, error=f"{type(e).__name__}: {e}")
res['text_mode']['seconds'] = round(time.time() - t, 1)
(out / 'result.json').write_text(json.dumps(res, indent=1))
print(json.dumps(res, indent=1))
PY
