// Node ids inside subgraphs, as the server's plan names them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { executionId, pathTo, forget } from "../lib/exec_id.js";

test("a node inside nested subgraphs is named by the path of its subgraph nodes", () => {
  const inner = { nodes: [] };
  const outer = { nodes: [] };
  const root = { nodes: [] };
  const n2 = { id: 2, graph: inner };
  inner.nodes.push(n2);
  const n3 = { id: 3, graph: outer };
  outer.nodes.push(n3, { id: 7, graph: outer, subgraph: inner });
  const top = { id: 9, graph: root };
  root.nodes.push(top, { id: 12, graph: root, subgraph: outer });
  assert.equal(executionId(top, root), "9");
  assert.equal(executionId(n3, root), "12:3");
  assert.equal(executionId(n2, root), "12:7:2");
  assert.deepEqual(pathTo(root, inner), [12, 7]);
  // a subgraph not (or no longer) in the graph: its own id
  forget();
  assert.equal(executionId({ id: 5, graph: { nodes: [] } }, root), "5");
});
