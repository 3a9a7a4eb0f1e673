// A preview image as the server sends it (gpugeek.preview: "data:image/jpeg;base64,..."), as bytes for a
// Blob. Pure: no DOM (atob is in browsers and in Node).
export function dataUrlBytes(url) {
  const m = /^data:([\w.+-]+\/[\w.+-]+);base64,([A-Za-z0-9+/=\s]+)$/.exec(String(url || ""));
  if (!m) return null;
  let raw;
  try { raw = atob(m[2].replace(/\s+/g, "")); } catch { return null; }
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return { mime: m[1], bytes };
}
