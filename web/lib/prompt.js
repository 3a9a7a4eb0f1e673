// The editor's language travels with the queued prompt: an input of each gateway, popped by the server's
// on_prompt hook before validation. Pure: no DOM, no ComfyUI.
import { GATEWAY, LANG_INPUT } from "./names.js";

const gateways = (output) => Object.values(output || {}).filter((n) => n && n.class_type === GATEWAY);

export function addLanguage(output, code) {
  for (const node of gateways(output)) node.inputs = { ...(node.inputs || {}), [LANG_INPUT]: code };
  return output;
}

// the prompt as the server plans it (after its hook has popped the language)
export function withoutLanguage(output) {
  for (const node of gateways(output)) if (node.inputs) delete node.inputs[LANG_INPUT];
  return output;
}

export const hasGateway = (output) => gateways(output).length > 0;
