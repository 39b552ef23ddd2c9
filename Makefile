# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create/reuse .venv, install the pinned dependencies (idempotent: a stamp file
# skips the install when requirements and pyproject are unchanged), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.snncc-setup-stamp

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): requirements/base.txt requirements/nodeps.txt requirements/test.txt pyproject.toml snncc/compat/torchvision_shim.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/base.txt
	# spikingjelly and lava-nc declare deps that would pull CUDA torch or refuse Python 3.11;
	# their real runtime needs are pinned in base.txt (see docs/install.md).
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --ignore-requires-python -r requirements/nodeps.txt
	# NIR tools for the cross-tool tests (snntorch, norse, nir, nirtorch): --no-deps keeps torch 2.13.0 CPU.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/test.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	# spikingjelly's model zoo imports torchvision's load_state_dict_from_url; no CPU torchvision exists on the
	# registry, so a .pth file installs snncc's one-name stand-in (snncc/compat/torchvision_shim.py, docs/install.md).
	$(PY) -c 'import snncc.compat.torchvision_shim as s; s.write_pth()'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/snncc demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(VENV)/bin/snncc bench sim

clean:
	rm -rf $(VENV) runs
