// How the tasks tab shows a task's error (pure): the cloud's refusal in the editor's language (error_text,
// from GET /gpugeek/tasks?lang=) with the raw answer kept apart, to be shown collapsed. A raw answer that
// is JSON is never the only text: a plain sentence (`fallback`) stands in for it.
const looksRaw = (s) => /^\s*[[{]/.test(s) || /"\w+"\s*:/.test(s);

export function errorView(task, fallback) {
  const raw = task?.error == null || task.error === "" ? null : String(task.error);
  const text = task?.error_text ? String(task.error_text) : null;
  if (text) return { text, raw: raw && raw !== text ? raw : null };
  if (!raw) return { text: null, raw: null };
  return looksRaw(raw) ? { text: fallback, raw } : { text: raw, raw: null };
}
