# Each target builds .venv from nothing and installs only what it needs.
# torch is installed only when it is not importable already; TORCH_SPEC picks the wheel
# (a bare "torch" requirement would pull gigabytes of CUDA packages on CPU-only machines).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
VPY := $(VENV)/bin/python
# The tests and the demo run many small tensor ops, for which one intra-op thread is fastest and
# immune to oversubscription; benchmarks keep torch's default.
SMALL_OPS := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}
PIP := $(VPY) -m pip

.PHONY: demo test bench venv clean

$(VPY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

venv: $(VPY)
	@$(VPY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"

$(VENV)/.test-deps: pyproject.toml | venv
	$(PIP) install -e ".[test,bench]"
	@touch $@

$(VENV)/.demo-deps: pyproject.toml | venv
	$(PIP) install -e ".[bench]"
	@touch $@

demo: $(VENV)/.demo-deps
	$(SMALL_OPS) $(VPY) -m pyjode.demo

test: $(VENV)/.test-deps
	$(SMALL_OPS) $(VPY) -m pytest -q -ra

bench: $(VENV)/.test-deps
	$(VPY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) build dist *.egg-info
