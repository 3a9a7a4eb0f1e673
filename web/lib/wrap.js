// Wraps a sentence into lines no wider than `width` as measured by `measure` (a canvas context's
// measureText(...).width in the editor). Words break at spaces; Chinese and Japanese text, which has none,
// breaks between characters; a word wider than a line is cut. At most `max` lines, the last one ending in
// "…" when the text was longer. Pure: no DOM.
const UNITS = /[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]|[^\s\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]+|\s+/g;
const ELLIPSIS = "\u2026";

function cut(unit, width, measure) {
  // a single unit wider than the line, in pieces that fit
  const pieces = [];
  let piece = "";
  for (const ch of unit) {
    if (piece && measure(piece + ch) > width) { pieces.push(piece); piece = ""; }
    piece += ch;
  }
  if (piece) pieces.push(piece);
  return pieces;
}

function shorten(line, width, measure) {
  let s = line;
  while (s && measure(s + ELLIPSIS) > width) s = s.slice(0, -1);
  return s.trimEnd() + ELLIPSIS;
}

export function wrapText(text, width, measure, max = 8) {
  const lines = [];
  let line = "";
  let space = false;
  for (const unit of String(text ?? "").match(UNITS) || []) {
    if (/^\s+$/.test(unit)) { space = line !== ""; continue; }
    const next = line + (space ? " " : "") + unit;
    space = false;
    if (measure(next) <= width) { line = next; continue; }
    if (line) lines.push(line);
    const pieces = measure(unit) > width ? cut(unit, width, measure) : [unit];
    lines.push(...pieces.slice(0, -1));
    line = pieces[pieces.length - 1];
  }
  if (line) lines.push(line);
  if (lines.length <= max) return lines;
  const kept = lines.slice(0, max);
  kept[max - 1] = shorten(kept[max - 1], width, measure);
  return kept;
}
