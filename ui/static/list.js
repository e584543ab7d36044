// The central task list: filters, the create form, and live rows. Every task event on
// /api/stream makes the server re-render that task's row (/pods/{id}/row); a new task's row is
// added at the top.
"use strict";

(() => {
  const rows = document.getElementById("task-rows");
  const types = document.getElementById("tasks").dataset.eventTypes.split(" ").filter(Boolean);
  const statusFilter = document.getElementById("filter-status");
  const queryFilter = document.getElementById("filter-query");
  // "needs me": only tasks whose row says what they wait for from a person (data-attention).
  const needsMe = document.getElementById("filter-attention");

  function applyFilter() {
    const status = statusFilter.value;
    const query = queryFilter.value.trim().toLowerCase();
    const mine = needsMe.checked;
    let shown = 0;
    for (const row of rows.children) {
      row.hidden = !((!status || row.dataset.status === status) &&
                     (!query || row.dataset.title.includes(query)) &&
                     (!mine || Boolean(row.dataset.attention)));
      if (!row.hidden) shown += 1;
    }
    document.getElementById("task-count").textContent =
      `${shown} of ${rows.children.length}`;
    document.getElementById("no-tasks").hidden = rows.children.length > 0;
    const params = new URLSearchParams();
    if (status) params.set("status", status);
    if (query) params.set("q", query);
    if (mine) params.set("attention", "1");
    const search = params.toString();
    history.replaceState(null, "", search ? "?" + search : location.pathname);
  }
  statusFilter.addEventListener("change", applyFilter);
  queryFilter.addEventListener("input", applyFilter);
  needsMe.addEventListener("change", applyFilter);

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

  applyFilter();
})();
