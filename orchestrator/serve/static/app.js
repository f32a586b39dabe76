"use strict";
// The live run page: the state once, then one Server-Sent Event per journal event.
const runId = document.body.dataset.run;
const canAct = document.body.dataset.tokens === "yes";
const steps = new Map();
let tNow = 0, target = null, finished = false;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function row(id, kind) {
  if (steps.has(id)) return steps.get(id);
  const tr = el("tr"); tr.id = "step-" + id;
  const st = el("td", "pending"); st.className = "status";
  const bar = el("div", undefined, "gantt"); const span = el("span"); bar.appendChild(span);
  const tl = el("td"); tl.appendChild(bar);
  tr.append(el("td", id), el("td", kind || ""), st, tl);
  document.getElementById("steps").appendChild(tr);
  const s = {tr, st, span, start: null, end: null};
  steps.set(id, s);
  return s;
}

function setStatus(s, status) {
  s.st.textContent = status;
  s.st.className = "status st-" + status;
  s.tr.dataset.status = status;
  s.tr.dataset.seen = ((s.tr.dataset.seen || "") + " " + status).trim();
}

function draw() {
  const span = Math.max(tNow, target || 0, 1);
  for (const s of steps.values()) {
    if (s.start === null) continue;
    const end = s.end === null ? tNow : s.end;
    s.span.style.left = (100 * s.start / span) + "%";
    s.span.style.width = Math.max(0.5, 100 * (end - s.start) / span) + "%";
  }
  document.getElementById("elapsed").textContent = tNow.toFixed(1) + " s";
  if (target !== null) {
    const b = document.getElementById("budget");
    const left = target - tNow;
    b.textContent = left >= 0 ? (left.toFixed(1) + " s of budget left") : ("over by " + (-left).toFixed(1) + " s");
    b.className = left < 0 ? "risk" : "";
  }
}

async function post(action, gate) {
  const token = document.getElementById("token").value;
  const comment = document.getElementById("comment").value || null;
  const r = await fetch("/api/runs/" + encodeURIComponent(runId) + "/" + action, {
    method: "POST",
    headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    body: JSON.stringify({gate: gate || null, comment: comment}),
  });
  const answer = await r.json().catch(() => ({}));
  document.getElementById("said").textContent = r.ok ? (action + ": done") : (action + ": " + (answer.message || answer.error || r.status));
}

function gateCard(id, prompt) {
  if (document.getElementById("gate-" + id)) return;
  const card = el("div", undefined, "gate"); card.id = "gate-" + id;
  card.appendChild(el("b", "gate " + id + " waits: "));
  card.appendChild(el("span", prompt || ""));
  if (canAct) {
    const ok = el("button", "Approve"); ok.type = "button"; ok.id = "approve-" + id;
    ok.addEventListener("click", () => post("approve", id));
    const no = el("button", "Deny"); no.type = "button"; no.id = "deny-" + id;
    no.addEventListener("click", () => post("deny", id));
    card.append(" ", ok, " ", no);
  } else {
    card.appendChild(el("div", "answer with: drx approve " + runId + " " + id));
  }
  document.getElementById("gates").appendChild(card);
}

function onEvent(e) {
  if (typeof e.t === "number") tNow = Math.max(tNow, e.t);
  switch (e.event) {
    case "run_started":
      target = e.rto_target_s === undefined ? null : e.rto_target_s;
      document.getElementById("target").textContent = target === null ? "none" : target + " s";
      document.getElementById("status").textContent = "running";
      for (const s of e.steps || []) row(s.id, s.kind);
      break;
    case "step_started": { const s = row(e.step); s.start = e.t; setStatus(s, "running"); break; }
    case "step_finished": { const s = row(e.step); s.end = e.t; if (s.start === null) s.start = e.t; setStatus(s, e.status); break; }
    case "step_carried": setStatus(row(e.step), "carried"); break;
    case "gate_waiting": gateCard(e.step, e.prompt); break;
    case "gate_answered": { const g = document.getElementById("gate-" + e.step); if (g) g.remove(); break; }
    case "run_finished":
      finished = true;
      document.getElementById("status").textContent = e.status;
      document.getElementById("status").className = "st-" + e.status;
      break;
  }
  draw();
}

if (canAct) {
  document.getElementById("control").hidden = false;
  document.getElementById("abort").addEventListener("click", () => post("abort"));
}
const source = new EventSource("/api/runs/" + encodeURIComponent(runId) + "/events");
source.onmessage = (m) => { onEvent(JSON.parse(m.data)); if (finished) source.close(); };
// the clock runs between events too (the journal's t is the truth when the next one comes)
setInterval(() => { if (!finished && target !== null) { tNow += 0.5; draw(); } }, 500);
