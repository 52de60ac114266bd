#!/usr/bin/env bash
# Regenerates the gRPC code under services/common/gen from protos/ (make protos).
# Generated imports are rewritten from `handoff.` to the package path they live in.
set -euo pipefail
cd "$(dirname "$0")/.."
out=services/common/gen
rm -rf "$out"
mkdir -p "$out"
protos=$(find protos -name '*.proto' | sort)
python=${PYTHON:-python3}
# The mypy plugins (protoc-gen-mypy*) live beside that interpreter's scripts, e.g. .venv/bin.
PATH="$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
"$python" -m grpc_tools.protoc -I protos \
  --python_out="$out" --mypy_out="$out" \
  --grpc_python_out="$out" --mypy_grpc_out="$out" \
  $protos
find "$out" -type d -exec sh -c 'printf "" > "$1/__init__.py"' _ {} \;
printf '"""Generated protobuf and gRPC code (make protos); do not edit."""\n' > "$out/__init__.py"
find "$out" -name '*.py' -o -name '*.pyi' | xargs sed -i -E \
  -e 's/^from handoff\./from services.common.gen.handoff./' \
  -e 's/^import handoff\.([a-z0-9_.]+)/import services.common.gen.handoff.\1/'
