#!/usr/bin/env bash
# The fast path's GPU checks, end to end in one command on a lent H100/H200 (about 5-7 minutes):
#   1. the fast-path tests on CUDA: fp16 fast eager and compiled (inductor + CUDA graphs) against the plain
#      path, LoRA on a compiled UNet, no host sync inside the step loop (torch.cuda.set_sync_debug_mode),
#      the fp16 VAE NaN fallback; and the CPU-side fast-path tests;
#   2. bench/sampling.py: random full-size SD1.5, 512², 20 steps, batch 1, euler, fp16: Atelier plain / fast
#      eager / compiled (reduce-overhead) vs diffusers' StableDiffusionPipeline eager, plus re-run times;
#      target: compiled >= 1.25x diffusers eager it/s;
#   3. bench/batching.py, if present, with the time left.
#
# The GPU machine has torch/transformers/pytest but no diffusers, pydantic or torchsde, and no registry.
# Here first (pip access):      bash bench/gpu_wheels.sh             (fills .whl/, ~9 MB, git-ignored)
# Then, with the device tool:   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Figures and logs are printed, and written under $OUT (they come back with the run's files).
# A dry run with .venv: GPU_CHECK_SKIP_WHEELS=1 PYTHON=.venv/bin/python bash bench/gpu_check.sh (CPU: CUDA tests
# skip, the bench runs on the CPU at full size: slow).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-470} # seconds for the whole script (the device call's limit is 600)
PY=${PYTHON:-python3}
LOGS=${OUT:-/tmp/atelier-gpu-check}
mkdir -p "$LOGS"
elapsed() { echo $(($(date +%s) - START)); }
left() { local l=$((BUDGET - $(elapsed))); echo $((l > 30 ? l : 30)); }
stage() { echo; echo "=== [$(elapsed) s] $*"; }

stage "setup: wheels from .whl/ and an import shim for the checkout (no network there)"
SITE=/tmp/atelier-site
rm -rf "$SITE" && mkdir -p "$SITE/atelier"
if [ -z "${GPU_CHECK_SKIP_WHEELS:-}" ] && compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl ||
    { echo "installing .whl/ failed"; exit 1; }
else
  echo "no .whl/ here: relying on installed packages (run bench/gpu_wheels.sh first for a bare GPU machine)"
fi
# atelier.engine / atelier.nodes are the checkout's engine/ and nodes/ (pyproject's package-dir), and its entry
# points (node library, plugins) are declared by a dist-info, as `pip install -e .` would
ln -sfn "$REPO/engine" "$SITE/atelier/engine"
ln -sfn "$REPO/nodes" "$SITE/atelier/nodes"
: >"$SITE/atelier/__init__.py"
mkdir -p "$SITE/atelier-0.1.0.dist-info"
printf 'Metadata-Version: 2.1\nName: atelier\nVersion: 0.1.0\n' >"$SITE/atelier-0.1.0.dist-info/METADATA"
cat >"$SITE/atelier-0.1.0.dist-info/entry_points.txt" <<'EOF'
[atelier.nodes]
atelier = atelier.nodes

[atelier.plugins]
sd = atelier.engine.models.plugin:plugin
server = atelier.engine.server.plugin:plugin
EOF
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export ATELIER_COMPILE_CACHE=${ATELIER_COMPILE_CACHE:-/tmp/atelier-compile-cache}
"$PY" - <<'EOF' || { echo "imports failed: see above"; exit 1; }
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for m in ("diffusers", "transformers", "pydantic", "torchsde", "atelier.engine.runtime", "atelier.nodes"):
    mod = importlib.import_module(m)
    print(m, getattr(mod, "__version__", None) or mod.__file__)
EOF

stage "1. fast-path tests (CUDA fp16 equivalence, CUDA graphs + LoRA, sync guard, VAE NaN fallback)"
timeout $(($(left) < 200 ? $(left) : 200)) "$PY" -m pytest tests/sd/test_sd_fast_path_cuda.py tests/sd/test_sd_fast_path.py \
  -q -s -p no:cacheprovider -p no:logging -o addopts="--import-mode=importlib" 2>&1 | tee "$LOGS/tests.log" |
  grep -E "relative L2|passed|failed|FAILED|skipped|Error|assert" | grep -v "^DEBUG"
echo "tests exit: ${PIPESTATUS[0]}"

stage "2. bench/sampling.py: SD1.5 512², batch 1, euler, fp16; plain / fast / compiled vs diffusers eager"
timeout $(($(left) > 70 ? $(left) - 40 : 30)) "$PY" bench/sampling.py --arch sd15 --batch 1 --sampler euler --steps 20 --repeat 3 \
  --compile reduce-overhead 2>&1 | grep -v -i "warn\|deprecat" | tee "$LOGS/sampling.log"
echo "bench exit: ${PIPESTATUS[0]}"

if [ -f bench/batching.py ] && [ $((BUDGET - $(elapsed))) -gt 30 ]; then
  stage "3. bench/batching.py ($(left) s left)"
  timeout "$(left)" "$PY" bench/batching.py 2>&1 | tee "$LOGS/batching.log"
  echo "batching exit: ${PIPESTATUS[0]}"
else
  stage "3. bench/batching.py: $([ -f bench/batching.py ] && echo "no time left" || echo "not in this checkout")"
fi
stage "done in $(elapsed) s; logs in $LOGS"
