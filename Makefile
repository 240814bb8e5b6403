# Two commands do everything on a fresh machine:
#   make demo   creates .venv, installs charwise, trains the spec's model and prints samples
#   make test   creates .venv if needed and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test bench clean screenshot

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

# lint and import order (ruff), types of the core modules (mypy), then the tests
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

# Refresh the README's picture of `charwise serve` (docs/playground.png) through the browser
# test; needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver).
screenshot: install
	CHARWISE_SCREENSHOT=docs/playground.png $(PY) -m pytest tests/test_browser.py

clean:
	rm -rf $(VENV) runs .pytest_cache
