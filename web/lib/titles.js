// What a node's title reads in the editor's language (pure: the editor's side is gpugeek_titles.js).
// Two kinds of titles are the pack's to translate, and only while the user has not renamed the node:
// - a node of an example workflow carries the key of its title (properties.gpugeek_title, a key of
//   locales/<lang>/editor.json): its title follows the editor's language;
// - one of the pack's own nodes still titled with its default name in some language (node_<Class>, from
//   locales/<lang>/nodeDefs.json through the server's texts) takes that name in the editor's language, where a
//   frontend does not do it itself (1.48 keeps the name the node type was registered with).
export const TITLE_KEY = "gpugeek_title";

export function localTitle(node, lang, t, langs) {
  const key = node?.properties?.[TITLE_KEY] || (node?.type || node?.comfyClass ? `node_${node.type || node.comfyClass}` : null);
  if (!key) return null;
  const known = langs.map((l) => t(l, key)).filter((name) => name !== key);
  if (!known.includes(node.title)) return null;        // renamed by the user, or not a title we know
  const want = t(lang, key);
  return want !== key && want !== node.title ? want : null;
}
