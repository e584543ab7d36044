// Shared by the pages: JSON API calls with readable errors, fragment swaps that keep what the
// user typed, command forms, and `follow`, which shows a stream's events once each and in order
// across reconnects (SSE for what is new, the events endpoint for what was missed).
"use strict";

const ipa = (() => {
  function toLogin() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  async function send(method, url, body, accept) {
    const init = { method, headers: { Accept: accept }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      throw new Error("cannot reach ipa (" + e.message + ")");
    }
    // 401 from the API; a page request without a session is redirected to the login form.
    if (response.status === 401 || (response.redirected &&
                                     new URL(response.url).pathname === "/login")) {
      toLogin();
      throw new Error("please log in");
    }
    const text = await response.text();
    if (response.ok) return text;
    let error = null;
    try {
      error = JSON.parse(text).error;
    } catch (e) {
      /* not a JSON error: use the status line */
    }
    const failure = new Error(
      error ? error.message + " (" + error.code + ")" : "HTTP " + response.status);
    failure.status = response.status;
    failure.code = error && error.code;
    throw failure;
  }

  /** A JSON API call; rejects with the API's `{"error": {code, message}}` as the message. */
  async function request(method, url, body) {
    const text = await send(method, url, body, "application/json");
    return text ? JSON.parse(text) : null;
  }

  /** A server-rendered HTML fragment. */
  function fragment(url) {
    return send("GET", url, undefined, "text/html");
  }

  /**
   * A fragment showing a task at `version` or later (its root's data-version). A stream can
   * announce an event a moment before the task's pod has applied it; then ask again, briefly.
   */
  async function fragmentAt(url, version) {
    for (let tries = 1; ; tries++) {
      const html = await fragment(url);
      const template = document.createElement("template");
      template.innerHTML = html.trim();
      const root = template.content.firstElementChild;
      const shown = Number(root ? root.dataset.version : NaN);
      if (!(shown < version) || tries >= 40) return html;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  let noticeTimer = null;
  /** Show `message` at the top of the page (errors stay until dismissed). */
  function notify(message, kind = "error") {
    const box = document.getElementById("notice");
    document.getElementById("notice-text").textContent = message;
    box.dataset.kind = kind;
    box.hidden = false;
    clearTimeout(noticeTimer);
    if (kind !== "error") noticeTimer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  function live(state, text) {
    const badge = document.getElementById("live");
    if (!badge) return;
    badge.dataset.state = state;
    badge.textContent = text || state;
  }

  /** Replace `container`'s content with `html`, keeping what the user typed and opened, and
   * where they scrolled boxes that have an id (the backlog graph). */
  function swap(container, html) {
    const scrolled = new Map();
    container.querySelectorAll("[id]").forEach((el) => {
      if (el.scrollLeft || el.scrollTop) scrolled.set(el.id, [el.scrollLeft, el.scrollTop]);
    });
    const typed = new Map();
    container.querySelectorAll("input[id], textarea[id], select[id]").forEach((el) => {
      if (el.type === "checkbox" || el.type === "radio") {
        if (el.checked !== el.defaultChecked) typed.set(el.id, { checked: el.checked });
      } else if (el.type !== "hidden" && el.value !== el.defaultValue) {
        typed.set(el.id, { value: el.value });
      }
    });
    const active = document.activeElement;
    const focus = active && active.id && container.contains(active) ? active.id : null;
    const opened = new Set(Array.from(container.querySelectorAll("details[open] > summary"),
      (s) => s.textContent));
    container.innerHTML = html;
    typed.forEach((kept, id) => {
      const el = document.getElementById(id);
      if (!el || !container.contains(el)) return;
      if ("checked" in kept) el.checked = kept.checked;
      else el.value = kept.value;
    });
    container.querySelectorAll("details > summary").forEach((s) => {
      if (opened.has(s.textContent)) s.parentElement.open = true;
    });
    scrolled.forEach(([left, top], id) => {
      const el = document.getElementById(id);
      if (el && container.contains(el)) {
        el.scrollLeft = left;
        el.scrollTop = top;
      }
    });
    if (focus && document.getElementById(focus)) document.getElementById(focus).focus();
    times(container);
  }

  /** Listen to every named event type (and unnamed messages) of an EventSource. */
  function listen(source, types, handler) {
    types.forEach((type) => source.addEventListener(type, handler));
    source.addEventListener("message", handler);
  }

  /**
   * Follow one event stream: `events` (`?after=N&limit=M` → `{items}`) for the history and
   * anything missed, then `stream` (SSE, `id:` = version, opened after the history) for what is
   * new. Every event reaches `onEvent` exactly once, in version order, however often the
   * connection drops. `optional`: a 404 from `events` means "nothing yet" (a run not started).
   * `streamFirst`: open the stream at once, without reading `events` first (a run's stream
   * waits for its first event, where its events endpoint would answer 404 until then).
   */
  function follow({ stream, events, types, onEvent, onState, optional, streamFirst }) {
    let last = 0;
    let closed = false;
    let source = null;
    let chain = Promise.resolve();
    const enqueue = (step) => {
      chain = chain.then(step).catch((e) => notify(e.message));
      return chain;
    };
    const deliver = (event) => {
      if (event.version <= last) return;
      last = event.version;
      onEvent(event);
    };
    const catchUp = async () => {
      if (streamFirst && last === 0) return; // the stream sends everything from the start
      for (;;) {
        let page;
        try {
          page = await request("GET", `${events}?after=${last}&limit=500`);
        } catch (error) {
          if (optional && error.status === 404) return;
          throw error;
        }
        if (closed) return;
        page.items.forEach(deliver);
        if (page.items.length < 500) return;
      }
    };
    const received = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (e) {
        return;
      }
      if (typeof event.version !== "number") event.version = Number(message.lastEventId);
      enqueue(async () => {
        if (event.version <= last) return;
        if (event.version > last + 1) await catchUp(); // a gap: fetch it from the store
        deliver(event);
      });
    };
    const open = () => {
      if (closed) return;
      // After the first connection the browser resumes with Last-Event-ID by itself.
      source = new EventSource(`${stream}?after=${last}`);
      listen(source, types, received);
      let cut = false;
      source.addEventListener("open", () => {
        if (onState) onState("live");
        if (cut) enqueue(catchUp); // whatever the old connection had not delivered
        cut = false;
      });
      source.addEventListener("error", () => {
        cut = true;
        if (source.readyState === EventSource.CLOSED) {
          if (onState) onState("closed");
          request("GET", events + "?after=0&limit=1").catch(() => {}); // a 401 goes to /login
        } else if (onState) {
          onState("reconnecting");
        }
      });
    };
    enqueue(async () => {
      try {
        await catchUp();
      } finally {
        open();
      }
    });
    return {
      close() {
        closed = true;
        if (source) source.close();
      },
      get last() {
        return last;
      },
    };
  }

  // Command forms: <form class="cmd" data-command="approve"> (inside an element with
  // data-task) or data-url="..."; the named fields are the JSON body, over the JSON object of
  // data-body when it has one (values a field cannot hold: lists, objects).
  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!form.matches("form.cmd")) return;
    e.preventDefault();
    if (form.dataset.confirm && !confirm(form.dataset.confirm)) return;
    const holder = form.closest("[data-task]");
    const url = form.dataset.url || `/api/tasks/${holder.dataset.task}/${form.dataset.command}`;
    const body = form.dataset.body ? JSON.parse(form.dataset.body) : {};
    const numbers = (form.dataset.numbers || "").split(" ");
    Array.from(form.elements).forEach((el) => {
      if (!el.name) return;
      if (el.type === "checkbox") body[el.name] = el.checked;
      else if (numbers.includes(el.name)) body[el.name] = el.value === "" ? null : Number(el.value);
      else body[el.name] = el.value;
    });
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const result = await request("POST", url, body);
      form.reset();
      document.dispatchEvent(new CustomEvent("ipa:done", { detail: { form, result } }));
    } catch (error) {
      notify(error.message);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });

  // Row buttons: <button data-task="ID" data-command="pause">.
  document.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-task][data-command]");
    if (button) {
      if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
      button.disabled = true;
      try {
        const result = await request(
          "POST", `/api/tasks/${button.dataset.task}/${button.dataset.command}`, {});
        document.dispatchEvent(new CustomEvent("ipa:done", { detail: { button, result } }));
      } catch (error) {
        notify(error.message);
        button.disabled = false;
      }
      return;
    }
    if (e.target.id === "notice-close") document.getElementById("notice").hidden = true;
  });

  // Times: rendered as ISO in <time datetime> (UTC text as a fallback), shown here in the
  // browser's zone; data-rel adds the relative age, data-elapsed shows the time since then.
  const dateFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });
  const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

  function relative(ms) {
    const seconds = Math.round(ms / 1000);
    const size = Math.abs(seconds);
    if (size < 60) return relativeFormat.format(seconds, "second");
    if (size < 3600) return relativeFormat.format(Math.round(seconds / 60), "minute");
    if (size < 86400) return relativeFormat.format(Math.round(seconds / 3600), "hour");
    return relativeFormat.format(Math.round(seconds / 86400), "day");
  }

  /** A duration in seconds as "12 s", "3 min 5 s", "2 h 4 min". */
  function span(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return `${seconds} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  /** Format every <time datetime> under `root` (elapsed ones only, with `onlyElapsed`). */
  function times(root = document, onlyElapsed = false) {
    const now = Date.now();
    const selector = onlyElapsed ? "time[datetime][data-elapsed]" : "time[datetime]";
    root.querySelectorAll(selector).forEach((node) => {
      const at = Date.parse(node.dateTime);
      if (Number.isNaN(at)) return;
      if ("elapsed" in node.dataset) {
        node.textContent = span((now - at) / 1000);
        return;
      }
      node.title = node.dateTime;
      node.textContent = dateFormat.format(at) + ("rel" in node.dataset ? ` · ${relative(at - now)}` : "");
    });
  }
  document.addEventListener("DOMContentLoaded", () => times());
  setInterval(() => times(document, true), 1000);
  setInterval(() => times(), 20000);

  /** A <time> element for an ISO time (formatted by `times`). */
  function timeElement(iso, rel = true) {
    const node = document.createElement("time");
    node.dateTime = iso || "";
    if (rel) node.dataset.rel = "";
    node.textContent = iso || "";
    times({ querySelectorAll: () => [node] });
    return node;
  }

  return { request, fragment, fragmentAt, notify, live, swap, listen, follow, times, timeElement, span };
})();
