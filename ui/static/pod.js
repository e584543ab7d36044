// The per-pod live page: the event history (live), the state panel re-rendered by the server
// after each event, time travel, the agents' streaming output, the memory panel and the
// workspace browser.
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
  const typeFilter = document.getElementById("history-type");
  const actorFilter = document.getElementById("history-actor");
  let head = Number(pod.dataset.version);
  // The version shown, or null while live; a page opened with ?version=N starts there.
  const opened = document.getElementById("state-panel");
  let travel = opened && opened.dataset.travel ? Number(opened.dataset.travel) : null;

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  };

  // -- links: #v20 (an event), #job-<id>, #run-<id> scroll to their element and mark it ------

  let anchor = location.hash ? decodeURIComponent(location.hash.slice(1)) : null;
  let marked = null; // the id of the element marked, marked again after a re-render
  function seekAnchor() {
    if (marked) {
      const again = document.getElementById(marked);
      if (again) again.classList.add("highlight");
    }
    if (!anchor) return;
    const target = document.getElementById(anchor);
    if (!target) return;
    document.querySelectorAll(".highlight").forEach((n) => n.classList.remove("highlight"));
    target.classList.add("highlight");
    if (target.tagName === "DETAILS") target.open = true;
    target.scrollIntoView({ block: "center" });
    marked = anchor;
    anchor = null;
  }
  window.addEventListener("hashchange", () => {
    anchor = location.hash ? decodeURIComponent(location.hash.slice(1)) : null;
    seekAnchor();
  });

  // -- the event history ---------------------------------------------------------------------

  function addOption(select, value) {
    if (!Array.from(select.options).some((o) => o.value === value)) {
      select.append(el("option", { value, text: value }));
    }
  }
  function filterHistory(items = history.children) {
    const type = typeFilter.value;
    const actor = actorFilter.value;
    for (const li of items) {
      li.hidden = Boolean((type && li.dataset.type !== type) || (actor && li.dataset.actor !== actor));
    }
    const shown = Array.from(history.children).filter((li) => !li.hidden).length;
    document.getElementById("history-count").textContent = shown === history.children.length
      ? `(${shown})` : `(${shown} of ${history.children.length})`;
  }
  typeFilter.addEventListener("change", () => filterHistory());
  actorFilter.addEventListener("change", () => filterHistory());

  function showEvent(event) {
    const item = el("li", { id: "v" + event.version, "data-version": event.version,
                            "data-type": event.type, "data-actor": event.actor },
      el("button", { type: "button", class: "v link", title: "show this version",
                     text: "v" + event.version }),
      " ", el("b", { class: "event-type", text: event.type }),
      " ", el("span", { class: "muted", text: `${event.actor} · ` }),
      ipa.timeElement(event.timestamp));
    const data = JSON.stringify(event.data, null, 2);
    if (data && data !== "{}") {
      item.append(el("details", {}, el("summary", { text: "data" }), el("pre", { text: data })));
    }
    if (travel === event.version) item.classList.add("selected");
    history.append(item);
    addOption(typeFilter, event.type);
    addOption(actorFilter, event.actor);
    filterHistory([item]);
    if (event.version > head) {
      head = event.version;
      range.max = number.max = head;
      if (travel === null) range.value = number.value = head;
    }
    seekAnchor();
    const panel = document.getElementById("state-panel");
    if (!panel || event.version > Number(panel.dataset.version)) refreshState();
    const memory = document.getElementById("memory-panel");
    if (memory && event.version > Number(memory.dataset.version) &&
        (event.type === "ContextPrepared" || (event.type === "MemoryRecorded" && memoryQuery))) {
      refreshMemory(true);
    }
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
        const after = childAfter ? `?after=${childAfter}` : "";
        const html = await ipa.fragmentAt(`/pods/${taskId}/state${after}`, head);
        if (travel === null) {
          ipa.swap(state, html);
          attachRuns();
          followChildren();
        }
      } while (again);
    } catch (error) {
      ipa.notify(error.message);
    } finally {
      fetching = false;
    }
  }
  document.addEventListener("ipa:done", (e) => {
    // Clone, fork: the answer is a new task, whose page opens.
    const form = e.detail.form;
    const made = e.detail.result;
    if (form && form.dataset.open === "task" && made && made.id) {
      location.assign(`/pods/${made.id}`);
      return;
    }
    refreshState();
  });

  // -- a project's children: their own events move the board --------------------------------
  // A child's status is on its own stream, not the project's: the page follows every task's
  // events (one connection however many children, once there is one) and re-renders on a
  // child's, asking the server to wait for the task list to have folded it (`?after=` its log
  // position).

  let childSource = null;
  let childAfter = 0;
  function followChildren() {
    const board = document.getElementById("children");
    if (childSource || !board || !board.dataset.children || travel !== null) return;
    childSource = new EventSource(`/api/stream?after=${board.dataset.logPosition || 0}`);
    ipa.listen(childSource, taskTypes, (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (e) {
        return;
      }
      const shown = document.getElementById("children");
      if (!shown || !shown.dataset.children.split(" ").includes(event.stream_id)) return;
      childAfter = Math.max(childAfter, Number(event.position) || 0);
      refreshState();
    });
  }
  followChildren();

  // -- time travel: every panel as of version N, and the URL says so (?version=N) --------------

  // `name=value` in the URL's query (`null`: without it), the rest of the query kept.
  function setParam(name, value) {
    const params = new URLSearchParams(location.search);
    if (value === null || value === "") params.delete(name);
    else params.set(name, value);
    const search = params.toString();
    window.history.replaceState(null, "", location.pathname + (search ? "?" + search : "")
                                + location.hash);
  }
  function setUrl(version) {
    setParam("version", version);
  }

  async function showVersion(version) {
    version = Math.max(1, Math.min(head, Math.floor(Number(version)) || head));
    travel = version;
    range.value = number.value = version;
    liveButton.disabled = false;
    setUrl(version);
    try {
      const html = await ipa.fragment(`/pods/${taskId}/state?version=${version}`);
      if (travel !== version) return;
      ipa.swap(state, html);
      attachRuns();
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
    setUrl(null);
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
  // The server renders one pane per run (its outcome, times and duration, as of the version
  // shown); the output each pane has received is kept here and put back after every render.

  const runs = new Map(); // run id → {output, follower, paused, started}

  function line(text, cls, badge, at) {
    const row = el("div", { class: "line " + (cls || "") });
    if (at) row.dataset.at = at;
    if (badge) row.append(el("span", { class: "kind", text: badge }), " ");
    row.append(text);
    return row;
  }

  // A prompt as text: its markdown headings as section titles, folded.
  function promptBlock(d, at) {
    const body = el("div", { class: "prompt" });
    for (const text of String(d.prompt || "").split("\n")) {
      const heading = text.match(/^#{1,6}\s+(.*)$/);
      body.append(heading ? el("div", { class: "prompt-section", text: heading[1] })
        : el("div", { class: "prompt-line", text: text || "\u00a0" }));
    }
    const box = el("details", { class: "line meta" },
      el("summary", { text: `prompt${d.model ? " for " + d.model : ""} ` +
                            `(${String(d.prompt || "").length} characters)` }), body);
    if (at) box.dataset.at = at;
    return box;
  }

  function showRunEvent(run, event) {
    const d = event.data || {};
    const at = String(Date.parse(event.timestamp) || "");
    const out = [];
    if (event.type === "RunOutput") {
      for (const l of d.lines || []) {
        out.push(line(l.text, "stream-" + l.stream,
                      l.kind || (l.stream !== "stdout" ? l.stream : ""), at));
      }
    } else if (event.type === "RunPrompted") {
      out.push(promptBlock(d, at));
    } else if (event.type === "RunStarted") {
      out.push(line(`started ${d.agent || ""} (attempt ${d.attempt}, ${d.runner || "runner"}` +
        `${d.pid ? ", pid " + d.pid : ""})`, "meta", "", at));
    } else if (event.type === "RunFinished") {
      const exit = d.exit_code !== null && d.exit_code !== undefined ? "exit " + d.exit_code : "";
      const took = typeof d.duration_seconds === "number" ? ipa.span(d.duration_seconds) : "";
      const facts = [exit, took].filter(Boolean).join(", ");
      out.push(line((d.succeeded ? "finished: succeeded" : "finished" +
        (d.reason ? ": " + d.reason : "")) + (facts ? ` (${facts})` : ""),
        d.succeeded ? "meta" : "meta failed", "", at));
      if (run.follower) {
        run.follower.close();
        run.follower = null;
      }
    } else {
      out.push(line(JSON.stringify(d), "meta", event.type, at));
    }
    hideAfterTravel(out);
    run.output.append(...out);
    if (!run.paused) run.output.scrollTop = run.output.scrollHeight;
  }

  function record(runId) {
    if (!runs.has(runId)) {
      runs.set(runId, { output: el("div", { class: "output", role: "log" }), follower: null,
                        paused: false, started: false });
    }
    return runs.get(runId);
  }

  function start(runId) {
    const run = record(runId);
    if (run.started) return;
    run.started = true;
    const paneNode = document.getElementById("run-" + runId);
    if (paneNode) paneNode.querySelector("[data-load]").hidden = true;
    run.follower = ipa.follow({
      stream: `/api/runs/${runId}/stream`,
      events: `/api/runs/${runId}/events`,
      types: runTypes,
      optional: true,
      streamFirst: true,
      onEvent: (event) => showRunEvent(run, event),
    });
  }

  // In time travel, output written after the version's event is hidden.
  function travelAt() {
    const panel = document.getElementById("state-panel");
    return panel && panel.dataset.travelAt ? Date.parse(panel.dataset.travelAt) : null;
  }
  function hideAfterTravel(nodes) {
    const at = travelAt();
    for (const node of nodes) node.hidden = at !== null && Number(node.dataset.at) > at;
  }

  // After each render of the state panel: put each run's output back into its pane. A run
  // that first appears while the page is live is followed even when it already finished
  // between two renders (a fast job), so its output shows without a click; runs that were
  // there when the page opened load on "show output".
  let rendered = false;
  function attachRuns() {
    state.querySelectorAll(".run[data-run]").forEach((paneNode) => {
      const runId = paneNode.dataset.run;
      const seen = runs.has(runId);
      const run = record(runId);
      if (rendered && !seen && travel === null) start(runId);
      paneNode.querySelector(".run-body").replaceWith(run.output);
      paneNode.querySelector("[data-scroll]").textContent =
        run.paused ? "resume scroll" : "pause scroll";
      paneNode.querySelector("[data-load]").hidden = run.started;
      if (travel === null && paneNode.dataset.outcome === "running") start(runId);
      hideAfterTravel(run.output.children);
    });
    rendered = true;
    seekAnchor();
  }

  state.addEventListener("click", (e) => {
    const paneNode = e.target.closest(".run[data-run]");
    if (paneNode && e.target.closest("[data-scroll]")) {
      const run = record(paneNode.dataset.run);
      run.paused = !run.paused;
      e.target.textContent = run.paused ? "resume scroll" : "pause scroll";
      if (!run.paused) run.output.scrollTop = run.output.scrollHeight;
      return;
    }
    if (paneNode && e.target.closest("[data-load]")) {
      start(paneNode.dataset.run);
      return;
    }
    const button = e.target.closest("[data-show-run]");
    if (!button) return;
    const runId = button.dataset.showRun;
    start(runId);
    const target = document.getElementById("run-" + runId);
    if (target) target.scrollIntoView({ behavior: "smooth", block: "center" });
  });
  attachRuns();

  // -- the memory panel ----------------------------------------------------------------------
  // Rendered by the server (/pods/{id}/memory), as agent memory is now: again after a run of
  // the task was given memories, after a search (without JavaScript the search is a plain GET
  // form, ?memory_q=...) and after a pin or a forget, which go through the JSON API.
  // `fresh`: the server first waits (briefly) for memory to have read the newest events.

  const memoryBox = document.getElementById("memory");
  const shownPanel = document.getElementById("memory-panel");
  let memoryQuery = shownPanel ? shownPanel.dataset.query : "";
  let memoryFetching = false;
  let memoryAgain = false;
  async function refreshMemory(fresh) {
    if (memoryFetching) {
      memoryAgain = true;
      return;
    }
    memoryFetching = true;
    try {
      do {
        memoryAgain = false;
        const params = new URLSearchParams();
        if (memoryQuery) params.set("memory_q", memoryQuery);
        if (fresh) params.set("fresh", "1");
        ipa.swap(memoryBox, await ipa.fragment(`/pods/${taskId}/memory?${params}`));
      } while (memoryAgain);
    } catch (error) {
      ipa.notify(error.message);
    } finally {
      memoryFetching = false;
    }
  }

  memoryBox.addEventListener("submit", (e) => {
    if (e.target.id !== "memory-search") return;
    e.preventDefault();
    memoryQuery = e.target.elements.memory_q.value.trim();
    setParam("memory_q", memoryQuery);
    refreshMemory(false);
  });

  const MEMORY_DONE = { pin: "Memory pinned.", unpin: "Memory unpinned.",
                        forget: "Memory forgotten: later runs are not given it." };
  memoryBox.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-memory-action]");
    if (!button) return;
    const action = button.dataset.memoryAction;
    if (action === "forget" && !confirm("Forget this memory? Later runs are not given it.")) return;
    const url = `/api/memories/${encodeURIComponent(button.dataset.memory)}`;
    // The same memory can be listed more than once (several runs, the search).
    const same = memoryBox.querySelectorAll(
      `button[data-memory="${CSS.escape(button.dataset.memory)}"]`);
    same.forEach((b) => { b.disabled = true; });
    try {
      if (action === "forget") await ipa.request("DELETE", url);
      else await ipa.request("POST", `${url}/pin`, { pinned: action === "pin" });
      ipa.notify(MEMORY_DONE[action], "info");
      await refreshMemory(true);
    } catch (error) {
      ipa.notify(error.message);
      same.forEach((b) => { b.disabled = false; });
    }
  });

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

  // The task's change: its branch against its base (stat, files, diff) in the viewer.
  async function showChange(branch, baseName) {
    browsing = null;
    commitSelect.replaceChildren();
    viewer.hidden = false;
    document.getElementById("ws-name").textContent = branch;
    document.getElementById("ws-where").textContent = "the task's change";
    wsBody.replaceChildren(el("p", { class: "muted", text: "loading…" }));
    try {
      const data = await ipa.request("GET", `/api/tasks/${taskId}/diff`);
      const stat = data.stat || {};
      const files = el("ul", { class: "files", id: "change-files" });
      for (const f of data.files || []) files.append(el("li", { text: `${f.status} ${f.path}` }));
      wsBody.replaceChildren(
        el("p", { id: "change-stat", text: `${stat.files ?? 0} file(s) changed, `
          + `${stat.insertions ?? 0} insertion(s), ${stat.deletions ?? 0} deletion(s) `
          + `against ${baseName} (${String(data.base).slice(0, 10)})` }),
        files,
        data.diff ? diffBlock(data.diff) : el("p", { class: "muted", text: "no changes" }),
        ...(data.truncated ? [el("p", { class: "muted", text: "(diff truncated)" })] : []));
    } catch (error) {
      wsBody.replaceChildren(el("p", { class: "error-text", text: error.message }));
    }
    viewer.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  state.addEventListener("click", (e) => {
    const button = e.target.closest("[data-ws]");
    if (button) browse(button.dataset.ws, button.dataset.wsView);
    const change = e.target.closest("[data-change]");
    if (change) showChange(change.dataset.change, change.dataset.base);
  });
})();
