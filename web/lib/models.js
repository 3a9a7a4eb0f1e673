// Which of the frontend's missing-model entries concern this machine. A node that runs only in the cloud
// (server plan role "cloud") takes its model from the cloud's lists, so a model missing here is not missing
// for it; a node that runs here too ("both") or only here keeps its warning. Pure: no DOM, no ComfyUI.

// an entry of the frontend's missing-model store: {nodeId, sourceExecutionId?, widgetName, name, ...};
// a widget promoted out of a subgraph names the inner node it comes from in sourceExecutionId
const entryNode = (c) => String(c?.sourceExecutionId ?? c?.nodeId ?? "");

export const isCloudOnly = (roles, id) => id != null && (roles || {})[String(id)] === "cloud";

export function keepLocal(candidates, roles) {
  if (!Array.isArray(candidates)) return candidates;
  return candidates.filter((c) => !isCloudOnly(roles, entryNode(c)));
}

// the entries to take out of the store now (their node runs in the cloud)
export function cloudEntries(candidates, roles) {
  return (candidates || []).filter((c) => isCloudOnly(roles, entryNode(c)));
}

// nodes that ran only in the cloud before and no longer do: their models must be checked here again
export function leftCloud(before, after) {
  return Object.keys(before || {}).filter((id) => isCloudOnly(before, id) && !isCloudOnly(after, id));
}
