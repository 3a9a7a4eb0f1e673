// A node's id as the server's plan names it: inside a subgraph, the ids of the subgraph nodes that hold it and
// its own, joined by ":" ("12:3", "12:7:2"), as the API prompt names it. Pure: graphs in, no DOM.
const nodesOf = (graph) => graph?._nodes || graph?.nodes || [];

// the path of subgraph node ids from `root` to `target` (a subgraph), or null; the first instance when a
// subgraph is used twice
export function pathTo(root, target, prefix = [], seen = new Set()) {
  for (const n of nodesOf(root)) {
    const sub = n.subgraph;
    if (!sub || seen.has(sub)) continue;
    if (sub === target) return [...prefix, n.id];
    seen.add(sub);
    const deeper = pathTo(sub, target, [...prefix, n.id], seen);
    if (deeper) return deeper;
  }
  return null;
}

// paths are cached per subgraph until forget() (the marking forgets them when it applies a new plan)
let paths = new WeakMap();
export function forget() { paths = new WeakMap(); }

export function executionId(node, root) {
  const graph = node?.graph;
  if (!graph || !root || graph === root) return String(node?.id);
  let path = paths.get(graph);
  if (path === undefined) { path = pathTo(root, graph); paths.set(graph, path); }
  return path ? [...path, node.id].join(":") : String(node.id);
}
