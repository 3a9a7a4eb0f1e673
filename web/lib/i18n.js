// The extension's own words. The tables live in locales/<lang>/editor.json; the server sends them
// (GET /gpugeek/texts?lang=..., English merged in for missing keys) and the editor installs them here with
// setTexts. Node names, inputs and settings are translated by the frontend from the other locale files.
const TABLES = {};

export function langOf(locale) {
  return String(locale || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}

export function setTexts(lang, table) {
  TABLES[langOf(lang)] = { ...(table || {}) };
}

export function hasTexts(lang) {
  return !!TABLES[langOf(lang)];
}

// before the tables have arrived a text is its key (harmless, and redrawn once they are here)
export function t(lang, key, vars = {}) {
  const table = TABLES[langOf(lang)] || TABLES.en || {};
  const text = String(table[key] ?? TABLES.en?.[key] ?? key);
  return text.replace(/\{(\w+)\}/g, (_, k) => (vars[k] ?? ""));
}

export function seconds(ms) {
  const s = (ms || 0) / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

// a byte count as people read it (1 decimal in MB, whole KB below)
export function size(n) {
  const b = Number(n) || 0;
  return b >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : `${Math.round(b / 1e3)} KB`;
}

// a price as people read it: at most 4 decimals (sums and scaled estimates carry float noise), "?" unknown
export function money(p) {
  if (p === null || p === undefined || p === "") return "?";
  const n = Number(p);
  if (!Number.isFinite(n)) return String(p);
  return String(n === 0 || Math.abs(n) >= 0.01 ? Number(n.toFixed(4)) : Number(n.toPrecision(2)));
}
