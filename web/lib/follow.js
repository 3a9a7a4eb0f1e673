// Follows a changing thing at a steady, bounded cost: a cheap version check every pollMs, a debounce of
// debounceMs after a change, never two runs at once (a change seen during a run runs again right after
// it), and every sweepMs a run whatever the version says (for edits that do not move it); now() runs at once
// (after the run under way, if any) and settles when the thing as it is now has been run. Pure timers: no DOM.
export function follower({ version, run, pollMs = 100, debounceMs = 60, sweepMs = 2000, warn = console.warn }) {
  const s = { seen: undefined, timer: null, busy: false, again: false, intervals: [], waiters: [] };

  async function go() {
    s.timer = null;
    if (s.busy) { s.again = true; return; }
    s.busy = true;
    try { await run(); } catch (e) { warn("[GPUGeek] follow", e); } finally { s.busy = false; }
    if (s.again) { s.again = false; go(); return; }
    for (const done of s.waiters.splice(0)) done();
  }

  function schedule() {
    clearTimeout(s.timer);
    s.timer = setTimeout(go, debounceMs);
  }

  function check(force = false) {
    let v;
    try { v = version(); } catch { v = undefined; }
    if (!force && v === s.seen) return false;
    s.seen = v;
    schedule();
    return true;
  }

  function now() {
    clearTimeout(s.timer);
    s.timer = null;
    try { s.seen = version(); } catch { s.seen = undefined; }
    return new Promise((done) => {
      s.waiters.push(done);
      go();
    });
  }

  return {
    check,
    now,
    start() {
      if (s.intervals.length) return;
      s.intervals = [setInterval(check, pollMs), setInterval(() => check(true), sweepMs)];
      check(true);
    },
    stop() {
      s.intervals.forEach(clearInterval);
      s.intervals = [];
      clearTimeout(s.timer);
    },
    get busy() { return s.busy; },
  };
}
