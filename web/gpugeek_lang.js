// The editor's language goes with every prompt it builds: app.graphToPrompt is wrapped so that each
// GPUGeek Cloud Execute node of the API prompt carries inputs.gpugeek_lang ("en" or "zh"); the server's
// on_prompt hook pops it before validation and writes the gateway's progress and errors in that language.
import { app, lang, EXT } from "./gpugeek_common.js";
import { addLanguage } from "./lib/prompt.js";

const WRAPPED = Symbol.for("gpugeek.lang");

// app.queuePrompt calls this.graphToPrompt(...) (frontend 1.58) or app.graphToPrompt(...) (older ones):
// an own property of the app instance serves both
function wrapGraphToPrompt(target) {
  const original = target?.graphToPrompt;
  if (typeof original !== "function" || original[WRAPPED]) return;
  const wrapped = async function (...args) {
    const res = await original.apply(this ?? target, args);
    try { addLanguage(res?.output, lang()); } catch (e) { console.warn("[GPUGeek] adding the language", e); }
    return res;
  };
  wrapped[WRAPPED] = true;
  target.graphToPrompt = wrapped;
}

app.registerExtension({
  name: `${EXT}.lang`,
  init() { wrapGraphToPrompt(app); },
  setup() { wrapGraphToPrompt(app); },  // no-op when init already did it
});
