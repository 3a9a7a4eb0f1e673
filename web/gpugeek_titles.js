// Titles in the editor's language: an example workflow's titles and the pack's default node names follow the
// editor's language when a node is created or a workflow is loaded, and again when the user switches language
// (a renamed node keeps its name). The rule is lib/titles.js.
import { app, lang, LANGS, textsReady, EXT } from "./gpugeek_common.js";
import { t } from "./lib/i18n.js";
import { localTitle } from "./lib/titles.js";

// how often the editor's language is compared with the one the titles were written in
const LANGUAGE_CHECK_MS = 1000;

function retitle(node) {
  const want = localTitle(node, lang(), t, LANGS);
  if (want) {
    node.title = want;
    node.setDirtyCanvas?.(true, true);
  }
}

function retitleGraph(graph) {
  for (const node of graph?._nodes || []) {
    retitle(node);
    if (node.subgraph) retitleGraph(node.subgraph);   // the nodes inside a subgraph too
  }
}

app.registerExtension({
  name: `${EXT}.titles`,
  nodeCreated(node) { textsReady().then(() => retitle(node)); },
  loadedGraphNode(node) { textsReady().then(() => retitle(node)); },
  async setup() {
    await textsReady();
    let shown = lang();
    retitleGraph(app.graph);
    setInterval(() => {
      if (lang() === shown) return;
      shown = lang();
      retitleGraph(app.graph);
    }, LANGUAGE_CHECK_MS);
  },
});
