// node llama_tokenize.mjs MODEL.gguf TEXTFILE
//
// Tokenizes the text of TEXTFILE with the model's own tokenizer in llama.cpp
// (node-llama-cpp's prebuilt CPU libllama, as llama_logits.mjs does; no BOS added) and prints
// the token ids comma-separated on one line. QFORGE_NPM_DIR names the node-llama-cpp install.
// Exit status 0 on success, 1 with a message on stderr otherwise.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function die(msg) {
  process.stderr.write(`llama_tokenize: ${msg}\n`);
  process.exit(1);
}
const [modelPath, textPath] = process.argv.slice(2);
if (!modelPath || !textPath) die("usage: node llama_tokenize.mjs MODEL.gguf TEXTFILE");
if (!fs.existsSync(modelPath)) die(`${modelPath}: no such file`);
if (!fs.existsSync(textPath)) die(`${textPath}: no such file`);
const npmDir = process.env.QFORGE_NPM_DIR;
if (!npmDir) die("QFORGE_NPM_DIR is not set (the directory where node-llama-cpp is installed)");
const entry = [
  path.join(npmDir, "node_modules", "node-llama-cpp", "dist", "index.js"),
  path.join(npmDir, "node-llama-cpp", "dist", "index.js"),
].find((p) => fs.existsSync(p));
if (!entry) die(`QFORGE_NPM_DIR=${npmDir}: node-llama-cpp not found`);

const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);
try {
  const llama = await getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
    logLevel: LlamaLogLevel.error,
  });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0, vocabOnly: true });
  const ids = model.tokenize(fs.readFileSync(textPath, "utf8"));
  if (ids.length === 0) die(`${textPath}: no tokens`);
  process.stdout.write(Array.from(ids).join(",") + "\n");
  await model.dispose();
  await llama.dispose();
} catch (e) {
  die(`${modelPath}: ${e && e.message ? e.message : e}`);
}
