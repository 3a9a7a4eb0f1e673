// The server's plan as the editor applied it last, shared by the features that read it (marking, missing
// models, cloud errors): roles by node id (local | cloud | both), owner gateway, refusals, flagged, groups,
// expected, and what the queue sent ahead (ahead). Listeners run after each change with the roles before it. Pure: no DOM, no ComfyUI.
export const plan = { roles: {}, owner: {}, refusals: {}, flagged: new Set(), groups: {}, expected: {}, ahead: null };
const listeners = new Set();
let planner = null;

export function onPlan(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function setPlan(answer) {
  const before = plan.roles;
  Object.assign(plan, { roles: answer.roles || {}, owner: answer.owner || {}, refusals: answer.refusals || {},
    flagged: new Set((answer.flagged || []).map(String)), groups: answer.groups || {}, expected: answer.expected || {},
    ahead: answer.ahead || null });
  for (const fn of listeners) {
    try { fn(plan, before); } catch (e) { console.warn("[GPUGeek] plan listener", e); }
  }
}

// the marking registers how to plan the graph as it is now (a promise that settles once the answer is applied)
export function setPlanner(fn) { planner = fn; }
export function planNow() { return planner ? planner() : Promise.resolve(); }
