// Cadenza's web console: a client of the REST API (docs/api.md) with the signed-in user's token.
// Views are routes of the location hash; the current one refreshes every POLL_MS while the tab
// is visible. Everything shown is built with DOM nodes and textContent (never innerHTML), so
// values from the cluster cannot inject markup, and the page runs under a CSP without inline code.
"use strict";

(() => {
  const POLL_MS = 2000;
  const TOKEN_KEY = "cadenza.token";
  const TIMELINE_RUNS = 200;
  const HISTORY_PAGE = 20;
  const FINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "skipped", "lost"]);
  const FAILED = new Set(["failed", "timed_out", "lost"]);

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let current = null; // {refresh, dispose} of the view on screen
  let timer = null;

  // ---- DOM and formatting ------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "class") el.className = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function millis(from, to) {
    if (!from || !to) return null;
    return new Date(to).getTime() - new Date(from).getTime();
  }

  function inWords(schedule) {
    try {
      return window.cronstrue.toString(schedule, { use24HourTimeFormat: true });
    } catch (error) {
      return "";
    }
  }

  function outcome(phase) {
    const value = String(phase || "").toLowerCase();
    const good = value === "succeeded" || value === "healthy";
    const bad = FAILED.has(value) || value === "timedout" || value === "unhealthy";
    const kind = good ? "ok" : bad ? "bad" : "other";
    return h("span", { class: `outcome ${kind}` }, phase || "—");
  }

  function table(headings, rows, attrs) {
    return h("table", attrs || {},
      h("thead", {}, h("tr", {}, headings.map((text) => h("th", {}, text)))),
      h("tbody", {}, rows));
  }

  // ---- the API -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const text = body && body.error ? body.error : `HTTP ${status}`;
      super(body && body.field ? `${text} (field: ${body.field})` : text);
      this.status = status;
    }
  }

  async function call(method, path, body, headers) {
    const init = { method, headers: { Authorization: `Bearer ${token}`, ...(headers || {}) } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (error) {
      data = { error: text };
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
    const text = search.toString();
    return text ? `?${text}` : "";
  }

  const enc = encodeURIComponent;
  const taskPath = (ns, name) => `/api/v1/namespaces/${enc(ns)}/tasks/${enc(name)}`;

  // ---- sign-in -----------------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const candidate = $("token").value.trim();
    $("sign-in-error").textContent = "";
    if (!candidate) return;
    token = candidate;
    try {
      await call("GET", "/api/v1/tasks?limit=1");
    } catch (error) {
      // 403: the token is valid but may not list Tasks here; the views say what it may not do.
      if (!(error instanceof ApiError) || error.status !== 403) {
        token = "";
        $("sign-in-error").textContent = error.status === 401
          ? "This token was refused by the cluster (401). Check it and try again."
          : `Cannot reach Cadenza's API: ${error.message}`;
        return;
      }
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    route();
  }

  function signOut(message) {
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    stop();
    $("sign-in-error").textContent = message || "";
    route();
  }

  // ---- routing and live refresh ------------------------------------------------------------

  function parseHash() {
    const [path, search] = (location.hash.replace(/^#/, "") || "/tasks").split("?");
    return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(search || "") };
  }

  function stop() {
    clearTimeout(timer);
    timer = null;
    if (current && current.dispose) current.dispose();
    current = null;
  }

  async function tick() {
    if (!current) return;
    if (document.hidden) { // a hidden tab polls nothing; visibilitychange resumes
      timer = null;
      return;
    }
    const view = current;
    try {
      await view.refresh();
      $("live").textContent = `live · updated ${when(new Date().toISOString()).slice(11)}`;
      $("live").className = "muted";
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        signOut("The cluster no longer accepts this token (401): sign in again.");
        return;
      }
      $("live").textContent = `not updated: ${error.message}`;
      $("live").className = "error";
    }
    if (current === view) timer = setTimeout(tick, POLL_MS);
  }

  function route() {
    stop();
    const signedIn = Boolean(token);
    $("sign-in").hidden = signedIn;
    $("view").hidden = !signedIn;
    $("nav").hidden = !signedIn;
    $("sign-out").hidden = !signedIn;
    if (!signedIn) {
      $("live").textContent = "";
      return;
    }
    const { parts, params } = parseHash();
    const root = $("view");
    root.replaceChildren();
    if (parts[0] === "task" && parts.length === 3) current = taskView(root, parts[1], parts[2]);
    else if (parts[0] === "run" && parts.length === 2) current = runView(root, parts[1]);
    else if (parts[0] === "executors") current = executorsView(root, params);
    else current = tasksView(root, params);
    tick();
  }

  // ---- Tasks -------------------------------------------------------------------------------

  function tasksView(root, params) {
    const filters = h("form", { id: "task-filters", class: "filters" },
      h("label", {}, "Namespace ", h("input", { name: "namespace", value: params.get("namespace") || "", placeholder: "the API's default" })),
      h("label", {}, h("input", { type: "checkbox", name: "allNamespaces", value: "true", checked: params.get("allNamespaces") === "true" }), " all namespaces"),
      h("label", {}, "Labels ", h("input", { name: "labelSelector", value: params.get("labelSelector") || "", placeholder: "team=reports" })),
      h("label", {}, "State ", h("select", { name: "state" },
        ["", "active", "suspended", "failing", "running", "invalid"].map((value) =>
          h("option", { value, selected: (params.get("state") || "") === value }, value || "any")))),
      h("button", { type: "submit" }, "Filter"));
    filters.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(filters);
      location.hash = `#/tasks${query(Object.fromEntries(data.entries()))}`;
    });
    const body = h("div", { id: "tasks" });
    root.append(h("h1", {}, "Tasks"), filters, body);

    async function refresh() {
      const everywhere = params.get("allNamespaces") === "true"; // needs list cluster-wide
      const page = await call("GET", `/api/v1/tasks${query({
        namespace: everywhere ? "" : params.get("namespace"), allNamespaces: everywhere ? "true" : "",
        labelSelector: params.get("labelSelector"), state: params.get("state"), limit: "200",
      })}`);
      const rows = page.items.map((task) => {
        const status = task.status || {};
        const last = status.lastExecution || {};
        return h("tr", { "data-task": task.name },
          h("td", {}, h("a", { href: `#/task/${enc(task.namespace)}/${enc(task.name)}` }, task.name)),
          h("td", {}, task.namespace),
          h("td", {}, h("code", {}, task.spec.schedule), h("div", { class: "muted" }, inWords(task.spec.schedule))),
          h("td", {}, task.spec.timeZone || "UTC"),
          h("td", {}, task.spec.executionMode),
          h("td", {}, task.spec.loadBalanceStrategy),
          h("td", { class: "next-runs" }, (task.nextFireTimes || []).slice(0, 3).map((t) => h("div", {}, when(t)))),
          h("td", {}, outcome(last.phase)),
          h("td", { class: "num" }, status.consecutiveFailures || 0),
          h("td", {}, task.spec.suspend ? "yes" : "no"));
      });
      const headings = ["Name", "Namespace", "Schedule", "Time zone", "Mode", "Strategy", "Next runs (local time)", "Last result", "Failures in a row", "Suspended"];
      const more = page.continue ? [h("p", { class: "muted" }, "More Tasks match than shown; narrow the filter.")] : [];
      body.replaceChildren(
        rows.length ? table(headings, rows, { id: "task-table" }) : h("p", { class: "muted" }, "No Tasks match."),
        ...more);
    }
    return { refresh };
  }

  // ---- one Task: summary, actions, timeline, history ----------------------------------------

  function taskView(root, ns, name) {
    const message = h("p", { id: "action-result", role: "status" });
    const summary = h("div", { id: "task-summary" });
    const plotBox = h("div", { id: "timeline", "data-points": "0" });
    const history = h("div", { id: "history" });
    const actions = h("div", { class: "actions" });
    let task = null;
    let plot = null;
    const cursors = [null]; // the history pages visited; the last is on screen
    let statusFilter = "";

    async function act(label, action) {
      message.textContent = `${label}…`;
      message.className = "";
      try {
        message.textContent = await action();
      } catch (error) {
        message.textContent = `${label} refused: ${error.message}`;
        message.className = "error";
      }
      tick();
    }

    const trigger = h("button", { id: "trigger", type: "button" }, "Trigger now");
    trigger.addEventListener("click", () => act("Trigger", async () => {
      const key = `console-${crypto.randomUUID()}`;
      const answer = await call("POST", `${taskPath(ns, name)}/trigger`, undefined, { "Idempotency-Key": key });
      return answer.executionId ? `Triggered run #${answer.executionId}.` : "Triggered; the run starts when a leader records it.";
    }));
    const suspend = h("button", { id: "suspend", type: "button" }, "Suspend");
    suspend.addEventListener("click", () => act(suspend.textContent, async () => {
      const next = !(task && task.spec.suspend);
      await call("PATCH", taskPath(ns, name), { suspend: next });
      return next ? "Suspended." : "Resumed.";
    }));
    actions.append(trigger, suspend);

    const filter = h("select", { id: "history-status" },
      ["", "succeeded", "failed", "timed_out", "running", "dispatched", "queued", "cancelled", "skipped", "lost"]
        .map((value) => h("option", { value }, value || "any status")));
    filter.addEventListener("change", () => {
      statusFilter = filter.value;
      cursors.length = 1;
      tick();
    });
    const newer = h("button", { id: "newer", type: "button" }, "Newer");
    newer.addEventListener("click", () => { if (cursors.length > 1) cursors.pop(); tick(); });
    const older = h("button", { id: "older", type: "button" }, "Older");
    older.addEventListener("click", () => { if (older.dataset.cursor) cursors.push(older.dataset.cursor); tick(); });

    root.append(
      h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")),
      h("h1", {}, name, " ", h("span", { class: "muted" }, ns)),
      actions, message, summary,
      h("h2", {}, "Timeline"),
      h("p", { class: "muted" }, "Each point is a run at its tick: fire delay (tick to dispatch) by outcome, the run's duration, retried runs and misfires marked."),
      plotBox,
      h("h2", {}, "History"),
      h("div", { class: "filters" }, filter, newer, older),
      history);

    async function refresh() {
      const executions = `${taskPath(ns, name)}/executions`;
      const [loaded, recent, page] = await Promise.all([
        call("GET", taskPath(ns, name)),
        call("GET", `${executions}${query({ limit: String(TIMELINE_RUNS) })}`),
        call("GET", `${executions}${query({ limit: String(HISTORY_PAGE), status: statusFilter, cursor: cursors[cursors.length - 1] })}`),
      ]);
      task = loaded;
      suspend.textContent = task.spec.suspend ? "Resume" : "Suspend";
      drawSummary(summary, task);
      plot = drawTimeline(plotBox, plot, recent.items);
      drawHistory(history, page.items);
      newer.disabled = cursors.length === 1;
      older.disabled = !page.cursor;
      older.dataset.cursor = page.cursor || "";
    }
    return { refresh, dispose: () => plot && plot.destroy() };
  }

  function drawSummary(box, task) {
    const spec = task.spec;
    const status = task.status || {};
    const counters = status.counters || {};
    const last = status.lastExecution || {};
    const conditions = (status.conditions || []).map((c) =>
      h("div", {}, `${c.type}=${c.status}`, c.reason ? ` (${c.reason})` : "", c.message ? `: ${c.message}` : ""));
    const facts = [
      ["Schedule", [h("code", {}, spec.schedule), " ", inWords(spec.schedule)]],
      ["Time zone", spec.timeZone || "UTC"],
      ["Mode / strategy", `${spec.executionMode} / ${spec.loadBalanceStrategy}`],
      ["Executors", (spec.executors || []).map((e) => e.name).join(", ") || "—"],
      ["Handler", spec.handler || "—"],
      ["Timeout / attempts", `${spec.timeoutSeconds ?? "—"} s / ${(spec.retry || {}).maxAttempts ?? 1}`],
      ["Suspended", spec.suspend ? "yes" : "no"],
      ["Next runs", (task.nextFireTimes || []).map((t) => h("div", {}, when(t)))],
      ["Last result", [outcome(last.phase), last.message ? ` ${last.message}` : ""]],
      ["Failures in a row", String(status.consecutiveFailures || 0)],
      ["Counters", `succeeded ${counters.succeeded || 0}, failed ${counters.failed || 0}, cancelled ${counters.cancelled || 0}, skipped ${counters.skipped || 0}, misfired ${counters.misfired || 0}`],
      ["Conditions", conditions],
    ];
    box.replaceChildren(h("dl", {}, facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])));
  }

  function timelineData(runs) {
    const ordered = runs.slice().reverse(); // oldest first: uPlot wants x ascending
    const columns = [[], [], [], [], [], [], []];
    for (const run of ordered) {
      const tick = run.scheduledAt || run.requestedAt;
      const delay = millis(tick, run.dispatchedAt);
      const y = delay === null ? 0 : Math.max(delay, 0);
      const kind = run.status === "succeeded" ? 1 : FAILED.has(run.status) ? 2 : 3;
      columns[0].push(new Date(tick).getTime() / 1000);
      for (const series of [1, 2, 3]) columns[series].push(series === kind ? y : null);
      columns[4].push(millis(run.startedAt || run.dispatchedAt, run.finishedAt));
      columns[5].push(run.attempt > 1 ? y : null);
      columns[6].push(run.origin === "misfire" ? y : null);
    }
    return columns;
  }

  function drawTimeline(box, plot, runs) {
    const data = timelineData(runs);
    box.dataset.points = String(runs.length);
    if (plot) {
      plot.setData(data);
      return plot;
    }
    const dots = (stroke, size) => ({ stroke, fill: stroke, paths: () => null, points: { show: true, size, stroke, fill: stroke } });
    const options = {
      width: Math.max(box.clientWidth || 0, 600),
      height: 280,
      scales: { x: { time: true } },
      axes: [{}, { label: "ms", size: 60 }],
      series: [
        { label: "tick" },
        { label: "fire delay, succeeded", ...dots("#2e7d32", 7) },
        { label: "fire delay, failed", ...dots("#c62828", 7) },
        { label: "fire delay, other", ...dots("#757575", 7) },
        { label: "duration", stroke: "#1565c0", width: 1, spanGaps: true, points: { show: true, size: 4 } },
        { label: "retried", ...dots("#ef6c00", 12) },
        { label: "misfire", ...dots("#6a1b9a", 12) },
      ],
    };
    return new window.uPlot(options, data, box);
  }

  function drawHistory(box, runs) {
    const rows = runs.map((run) => h("tr", { "data-run": run.id },
      h("td", {}, h("a", { href: `#/run/${run.id}` }, `#${run.id}`)),
      h("td", {}, when(run.scheduledAt || run.requestedAt)),
      h("td", {}, run.origin),
      h("td", {}, outcome(run.status)),
      h("td", { class: "num" }, `${run.attempt}/${run.maxAttempts}`),
      h("td", {}, run.pod || "—"),
      h("td", { class: "num" }, millis(run.scheduledAt || run.requestedAt, run.dispatchedAt) ?? "—"),
      h("td", { class: "num" }, millis(run.startedAt || run.dispatchedAt, run.finishedAt) ?? "—"),
      h("td", {}, run.error || "")));
    box.replaceChildren(rows.length
      ? table(["Run", "Tick", "Origin", "Status", "Attempt", "Pod", "Delay ms", "Duration ms", "Error"], rows, { id: "history-table" })
      : h("p", { class: "muted" }, "No runs yet."));
  }

  // ---- one run -----------------------------------------------------------------------------

  function runView(root, id) {
    const message = h("p", { id: "action-result", role: "status" });
    const body = h("div", { id: "run" });
    const cancel = h("button", { id: "cancel", type: "button", hidden: true }, "Cancel run");
    cancel.addEventListener("click", async () => {
      try {
        const answer = await call("POST", `/api/v1/executions/${enc(id)}/cancel`);
        message.textContent = `Cancelled (was ${answer.previousStatus}${answer.podNotified ? "; the pod was told" : ""}).`;
        message.className = "";
      } catch (error) {
        message.textContent = `Cancel refused: ${error.message}`;
        message.className = "error";
      }
      tick();
    });
    root.append(h("h1", {}, `Run #${id}`), cancel, message, body);

    async function refresh() {
      const run = await call("GET", `/api/v1/executions/${enc(id)}`);
      cancel.hidden = FINAL.has(run.status);
      const facts = [
        ["Task", h("a", { href: `#/task/${enc(run.namespace)}/${enc(run.task)}` }, `${run.namespace}/${run.task}`)],
        ["Status", outcome(run.status)], ["Origin", run.origin], ["Tick", when(run.scheduledAt)],
        ["Requested", when(run.requestedAt)], ["Dispatched", when(run.dispatchedAt)],
        ["Started", when(run.startedAt)], ["Finished", when(run.finishedAt)],
        ["Attempt", `${run.attempt} of ${run.maxAttempts}`], ["Pod", run.pod || "—"],
        ["Exit code", run.exitCode ?? "—"], ["Error", run.error || "—"],
      ];
      const attempts = (run.attempts || []).map((a) => h("tr", {},
        h("td", { class: "num" }, a.attempt), h("td", {}, outcome(a.status)), h("td", {}, a.pod || "—"),
        h("td", {}, when(a.dispatchedAt)), h("td", {}, when(a.finishedAt)), h("td", {}, a.error || "")));
      body.replaceChildren(
        h("dl", {}, facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
        h("h2", {}, "Attempts"),
        table(["Attempt", "Status", "Pod", "Dispatched", "Finished", "Error"], attempts, { id: "attempts" }),
        h("h2", {}, "Result"),
        h("pre", { id: "result" }, run.result === undefined || run.result === null ? "—" : JSON.stringify(run.result, null, 2)));
    }
    return { refresh };
  }

  // ---- Executors and replicas --------------------------------------------------------------

  function executorsView(root, params) {
    const replicas = h("div", { id: "replicas" });
    const pools = h("div", { id: "executors" });
    root.append(h("h1", {}, "Executors"), pools, h("h2", {}, "Operator replicas"), replicas);

    async function refresh() {
      const [list, members] = await Promise.all([
        call("GET", `/api/v1/executors${query({ namespace: params.get("namespace") })}`),
        call("GET", "/api/v1/replicas").catch((error) => ({ error })),
      ]);
      pools.replaceChildren(...(list.items.length ? list.items.map(drawExecutor) : [h("p", { class: "muted" }, "No Executors.")]));
      replicas.replaceChildren(drawReplicas(members));
    }
    return { refresh };
  }

  function drawExecutor(executor) {
    const available = (executor.conditions || []).find((c) => c.type === "Available") || {};
    const pods = (executor.pods || []).map((pod) => h("tr", { "data-pod": pod.name },
      h("td", {}, pod.name), h("td", {}, pod.ip || "—"), h("td", {}, outcome(pod.healthy ? "healthy" : "unhealthy")),
      h("td", { class: "num" }, pod.inFlight ?? 0), h("td", {}, when(pod.lastProbeTime)), h("td", {}, pod.lastError || "")));
    const endpoints = (executor.endpoints || []).map((e) => h("tr", {},
      h("td", {}, e.instanceId), h("td", {}, e.baseUrl), h("td", {}, e.state),
      h("td", {}, when(e.lastHeartbeat)), h("td", {}, e.lastError || "")));
    return h("section", { class: "executor", "data-executor": executor.name },
      h("h2", {}, executor.name, " ", h("span", { class: "muted" }, executor.namespace)),
      h("p", {}, `${executor.healthyPods ?? 0} of ${executor.totalPods ?? 0} healthy`,
        available.status ? ` · Available=${available.status}` : "", available.message ? ` (${available.message})` : ""),
      pods.length ? table(["Pod or endpoint", "IP", "Health", "In flight", "Last probe", "Last probe error"], pods) : h("p", { class: "muted" }, "No pods selected."),
      endpoints.length ? table(["Instance", "Base URL", "State", "Last heartbeat", "Error"], endpoints) : null);
  }

  function drawReplicas(members) {
    if (members.error) return h("p", { class: "error" }, `Replicas not shown: ${members.error.message}`);
    const leader = members.leader;
    const rows = (members.replicas || []).map((r) => h("tr", { "data-replica": r.instance_id },
      h("td", {}, r.instance_id), h("td", {}, r.role), h("td", { class: "num" }, r.epoch ?? "—"),
      h("td", {}, r.http_address), h("td", {}, `${r.host} (pid ${r.pid})`),
      h("td", {}, when(r.started_at)), h("td", {}, when(r.last_heartbeat))));
    return h("div", {},
      h("p", { id: "leader" }, leader ? `Leader: ${leader.instance_id}, epoch ${leader.epoch}, since ${when(leader.acquired_at)}` : "No leader right now."),
      rows.length ? table(["Replica", "Role", "Epoch", "Address", "Host", "Started", "Last heartbeat"], rows) : null);
  }

  // ---- start -------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    window.addEventListener("hashchange", route);
    document.addEventListener("visibilitychange", () => { if (!document.hidden && current && !timer) tick(); });
    route();
  });
})();
