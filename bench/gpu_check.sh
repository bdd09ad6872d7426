#!/usr/bin/env bash
# The GPU checks in one go, for a borrowed GPU machine that has torch but not this project's
# other dependencies and no network. Here (with network), first:
#   pip wheel --no-deps -w .wheels hydra-core omegaconf antlr4-python3-runtime==4.9.3 \
#       hydra-joblib-launcher hydra-submitit-launcher submitit joblib cloudpickle tifffile \
#       pytest pytest-xdist iniconfig pluggy tensorboard .
#   (and whichever of pandas, matplotlib, tqdm the machine lacks)
# then carry .wheels (git-ignored) and run:  bash bench/gpu_check.sh
# It installs the wheels into /tmp/site, records the device, runs `pytest -m gpu` and
# bench/bench_gpu.py and bench/bench_pack.py --gpu (packs of 1..24 runs), and leaves their
# output in $OUT (or ./gpu-check) for bench/README.md.
set -uo pipefail
out=${OUT:-gpu-check}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
    | tee -a "$out/device.txt"
timeout 300 python3 -P -m pytest -m gpu -p no:cacheprovider -q -s -n 0 tests/test_gpu.py \
    2>&1 | tee "$out/pytest-gpu.txt"
timeout 400 python3 -P bench/bench_gpu.py --steps 300 2>&1 | tee "$out/bench-gpu.txt"
timeout 400 python3 -P bench/bench_pack.py --gpu --steps 90 2>&1 | tee "$out/bench-pack.txt"
