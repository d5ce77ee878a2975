// The chat page: ChatKit's protocol spoken to POST /chatkit with the user's bearer token.
// Every text that comes from a user or a model is set with textContent, never parsed as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "assistants-bridge.chat.token";
  const THREAD_KEY = "assistants-bridge.chat.thread";
  const THREADS_PER_PAGE = 30;
  const HISTORY_ITEMS = 100;
  // A model that keeps calling client tools must not keep the page busy forever.
  const MAX_TOOL_ROUNDS = 8;

  // Client tools the page answers itself: name -> handler(arguments) -> JSON result.
  const CLIENT_TOOLS = {
    get_browser_time: () => ({
      iso: new Date().toISOString(),
      time_zone: Intl.DateTimeFormat().resolvedOptions().timeZone,
    }),
  };

  const page = document.body.dataset;
  const endpoint = page.endpoint;
  // The composer's attachments, in the shape of ChatKit's own `composer.attachments` option:
  // at most `maxCount` files go with a message, each of at most `maxSize` bytes (the bridge's
  // FILE_MAX_BYTES), of any type (no `accept`: a MIME type -> extensions record, as in
  // ChatKit). They are uploaded in ChatKit's two phases and read by the answer's file search.
  const COMPOSER = {
    attachments: { enabled: true, maxCount: 10, maxSize: Number(page.attachmentMaxBytes) },
  };
  const fragmentSignIn = page.fragmentSignIn === "on";
  const element = (id) => document.getElementById(id);

  const state = {
    token: null,
    threadId: null,
    threads: new Map(),   // id -> thread metadata, as threads.list gave it
    threadsAfter: null,   // cursor of the next page of threads.list
    items: new Map(),     // id -> {item, node} of the open thread
    drafts: [],           // the composer's attachments: {file, id, status: uploading|ready}
    running: 0,           // actions under way (see guarded)
  };

  class BridgeError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // ---- talking to POST /chatkit -------------------------------------------------------------

  async function post(type, params) {
    const response = await fetch(endpoint, {
      method: "POST",
      headers: { "Authorization": `Bearer ${state.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ type, params }),
    });
    if (!response.ok) throw await refusal(response);
    return response;
  }

  // What a response that is not ok says, as the error to throw; a refused token signs out.
  async function refusal(response) {
    let message = `The bridge answered ${response.status}.`;
    try {
      message = (await response.json()).error?.message || message;
    } catch {
      // not our JSON envelope: keep the status line
    }
    if (response.status === 401) signOut(`The bridge refused the token: ${message}`);
    return new BridgeError(message, response.status);
  }

  async function request(type, params) {
    return (await post(type, params)).json();
  }

  // The events of a ChatKit stream: server-sent `data: {json}` frames.
  async function* streamEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = frame.split("\n").filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
        if (data) yield JSON.parse(data);
      }
      if (done) return;
    }
  }

  // Send one streaming request and render its events; answer client tool calls it asks for.
  async function converse(type, params) {
    let next = { type, params };
    for (let round = 0; next; round += 1) {
      if (round > MAX_TOOL_ROUNDS) {
        showError(`Stopped after ${MAX_TOOL_ROUNDS} client tool calls in a row.`);
        return;
      }
      const pendingCall = await renderStream(await post(next.type, next.params));
      next = null;
      if (pendingCall) {
        const result = await runClientTool(pendingCall);
        // The server records the output itself; show it now rather than at the next load.
        renderItem({ ...pendingCall, status: "completed", output: result });
        next = { type: "threads.add_client_tool_output",
                 params: { thread_id: pendingCall.thread_id || state.threadId, result } };
      }
    }
  }

  // Render a stream's events as they come; the client tool call it leaves pending, if any.
  async function renderStream(response) {
    let pendingCall = null;
    for await (const event of streamEvents(response)) {
      switch (event.type) {
        case "thread.created":
          threadOpened(event.thread);
          break;
        case "thread.updated":
          rememberThread(event.thread);
          break;
        case "thread.item.added":
        case "thread.item.done":
        case "thread.item.replaced":
          renderItem(event.item);
          if (event.item.type === "client_tool_call") {
            pendingCall = event.item.status === "pending" ? event.item
              : (pendingCall?.call_id === event.item.call_id ? null : pendingCall);
          }
          break;
        case "thread.item.updated":
          applyUpdate(event.item_id, event.update);
          break;
        case "thread.item.removed":
          removeItem(event.item_id);
          if (pendingCall?.id === event.item_id) pendingCall = null;
          break;
        case "progress_update":
          showProgress(event.text);
          break;
        case "notice":
          showError([event.title, event.message].filter(Boolean).join(": "), event.level);
          break;
        case "error":
          showError(event.message || `The answer failed (${event.code}).`);
          break;
        default:
          break;  // stream options, client effects, ...: nothing to show
      }
    }
    showProgress(null);
    return pendingCall;
  }

  async function runClientTool(call) {
    const handler = Object.hasOwn(CLIENT_TOOLS, call.name) ? CLIENT_TOOLS[call.name] : null;
    if (!handler) return { error: `unknown client tool ${call.name}` };
    try {
      return await handler(call.arguments || {});
    } catch (exc) {
      return { error: `client tool ${call.name} failed: ${exc.message}` };
    }
  }

  // ---- threads ---------------------------------------------------------------------------------

  function threadTitle(thread) {
    const title = thread?.title?.trim();
    if (title) return title;
    const created = thread?.created_at ? new Date(thread.created_at) : null;
    return created && !Number.isNaN(created.getTime())
      ? `Untitled · ${created.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" })}`
      : "Untitled thread";
  }

  async function loadThreads({ more = false } = {}) {
    const list = element("thread-list");
    list.dataset.loaded = "false";
    const params = { limit: THREADS_PER_PAGE, order: "desc" };
    if (more && state.threadsAfter) params.after = state.threadsAfter;
    const threadPage = await request("threads.list", params);
    if (!more) state.threads.clear();
    for (const thread of threadPage.data) state.threads.set(thread.id, thread);
    state.threadsAfter = threadPage.has_more ? threadPage.after : null;
    element("more-threads").hidden = !state.threadsAfter;
    renderThreads();
    list.dataset.loaded = "true";
  }

  function renderThreads() {
    const list = element("thread-list");
    list.replaceChildren(...[...state.threads.values()].map((thread) => {
      const entry = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "thread";
      button.dataset.testid = "thread";
      button.dataset.threadId = thread.id;
      button.textContent = threadTitle(thread);
      if (thread.id === state.threadId) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => guarded(() => openThread(thread.id)));
      entry.append(button);
      return entry;
    }));
  }

  // A thread's metadata changed or appeared: the newest goes first in the sidebar.
  function rememberThread(thread, { first = false } = {}) {
    if (first) state.threads = new Map([[thread.id, thread], ...state.threads]);
    else state.threads.set(thread.id, { ...state.threads.get(thread.id), ...thread });
    renderThreads();
    if (thread.id === state.threadId) showTitle();
  }

  function threadOpened(thread) {
    state.threadId = thread.id;
    sessionStorage.setItem(THREAD_KEY, thread.id);
    rememberThread(thread, { first: !state.threads.has(thread.id) });
    showTitle();
  }

  function showTitle() {
    const thread = state.threadId ? state.threads.get(state.threadId) : null;
    element("thread-title").textContent = state.threadId ? threadTitle(thread) : "New thread";
    element("rename-thread").disabled = !state.threadId;
    element("delete-thread").disabled = !state.threadId;
    document.title = `${element("thread-title").textContent} · assistants-bridge`;
  }

  function startNewThread() {
    state.threadId = null;
    sessionStorage.removeItem(THREAD_KEY);
    clearItems();
    closeRename();
    showTitle();
    renderThreads();
    element("composer-input").focus();
  }

  async function openThread(threadId) {
    closeRename();
    clearItems();
    state.threadId = threadId;
    sessionStorage.setItem(THREAD_KEY, threadId);
    renderThreads();
    showTitle();
    let history;
    try {
      if (!state.threads.has(threadId)) {
        rememberThread(await request("threads.get_by_id", { thread_id: threadId }));
      }
      history = await request("items.list",
                              { thread_id: threadId, order: "desc", limit: HISTORY_ITEMS });
    } catch (exc) {
      if (exc.status === 404) {
        state.threads.delete(threadId);
        startNewThread();
      }
      throw exc;
    }
    if (state.threadId !== threadId) return;  // another thread was opened meanwhile
    for (const item of history.data.slice().reverse()) renderItem(item);
    const note = element("history-note");
    note.hidden = !history.has_more;
    note.textContent = history.has_more ? `Only the latest ${HISTORY_ITEMS} items are shown.` : "";
  }

  function openRename() {
    const thread = state.threads.get(state.threadId);
    element("rename-input").value = thread?.title || "";
    element("rename-form").hidden = false;
    element("thread-title").hidden = true;
    element("rename-input").focus();
  }

  function closeRename() {
    element("rename-form").hidden = true;
    element("thread-title").hidden = false;
  }

  async function renameThread() {
    const title = element("rename-input").value.trim();
    if (!title || !state.threadId) return;
    rememberThread(await request("threads.update", { thread_id: state.threadId, title }));
    closeRename();
  }

  async function deleteThread() {
    const threadId = state.threadId;
    if (!threadId) return;
    if (!window.confirm(`Delete "${threadTitle(state.threads.get(threadId))}"?`)) return;
    await request("threads.delete", { thread_id: threadId });
    state.threads.delete(threadId);
    startNewThread();
    await loadThreads();
  }

  // ---- items ---------------------------------------------------------------------------------

  const ROLES = { user_message: "user", assistant_message: "assistant", client_tool_call: "tool" };
  const LABELS = { user: "You", assistant: "Assistant", tool: "Client tool" };

  function itemText(item) {
    switch (item.type) {
      case "user_message":
        return (item.content || []).map((part) => part.text ?? "").join("");
      case "assistant_message":
        return (item.content || []).map((part) => part.text ?? "").join("\n\n");
      case "client_tool_call": {
        const call = `${item.name}(${JSON.stringify(item.arguments ?? {})})`;
        return item.status === "completed" ? `${call} → ${JSON.stringify(item.output ?? null)}`
          : `${call}: running in this browser…`;
      }
      default:
        return "";
    }
  }

  function renderItem(item) {
    const role = ROLES[item.type];
    if (!role || (item.thread_id && state.threadId && item.thread_id !== state.threadId)) return;
    let entry = state.items.get(item.id);
    if (!entry) {
      const node = document.createElement("li");
      node.className = `item item-${role}`;
      node.dataset.testid = "item";
      node.dataset.itemId = item.id;
      node.dataset.role = role;
      const label = document.createElement("span");
      label.className = "item-label";
      label.textContent = LABELS[role];
      const text = document.createElement("div");
      text.className = "item-text";
      text.dataset.testid = "item-text";
      node.append(label, text);
      element("items").append(node);
      entry = { item, node };
      state.items.set(item.id, entry);
    }
    entry.item = item;
    if (item.status) entry.node.dataset.status = item.status;
    showItemText(entry);
    showItemFiles(entry);
  }

  // Under a user message, the files it carries; under a reply, the sources its annotations cite.
  function showItemFiles(entry) {
    const { item, node } = entry;
    const kind = item.type === "user_message" ? "attachment" : "source";
    const names = item.type === "user_message" ? (item.attachments || []).map((a) => a.name)
      : item.type === "assistant_message" ? sourceNames(item) : [];
    let list = node.querySelector(".item-files");
    if (!names.length) {
      list?.remove();
      return;
    }
    if (!list) {
      list = document.createElement("ul");
      list.className = `item-files item-${kind}s`;
      list.dataset.testid = `item-${kind}s`;
      node.append(list);
    }
    list.replaceChildren(...names.map((name) => {
      const file = document.createElement("li");
      file.dataset.testid = `item-${kind}`;
      file.textContent = name;
      return file;
    }));
  }

  function sourceNames(item) {
    const names = new Set();
    for (const part of item.content || []) {
      for (const annotation of part.annotations || []) {
        const source = annotation.source || {};
        const name = source.title || source.filename || source.label || source.url;
        if (name) names.add(name);
      }
    }
    return [...names];
  }

  function showItemText(entry) {
    entry.node.querySelector(".item-text").textContent = itemText(entry.item);
    const items = element("items");
    items.scrollTop = items.scrollHeight;
  }

  // assistant_message.content_part.* updates: the reply as its pieces arrive.
  function applyUpdate(itemId, update) {
    const entry = state.items.get(itemId);
    if (!entry || entry.item.type !== "assistant_message") return;
    const content = entry.item.content = entry.item.content || [];
    const index = update.content_index ?? 0;
    switch (update.type) {
      case "assistant_message.content_part.added":
      case "assistant_message.content_part.done":
        content[index] = update.content;
        break;
      case "assistant_message.content_part.text_delta":
        content[index] = content[index] || { type: "output_text", text: "", annotations: [] };
        content[index].text += update.delta;
        break;
      case "assistant_message.content_part.annotation_added": {
        content[index] = content[index] || { type: "output_text", text: "", annotations: [] };
        const annotations = content[index].annotations = content[index].annotations || [];
        annotations[update.annotation_index ?? annotations.length] = update.annotation;
        showItemFiles(entry);
        return;
      }
      default:
        return;
    }
    showItemText(entry);
    if (update.type !== "assistant_message.content_part.text_delta") showItemFiles(entry);
  }

  function removeItem(itemId) {
    state.items.get(itemId)?.node.remove();
    state.items.delete(itemId);
  }

  function clearItems() {
    state.items.clear();
    element("items").replaceChildren();
    element("history-note").hidden = true;
    hideError();
  }

  // ---- composing -----------------------------------------------------------------------------

  async function sendMessage() {
    const input = element("composer-input");
    const text = input.value.trim();
    const drafts = state.drafts;
    if (!text && !drafts.length) return;
    input.value = "";
    setDrafts([]);
    hideError();
    const userInput = { content: [{ type: "input_text", text }],
                        attachments: drafts.map((draft) => draft.id), inference_options: {} };
    try {
      await converse(...(state.threadId
        ? ["threads.add_user_message", { thread_id: state.threadId, input: userInput }]
        : ["threads.create", { input: userInput }]));
    } catch (exc) {
      if (exc instanceof BridgeError) {  // nothing was sent
        if (!input.value) input.value = text;
        if (!state.drafts.length) setDrafts(drafts);
      }
      throw exc;
    }
  }

  // ---- attachments ---------------------------------------------------------------------------

  // Each file is uploaded as soon as it is picked; a message can be sent once all are.
  function attachFiles(files) {
    const options = COMPOSER.attachments;
    const added = [];
    for (const file of files) {
      if (state.drafts.length + added.length >= options.maxCount) {
        showError(`At most ${options.maxCount} files go with one message.`);
        break;
      }
      if (file.size > options.maxSize) {
        showError(`${file.name} is too large: files may be at most ${options.maxSize} bytes.`);
        continue;
      }
      added.push({ file, id: null, status: "uploading" });
    }
    if (!added.length) return;
    setDrafts([...state.drafts, ...added]);
    guarded(async () => {
      let failure = null;
      for (const draft of added) {
        try {
          draft.id = (await uploadAttachment(draft.file)).id;
          draft.status = "ready";
        } catch (exc) {
          setDrafts(state.drafts.filter((other) => other !== draft));
          failure = failure || exc;
        }
        renderDrafts();
      }
      if (failure) throw failure;
    });
  }

  // ChatKit's two-phase upload: attachments.create declares the file, and its upload descriptor
  // says where the bytes go (a form with a `file` part, which is what ChatKit's front end sends).
  async function uploadAttachment(file) {
    const attachment = await request("attachments.create",
                                     { name: file.name, size: file.size, mime_type: file.type });
    const descriptor = attachment.upload_descriptor;
    if (!descriptor) return attachment;  // nothing more to send
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await fetch(descriptor.url, {
      method: descriptor.method,
      headers: { ...descriptor.headers, "Authorization": `Bearer ${state.token}` },
      body: form,
    });
    if (!response.ok) {
      const refused = await refusal(response);
      if (response.status !== 401) {
        request("attachments.delete", { attachment_id: attachment.id }).catch(() => {});
      }
      throw refused;
    }
    return response.json();
  }

  function removeDraft(draft) {
    setDrafts(state.drafts.filter((other) => other !== draft));
    guarded(() => request("attachments.delete", { attachment_id: draft.id }));
  }

  function setDrafts(drafts) {
    state.drafts = drafts;
    renderDrafts();
  }

  function renderDrafts() {
    const list = element("drafts");
    list.replaceChildren(...state.drafts.map((draft) => {
      const chip = document.createElement("li");
      chip.className = "draft";
      chip.dataset.testid = "draft";
      chip.dataset.status = draft.status;
      const name = document.createElement("span");
      name.dataset.testid = "draft-name";
      name.textContent = draft.file.name;
      chip.append(name);
      if (draft.status === "uploading") {
        const note = document.createElement("span");
        note.textContent = "uploading…";
        chip.append(note);
      } else {
        const remove = document.createElement("button");
        remove.type = "button";
        remove.dataset.testid = "remove-draft";
        remove.setAttribute("aria-label", `Remove ${draft.file.name}`);
        remove.textContent = "×";
        remove.addEventListener("click", () => removeDraft(draft));
        chip.append(remove);
      }
      return chip;
    }));
    list.hidden = !state.drafts.length;
  }

  // ---- signing in ----------------------------------------------------------------------------

  // A `#token=` link signs in (development secret only); the token leaves the address bar at once.
  function takeTokenFromFragment() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (!fragment.has("token")) return false;
    history.replaceState(null, "", location.pathname + location.search);
    if (!fragmentSignIn) {
      showSignInMessage("This bridge does not sign in from links: paste a token instead.");
      return false;
    }
    const token = fragment.get("token").trim();
    if (token && token !== sessionStorage.getItem(TOKEN_KEY)) {
      sessionStorage.setItem(TOKEN_KEY, token);
      sessionStorage.removeItem(THREAD_KEY);  // another user's thread is not this one's
    }
    return true;
  }

  function userOf(token) {
    try {
      const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(new TextDecoder().decode(
        Uint8Array.from(atob(payload), (char) => char.charCodeAt(0))));
      return String(claims[page.userClaim] ?? "");
    } catch {
      return "";
    }
  }

  function showSignInMessage(message) {
    const note = element("sign-in-message");
    note.textContent = message || "";
    note.hidden = !message;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(THREAD_KEY);
    state.token = null;
    state.threadId = null;
    state.threads.clear();
    clearItems();
    setDrafts([]);
    element("thread-list").replaceChildren();
    element("thread-list").dataset.loaded = "false";
    element("chat").hidden = true;
    element("sign-in").hidden = false;
    showSignInMessage(message);
    element("token-input").focus();
  }

  async function enter() {
    state.token = sessionStorage.getItem(TOKEN_KEY);
    if (!state.token) {
      signOut(element("sign-in-message").textContent);
      return;
    }
    const user = userOf(state.token);
    element("user-name").textContent = user ? `Signed in as ${user}` : "Signed in";
    element("sign-in").hidden = true;
    element("chat").hidden = false;
    showSignInMessage(null);
    // Nothing of a previous user's stays on screen while this one's threads load.
    state.threadId = null;
    state.threads.clear();
    renderThreads();
    clearItems();
    showTitle();
    await loadThreads();
    const remembered = sessionStorage.getItem(THREAD_KEY);
    if (remembered) await openThread(remembered);
    else startNewThread();
  }

  async function signIn() {
    const token = element("token-input").value.trim().replace(/^Bearer\s+/i, "");
    if (!token) return;
    element("token-input").value = "";
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.removeItem(THREAD_KEY);
    await enter();
  }

  // ---- showing state -------------------------------------------------------------------------

  function showError(message, level = "danger") {
    element("error").dataset.level = level;
    element("error-text").textContent = message;
    element("error").hidden = false;
  }

  function hideError() {
    element("error").hidden = true;
    element("error-text").textContent = "";
  }

  function showProgress(text) {
    element("progress").hidden = !text;
    element("progress").textContent = text || "";
  }

  // Run an action with the composer locked (until every action under way has ended); its
  // failure is shown, not lost in the console.
  async function guarded(action) {
    state.running += 1;
    page.busy = "true";
    element("send").disabled = true;
    try {
      await action();
    } catch (exc) {
      if (!(exc instanceof BridgeError && exc.status === 401)) {
        showError(exc instanceof BridgeError ? exc.message : `Something went wrong: ${exc.message}`);
      }
    } finally {
      state.running -= 1;
      if (!state.running) {
        page.busy = "false";
        element("send").disabled = false;
      }
    }
  }

  // A form's submit runs `action` instead of navigating; a submit while an action runs is ignored.
  function onSubmit(id, action) {
    element(id).addEventListener("submit", (event) => {
      event.preventDefault();
      if (page.busy !== "true") guarded(action);
    });
  }

  function start() {
    onSubmit("sign-in-form", signIn);
    element("sign-out").addEventListener("click", () => signOut(null));
    element("new-thread").addEventListener("click", startNewThread);
    element("more-threads").addEventListener("click", () => guarded(() => loadThreads({ more: true })));
    onSubmit("composer", sendMessage);
    if (COMPOSER.attachments.enabled) {
      const picker = element("attach-input");
      const accept = COMPOSER.attachments.accept;
      if (accept) picker.accept = Object.entries(accept).flat(2).join(",");
      element("attach").hidden = false;
      element("attach").addEventListener("click", () => picker.click());
      picker.addEventListener("change", () => {
        attachFiles([...picker.files]);
        picker.value = "";  // the same file may be picked again
      });
    }
    element("composer-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        element("composer").requestSubmit();
      }
    });
    element("rename-thread").addEventListener("click", openRename);
    element("rename-cancel").addEventListener("click", closeRename);
    onSubmit("rename-form", renameThread);
    element("delete-thread").addEventListener("click", () => guarded(deleteThread));
    element("error-dismiss").addEventListener("click", hideError);
    // A link pasted into this tab signs in as its user without a reload.
    window.addEventListener("hashchange", () => {
      if (takeTokenFromFragment()) guarded(enter);
    });
    takeTokenFromFragment();
    guarded(enter);
  }

  start();
})();
