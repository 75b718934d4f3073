# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CONSTRAINTS ?= constraints.txt
FMNIST_DIR  := /usr/share/datasets/fashion-mnist
FORTUNES_DIR := /usr/share/games/fortunes

.PHONY: run test setup data lint bench clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[test,pretrained,labels,hf,search]"
	touch $@

setup: $(VENV)/.installed

# Debian's Fashion-MNIST and fortunes (real text for the transformer recipes): installed when we are
# root and apt works; never fatal.
data:
	@if [ -d $(FMNIST_DIR) ]; then echo "fashion-mnist: found in $(FMNIST_DIR)"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) \
	  && echo "fashion-mnist: installed" || echo "fashion-mnist: not installed (apt failed); digits still works"; \
	else echo "fashion-mnist: not installed (needs root and apt); digits still works"; fi
	@if [ -f $(FORTUNES_DIR)/fortunes ]; then echo "fortunes: found in $(FORTUNES_DIR)"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get install -y -q fortunes >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fortunes >/dev/null 2>&1)) \
	  && echo "fortunes: installed" || echo "fortunes: not installed (apt failed); text:FILE still works"; \
	else echo "fortunes: not installed (needs root and apt); text:FILE still works"; fi

run: setup data
	$(VENV)/bin/frugal run --out runs/default

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup data
	bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) runs build *.egg-info
