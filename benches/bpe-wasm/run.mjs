// Runs the wasm32-wasip1 benchmark command under Node.js (V8) with WASI
// preview1: node run.mjs MODULE.wasm CORPUS_DIR [ARGS...] (the command sees the corpus as
// /corpus, then ARGS: SECONDS_PER_CASE for bpe-wasm, default 1; SIZE SWEEP_KB for core-wasm)
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { WASI } from 'node:wasi';

const [modulePath, corpusDir, ...rest] = process.argv.slice(2);
if (!modulePath || !corpusDir) {
  console.error('usage: node run.mjs MODULE.wasm CORPUS_DIR [ARGS...]');
  process.exit(2);
}
const wasi = new WASI({
  version: 'preview1',
  args: ['bench', '/corpus', ...(rest.length ? rest : ['1'])],
  env: {},
  preopens: { '/corpus': resolve(corpusDir) },
  returnOnExit: true,
});
const bytes = await readFile(modulePath);
const t0 = performance.now();
const module = await WebAssembly.compile(bytes);
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
const t1 = performance.now();
console.log(`module ${modulePath}: ${(await stat(modulePath)).size} bytes; compile+instantiate ${(t1 - t0).toFixed(1)} ms; V8 ${process.versions.v8}, node ${process.version}`);
const initialMem = instance.exports.memory.buffer.byteLength;
const code = wasi.start(instance);
const finalMem = instance.exports.memory.buffer.byteLength;
console.log(`linear memory: ${(initialMem / 1048576).toFixed(1)} MiB at start, ${(finalMem / 1048576).toFixed(1)} MiB at end`);
process.exit(code ?? 0);
