// node kl.mjs REFERENCE.gguf TOKENS MODEL.gguf...
//
// Loads each GGUF in llama.cpp (node-llama-cpp's prebuilt CPU libllama, as
// tests/tools/llama_probs.mjs does), evaluates the comma-separated token ids TOKENS and
// takes the next-token distribution after every token. Prints, per MODEL, one line
// "MODEL kl=<mean KL(reference || model) over positions, nats> top1=<share of positions
// whose most likely token agrees>". QFORGE_NPM_DIR names the node-llama-cpp install.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function die(msg) {
  process.stderr.write(`kl: ${msg}\n`);
  process.exit(1);
}
const [ref, tokenArg, ...models] = process.argv.slice(2);
if (!ref || !tokenArg || models.length === 0) die("usage: node kl.mjs REFERENCE.gguf TOKENS MODEL.gguf...");
const npmDir = process.env.QFORGE_NPM_DIR;
if (!npmDir) die("QFORGE_NPM_DIR is not set");
const entry = [
  path.join(npmDir, "node_modules", "node-llama-cpp", "dist", "index.js"),
  path.join(npmDir, "node-llama-cpp", "dist", "index.js"),
].find((p) => fs.existsSync(p));
if (!entry) die(`node-llama-cpp not found under ${npmDir}`);
const tokens = tokenArg.split(",").map(Number);
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);
const llama = await getLlama({
  gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
  logLevel: LlamaLogLevel.error,
});

// Next-token probabilities (Float64Array per position) after each token.
async function distributions(modelPath) {
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: Math.max(64, tokens.length + 8), batchSize: 512, threads: 2 });
  const seq = context.getSequence();
  const out = await seq.controlledEvaluate(tokens.map((t) => [t, { generateNext: { probabilities: true } }]));
  const res = out.map((o) => {
    const probs = o?.next?.probabilities;
    if (!probs) die(`${modelPath}: no distribution`);
    return probs;
  });
  await context.dispose();
  await model.dispose();
  return res;
}

const P = await distributions(ref);
for (const m of models) {
  const Q = await distributions(m);
  let kl = 0, agree = 0;
  for (let i = 0; i < P.length; ++i) {
    let s = 0, bestP = -1, bestQ = -1, argP = -1, argQ = -1;
    for (const [t, p] of P[i]) {
      if (p > bestP) (bestP = p), (argP = t);
      if (p <= 0) continue;
      const q = Math.max(Q[i].get(t) ?? 0, 1e-30);
      s += p * Math.log(p / q);
    }
    for (const [t, q] of Q[i]) if (q > bestQ) (bestQ = q), (argQ = t);
    kl += s;
    agree += argP === argQ ? 1 : 0;
  }
  process.stdout.write(`${path.basename(m)} kl=${(kl / P.length).toExponential(4)} top1=${(agree / P.length).toFixed(4)}\n`);
}
await llama.dispose();
