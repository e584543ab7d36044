// The per-pod live page: the event history (live), the state panel re-rendered by the server
// after each event, time travel, the agents' streaming output and the workspace browser.
"use strict";

(() => {
  const pod = document.getElementById("pod");
  const taskId = pod.dataset.task;
  const taskTypes = pod.dataset.taskEventTypes.split(" ").filter(Boolean);
  const runTypes = pod.dataset.runEventTypes.split(" ").filter(Boolean);
  const state = document.getElementById("state");
  const history = document.getElementById("history");
  const range = document.getElementById("travel-range");
  const number = document.getElementById("travel-number");
  const liveButton = document.getElementById("travel-live");
  let head = Number(pod.dataset.version);
  let travel = null; // the version shown, or null while live

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  };
  const time = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "");

  // -- the event history ---------------------------------------------------------------------

  function showEvent(event) {
    const item = el("li", { "data-version": event.version },
      el("button", { type: "button", class: "v link", title: "show this version",
                     text: "v" + event.version }),
      " ", el("b", { class: "event-type", text: event.type }),
      " ", el("span", { class: "muted", text: `${event.actor} · ${time(event.timestamp)}` }));
    const data = JSON.stringify(event.data, null, 2);
    if (data && data !== "{}") {
      item.append(el("details", {}, el("summary", { text: "data" }), el("pre", { text: data })));
    }
    history.append(item);
    document.getElementById("history-count").textContent = `(${history.children.length})`;
    if (event.version > head) {
      head = event.version;
      range.max = number.max = head;
      if (travel === null) range.value = number.value = head;
    }
    const panel = document.getElementById("state-panel");
    if (!panel || event.version > Number(panel.dataset.version)) refreshState();
  }

  ipa.follow({
    stream: `/api/tasks/${taskId}/stream`,
    events: `/api/tasks/${taskId}/events`,
    types: taskTypes,
    onEvent: showEvent,
    onState: (s) => ipa.live(s, { reconnecting: "reconnecting…", closed: "not live" }[s]),
  });

  // -- the state panel -----------------------------------------------------------------------

  let fetching = false;
  let again = false;
  async function refreshState() {
    if (travel !== null) return;
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      do {
        again = false;
        const html = await ipa.fragmentAt(`/pods/${taskId}/state`, head);
        if (travel === null) {
          ipa.swap(state, html);
          followRuns();
        }
      } while (again);
    } catch (error) {
      ipa.notify(error.message);
    } finally {
      fetching = false;
    }
  }
  document.addEventListener("ipa:done", () => refreshState());

  // -- time travel ---------------------------------------------------------------------------

  async function showVersion(version) {
    version = Math.max(1, Math.min(head, Math.floor(Number(version)) || head));
    travel = version;
    range.value = number.value = version;
    liveButton.disabled = false;
    try {
      const html = await ipa.fragment(`/pods/${taskId}/state?version=${version}`);
      if (travel !== version) return;
      ipa.swap(state, html);
      history.querySelectorAll("li.selected").forEach((li) => li.classList.remove("selected"));
      const item = history.querySelector(`li[data-version="${version}"]`);
      if (item) item.classList.add("selected");
    } catch (error) {
      ipa.notify(error.message);
    }
  }
  function backToLive() {
    travel = null;
    liveButton.disabled = true;
    range.value = number.value = head;
    history.querySelectorAll("li.selected").forEach((li) => li.classList.remove("selected"));
    refreshState();
  }
  range.addEventListener("input", () => { number.value = range.value; });
  range.addEventListener("change", () => showVersion(range.value));
  number.addEventListener("change", () => showVersion(number.value));
  document.getElementById("travel-go").addEventListener("click", () => showVersion(number.value));
  liveButton.addEventListener("click", backToLive);
  history.addEventListener("click", (e) => {
    const button = e.target.closest("button.v");
    if (button) showVersion(button.closest("li").dataset.version);
  });

  // -- the agents' output --------------------------------------------------------------------

  const runs = new Map(); // run id → {pane, output, follower, paused}
  const runsBox = document.getElementById("runs");

  function line(text, cls, badge) {
    const row = el("div", { class: "line " + (cls || "") });
    if (badge) row.append(el("span", { class: "kind", text: badge }), " ");
    row.append(text);
    return row;
  }

  function showRunEvent(run, event) {
    const d = event.data || {};
    const out = [];
    if (event.type === "RunOutput") {
      for (const l of d.lines || []) {
        out.push(line(l.text, "stream-" + l.stream, l.kind || (l.stream !== "stdout" ? l.stream : "")));
      }
    } else if (event.type === "RunStarted") {
      out.push(line(`started ${d.agent || ""} (attempt ${d.attempt}, ${d.runner || "runner"}` +
        `${d.pid ? ", pid " + d.pid : ""})`, "meta"));
    } else if (event.type === "RunFinished") {
      out.push(line(`finished: ${d.succeeded ? "succeeded" : "failed"}` +
        `${d.exit_code !== null && d.exit_code !== undefined ? ", exit " + d.exit_code : ""}` +
        `${d.reason ? " — " + d.reason : ""}` +
        `${typeof d.duration_seconds === "number" ? ` (${d.duration_seconds.toFixed(1)} s)` : ""}`,
        d.succeeded ? "meta" : "meta failed"));
      run.status.textContent = d.succeeded ? "succeeded" : "failed";
      if (run.follower) {
        run.follower.close();
        run.follower = null;
      }
    } else {
      out.push(line(JSON.stringify(d), "meta", event.type));
    }
    run.output.append(...out);
    if (!run.paused) run.output.scrollTop = run.output.scrollHeight;
  }

  function pane(runId, job) {
    if (runs.has(runId)) return runs.get(runId);
    const output = el("div", { class: "output", role: "log" });
    const status = el("span", { class: "badge job-" + job.status, text: job.status });
    const scroll = el("button", { type: "button", class: "small", text: "pause scroll" });
    const load = el("button", { type: "button", class: "small", text: "show output" });
    const node = el("div", { class: "run", "data-run": runId },
      el("div", { class: "run-head" },
        el("b", { text: job.jobId }), " ", el("span", { class: "muted", text: job.agent }), " ",
        status, " ", el("code", { class: "muted", text: runId.slice(0, 8) }), " ", scroll, load),
      output);
    const run = { pane: node, output, status, follower: null, paused: false, load };
    scroll.addEventListener("click", () => {
      run.paused = !run.paused;
      scroll.textContent = run.paused ? "resume scroll" : "pause scroll";
      if (!run.paused) output.scrollTop = output.scrollHeight;
    });
    load.addEventListener("click", () => start(runId));
    runsBox.prepend(node);
    document.getElementById("no-runs").hidden = true;
    runs.set(runId, run);
    return run;
  }

  function start(runId) {
    const run = runs.get(runId);
    if (run.follower || run.started) return;
    run.started = true;
    run.load.hidden = true;
    run.follower = ipa.follow({
      stream: `/api/runs/${runId}/stream`,
      events: `/api/runs/${runId}/events`,
      types: runTypes,
      optional: true,
      onEvent: (event) => showRunEvent(run, event),
    });
  }

  // After each render of the state: a pane for every run of a job; running ones stream.
  function followRuns() {
    if (travel !== null) return;
    state.querySelectorAll(".job[data-run-id]").forEach((card) => {
      const job = { jobId: card.dataset.jobId, agent: card.dataset.agent,
                    status: card.dataset.status };
      const run = pane(card.dataset.runId, job);
      if (!run.follower || job.status !== "running") run.status.textContent = job.status;
      if (job.status === "running") start(card.dataset.runId);
    });
  }
  state.addEventListener("click", (e) => {
    const button = e.target.closest("[data-show-run]");
    if (!button) return;
    const runId = button.dataset.showRun;
    if (runs.has(runId)) {
      start(runId);
      runs.get(runId).pane.scrollIntoView({ behavior: "smooth", block: "center" });
    }
  });
  followRuns();

  // -- the workspace browser -----------------------------------------------------------------

  const viewer = document.getElementById("ws-viewer");
  const wsBody = document.getElementById("ws-body");
  document.getElementById("ws-close").addEventListener("click", () => { viewer.hidden = true; });

  function diffBlock(text) {
    const block = el("pre", { class: "diff-text" });
    for (const l of String(text).split("\n")) {
      const cls = l.startsWith("+++") || l.startsWith("---") ? "file"
        : l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : l.startsWith("@@") ? "hunk" : "";
      block.append(el("span", { class: cls, text: l + "\n" }));
    }
    return block;
  }

  const commitSelect = document.getElementById("ws-commit");
  let browsing = null; // {ws, view, path}
  commitSelect.addEventListener("change", () => {
    if (browsing) browse(browsing.ws, browsing.view, browsing.path, commitSelect.value);
  });

  async function browse(ws, view, path = "", commit = null) {
    if (!browsing || browsing.ws !== ws) {
      const button = state.querySelector(`[data-ws="${CSS.escape(ws)}"]`);
      const commits = button ? JSON.parse(button.dataset.commits || "[]") : [];
      commitSelect.replaceChildren(...commits.map((sha, i) => el("option", { value: sha,
        text: `${sha.slice(0, 10)}${i === 0 ? " (base)" : ""}` })));
      commitSelect.value = commits.length ? commits[commits.length - 1] : "";
    }
    if (commit) commitSelect.value = commit;
    browsing = { ws, view, path };
    viewer.hidden = false;
    document.getElementById("ws-name").textContent = ws;
    document.getElementById("ws-where").textContent = view === "diff" ? "changes" : "/" + path;
    wsBody.replaceChildren(el("p", { class: "muted", text: "loading…" }));
    const base = `/api/tasks/${taskId}/workspaces/${encodeURIComponent(ws)}`;
    const at = commitSelect.value ? `commit=${encodeURIComponent(commitSelect.value)}` : "";
    try {
      const data = view === "diff"
        ? await ipa.request("GET", `${base}/diff?${at}`)
        : await ipa.request("GET", `${base}/files?path=${encodeURIComponent(path)}&${at}`);
      wsBody.replaceChildren(...renderWorkspace(ws, data, path));
    } catch (error) {
      wsBody.replaceChildren(el("p", { class: "error-text", text: error.message }));
    }
    viewer.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function renderWorkspace(ws, data, path) {
    const nodes = [];
    if (path) {
      const up = path.split("/").slice(0, -1).join("/");
      const back = el("button", { type: "button", class: "link", text: "↑ up" });
      back.addEventListener("click", () => browse(ws, "files", up));
      nodes.push(back);
    }
    const entries = data.entries || data.items || data.files;
    if (typeof data.diff === "string" || typeof data.patch === "string") {
      const text = data.diff ?? data.patch;
      nodes.push(text ? diffBlock(text) : el("p", { class: "muted", text: "no changes" }));
      if (data.truncated) nodes.push(el("p", { class: "muted", text: "(diff truncated)" }));
    } else if (data.type === "file" || typeof data.content === "string") {
      if (typeof data.content === "string") nodes.push(el("pre", { class: "file", text: data.content }));
      else nodes.push(el("p", { class: "muted", text: data.binary ? "a binary file"
        : data.too_large ? `too large to show (${data.size} bytes)` : "no content" }));
    } else if (Array.isArray(entries)) {
      const list = el("ul", { class: "files" });
      for (const entry of entries) {
        const name = typeof entry === "string" ? entry : entry.name || entry.path;
        const full = (typeof entry === "object" && entry.path) || (path ? path + "/" + name : name);
        const isDir = typeof entry === "object" && ["dir", "directory", "tree"].includes(entry.type || entry.kind);
        const button = el("button", { type: "button", class: "link",
                                      text: name.split("/").pop() + (isDir ? "/" : "") });
        button.addEventListener("click", () => browse(ws, "files", full));
        const size = typeof entry === "object" && entry.size != null ? ` ${entry.size} B` : "";
        list.append(el("li", {}, button, el("span", { class: "muted", text: size })));
      }
      nodes.push(entries.length ? list : el("p", { class: "muted", text: "empty" }));
    } else {
      nodes.push(el("pre", { text: JSON.stringify(data, null, 2) }));
    }
    return nodes;
  }

  state.addEventListener("click", (e) => {
    const button = e.target.closest("[data-ws]");
    if (button) browse(button.dataset.ws, button.dataset.wsView);
  });
})();
