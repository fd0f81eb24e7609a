#!/usr/bin/env bash
# GPU acceptance in one run on a machine with CUDA: the CUDA parity tests, `iclab reproduce` for von Oswald and He
# at paper scale and Garg at smoke scale, `iclab bench`. Each step has its own time limit; together at most 540 s, so
# the whole script fits one 10-minute device command (not yet timed on a GPU: no GPU has been lent to the project).
#
#   here, once:       make gpu-wheels        (iclab's pure-Python dependencies that the GPU image lacks → .whl/)
#   on the GPU:       bash scripts/gpu_check.sh          (carry .whl; results and one log in $OUT or /tmp/gpu-check)
#
# It uses the machine's own python3 and torch (a CUDA build), with iclab from this checkout on PYTHONPATH.
set -u
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
log="$out/gpu_check.log"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
failed=()

step() {  # step NAME LIMIT_S COMMAND...: run it, append its output to the log, carry on, remember a failure
    local name=$1 limit=$2 began=$SECONDS
    shift 2
    echo "== $name: $*" | tee -a "$log"
    timeout "$limit" "$@" >> "$log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - began)) s" | tee -a "$log"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

# No GPU, or iclab not importable: stop here rather than pass with every CUDA test skipped.
python3 -c "import torch, iclab, tyro; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, torch.cuda.get_device_name(), '| iclab', iclab.__version__)" 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpu_check: FAILED: no usable CUDA torch / iclab" | tee -a "$log"; exit 1; }
step cuda-tests 120 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py \
    tests/test_task_zoo_linear.py tests/test_task_zoo_nonlinear.py -k cuda
step von-oswald 90 python3 -m iclab reproduce von-oswald --device cuda --scale paper --no-progress \
    --out /tmp/reproduce-von-oswald --force --json "$out/von-oswald.json"
step he 150 python3 -m iclab reproduce he --device cuda --scale paper --no-progress \
    --out /tmp/reproduce-he --force --json "$out/he.json"
step garg 90 python3 -m iclab reproduce garg --device cuda --no-progress \
    --out /tmp/reproduce-garg --force --json "$out/garg.json"
step bench 90 python3 -m iclab bench --device cuda --json "$out/bench.json"

if [ ${#failed[@]} -eq 0 ]; then echo "gpu_check: all steps passed" | tee -a "$log"; exit 0; fi
echo "gpu_check: FAILED: ${failed[*]}" | tee -a "$log"
exit 1
