// Shared by the pack's editor features: the server routes, the editor's language, toasts.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { t, langOf } from "./lib/i18n.js";

export const EXT = "gpugeek";

export function lang() {
  try {
    return langOf(app.extensionManager?.setting?.get("Comfy.Locale") || navigator.language);
  } catch {
    return "en";
  }
}

export const tr = (key, vars) => t(lang(), key, vars);

export async function call(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const res = await api.fetchApi(`/gpugeek/${path}`, opts);
  let data = {};
  try { data = await res.json(); } catch { /* not JSON: reported below */ }
  if (!res.ok && data.ok === undefined) data = { ok: false, message: `HTTP ${res.status}` };
  return data;
}

export function toast(severity, summary, detail) {
  const tm = app.extensionManager?.toast;
  if (tm?.add) tm.add({ severity, summary, detail, life: severity === "error" ? 8000 : 4000 });
  else console.log(`[GPUGeek] ${summary}: ${detail || ""}`);
}

export { app, api };
