# facebot: the two commands of the README.
#   make demo   set everything up (once) and run the duplex loop on the sample conversation
#   make test   set everything up (once) and run the test suite
VENV ?= .venv
PYTHON ?= python3
# pytest-xdist workers: one per core, whole files per worker (their fixtures stay shared)
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: demo test setup clean

demo: setup
	$(VENV)/bin/facebot run

test: setup
	bash .ci/ros_build
	FACEBOT_ROS_BUILT=1 $(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile test

setup: $(VENV)/.facebot-setup

$(VENV)/.facebot-setup: setup.py .ci/setup
	VENV=$(VENV) PYTHON=$(PYTHON) bash .ci/setup
	touch $@

clean:
	rm -rf $(VENV) facebot_out .pytest_cache .hypothesis build install log
