"""The money-and-files invariants (DESIGN.md, "Money"), checked after every test that ran a prompt against the GPUGeek
fake (tests/conftest.py's ``fake`` fixture), after every end-to-end test in a real ComfyUI (tests/real_comfyui.py) and
after every example of the property-based tests (tests/test_invariants.py):

- spent today <= the daily limit + one task's price (what the platform charged: the fake's own record);
- one payment per result: each task the platform took was submitted once for one run of the pack (one journal record
  names it; a submit whose answer was lost is journaled ``unknown``, never sent again);
- a task the platform finished is journaled as finished with every result address it gave, whatever the names; a
  task journaled succeeded did succeed there;
- every file an output node showed is a file of its own (no two nodes, nor two runs, showed one file).

Each check returns sentences (empty: it holds), so that a failure says which task and what."""
from __future__ import annotations

from collections import Counter

SUCCEEDED, FAILED, CANCELLED = 3, 4, 5
WORD = {1: "queued", 2: "running", 3: "succeeded", 4: "failed", 5: "cancelled"}


def _urls(result_url) -> list:
    out = []
    for v in (result_url or {}).values() if isinstance(result_url, dict) else []:
        out.extend([v] if isinstance(v, str) else [u for u in v if isinstance(u, str)] if isinstance(v, list) else [])
    return out


def money(tasks: list, records: list, limit: float | None) -> list:
    """``tasks``: what the platform took, [{prompt_id, status, price, result_url}] (its truth); ``records``: the
    journal's records. Returns what breaks the invariants."""
    bad = []
    named = Counter(str(r.get("prompt_id")) for r in records if r.get("prompt_id"))
    lost_answers = sum(1 for r in records if not r.get("prompt_id") and r.get("status") == "unknown")
    unjournaled = [t for t in tasks if named[str(t["prompt_id"])] == 0]
    if len(unjournaled) > lost_answers:
        bad.append(f"{len(unjournaled)} task(s) the platform took are not in the journal ({lost_answers} submit "
                   f"answer(s) lost): {[t['prompt_id'] for t in unjournaled][:5]}")
    twice = [pid for pid, n in named.items() if n > 1]
    if twice:
        bad.append(f"task(s) journaled for more than one run: {twice[:5]}")
    by_id = {str(r.get("prompt_id")): r for r in records if r.get("prompt_id")}
    for t in tasks:
        rec = by_id.get(str(t["prompt_id"]))
        if rec is None:
            continue
        st = t["status"]
        if st == SUCCEEDED and rec.get("status") in ("cancelled", "failed"):
            bad.append(f"task {t['prompt_id']} succeeded on the platform but the journal says {rec.get('status')}")
        if st == SUCCEEDED and rec.get("status") == "succeeded":
            missing = set(_urls(t.get("result_url"))) - set(_urls(rec.get("result_url")))
            if missing:
                bad.append(f"task {t['prompt_id']} succeeded; the journal lacks {len(missing)} of its result "
                           f"addresses: {sorted(missing)[:3]}")
        if rec.get("status") == "succeeded" and st != SUCCEEDED:
            bad.append(f"task {t['prompt_id']} is journaled succeeded but the platform says {WORD.get(st, st)}")
    if limit:
        charged = [float(t.get("price") or 0) for t in tasks]
        spent = sum(charged)
        if spent > limit + max(charged, default=0) + 1e-9:
            bad.append(f"spent {spent:g} against a daily limit of {limit:g} (one task at most {max(charged):g})")
    return bad


def files(shown: list) -> list:
    """``shown``: every file an output node showed in a test, [(node, {filename, subfolder, type}, digest of its
    bytes when shown)]: no file shown twice with other bytes (one node's result overwrote another's, or a later run's
    an earlier one's)."""
    seen: dict = {}
    bad = []
    for node, e, digest in shown:
        key = (e.get("type"), e.get("subfolder", ""), e.get("filename"))
        if key in seen and seen[key][1] != digest:
            bad.append(f"{key[1] + '/' if key[1] else ''}{key[2]} was shown by node {seen[key][0]}, then by node "
                       f"{node} with other bytes: a result was overwritten")
        seen.setdefault(key, (node, digest))
    return bad


def fake_tasks(fake) -> list:
    """The in-process fake's tasks as the platform's record (what it charged: a finished task's price)."""
    out = []
    for t in list(fake.tasks.values()):
        d = fake.detail(t)
        out.append({"prompt_id": t.prompt_id, "status": d["status"], "result_url": d.get("result_url"),
                    "price": d.get("origin_price") if d["status"] in (SUCCEEDED, FAILED) else 0})
    return out
