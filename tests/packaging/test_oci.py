"""deploy/oci/package.sh: the OCI image layout Istio pulls, on a fake module."""
import gzip
import hashlib
import io
import json
import pathlib
import subprocess
import tarfile
import tempfile
import unittest

from common import ROOT, validate_manifest, yaml_docs

SCRIPT = ROOT / "deploy" / "oci" / "package.sh"
FAKE_WASM = b"\0asm\x01\0\0\0" + bytes(range(256)) * 40


def package(tmp, *args, wasm=FAKE_WASM):
    src = pathlib.Path(tmp, "fake.wasm")
    src.write_bytes(wasm)
    out = pathlib.Path(tmp, "layout")
    r = subprocess.run(["bash", str(SCRIPT), "--wasm", str(src), "--out", str(out), *args],
                       capture_output=True, text=True, timeout=60)
    return r, out


def read_blob(layout, digest):
    algo, hexd = digest.split(":")
    data = (layout / "blobs" / algo / hexd).read_bytes()
    return data


class OciLayoutTest(unittest.TestCase):
    def check_layout(self, layout, printed):
        self.assertEqual({"imageLayoutVersion": "1.0.0"}, json.loads((layout / "oci-layout").read_text()))
        index = json.loads((layout / "index.json").read_text())
        self.assertEqual(2, index["schemaVersion"])
        self.assertEqual("application/vnd.oci.image.index.v1+json", index["mediaType"])
        self.assertEqual(1, len(index["manifests"]))
        mdesc = index["manifests"][0]
        self.assertEqual("application/vnd.oci.image.manifest.v1+json", mdesc["mediaType"])
        self.assertEqual(printed, mdesc["digest"], "printed digest is the manifest's")
        # Every blob is content-addressed, and nothing unreferenced is left in the layout.
        for blob in (layout / "blobs" / "sha256").iterdir():
            self.assertEqual(blob.name, hashlib.sha256(blob.read_bytes()).hexdigest())
        manifest_bytes = read_blob(layout, mdesc["digest"])
        self.assertEqual(mdesc["size"], len(manifest_bytes))
        manifest = json.loads(manifest_bytes)
        self.assertEqual(2, manifest["schemaVersion"])
        self.assertEqual(mdesc["mediaType"], manifest["mediaType"])
        referenced = {mdesc["digest"], manifest["config"]["digest"]} | {l["digest"] for l in manifest["layers"]}
        on_disk = {"sha256:" + p.name for p in (layout / "blobs" / "sha256").iterdir()}
        self.assertEqual(referenced, on_disk)
        for desc in [manifest["config"], *manifest["layers"]]:
            self.assertEqual(desc["size"], len(read_blob(layout, desc["digest"])), desc)
        return mdesc, manifest

    def test_oci_variant(self):
        with tempfile.TemporaryDirectory() as tmp:
            r, layout = package(tmp, "--ref", "registry.example.com/team/tollgate-filter:v1.2.3")
            self.assertEqual(0, r.returncode, r.stderr)
            digest = r.stdout.strip()
            self.assertRegex(digest, r"^sha256:[0-9a-f]{64}$")
            mdesc, manifest = self.check_layout(layout, digest)
            self.assertEqual("v1.2.3", mdesc["annotations"]["org.opencontainers.image.ref.name"])
            # Wasm OCI artifact spec, as Istio's fetcher reads it: a config of the wasm config type
            # and exactly two layers, one of which is the raw module.
            self.assertEqual("application/vnd.module.wasm.config.v1+json", manifest["config"]["mediaType"])
            self.assertEqual(2, len(manifest["layers"]))
            types = [l["mediaType"] for l in manifest["layers"]]
            self.assertEqual(["application/vnd.module.wasm.config.v1+json",
                              "application/vnd.module.wasm.content.layer.v1+wasm"], types)
            wasm_layer = manifest["layers"][1]
            self.assertEqual(FAKE_WASM, read_blob(layout, wasm_layer["digest"]))
            self.assertEqual("sha256:" + hashlib.sha256(FAKE_WASM).hexdigest(), wasm_layer["digest"])
            runtime = json.loads(read_blob(layout, manifest["config"]["digest"]))
            self.assertEqual("envoy_proxy", runtime["type"])
            self.assertEqual(["tollgate"], runtime["config"]["root_ids"])  # root_id in envoy/tollgate.yaml.tmpl
            self.assertIn("oras cp --from-oci-layout", r.stderr)

    def test_reproducible(self):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            ra, _ = package(a, "--ref", "r.example/x:1")
            rb, _ = package(b, "--ref", "r.example/x:2")  # the tag lives in the index, not the manifest
            self.assertEqual(0, ra.returncode, ra.stderr)
            self.assertEqual(ra.stdout, rb.stdout)
            rc, _ = package(a, wasm=FAKE_WASM + b"\0")
            self.assertNotEqual(ra.stdout, rc.stdout)

    def test_compat_variant(self):
        with tempfile.TemporaryDirectory() as tmp:
            r, layout = package(tmp, "--variant", "compat")
            self.assertEqual(0, r.returncode, r.stderr)
            _, manifest = self.check_layout(layout, r.stdout.strip())
            self.assertEqual("compat", manifest["annotations"]["module.wasm.image/variant"])
            self.assertEqual("application/vnd.oci.image.config.v1+json", manifest["config"]["mediaType"])
            self.assertEqual(["application/vnd.oci.image.layer.v1.tar+gzip"], [l["mediaType"] for l in manifest["layers"]])
            layer = read_blob(layout, manifest["layers"][0]["digest"])
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as t:
                self.assertEqual(["plugin.wasm"], t.getnames())
                self.assertEqual(FAKE_WASM, t.extractfile("plugin.wasm").read())
            config = json.loads(read_blob(layout, manifest["config"]["digest"]))
            self.assertEqual(["sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()], config["rootfs"]["diff_ids"])

    def test_fills_wasmplugin(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp, "wasmplugin.yaml")
            r, _ = package(tmp, "--ref", "registry.example.com/tollgate/filter:v1", "--wasmplugin-out", str(out))
            self.assertEqual(0, r.returncode, r.stderr)
            docs = yaml_docs(out.read_text())
            plugin = next(d for d in docs if d["kind"] == "WasmPlugin")
            self.assertEqual("oci://registry.example.com/tollgate/filter:v1", plugin["spec"]["url"])
            self.assertEqual(r.stdout.strip().split(":")[1], plugin["spec"]["sha256"])
            self.assertNotIn("__TOLLGATE", out.read_text())
            for doc in docs:
                validate_manifest(self, doc)

    def test_refuses_non_wasm(self):
        with tempfile.TemporaryDirectory() as tmp:
            r, layout = package(tmp, wasm=b"not a module")
            self.assertNotEqual(0, r.returncode)
            self.assertIn("not a WebAssembly module", r.stderr)
            self.assertFalse(layout.exists())
            r, _ = package(tmp, "--variant", "docker")
            self.assertNotEqual(0, r.returncode)


if __name__ == "__main__":
    unittest.main()
