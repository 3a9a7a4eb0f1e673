// The editor's texts as the server sends them: read from locales/<lang>/editor.json and installed.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { setTexts } from "../lib/i18n.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const LANGS = ["en", "zh"];

export function editorTexts(lang) {
  return JSON.parse(readFileSync(join(root, "locales", lang, "editor.json"), "utf8"));
}

export function installTexts() {
  for (const lang of LANGS) setTexts(lang, editorTexts(lang));
}
