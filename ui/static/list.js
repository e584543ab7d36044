// The central task list: filters, the create form, and live rows. Every task event on
// /api/stream makes the server re-render that task's row (/pods/{id}/row); a new task's row is
// added at the top. The nodes panel (when this server is a node) is polled from /api/nodes.
"use strict";

(() => {
  const rows = document.getElementById("task-rows");
  const types = document.getElementById("tasks").dataset.eventTypes.split(" ").filter(Boolean);
  const statusFilter = document.getElementById("filter-status");
  const queryFilter = document.getElementById("filter-query");
  // "needs me": only tasks whose row says what they wait for from a person (data-attention).
  const needsMe = document.getElementById("filter-attention");
  // "archived too": archived tasks are left out of the page unless it was asked for them
  // (?archived=1); rows archived since it loaded are hidden unless it is checked.
  const archivedFilter = document.getElementById("filter-archived");
  const withArchived = archivedFilter.checked;

  function applyFilter() {
    const status = statusFilter.value;
    const query = queryFilter.value.trim().toLowerCase();
    const mine = needsMe.checked;
    const archived = archivedFilter.checked;
    let shown = 0;
    for (const row of rows.children) {
      row.hidden = !((!status || row.dataset.status === status) &&
                     (!query || row.dataset.title.includes(query)) &&
                     (!mine || Boolean(row.dataset.attention)) &&
                     (archived || !row.dataset.archived));
      if (!row.hidden) shown += 1;
    }
    document.getElementById("task-count").textContent =
      `${shown} of ${rows.children.length}`;
    document.getElementById("no-tasks").hidden = rows.children.length > 0;
    const params = new URLSearchParams();
    if (status) params.set("status", status);
    if (query) params.set("q", query);
    if (mine) params.set("attention", "1");
    if (archived) params.set("archived", "1");
    const search = params.toString();
    history.replaceState(null, "", search ? "?" + search : location.pathname);
  }
  statusFilter.addEventListener("change", applyFilter);
  queryFilter.addEventListener("input", applyFilter);
  needsMe.addEventListener("change", applyFilter);
  archivedFilter.addEventListener("change", () => {
    applyFilter();
    if (archivedFilter.checked && !withArchived) location.reload(); // the URL asks for them
  });

  function place(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const row = template.content.firstElementChild;
    if (!row) return;
    const old = rows.querySelector(`tr[data-id="${CSS.escape(row.dataset.id)}"]`);
    if (old) {
      if (Number(old.dataset.version) > Number(row.dataset.version)) return; // already newer
      old.replaceWith(row);
    } else {
      rows.prepend(row);
    }
    ipa.times(row);
    applyFilter();
  }

  // One fetch per task at a time; events that arrive meanwhile cause one more.
  const busy = new Map();
  const wanted = new Map(); // task id → the newest version an event announced
  async function refresh(id, version = 0) {
    wanted.set(id, Math.max(wanted.get(id) || 0, version));
    if (busy.has(id)) {
      busy.set(id, true);
      return;
    }
    busy.set(id, false);
    try {
      do {
        busy.set(id, false);
        place(await ipa.fragmentAt(`/pods/${id}/row`, wanted.get(id)));
      } while (busy.get(id));
    } catch (error) {
      if (error.status !== 404) ipa.notify(error.message);
    } finally {
      busy.delete(id);
    }
  }

  // The rows were rendered as of this log position: only what came after matters.
  const source = new EventSource(`/api/stream?after=${document.getElementById("tasks").dataset.after}`);
  ipa.listen(source, types, (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    const id = event.stream_id || event.task_id;
    if (id) refresh(id, event.version);
  });
  let wasCut = false;
  source.addEventListener("open", () => {
    ipa.live("live");
    if (wasCut) {
      // The stream resumes after the last event it delivered; rows fetched again cover
      // anything the server could not replay.
      for (const row of rows.children) refresh(row.dataset.id);
    }
    wasCut = false;
  });
  source.addEventListener("error", () => {
    wasCut = true;
    if (source.readyState === EventSource.CLOSED) {
      ipa.live("closed", "not live: reload the page");
      ipa.request("GET", "/api/tasks?limit=1").catch(() => {}); // a 401 goes to /login
    } else {
      ipa.live("reconnecting", "reconnecting…");
    }
  });

  document.addEventListener("ipa:done", (e) => {
    const result = e.detail.result;
    if (result && result.id) refresh(result.id);
  });

  // The create form. A .md file is read here, in the browser, into the description.
  const form = document.getElementById("create-form");
  const formError = form.querySelector(".form-error");
  form.elements.file.addEventListener("change", async () => {
    const file = form.elements.file.files[0];
    if (!file) return;
    const text = await file.text();
    form.elements.description.value = text;
    const heading = text.match(/^#\s+(.+)$/m);
    if (!form.elements.title.value && heading) form.elements.title.value = heading[1].trim();
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    formError.hidden = true;
    const body = {
      title: form.elements.title.value,
      description: form.elements.description.value,
      workflow: form.elements.workflow.value,
    };
    const repo = form.elements.repo.value.trim();
    if (repo) body.repo = repo;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const task = await ipa.request("POST", "/api/tasks", body);
      form.reset();
      ipa.notify(`Created “${task.title}”`, "info");
      refresh(task.id);
    } catch (error) {
      formError.textContent = error.message;
      formError.hidden = false;
    } finally {
      button.disabled = false;
    }
  });

  // The nodes panel: the store's nodes, from /api/nodes every few seconds (heartbeat ages tick
  // in between, as every elapsed <time> does).
  const nodeList = document.getElementById("node-list");
  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }
  function nodeItem(node) {
    const item = document.createElement("li");
    item.className = `node node-${node.status}`;
    item.dataset.id = node.id;
    item.dataset.status = node.status;
    item.title = `started ${node.started_at}`;
    const head = item.appendChild(document.createElement("div"));
    head.className = "node-head";
    const id = head.appendChild(document.createElement("code"));
    id.className = "node-id";
    id.textContent = node.id;
    const badge = document.createElement("span");
    badge.className = "badge node-status";
    badge.textContent = node.status;
    head.append(" ", badge);
    if (node.self) {
      const self = document.createElement("span");
      self.className = "node-self muted";
      self.textContent = "this server";
      head.append(" ", self);
    }
    const facts = item.appendChild(document.createElement("div"));
    facts.className = "node-facts";
    const pods = document.createElement("span");
    pods.className = "node-pods";
    pods.textContent = plural(node.pods, "pod");
    const agents = document.createElement("span");
    agents.className = "node-agents";
    agents.textContent = plural(node.agents, "agent");
    const beat = document.createElement("time");
    beat.dateTime = node.heartbeat_at;
    beat.dataset.elapsed = "";
    facts.append(pods, " · ", agents, " · heartbeat ", beat, " ago");
    const address = item.appendChild(document.createElement("div"));
    address.className = "node-address muted";
    address.textContent = node.address || "no address yet";
    return item;
  }
  async function pollNodes() {
    if (document.hidden) return;
    let answer;
    try {
      answer = await ipa.request("GET", "/api/nodes");
    } catch (error) {
      return; // the next poll tries again; the stream's state shows a server that is gone
    }
    nodeList.replaceChildren(...answer.items.map(nodeItem));
    document.getElementById("no-nodes").hidden = answer.items.length > 0;
    ipa.times(nodeList, true);
  }
  if (nodeList) setInterval(pollNodes, 3000);

  applyFilter();
})();
