#!/usr/bin/env bash
# Fails when regenerating the gRPC code changes what is committed (CI drift check).
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/gen_protos.sh >/dev/null
if ! git diff --quiet --exit-code -- services/common/gen || \
   [ -n "$(git ls-files --others --exclude-standard services/common/gen)" ]; then
  echo "generated gRPC code is stale: run 'make protos' and commit the result" >&2
  git status --short services/common/gen >&2
  exit 1
fi
echo "generated gRPC code is up to date"
