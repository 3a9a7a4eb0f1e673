import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { requestOptions } from "../lib/request.js";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");

test("every POST to the pack's routes is JSON sent as application/json (the routes refuse any other type)", () => {
  assert.deepEqual(requestOptions(undefined), {});
  for (const body of [{ lang: "zh" }, {}]) {   // {}: cancel and refresh, which have nothing else to say
    const opts = requestOptions(body);
    assert.equal(opts.method, "POST");
    assert.equal(opts.headers["Content-Type"], "application/json");
    assert.deepEqual(JSON.parse(opts.body), body);
  }
});

test("no feature sends a request of its own: every call goes through call() in gpugeek_common.js", () => {
  const own = /\bfetch(Api)?\s*\(|XMLHttpRequest|sendBeacon|method\s*:/;
  for (const name of readdirSync(web).filter((n) => n.endsWith(".js") && n !== "gpugeek_common.js")) {
    assert.doesNotMatch(readFileSync(join(web, name), "utf8"), own, name);
  }
  assert.match(readFileSync(join(web, "gpugeek_common.js"), "utf8"), /api\.fetchApi\(`\/gpugeek\/\$\{path\}`, requestOptions\(body\)\)/);
});
