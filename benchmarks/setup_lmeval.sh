#!/usr/bin/env bash
# The environment of benchmarks/bench_lmeval.py: one venv (benchmarks/.venv-lmeval) holding lm-evaluation-harness,
# HF `evaluate` and navab itself (editable, --no-deps), on the SAME torch/transformers/tokenizers as navab's .venv, so
# one process can launch all three contenders on identical library versions. Idempotent: a second run only checks.
#
#     bash benchmarks/setup_lmeval.sh            # then: benchmarks/.venv-lmeval/bin/python benchmarks/bench_lmeval.py
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=benchmarks/.venv-lmeval
STAMP=$VENV/.installed
# Versions: read from navab's .venv when it exists (pyproject's ranges let `make install` take newer releases), else
# the fallbacks below. torch 2.13.0 is a local CPU wheel here; a looser request pulls a multi-GB CUDA build, so it goes
# in first and stays pinned in every later pip call.
TORCH=torch==2.13.0
PINS=(transformers==5.23.0 tokenizers==0.23.3 accelerate==1.15.0 safetensors==0.8.0 polars==2.1.0 pyarrow==26.0.1
      numpy==2.4.6 scipy==1.17.1 tqdm==4.70.1 datasets==5.2.0 psutil==7.2.2)
if [ -x .venv/bin/python ]; then
  read -r -a PINS <<< "$(.venv/bin/python - "${PINS[@]}" <<'PY'
import sys, importlib.metadata as md
out = []
for pin in sys.argv[1:]:
    name = pin.split('==')[0]
    try: out.append(f'{name}=={md.version(name)}')
    except md.PackageNotFoundError: out.append(pin)
print(' '.join(out))
PY
)"
fi
LMEVAL=lm-eval==0.4.13
EVALUATE=evaluate==0.4.6
want="$TORCH ${PINS[*]} $LMEVAL $EVALUATE $(sha1sum pyproject.toml | cut -c1-12)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c 'import lm_eval, evaluate, navab, torch' 2>/dev/null; then
  echo "setup_lmeval: $VENV is ready"; exit 0
fi
command -v "$PYTHON" >/dev/null || { echo "setup_lmeval: $PYTHON not found (PYTHON=/path/to/python3.11)"; exit 1; }
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$TORCH"
"$VENV/bin/pip" install -q "$TORCH" "${PINS[@]}" "$LMEVAL" "$EVALUATE"
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/python" -c 'import lm_eval, evaluate, navab, torch, transformers; print("setup_lmeval: lm-eval", lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?", "| evaluate", evaluate.__version__, "| torch", torch.__version__, "| transformers", transformers.__version__)'
echo "$want" > "$STAMP"
