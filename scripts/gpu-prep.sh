#!/usr/bin/env bash
# Prepare, on a CPU machine, what the GPU check's Node part needs on a bare GPU machine (shared/GPU.md): Node.js
# itself, the Node-API headers (to build the addon there with CMake) and the compiled tests. Then one device
# call runs everything:
#
#   scripts/gpu-prep.sh
#   device run: bash scripts/gpu-check.sh        carry: [".device", ".test-build"]   timeout_s: 420
#
# .device/ (git-ignored): node.xz (the node binary, xz), node-addon-api/, node-api-headers/. .test-build/ is what
# `npm test` compiles (src/, test/); the GPU machine runs its src/api tests on device cuda (scripts/gpu-check-node.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
node "$(node -p "require.resolve('typescript/bin/tsc')")" -p tsconfig.test.json
rm -rf .device
mkdir -p .device
xz -T2 -c "$(command -v node)" > .device/node.xz
cp -r node_modules/node-addon-api node_modules/node-api-headers .device/
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
du -sh .device .test-build
echo 'carry: [".device", ".test-build"]'
