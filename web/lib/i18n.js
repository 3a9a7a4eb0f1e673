// The extension's own words, in English and Chinese. Node names, inputs and settings are translated by
// the frontend from locales/<lang>/*.json; these are the texts the extension draws or shows itself.
export const STRINGS = {
  en: {
    cloud: "cloud", both: "cloud + here", refused: "cannot send", refusedHere: "cannot take this from the cloud", cloudOf: "☁ GPUGeek #{g}",
    expected: "expected ~{price}, ~{time} ({n} earlier runs)", expectedNone: "no earlier runs of this cloud part",
    expected_shape: "expected ~{price}, ~{time} (from {n} runs of this graph with other seeds or texts)",
    expected_workflow: "expected ~{price}, ~{time} (from {n} runs of other graphs on this workflow)",
    queued: "queued: position {pos} of {size}", running: "running {t}", done: "done in {t}, price {price}",
    failed: "failed: {msg}", cancelled: "cancelled", uploading: "uploading inputs…", local: "runs here (local)",
    taskId: "task {id}", copyTask: "Copy GPUGeek task id", copied: "Task id copied",
    tasksTitle: "GPUGeek tasks", tasksEmpty: "No tasks yet: queue a workflow with a GPUGeek Cloud Execute node.",
    load: "Load results", cancel: "Cancel", refresh: "Refresh", spentToday: "today: {price}",
    keySet: "API key set (…{last4}, from {source})", keyNotSet: "No API key set", keyPlaceholder: "paste your GPUGeek API key",
    save: "Save", clear: "Forget", test: "Test connection", saved: "Saved", cleared: "Removed",
    keyTitle: "GPUGeek API key", settingsCat: "GPUGeek", openTasks: "Show GPUGeek tasks",
    tokenPlaceholder: "token or user:password", tokenSet: "server token set", tokenNotSet: "no server token",
    source_environment: "environment variable", source_saved: "saved here", source_none: "none",
    status_submitting: "submitting", status_queued: "queued", status_running: "running", status_succeeded: "succeeded",
    status_failed: "failed", status_cancelling: "cancelling…", status_cancelled: "cancelled", status_unknown: "unknown: a paid task may exist",
  },
  zh: {
    cloud: "云端", both: "云端 + 本机", refused: "无法发送", refusedHere: "无法接收云端数据", cloudOf: "☁ GPUGeek #{g}",
    expected: "预计约 {price}，约 {time}（之前 {n} 次运行）", expectedNone: "此云端部分尚无运行记录",
    expected_shape: "预计约 {price}，约 {time}（来自此图使用其他种子或文本的 {n} 次运行）",
    expected_workflow: "预计约 {price}，约 {time}（来自此工作流上其他图的 {n} 次运行）",
    queued: "排队中：第 {pos} 位，共 {size} 个", running: "运行中 {t}", done: "完成，用时 {t}，费用 {price}",
    failed: "失败：{msg}", cancelled: "已取消", uploading: "正在上传输入…", local: "在本机运行",
    taskId: "任务 {id}", copyTask: "复制 GPUGeek 任务 ID", copied: "任务 ID 已复制",
    tasksTitle: "GPUGeek 任务", tasksEmpty: "暂无任务：运行包含 GPUGeek 云端执行节点的工作流后会显示在这里。",
    load: "加载结果", cancel: "取消", refresh: "刷新", spentToday: "今日：{price}",
    keySet: "已设置 API 密钥（…{last4}，来源：{source}）", keyNotSet: "尚未设置 API 密钥", keyPlaceholder: "粘贴你的 GPUGeek API 密钥",
    save: "保存", clear: "删除", test: "测试连接", saved: "已保存", cleared: "已删除",
    keyTitle: "GPUGeek API 密钥", settingsCat: "GPUGeek", openTasks: "显示 GPUGeek 任务",
    tokenPlaceholder: "令牌或 用户名:密码", tokenSet: "已设置服务器令牌", tokenNotSet: "未设置服务器令牌",
    source_environment: "环境变量", source_saved: "已保存在本机", source_none: "无",
    status_submitting: "提交中", status_queued: "排队中", status_running: "运行中", status_succeeded: "成功",
    status_failed: "失败", status_cancelling: "正在取消…", status_cancelled: "已取消", status_unknown: "未知：可能存在已付费任务",
  },
};

export function langOf(locale) {
  return String(locale || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}

export function t(lang, key, vars = {}) {
  const table = STRINGS[langOf(lang)] || STRINGS.en;
  const text = table[key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, k) => (vars[k] ?? ""));
}

export function seconds(ms) {
  const s = (ms || 0) / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}
