# mammo-workbook: every command does its own (idempotent) set-up first.  `make help` lists targets.
PY := .venv/bin/python
DATA ?= data/synthetic
RUN_GIVEN := $(RUN)
RUN ?= runs/demo

.PHONY: help setup demo sweep sweep-meta sweep-meta-control test test-long bench lab ui hooks clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup:  ## create/refresh .venv (seconds when requirements are unchanged)
	@bash scripts/setup.sh

DEMO_FOLDS ?= [0, 1]
DEMO_EPOCHS ?= 5

demo: setup  ## the main job: notebooks 01-06 on the synthetic default (2 of 5 folds, 5 epochs; DEMO_FOLDS=all for every fold)
	$(PY) -m mammo_utils pipeline --data $(DATA) --run $(RUN) -p folds "$(DEMO_FOLDS)" -p epochs $(DEMO_EPOCHS)

sweep: setup  ## the benchmark sweep: all data vs paired vs balanced sampler, 2 seeds, shuffled control (hard preset)
	$(PY) -m mammo_utils sweep --data data/hard --preset hard --patients 400 --run runs/sweep_hard \
	    --grid benchmarks/grid_sampling.yaml --seeds 0 1 -p image_size 192x96 -p n_splits 3 -p 04.folds "[0]" -p 04.epochs 6

sweep-meta: setup  ## beyond the pixels: image only vs metadata vs auxiliary heads vs view fusion (+ stacking), hard_metadata preset
	$(PY) -m mammo_utils sweep --data data/hard_metadata --preset hard_metadata --patients 400 --run runs/sweep_meta \
	    --grid benchmarks/grid_beyond_pixels.yaml --seeds 0 -p image_size 192x96 -p n_splits 3 -p 04.folds "[0]" \
	    -p 04.epochs 6 -p 03.holdout_fraction 0.25

sweep-meta-control: setup  ## the same on hard_control data, where the table carries no signal
	$(PY) -m mammo_utils sweep --data data/hard_control --preset hard_control --patients 400 --run runs/sweep_meta_control \
	    --grid benchmarks/grid_beyond_pixels_control.yaml --seeds 0 -p image_size 192x96 -p n_splits 3 -p 04.folds "[0]" \
	    -p 04.epochs 6 -p 03.holdout_fraction 0.25

test: setup  ## the test suite (unit tests + notebooks on tiny synthetic data), in 2 processes
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not long" --durations=15

test-long: setup  ## the tests too long for every run: a sweep on a 2-process Dask cluster with a worker killed, against the sequential sweep
	$(PY) -m pytest -q -m long

bench: setup  ## decode, preprocess, PNG encoding, crop quality, training, inference and GPU benchmarks (ratios to in-run baselines)
	$(PY) benchmarks/decode.py
	$(PY) benchmarks/preprocess.py
	$(PY) benchmarks/png.py
	$(PY) benchmarks/crop_quality.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/inference.py
	$(PY) benchmarks/viewer.py
	$(PY) benchmarks/gpu.py
	$(PY) benchmarks/folds.py
	$(PY) benchmarks/loader_start.py

ui: setup  ## MLflow's UI on the runs' local store (runs/mlflow.db), at http://127.0.0.1:5000
	.venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow.db --host 127.0.0.1 --port 5000

hooks: setup  ## contributors: strip notebook outputs on commit (nbstripout git filter)
	.venv/bin/nbstripout --install --attributes .gitattributes

lab: setup  ## open JupyterLab on the notebooks; RUN=runs/demo opens that run's executed notebooks and figures
	.venv/bin/jupyter lab $(if $(RUN_GIVEN),$(RUN)/notebooks/,notebooks/)

clean:  ## remove generated data and runs (keeps .venv)
	rm -rf data runs
