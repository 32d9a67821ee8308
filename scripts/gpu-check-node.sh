#!/usr/bin/env bash
# The Node part of the GPU check (called by scripts/gpu-check.sh when .device/ was carried; see scripts/gpu-prep.sh).
# Builds the addon with the CUDA backend with plain CMake (no npm there), then:
#   1. test/cuda.test.js: the device tests (to() round trips, a training step on the GPU against the CPU, mixed
#      devices refused, memory accounting, Module.to, loadStateDict across devices);
#   2. every src/api test file again with MODALAB_DEVICE=cuda (every tensor the tests make lives on the GPU), as
#      `npm test` does on a machine with a GPU.
# Expects `node` on PATH, CUDA_ARCHS and JOBS from gpu-check.sh.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${ADDON_BUILD_DIR:-build-gpu-addon}
START=$(date +%s)
if [ ! -d .device/node-api-headers ] || [ ! -d .test-build/src/api ]; then
  echo "gpu-check-node: .device/node-api-headers or .test-build is missing: run scripts/gpu-prep.sh and carry both"
  exit 2
fi
echo "=== addon build (CUDA ${CUDA_ARCHS:-90-real}, ${JOBS:-$(nproc)} jobs)"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMODALAB_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90-real}" -DCMAKE_JS_VERSION=gpu-check \
  -DCMAKE_JS_INC="$ROOT/.device/node-api-headers/include" -DNODE_ADDON_API_DIR="$ROOT/.device/node-addon-api" \
  > "$BUILD.configure.log" 2>&1 || { tail -30 "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" --target modalab -j "${JOBS:-$(nproc)}" > "$BUILD.build.log" 2>&1 || { tail -40 "$BUILD.build.log"; exit 1; }
export MODALAB_ADDON="$ROOT/$BUILD/modalab.node"
echo "addon built in $(( $(date +%s) - START )) s: $MODALAB_ADDON"
node -e "const ml = require('./.test-build/src/index.js'); console.log(JSON.stringify(ml.cuda.info()))"

rc=0
echo "=== device tests (test/cuda.test.js)"
timeout "${NODE_TEST_TIMEOUT:-120}" node --test .test-build/test/cuda.test.js || rc=1
echo "=== src/api tests with MODALAB_DEVICE=cuda"
mapfile -t FILES < <(find .test-build/src/api -name '*.test.js' | sort)
MODALAB_DEVICE=cuda timeout "${NODE_TEST_TIMEOUT:-240}" node --test --test-concurrency=4 "${FILES[@]}" || rc=1
echo "gpu-check-node: rc $rc after $(( $(date +%s) - START )) s"
exit $rc
