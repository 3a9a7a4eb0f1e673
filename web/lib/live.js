// Live task status by gateway node id, shared by the status and marking features (one module instance).
export const live = new Map();

// The cloud node that runs now, for each gateway, with its step progress: {gateway, value, max}
export function runningCloudNodes() {
  const out = new Map();
  for (const [gw, s] of live) {
    if (s && s.status === 2 && s.cloud_node) out.set(String(s.cloud_node), { gateway: gw, value: s.cloud_value, max: s.cloud_max });
  }
  return out;
}
