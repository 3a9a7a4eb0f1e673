// Live previews of a cloud sampler on the user's node: while a ComfyUI-server target samples, the server sends
// gpugeek.preview = {gateway, node, task_id, image: "data:image/jpeg;base64,..."}. The preview goes the way
// ComfyUI's own sampler previews go: as the api's "b_preview_with_metadata" event for that node (frontends
// 1.27 and 1.58 both put it into their node output store, app.nodePreviewImages, and draw it on the node;
// 1.58 also shows it as the job's preview in the queue). ComfyUI clears a node's previews when that node runs
// again, which a cloud node never does here, so they are cleared when the run ends or a new one starts.
import { app, api, EXT } from "./gpugeek_common.js";
import { dataUrlBytes } from "./lib/preview.js";

const OUTPUT_STORE = "nodeOutput";
const IMAGE_WIDGET = "$$canvas-image-preview";
// node ids that show a cloud preview now, and the local prompt that runs
const shown = new Set();
const state = { prompt: null, count: 0 };
// test-only: the end-to-end tests read what was shown from here (tests/test_e2e_comfyui.py)
globalThis.__gpugeekPreviews = { shown, state };

function outputStore() {
  try {
    return app.extensionManager?._p?._s?.get?.(OUTPUT_STORE) || null;
  } catch {
    return null;
  }
}

function show(detail) {
  const img = dataUrlBytes(detail?.image);
  const id = detail?.node == null ? "" : String(detail.node);
  if (!img || !id || !app.graph?.getNodeById?.(id)) return;
  const blob = new Blob([img.bytes], { type: img.mime });
  shown.add(id);
  state.count += 1;
  api.dispatchCustomEvent("b_preview_with_metadata", {
    blob, nodeId: id, displayNodeId: id, parentNodeId: id, realNodeId: id,
    promptId: state.prompt, jobId: state.prompt,
  });
  app.graph.setDirtyCanvas?.(true, true);
}

// frontend 1.27: the store reads app.nodePreviewImages (its own revoke waits 400 ms, and a node drawn in
// that time would take the image back)
function dropLegacy(id) {
  for (const url of app.nodePreviewImages?.[id] || []) URL.revokeObjectURL(url);
  if (app.nodePreviewImages) delete app.nodePreviewImages[id];
}

// the node stops drawing the image it made from the preview: as the frontends do when a node's images go,
// its image widget is removed (1.27 would draw an image index that no longer exists)
function dropImage(node) {
  const i = node.widgets?.findIndex((w) => w.name === IMAGE_WIDGET) ?? -1;
  if (i > -1) {
    node.widgets[i].onRemove?.();
    node.widgets.splice(i, 1);
  }
  node.imgs = undefined;
  node.imageIndex = null;
  node.preview = undefined;
}

// A preview's image loads asynchronously: the last one can finish loading (and the frontend put it on the node)
// just after the run ended and the previews were cleared. The nodes just cleared are looked at again this long
// after (a node that has shown a new preview since is left alone).
const SETTLE_MS = [250, 1000];

function drop(ids) {
  const s = outputStore();
  for (const id of ids) {
    if (shown.has(id)) continue;
    if (s?.revokePreviewsByLocatorId) s.revokePreviewsByLocatorId(id);   // 1.58: at once (a root node's locator is its id)
    else dropLegacy(id);
    const node = app.graph?.getNodeById?.(id);
    if (node) dropImage(node);
  }
  app.graph?.setDirtyCanvas?.(true, true);
}

function clearAll() {
  if (!shown.size) return;
  const ids = [...shown];
  shown.clear();
  drop(ids);
  for (const ms of SETTLE_MS) setTimeout(() => drop(ids), ms);
}

app.registerExtension({
  name: `${EXT}.preview`,
  setup() {
    api.addEventListener("gpugeek.preview", ({ detail }) => show(detail));
    api.addEventListener("execution_start", ({ detail }) => {
      clearAll();
      state.prompt = detail?.prompt_id ?? null;
    });
    for (const ev of ["execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(ev, () => clearAll());
    }
    // a gateway's task ended (a prompt may run other nodes after it)
    api.addEventListener("gpugeek.status", ({ detail }) => { if ([3, 4, 5].includes(detail?.status)) clearAll(); });
  },
});
