// Drawing on a node after its own foreground (wrap and call the original handler): one place for the
// marking, the cloud's errors and any other overlay. ``flag`` keeps a node from being wrapped twice.
export function drawAfter(node, flag, draw, what) {
  if (node[flag]) return;
  node[flag] = true;
  const orig = node.onDrawForeground;
  node.onDrawForeground = function (ctx, ...rest) {
    const r = orig?.apply(this, [ctx, ...rest]);
    try { draw(this, ctx); } catch (e) { console.warn(`[GPUGeek] ${what}`, e); }
    return r;
  };
}
