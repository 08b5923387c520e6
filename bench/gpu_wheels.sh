#!/usr/bin/env bash
# Run HERE (a machine with pip access), before bench/gpu_check.sh goes to the GPU machine: downloads the
# Python 3.12 x86-64 wheels Atelier needs that the GPU machine's image lacks (it has torch, transformers,
# accelerate, safetensors, numpy, pillow, networkx, einops, opencv, pytest, ... but no diffusers, pydantic or
# torchsde, and it cannot reach a package registry) into .whl/ (git-ignored via .git/info/exclude; carried
# with `carry: [".whl"]`, about 10 MB). Versions are the ones this checkout's .venv tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
rm -rf .whl && mkdir -p .whl
pkgs=(diffusers pydantic pydantic_core annotated-types typing-inspection typing_extensions torchsde trampoline importlib_metadata)
specs=()
for p in "${pkgs[@]}"; do
  v=$("$PY" -m pip show "$p" 2>/dev/null | awk '/^Version:/{print $2}')
  specs+=("$p${v:+==$v}")
done
echo "wheels: ${specs[*]}"
plat=()
for n in 2_17 2_24 2_27 2_28 2_31 2_34 2_35; do plat+=(--platform "manylinux_${n}_x86_64"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${plat[@]}" --platform any -d .whl "${specs[@]}"
ls -la .whl
du -sh .whl
