// node llama_probs.mjs MODEL.gguf [TOKENS]
//
// Loads a GGUF with llama.cpp (through node-llama-cpp's prebuilt CPU binaries, never
// building or downloading anything), evaluates a fixed token sequence (TOKENS:
// comma-separated ids; default 1,300,301,302,280,270) and prints, as JSON on stdout,
// the next-token logits and probabilities after the last token.
//
// node-llama-cpp is found through QFORGE_NPM_DIR: a directory holding
// node_modules/node-llama-cpp (an `npm install --prefix` directory), or a node_modules
// directory itself. Exit status 0 on success, 1 with a message on stderr otherwise.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function die(msg) {
  process.stderr.write(`llama_probs: ${msg}\n`);
  process.exit(1);
}

const [modelPath, tokenArg] = process.argv.slice(2);
if (!modelPath) die("usage: node llama_probs.mjs MODEL.gguf [TOKENS]");
if (!fs.existsSync(modelPath)) die(`${modelPath}: no such file`);
const npmDir = process.env.QFORGE_NPM_DIR;
if (!npmDir) die("QFORGE_NPM_DIR is not set (the directory where node-llama-cpp is installed)");
const candidates = [
  path.join(npmDir, "node_modules", "node-llama-cpp", "dist", "index.js"),
  path.join(npmDir, "node-llama-cpp", "dist", "index.js"),
];
const entry = candidates.find((p) => fs.existsSync(p));
if (!entry) die(`QFORGE_NPM_DIR=${npmDir}: node-llama-cpp not found (looked for ${candidates.join(", ")})`);

const tokens = (tokenArg ?? "1,300,301,302,280,270").split(",").map((s) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) die(`TOKENS: expected comma-separated token ids, found '${s}'`);
  return n;
});

const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);
try {
  const llama = await getLlama({
    gpu: false,
    build: "never",
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
  });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
  const sequence = context.getSequence();
  const input = tokens.slice(0, -1);
  input.push([tokens[tokens.length - 1], { generateNext: { probabilities: true, logits: true } }]);
  const out = await sequence.controlledEvaluate(input);
  const next = out[out.length - 1]?.next;
  if (!next || !next.probabilities || !next.logits) die("llama.cpp returned no next-token distribution");
  const ids = [...next.logits.keys()].sort((a, b) => a - b);
  const result = {
    model: path.basename(modelPath),
    tokens,
    n_vocab: ids.length,
    top: [...next.probabilities.entries()].slice(0, 5),
    logits: ids.map((t) => next.logits.get(t)),
    probabilities: ids.map((t) => next.probabilities.get(t) ?? 0),
  };
  process.stdout.write(JSON.stringify(result) + "\n");
  await context.dispose();
  await model.dispose();
  await llama.dispose();
} catch (e) {
  die(`${modelPath}: ${e && e.message ? e.message : e}`);
}
