// node llama_logits.mjs MODEL.gguf TOKENS OUT.bin
//
// Loads a GGUF with llama.cpp (node-llama-cpp's prebuilt CPU libllama, as llama_probs.mjs
// does), evaluates the comma-separated token ids TOKENS and writes the next-token logits
// after every token to OUT.bin: float32, little-endian, [positions x n_vocab], token ids in
// order. Prints {"positions": P, "n_vocab": V} as JSON on stdout. QFORGE_NPM_DIR names the
// node-llama-cpp install. Exit status 0 on success, 1 with a message on stderr otherwise.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function die(msg) {
  process.stderr.write(`llama_logits: ${msg}\n`);
  process.exit(1);
}
const [modelPath, tokenArg, outPath] = process.argv.slice(2);
if (!modelPath || !tokenArg || !outPath) die("usage: node llama_logits.mjs MODEL.gguf TOKENS OUT.bin");
if (!fs.existsSync(modelPath)) die(`${modelPath}: no such file`);
const npmDir = process.env.QFORGE_NPM_DIR;
if (!npmDir) die("QFORGE_NPM_DIR is not set (the directory where node-llama-cpp is installed)");
const entry = [
  path.join(npmDir, "node_modules", "node-llama-cpp", "dist", "index.js"),
  path.join(npmDir, "node-llama-cpp", "dist", "index.js"),
].find((p) => fs.existsSync(p));
if (!entry) die(`QFORGE_NPM_DIR=${npmDir}: node-llama-cpp not found`);
const tokens = tokenArg.split(",").map((s) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) die(`TOKENS: expected comma-separated token ids, found '${s}'`);
  return n;
});

const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);
try {
  const llama = await getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
    logLevel: LlamaLogLevel.error,
  });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: Math.max(64, tokens.length + 8), batchSize: 512, threads: 2 });
  const seq = context.getSequence();
  const out = await seq.controlledEvaluate(tokens.map((t) => [t, { generateNext: { logits: true } }]));
  let nVocab = -1;
  const rows = out.map((o, i) => {
    const logits = o?.next?.logits;
    if (!logits) die(`${modelPath}: no logits at position ${i}`);
    const ids = [...logits.keys()].sort((a, b) => a - b);
    if (nVocab < 0) nVocab = ids.length;
    if (ids.length !== nVocab || ids[ids.length - 1] !== nVocab - 1) die(`position ${i}: logits of ${ids.length} tokens`);
    return Float32Array.from(ids, (t) => logits.get(t));
  });
  const buf = Buffer.alloc(rows.length * nVocab * 4);
  rows.forEach((r, i) => Buffer.from(r.buffer).copy(buf, i * nVocab * 4));
  fs.writeFileSync(outPath, buf);
  process.stdout.write(JSON.stringify({ positions: rows.length, n_vocab: nVocab }) + "\n");
  await context.dispose();
  await model.dispose();
  await llama.dispose();
} catch (e) {
  die(`${modelPath}: ${e && e.message ? e.message : e}`);
}
