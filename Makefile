# Two commands do everything on a fresh machine:
#   make demo   creates .venv, installs charwise, trains the spec's model and prints samples
#   make test   creates .venv if needed and runs the test suite
#   make docs   serves the documentation site (docs/, mkdocs.yml) on http://127.0.0.1:8000/
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test test-laptop docs bench clean screenshot

install: $(VENV)/.installed

# PyTorch goes in first. With an NVIDIA GPU (nvidia-smi present) we take the default
# (CUDA) build. Without one we ask for the "+cpu" build by name: it lies on disk here, and
# elsewhere comes from PyTorch's CPU index, so a CPU-only machine never downloads the
# multi-GB CUDA build. The package's own torch floor (pyproject.toml) is then already satisfied.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	else \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)+cpu" 2>/dev/null || \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)+cpu" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/charwise demo --out runs/demo

# The tests whose decisions depend on the CPU (precision, int8, kernels, sampling, the CLI and
# API end to end), run again as a plain laptop would run them: whatever this machine is, torch's
# and oneDNN's kernels are capped to AVX2 (no AVX-512, no bf16, no VNNI; charwise/hardware.py
# reads the same caps) on one thread. About a minute on 2 cores.
LAPTOP = ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1
LAPTOP_TESTS = tests/test_hardware.py tests/test_evaluate.py tests/test_sample_int8.py \
	tests/test_gpu_paths.py tests/test_beam.py tests/test_model.py tests/test_sample.py \
	tests/test_api.py tests/test_cli.py

# lint and import order (ruff), types of the whole package (mypy), the documentation site (built
# with --strict into site/, git-ignored; offline), the tests, then the tests that depend on the
# CPU again under the AVX2 caps
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-laptop

test-laptop: install
	$(LAPTOP) $(PY) -m pytest $(LAPTOP_TESTS)

# The documentation site, served locally with live reload (mkdocs serve; Ctrl-C to stop)
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# Refresh the docs' picture of `charwise serve` (docs/playground.png) through the browser
# test; needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver).
screenshot: install
	CHARWISE_SCREENSHOT=docs/playground.png $(PY) -m pytest tests/test_browser.py

clean:
	rm -rf $(VENV) runs site .pytest_cache
