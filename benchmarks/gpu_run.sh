#!/usr/bin/env bash
# Everything GPU-related in one call on a CUDA machine with no network (the device tool):
#   1. install the wheels carried in .whl/ (zarr, numcodecs, soundfile, librosa, ...; see
#      benchmarks/README.md for the download command) into /tmp/site;
#   2. the CUDA tests (pytest -m gpu);
#   3. gpu_check.py: mel parity and throughput per backend, batch invariance,
#      host-to-device bandwidth, loader into device memory, train step fp32 vs bf16;
#   4. the benchmark report with --device cuda (old path vs chirpid-io, same machine).
# Results go to $OUT (default ./gpu-out). Each step has its own time limit, so one that
# hangs cannot eat the others' time.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 3
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
nvidia-smi -L
echo "== CUDA tests"
timeout "${TESTS_S:-150}" python3 -m pytest -q -m gpu -p no:cacheprovider tests >"$OUT/gpu_tests.log" 2>&1
echo "pytest exit $?"; tail -n 15 "$OUT/gpu_tests.log"
echo "== gpu_check"
timeout "${CHECK_S:-240}" python3 benchmarks/gpu_check.py --json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log" | grep -v Warning
echo "== benchmark report on cuda"
timeout "${BENCH_S:-200}" python3 benchmarks/run.py --quick --device cuda --no-memory \
    --corpus-minutes "${CORPUS_MINUTES:-10}" --out "$OUT/bench" >"$OUT/bench.log" 2>&1
echo "run.py exit $?"; tail -n 40 "$OUT/bench.log"
