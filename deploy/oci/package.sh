#!/usr/bin/env bash
# Packages the Tollgate filter (.wasm) as an OCI image layout that Istio's WasmPlugin can pull
# (`url: oci://…`), without docker or oras. Prints the manifest digest (`sha256:<hex>`) on stdout;
# that digest is what WasmPlugin's `sha256` field is checked against for oci:// URLs.
#
#   deploy/oci/package.sh [--wasm FILE] [--out DIR] [--ref REGISTRY/REPO:TAG]
#                         [--variant oci|compat] [--wasmplugin-out FILE]
#
#   --wasm            the module (default target/wasm32-wasip1/release/tollgate_filter.wasm; `make wasm`)
#   --out             the OCI image layout dir to write (default target/oci/tollgate-filter; replaced)
#   --ref             the image reference you will push to (default ghcr.io/tollgate-dev/tollgate-filter:<version>);
#                     its tag names the manifest in index.json, and it goes into the WasmPlugin url
#   --variant         oci (default): the Wasm OCI artifact spec Istio supports — config and a
#                       runtime-config layer `application/vnd.module.wasm.config.v1+json`, and the module
#                       as a raw `application/vnd.module.wasm.content.layer.v1+wasm` layer (Istio expects
#                       exactly these two layers);
#                     compat: one `application/vnd.oci.image.layer.v1.tar+gzip` layer holding `plugin.wasm`
#                       (for registries that refuse custom media types; also pulled by Istio)
#   --wasmplugin-out  also write deploy/istio/wasmplugin.yaml with the url and sha256 filled in
#
# The layout is reproducible: the same .wasm and options give the same digest.
# To push it (no Docker needed):
#   oras cp --from-oci-layout target/oci/tollgate-filter:<tag> <registry>/<repo>:<tag>
#   (or: crane push target/oci/tollgate-filter <registry>/<repo>:<tag>;
#        skopeo copy oci:target/oci/tollgate-filter:<tag> docker://<registry>/<repo>:<tag>)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

WASM="$ROOT/target/wasm32-wasip1/release/tollgate_filter.wasm"
OUT="$ROOT/target/oci/tollgate-filter"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"
REF="ghcr.io/tollgate-dev/tollgate-filter:${VERSION:-latest}"
VARIANT="oci"
WASMPLUGIN_OUT=""

usage() { sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --wasm) WASM="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --ref) REF="$2"; shift 2 ;;
    --variant) VARIANT="$2"; shift 2 ;;
    --wasmplugin-out) WASMPLUGIN_OUT="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "package.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -f "$WASM" ] || { echo "package.sh: $WASM not found (run 'make wasm' first)" >&2; exit 1; }

exec python3 - "$WASM" "$OUT" "$REF" "$VARIANT" "$WASMPLUGIN_OUT" "$ROOT/deploy/istio/wasmplugin.yaml" "$VERSION" <<'PY'
import gzip, hashlib, io, json, os, re, shutil, sys, tarfile

wasm_path, out, ref, variant, wasmplugin_out, wasmplugin_tmpl, version = sys.argv[1:8]
if variant not in ("oci", "compat"):
    sys.exit(f"package.sh: --variant must be oci or compat, not {variant!r}")
wasm = open(wasm_path, "rb").read()
if len(wasm) < 8 or wasm[:4] != b"\0asm":
    sys.exit(f"package.sh: {wasm_path} is not a WebAssembly module (bad magic number)")

# Reference: [registry/]repo[:tag]; the tag names the manifest inside the layout.
m = re.fullmatch(r"(?P<repo>[^@]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?", ref)
if not m or "@" in ref:
    sys.exit(f"package.sh: --ref {ref!r} must look like registry/repo[:tag] (no digest)")
repo, tag = m.group("repo"), m.group("tag") or "latest"

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

if os.path.isdir(out):
    if os.listdir(out) and not os.path.exists(os.path.join(out, "oci-layout")):
        sys.exit(f"package.sh: {out} exists and is not an OCI layout; refusing to replace it")
    shutil.rmtree(out)
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)

def blob(data: bytes, media_type: str, annotations=None) -> dict:
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as f:
        f.write(data)
    d = {"mediaType": media_type, "digest": f"sha256:{hexd}", "size": len(data)}
    if annotations:
        d["annotations"] = annotations
    return d

def canon(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

annotations = {
    "org.opencontainers.image.title": "tollgate_filter.wasm",
    "org.opencontainers.image.version": version,
    "org.opencontainers.image.source": "https://github.com/tollgate-dev/tollgate",
    "org.opencontainers.image.licenses": "Apache-2.0",
}
if variant == "oci":
    # Runtime config of the Wasm OCI artifact spec: Envoy, the proxy-wasm ABI the Rust SDK exports,
    # and the root id the filter registers (envoy/tollgate.yaml.tmpl uses root_id: tollgate).
    runtime = canon({"type": "envoy_proxy", "abiVersions": ["proxy_abi_version_0_2_1"],
                     "config": {"root_ids": ["tollgate"]}})
    config = blob(runtime, WASM_CONFIG)
    layers = [
        blob(runtime, WASM_CONFIG, {"org.opencontainers.image.title": "runtime-config.json"}),
        blob(wasm, WASM_LAYER, {"org.opencontainers.image.title": "plugin.wasm"}),
    ]
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers,
                "annotations": annotations}
else:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(wasm), 0o644, 0
        t.addfile(info, io.BytesIO(wasm))
    tar_bytes = raw.getvalue()
    gz = gzip.compress(tar_bytes, compresslevel=9, mtime=0)
    image_config = canon({"architecture": "wasm", "os": "wasip1",
                          "rootfs": {"type": "layers",
                                     "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]},
                          "config": {}})
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": blob(image_config, OCI_CONFIG),
                "layers": [blob(gz, OCI_LAYER)],
                "annotations": dict(annotations, **{"module.wasm.image/variant": "compat"})}

mdesc = blob(canon(manifest), MANIFEST, {"org.opencontainers.image.ref.name": tag})
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "mediaType": INDEX, "manifests": [mdesc]}, f, indent=2)
digest = mdesc["digest"]
hexd = digest.split(":", 1)[1]

if wasmplugin_out:
    text = open(wasmplugin_tmpl).read()
    if "__TOLLGATE_WASM_SHA256__" not in text or "__TOLLGATE_WASM_URL__" not in text:
        sys.exit(f"package.sh: {wasmplugin_tmpl} lacks the __TOLLGATE_WASM_*__ placeholders")
    text = text.replace("__TOLLGATE_WASM_URL__", f"oci://{repo}:{tag}")
    text = text.replace("__TOLLGATE_WASM_SHA256__", hexd)
    with open(wasmplugin_out, "w") as f:
        f.write(text)

err = sys.stderr
print(f"[package] {variant} image layout: {out} (tag {tag}, module {len(wasm)} bytes, "
      f"sha256 {hashlib.sha256(wasm).hexdigest()})", file=err)
print(f"[package] WasmPlugin: url: oci://{repo}:{tag}  sha256: {hexd}", file=err)
if wasmplugin_out:
    print(f"[package] wrote {wasmplugin_out}", file=err)
if shutil.which("oras"):
    print(f"[package] push: oras cp --from-oci-layout {out}:{tag} {repo}:{tag}", file=err)
else:
    print(f"[package] push (with oras): oras cp --from-oci-layout {out}:{tag} {repo}:{tag}"
          f"  (or crane push {out} {repo}:{tag})", file=err)
print(digest)
PY
