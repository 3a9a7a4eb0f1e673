// The options of every request the editor sends to the pack's routes: a GET, or a POST whose body is JSON sent as
// application/json (the server refuses any other type with 415, so that a page on another site cannot post to it
// without a preflight). Pure: no DOM, no fetch.
export function requestOptions(body) {
  if (body === undefined) return {};
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}
