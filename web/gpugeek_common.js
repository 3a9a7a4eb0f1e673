// Shared by the pack's editor features: the server routes, the editor's language, its texts, toasts.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { t, langOf, setTexts } from "./lib/i18n.js";
import { requestOptions } from "./lib/request.js";

export const EXT = "gpugeek";
export const LANGS = ["en", "zh"];

export function lang() {
  try {
    return langOf(app.extensionManager?.setting?.get("Comfy.Locale") || navigator.language);
  } catch {
    return "en";
  }
}

export const tr = (key, vars) => t(lang(), key, vars);

export async function call(path, body) {
  const res = await api.fetchApi(`/gpugeek/${path}`, requestOptions(body));
  let data = {};
  try { data = await res.json(); } catch { /* not JSON: reported below */ }
  if (!res.ok && data.ok === undefined) data = { ok: false, message: `HTTP ${res.status}` };
  return data;
}

async function loadTexts(code) {
  try {
    const data = await call(`texts?lang=${code}`);
    if (data?.texts && typeof data.texts === "object") setTexts(code, data.texts);
    else console.warn(`[GPUGeek] no editor texts for ${code}`, data?.message || "");
  } catch (e) {
    console.warn(`[GPUGeek] loading the editor texts (${code}) failed`, e);
  }
}

// The editor's texts in both languages, loaded once from the server (locales/<lang>/editor.json). Every
// feature awaits this before it shows text; a server that does not answer in 5 s does not hold up the editor.
let textsLoading = null;
export function textsReady() {
  if (!textsLoading) {
    const all = Promise.all(LANGS.map(loadTexts)).then(() => app.graph?.setDirtyCanvas?.(true, true));
    textsLoading = Promise.race([all, new Promise((done) => setTimeout(done, 5000))]);
  }
  return textsLoading;
}

export function toast(severity, summary, detail) {
  const tm = app.extensionManager?.toast;
  if (tm?.add) tm.add({ severity, summary, detail, life: severity === "error" ? 8000 : 4000 });
  else console.log(`[GPUGeek] ${summary}: ${detail || ""}`);
}

export { app, api };
