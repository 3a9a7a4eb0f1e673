// Settings › GPUGeek: the API key and the Comfy API key (write-only: stored on the server through the pack's route; the browser
// only learns whether a key is set and its last four characters), base URL, default workflow id, daily
// limit, marking; a "test connection" action. Non-secret values are mirrored to the server on change.
import { app, call, tr, toast, lang, textsReady, EXT } from "./gpugeek_common.js";
import { whole } from "./lib/whole.js";

async function saveServer(field, value) {
  const res = await call("config", { [field]: value, lang: lang() });
  if (!res.ok) toast("error", "GPUGeek", res.error || res.message || "");
  // a change of address that made the server forget a credential says so
  for (const note of res.notes || []) toast("warn", "GPUGeek", note);
  return res;
}

export async function testConnection() {
  const res = await call("test", { lang: lang() });
  toast(res.ok ? "success" : "error", tr("test"), res.message || "");
  return res;
}

// A secret's own form item (the API key, a ComfyUI server's token): never stored in the frontend's
// settings, never read back; the server says only whether one is set.
function secretField(field, placeholder, describe, withTest) {
  const wrap = document.createElement("div");
  wrap.style.cssText = "display:flex;gap:6px;align-items:center;flex-wrap:wrap";
  const status = document.createElement("span");
  status.style.cssText = "font-size:12px;opacity:.8";
  const input = document.createElement("input");
  input.type = "password";
  input.autocomplete = "off";
  input.placeholder = placeholder;
  input.className = "p-inputtext";
  input.style.minWidth = "220px";
  const btn = (label, fn) => {
    const b = document.createElement("button");
    b.textContent = label;
    b.className = "p-button p-component p-button-sm";
    b.style.cssText = "background:#3b82f6;color:#fff;border:none;border-radius:6px;padding:4px 10px;cursor:pointer";
    b.onclick = fn;
    return b;
  };
  const show = (cfg) => { status.textContent = describe(cfg || {}); };
  call("config").then(show);
  wrap.append(input,
    btn(tr("save"), async () => {
      const value = input.value.trim();
      input.value = "";
      if (!value) return;
      const res = await saveServer(field, value);
      if (res.ok) { toast("success", tr("saved"), ""); show(res); }
    }),
    btn(tr("clear"), async () => {
      const res = await saveServer(field, "");
      if (res.ok) { toast("info", tr("cleared"), ""); show(res); }
    }));
  if (withTest) wrap.append(btn(tr("test"), testConnection));
  wrap.append(status);
  return wrap;
}

const keyField = () => secretField("api_key", tr("keyPlaceholder"),
  (cfg) => (cfg.key_set ? tr("keySet", { last4: cfg.key_last4, source: tr(`source_${cfg.key_source}`) }) : tr("keyNotSet")), true);
const tokenField = () => secretField("target_token", tr("tokenPlaceholder"),
  (cfg) => (cfg.target_token_set ? tr("tokenSet") : tr("tokenNotSet")), false);
const comfyKeyField = () => secretField("comfy_api_key", tr("comfyKeyPlaceholder"),
  (cfg) => (cfg.comfy_key_set ? tr("comfyKeySet", { last4: cfg.comfy_key_last4, source: tr(`source_${cfg.comfy_key_source}`),
                                                     url: cfg.comfy_key_url || "" }) : tr("comfyKeyNotSet")), false);

function mirrored(field) {
  return (value, old) => {
    if (old === undefined || value === old) return;  // the frontend calls onChange once at load
    saveServer(field, typeof value === "boolean" ? value : value === "" ? "" : String(value));
  };
}

app.registerExtension({
  name: `${EXT}.settings`,
  async setup() { await textsReady(); },
  settings: [
    { id: "GPUGeek.ApiKey", category: ["GPUGeek", "Connection", "API key"], name: "API key",
      tooltip: "Stored on the ComfyUI server (owner-only file); never sent back to the browser.",
      type: () => keyField(), defaultValue: "" },
    { id: "GPUGeek.BaseURL", category: ["GPUGeek", "Connection", "Base URL"], name: "Base URL", type: "text",
      defaultValue: "", tooltip: "Default https://comfyapi.gpugeek.com; remote addresses must use https.",
      onChange: mirrored("base_url") },
    { id: "GPUGeek.WorkflowId", category: ["GPUGeek", "Connection", "Default workflow id"], name: "Default workflow id",
      type: "text", defaultValue: "", tooltip: "Used when a gateway's workflow_id is empty (15 digits).",
      onChange: mirrored("workflow_id") },
    { id: "GPUGeek.Target", category: ["GPUGeek", "Target", "Run on"], name: "Run on", type: "text",
      defaultValue: "", tooltip: "Empty or 'gpugeek': GPUGeek. The URL of a ComfyUI server (http://host:8188), several separated by commas (a pool), or v2:<URL> for the Comfy API v2.",
      onChange: mirrored("target") },
    { id: "GPUGeek.TargetToken", category: ["GPUGeek", "Target", "Server token"], name: "Server token",
      tooltip: "For a ComfyUI server behind a proxy: a bearer token, or user:password. Stored on this ComfyUI server only.",
      type: () => tokenField(), defaultValue: "" },
    { id: "GPUGeek.ComfyApiKey", category: ["GPUGeek", "Target", "Comfy API key"], name: "Comfy API key",
      tooltip: "For a v2: target. Stored on this ComfyUI server only; sent only to the v2 address it was saved for.",
      type: () => comfyKeyField(), defaultValue: "" },
    { id: "GPUGeek.AllowLanHttp", category: ["GPUGeek", "Target", "Allow plain http on the LAN"], name: "Allow plain http on the LAN",
      type: "boolean", defaultValue: false, tooltip: "Send cloud parts to a ComfyUI server on your local network over plain http (unencrypted).",
      onChange: mirrored("allow_lan_http") },
    { id: "GPUGeek.DailyLimit", category: ["GPUGeek", "Spending", "Daily spending limit"], name: "Daily spending limit",
      type: "number", defaultValue: 0, tooltip: "Refuse new tasks that would pass it; 0 means no limit.",
      onChange: mirrored("daily_limit") },
    { id: "GPUGeek.WholeWorkflow", category: ["GPUGeek", "Editor", "Run in the cloud by default"],
      name: "Run in the cloud by default", type: "boolean", defaultValue: false,
      tooltip: "The Run in the cloud switch of a workflow that has not set its own: on, a workflow with no GPUGeek Cloud Execute node runs whole in the cloud.",
      onChange: (value, old) => { if (old !== undefined && value !== old) whole.fallback = !!value; mirrored("whole_workflow")(value, old); } },
    { id: "GPUGeek.Transfer", category: ["GPUGeek", "Connection", "How images come back"], name: "How images come back",
      type: "combo", options: ["lossless", "compact"], defaultValue: "lossless",
      tooltip: "lossless: PNG, every pixel exact. compact: high-quality WebP, several times fewer bytes (faster on a slow connection); masks stay exact. A gateway's transfer can choose otherwise; GPUGEEK_TRANSFER on the server wins over this.",
      onChange: mirrored("transfer") },
    { id: "GPUGeek.SendAhead", category: ["GPUGeek", "Spending", "Queued prompts sent ahead"], name: "Queued prompts sent ahead",
      type: "number", defaultValue: 4, attrs: { min: 0, max: 8, step: 1 },
      tooltip: "How many queued prompts' cloud parts may run in the cloud at once while ComfyUI runs the prompts before them; 0 turns it off (a platform plan that runs one task at a time). GPUGEEK_SEND_AHEAD on the server wins over this.",
      onChange: mirrored("send_ahead") },
    { id: "GPUGeek.ReceiveModels", category: ["GPUGeek", "Server", "Receive models from other machines"],
      name: "Receive models from other machines", type: "boolean", defaultValue: false,
      tooltip: "This ComfyUI takes the models that other machines' GPUGeek gateways send or name by address (.safetensors, .sft, .gguf only), into models/<kind>/gpugeek/. GPUGEEK_RECEIVE_MODELS on the server wins; set GPUGEEK_RECEIVE_TOKEN there to require a token.",
      onChange: mirrored("receive_models") },
    { id: "GPUGeek.MarkCloud", category: ["GPUGeek", "Editor", "Mark cloud nodes"], name: "Mark cloud nodes",
      type: "boolean", defaultValue: true, tooltip: "Mark the nodes that will run in the cloud in the editor." },
  ],
  commands: [
    { id: "GPUGeek.TestConnection", label: "Test GPUGeek connection", icon: "pi pi-bolt", function: testConnection },
  ],
});
