// Run in the cloud, the switch of a whole workflow: its state per workflow (the workflow's `extra`, so it
// travels with the workflow; the server's default where the workflow does not say) and what it adds to a
// queued prompt (extra_data). Pure: no DOM, no ComfyUI.
import { WHOLE_KEY, WHOLE_LANG_KEY, WHOLE_RUNS_KEY, MAX_WHOLE_RUNS } from "./names.js";

export const whole = { fallback: false };

// the switch of a workflow: its own value, else the default (Settings > GPUGeek, GPUGEEK_WHOLE_WORKFLOW)
export function switchOf(extra, fallback = whole.fallback) {
  const v = extra?.[WHOLE_KEY];
  return typeof v === "boolean" ? v : !!fallback;
}

export function setSwitch(extra, on) {
  extra[WHOLE_KEY] = !!on;
  return extra;
}

// a workflow's runs at once when it runs whole in the cloud (its variations, seeds offset by the run): 1 to 8
export function runsOf(extra) {
  const n = Math.floor(Number(extra?.[WHOLE_RUNS_KEY]));
  return Number.isFinite(n) ? Math.max(1, Math.min(MAX_WHOLE_RUNS, n)) : 1;
}

export function setRuns(extra, n) {
  extra[WHOLE_RUNS_KEY] = runsOf({ [WHOLE_RUNS_KEY]: n });
  return extra;
}

// the body of POST /prompt (JSON text) with the switch, the language and, switched on, the runs in its
// extra_data; other requests' bodies unchanged. The switch goes with every prompt: off is said too, so it wins
// over the server's default.
export function withSwitch(body, on, lang, runs = 1) {
  let data;
  try { data = JSON.parse(body); } catch { return body; }
  if (!data || typeof data !== "object" || !data.prompt) return body;
  data.extra_data = { ...(data.extra_data || {}), [WHOLE_KEY]: !!on, [WHOLE_LANG_KEY]: lang };
  if (on && runs > 1) data.extra_data[WHOLE_RUNS_KEY] = runs;
  return JSON.stringify(data);
}

// the request to plan a prompt for the marking: the switch rides as a queued prompt's would
export function planRequest(output, lang, on) {
  return { prompt: output, lang, extra_data: { [WHOLE_KEY]: !!on } };
}
