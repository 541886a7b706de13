/*! Threadline live chat widget. Plain JS, no framework, no inline script or style:
 * it runs under a strict Content-Security-Policy on the host page as long as
 * the page allows this server in script-src, style-src, img-src and connect-src.
 * Embed: <script src="https://HELPDESK/widget/widget.js" data-threadline-channel="UUID" async></script>
 * Protocol: see channels_app/adapters/chat/consumers.py.
 */
(function () {
  "use strict";
  var script = document.currentScript || document.querySelector("script[data-threadline-channel]");
  if (!script || window.__threadlineChat) return;
  window.__threadlineChat = true;
  var channel = script.getAttribute("data-threadline-channel");
  var base = new URL(script.src, location.href).origin;
  var wsBase = base.replace(/^http/, "ws");
  var storeKey = "threadline:" + channel;
  // the browser's languages, best first: the server answers in the first one it speaks
  // (else the channel's language, else its default) and sends every text of the widget
  var langs = (navigator.languages && navigator.languages.length ? Array.prototype.slice.call(navigator.languages)
    : [navigator.language || document.documentElement.lang || "en"]).slice(0, 5);
  var lang = String(langs[0] || "en");

  // English until the welcome frame brings the visitor's language (remembered for the next page)
  var t = { open: "Open chat", close: "Close chat", send: "Send", attach: "Attach a file", placeholder: "Type your message…",
    label: "Message", sending: "Sending…", sent: "Sent", delivered: "Delivered", read: "Seen", failed: "Not sent. Tap to retry",
    typing: "is typing…", offline: "We are offline", name: "Your name", email: "Your email", start: "Start chat",
    save: "Send me replies by email", saved: "Thanks! We will reply to your email.", prechat: "Before we start, tell us who you are.",
    throttled: "You are sending messages too fast. Please wait a moment.", tooLong: "That message is too long.",
    tooBig: "That file is too large.", badType: "This type of file cannot be sent.", connecting: "Connecting…",
    badEmail: "Please enter a valid email address.", error: "Something went wrong. Please try again.",
    csat: "How would you rate our support?", thanks: "Thank you for your feedback!", resolved: "This conversation was resolved.",
    you: "You", unread: "new message", optional: "(optional)", skip: "Skip" };
  function useStrings(strings) {
    if (!strings || typeof strings !== "object") return;
    for (var k in strings) { if (typeof strings[k] === "string" && strings[k]) t[k] = strings[k]; }
  }
  try { useStrings(JSON.parse(localStorage.getItem("threadline:" + channel + ":strings:" + lang) || "null")); } catch (e) { /* none yet */ }

  var state = {
    token: load("token"), ws: null, open: false, connected: false, retry: 0, config: null,
    pending: {}, rendered: {}, unread: 0, lastTyping: 0, typingTimer: null, emailKnown: false, prechatDone: !!load("prechat"),
    status: null, ackedRead: {}
  };

  function load(k) { try { return localStorage.getItem(storeKey + ":" + k); } catch (e) { return null; } }
  function save(k, v) { try { localStorage.setItem(storeKey + ":" + k, v); } catch (e) { /* private mode */ } }

  // ------------------------------------------------------------------ DOM helpers (no innerHTML)
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), attrs[k]);
      else node.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function linkify(text, into) {
    var re = /\bhttps?:\/\/[^\s<>"']+/g, last = 0, m;
    while ((m = re.exec(text))) {
      into.appendChild(document.createTextNode(text.slice(last, m.index)));
      into.appendChild(el("a", { href: m[0], target: "_blank", rel: "noopener noreferrer", text: m[0] }));
      last = m.index + m[0].length;
    }
    into.appendChild(document.createTextNode(text.slice(last)));
  }
  function absolute(url) { return /^https?:/.test(url) ? url : base + url; }

  // ------------------------------------------------------------------ build the UI inside a shadow root
  var host = el("div", { id: "threadline-chat" });
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  root.appendChild(el("link", { rel: "stylesheet", href: base + "/widget/widget.css" }));
  var badge = el("span", { cls: "tl-badge", "aria-hidden": "true", hidden: "" });
  var launcher = el("button", { type: "button", cls: "tl-launcher", "aria-label": t.open, "aria-expanded": "false",
    "aria-controls": "tl-panel", onclick: function () { toggle(); } }, [el("span", { cls: "tl-launcher-icon", "aria-hidden": "true" }), badge]);
  var title = el("h2", { cls: "tl-title", id: "tl-title", text: "" });
  var sub = el("p", { cls: "tl-sub", id: "tl-sub", text: t.connecting });
  var closeBtn = el("button", { type: "button", cls: "tl-close", "aria-label": t.close, onclick: function () { toggle(false); } }, ["×"]);
  var log = el("ol", { cls: "tl-log", role: "log", "aria-live": "polite", "aria-relevant": "additions", "aria-labelledby": "tl-title" });
  var typingEl = el("p", { cls: "tl-typing", "aria-live": "polite", hidden: "" });
  var notice = el("div", { cls: "tl-notice", role: "status", hidden: "" });
  var input = el("textarea", { cls: "tl-input", id: "tl-input", rows: "1", placeholder: t.placeholder, "aria-label": t.label });
  var fileInput = el("input", { type: "file", cls: "tl-file", id: "tl-file", tabindex: "-1", "aria-hidden": "true" });
  var attachBtn = el("button", { type: "button", cls: "tl-attach", "aria-label": t.attach, title: t.attach,
    onclick: function () { fileInput.click(); } }, [el("span", { cls: "tl-clip", "aria-hidden": "true" })]);
  var sendBtn = el("button", { type: "submit", cls: "tl-send", text: t.send });
  var composer = el("form", { cls: "tl-composer", onsubmit: function (e) { e.preventDefault(); sendText(); } }, [attachBtn, input, sendBtn, fileInput]);
  var prechatForm = buildPersonForm("prechat", "start", function (name, email) {
    state.prechatDone = true; save("prechat", "1"); state.prechat = { name: name, email: email };
    prechatForm.hidden = true; composer.hidden = false; input.focus();
  }, function () {
    state.prechatDone = true; save("prechat", "1");
    prechatForm.hidden = true; composer.hidden = false; input.focus();
  });
  var offlineForm = buildPersonForm("", "save", function (name, email) {
    send({ type: "email", email: email, name: name });
  });
  prechatForm.hidden = true; offlineForm.hidden = true;
  var panel = el("section", { cls: "tl-panel", id: "tl-panel", role: "dialog", "aria-modal": "false", "aria-labelledby": "tl-title", hidden: "" }, [
    el("header", { cls: "tl-head" }, [el("div", {}, [title, sub]), closeBtn]),
    log, typingEl, notice, offlineForm, prechatForm, composer
  ]);
  root.appendChild(panel);
  root.appendChild(launcher);

  function buildPersonForm(introKey, submitKey, done, skip) {
    var uid = Math.random().toString(36).slice(2, 7);
    var name = el("input", { type: "text", id: "n" + uid, autocomplete: "name", maxlength: "200" });
    var email = el("input", { type: "email", id: "e" + uid, autocomplete: "email", required: "", maxlength: "320" });
    var form = el("form", { cls: "tl-person", onsubmit: function (e) {
      e.preventDefault();
      if (!email.value || email.validity && !email.validity.valid) { email.focus(); return; }
      done(name.value.trim(), email.value.trim());
    } }, [
      introKey ? el("p", { cls: "tl-intro" }) : null,
      el("label", { "for": "n" + uid, cls: "tl-name-label" }), name,
      el("label", { "for": "e" + uid, cls: "tl-email-label" }), email,
      el("button", { type: "submit", cls: "tl-primary" }),
      skip ? el("button", { type: "button", cls: "tl-skip", onclick: skip }) : null
    ]);
    form.skipButton = form.querySelector(".tl-skip");
    form.emailInput = email;
    form.relabel = function () {
      var intro = form.querySelector(".tl-intro");
      if (intro) intro.textContent = t[introKey];
      form.querySelector(".tl-name-label").textContent = t.name + " " + t.optional;
      form.querySelector(".tl-email-label").textContent = t.email;
      form.querySelector(".tl-primary").textContent = t[submitKey];
      if (form.skipButton) form.skipButton.textContent = t.skip;
    };
    form.relabel();
    return form;
  }

  // every fixed text of the widget, again (after the server sent the visitor's language)
  function relabel() {
    launcher.setAttribute("aria-label", state.open ? t.close : t.open);
    closeBtn.setAttribute("aria-label", t.close);
    input.setAttribute("placeholder", t.placeholder);
    input.setAttribute("aria-label", t.label);
    attachBtn.setAttribute("aria-label", t.attach); attachBtn.title = t.attach;
    sendBtn.textContent = t.send;
    prechatForm.relabel(); offlineForm.relabel();
    if (!state.connected) sub.textContent = t.connecting;
    Object.keys(state.rendered).forEach(function (k) {
      var li = state.rendered[k];
      if (li.statusEl && li.msg) li.statusEl.textContent = statusText(li.msg.status);
    });
  }

  function mount() { (document.body || document.documentElement).appendChild(host); }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);

  // ------------------------------------------------------------------ panel
  function toggle(force) {
    state.open = force === undefined ? !state.open : force;
    panel.hidden = !state.open;
    host.classList.toggle("tl-open", state.open);
    launcher.setAttribute("aria-expanded", String(state.open));
    launcher.setAttribute("aria-label", state.open ? t.close : t.open);
    if (state.open) {
      state.unread = 0; badge.hidden = true;
      showForms();
      (composer.hidden ? (prechatForm.hidden ? offlineForm : prechatForm).querySelector("input") : input).focus();
      scrollDown(); markRead();
      if (!state.ws) connect();
    } else {
      launcher.focus();
    }
  }
  panel.addEventListener("keydown", function (e) { if (e.key === "Escape") toggle(false); });

  function showForms() {
    var cfg = state.config || {};
    var needPrechat = cfg.prechat && cfg.prechat !== "off" && !state.prechatDone && !state.emailKnown && !Object.keys(state.rendered).length;
    prechatForm.hidden = !needPrechat;
    if (prechatForm.skipButton) prechatForm.skipButton.hidden = cfg.prechat !== "optional";
    composer.hidden = !!needPrechat;
    offlineForm.hidden = !(cfg.online === false && !state.emailKnown);
  }

  function setNotice(text, sticky) {
    notice.textContent = text || ""; notice.hidden = !text;
    clearTimeout(state.noticeTimer);
    if (text && !sticky) state.noticeTimer = setTimeout(function () { notice.hidden = true; }, 6000);
  }

  // ------------------------------------------------------------------ messages
  function statusText(s) { return { sending: t.sending, sent: t.sent, delivered: t.delivered, read: t.read, failed: t.failed }[s] || ""; }

  function render(m) {
    var key = m.id ? "m" + m.id : "c" + m.client_id;
    var existing = state.rendered[key] || (m.client_id && state.rendered["c" + m.client_id]);
    var li = el("li", { cls: "tl-msg tl-" + m.from });
    if (m.from === "agent" && m.author) {
      var av = el("span", { cls: "tl-avatar", "aria-hidden": "true", text: m.author.initials || "?" });
      if (m.author.color) av.style.setProperty("--tl-avatar", m.author.color);
      li.appendChild(av);
      li.appendChild(el("span", { cls: "tl-author", text: m.author.name }));
    }
    var bubble = el("div", { cls: "tl-bubble" });
    if (m.text) linkify(m.text, bubble);
    (m.attachments || []).forEach(function (a) {
      var link = el("a", { href: absolute(a.url), target: "_blank", rel: "noopener noreferrer", cls: "tl-att" });
      if (a.image && a.url) link.appendChild(el("img", { src: absolute(a.url), alt: a.name, loading: "lazy" }));
      else link.appendChild(document.createTextNode("📎 " + a.name));
      bubble.appendChild(link);
    });
    li.appendChild(bubble);
    if (m.from === "visitor") {
      var st = el("span", { cls: "tl-status", text: statusText(m.status) });
      if (m.status === "failed") st.addEventListener("click", function () { retry(m.client_id); });
      li.appendChild(st);
      li.statusEl = st;
    }
    if (m.survey) li.appendChild(surveyBlock(m.survey));
    if (existing) { log.replaceChild(li, existing); delete state.rendered["c" + m.client_id]; }
    else log.appendChild(li);
    state.rendered[key] = li;
    if (m.id && m.client_id) state.rendered["c" + m.client_id] = li;
    li.msg = m;
    scrollDown();
    return li;
  }
  function scrollDown() { log.scrollTop = log.scrollHeight; }

  function surveyBlock(survey) {
    var box = el("div", { cls: "tl-survey", role: "group", "aria-label": t.csat }, [el("p", { text: t.csat })]);
    var row = el("div", { cls: "tl-scale" });
    for (var i = 1; i <= 5; i++) (function (n) {
      row.appendChild(el("button", { type: "button", cls: "tl-score", "aria-label": n + " / 5", text: String(n), onclick: function () {
        var url = absolute(survey.url); url += (url.indexOf("?") < 0 ? "?" : "&") + "score=" + n;
        window.open(url, "_blank", "noopener");
        box.replaceChildren(el("p", { text: t.thanks }));
      } }));
    })(i);
    box.appendChild(row);
    return box;
  }

  function onAgentMessage(m) {
    render(m);
    if (m.from !== "agent") return;
    var visible = state.open && document.visibilityState === "visible";
    send({ type: "ack", ids: [m.id], status: visible ? "read" : "delivered" });
    if (visible) state.ackedRead[m.id] = true;
    else { state.unread++; badge.textContent = String(state.unread); badge.hidden = false; badge.setAttribute("aria-label", state.unread + " " + t.unread); }
    typingEl.hidden = true;
  }
  function markRead() {
    var ids = [];
    Object.keys(state.rendered).forEach(function (k) {
      var li = state.rendered[k], m = li.msg;
      if (m && m.from === "agent" && m.id && m.status !== "read" && !state.ackedRead[m.id]) { ids.push(m.id); state.ackedRead[m.id] = true; }
    });
    if (ids.length) send({ type: "ack", ids: ids.slice(0, 100), status: "read" });
  }
  document.addEventListener("visibilitychange", function () { if (state.open && document.visibilityState === "visible") markRead(); });

  function sendText() {
    var text = input.value.trim();
    if (!text) return;
    var max = (state.config && state.config.max_chars) || 5000;
    if (text.length > max) { setNotice(t.tooLong); return; }
    var cid = "c" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    var msg = { type: "message", client_id: cid, text: text, page: location.href, language: lang };
    if (state.prechat) { msg.name = state.prechat.name; msg.email = state.prechat.email; }
    state.pending[cid] = msg;
    render({ client_id: cid, from: "visitor", text: text, status: "sending" });
    input.value = ""; autoGrow();
    send(msg);
    stopTyping();
  }
  function retry(cid) { var m = state.pending[cid]; if (m) { send(m); var li = state.rendered["c" + cid]; if (li && li.statusEl) li.statusEl.textContent = t.sending; } }

  // ------------------------------------------------------------------ typing
  function autoGrow() { input.style.height = "auto"; input.style.height = Math.min(input.scrollHeight, 120) + "px"; }
  input.addEventListener("input", function () {
    autoGrow();
    var now = Date.now();
    if (now - state.lastTyping > 2500) { state.lastTyping = now; send({ type: "typing", typing: true }); }
    clearTimeout(state.typingTimer);
    state.typingTimer = setTimeout(stopTyping, 3000);
  });
  input.addEventListener("keydown", function (e) { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); sendText(); } });
  function stopTyping() { if (state.lastTyping) { state.lastTyping = 0; send({ type: "typing", typing: false }); } clearTimeout(state.typingTimer); }

  // ------------------------------------------------------------------ upload
  fileInput.addEventListener("change", function () {
    var file = fileInput.files && fileInput.files[0];
    fileInput.value = "";
    if (!file || !state.token) return;
    var cfg = state.config || {};
    if (cfg.upload_max_bytes && file.size > cfg.upload_max_bytes) { setNotice(t.tooBig); return; }
    if (cfg.upload_types && cfg.upload_types.indexOf(file.type) < 0) { setNotice(t.badType); return; }
    var cid = "f" + Date.now().toString(36);
    render({ client_id: cid, from: "visitor", text: "📎 " + file.name, status: "sending" });
    var fd = new FormData();
    fd.append("token", state.token); fd.append("client_id", cid); fd.append("file", file, file.name);
    fetch(base + "/widget/" + channel + "/upload/", { method: "POST", body: fd, credentials: "omit" })
      .then(function (r) { return r.json().then(function (d) { return { ok: r.ok, data: d }; }); })
      .then(function (res) {
        if (res.ok) { render(res.data.message); return; }
        var code = res.data && res.data.error;
        setNotice(code === "too_large" ? t.tooBig : code === "bad_type" ? t.badType : code === "throttled" ? t.throttled : (res.data.detail || t.failed));
        var li = state.rendered["c" + cid]; if (li) { li.parentNode.removeChild(li); delete state.rendered["c" + cid]; }
      })
      .catch(function () { var li = state.rendered["c" + cid]; if (li && li.statusEl) li.statusEl.textContent = t.failed; });
  });

  // ------------------------------------------------------------------ socket
  function send(obj) {
    if (state.ws && state.connected) { try { state.ws.send(JSON.stringify(obj)); return true; } catch (e) { /* reconnects */ } }
    return false;
  }

  function connect() {
    var ws;
    try { ws = new WebSocket(wsBase + "/ws/widget/" + channel + "/"); } catch (e) { return schedule(); }
    state.ws = ws;
    ws.onopen = function () {
      state.connected = true; state.retry = 0;
      ws.send(JSON.stringify({ type: "hello", token: state.token, page: location.href, language: lang, languages: langs }));
    };
    ws.onmessage = function (e) { var d; try { d = JSON.parse(e.data); } catch (x) { return; } handle(d); };
    ws.onclose = function (e) {
      state.connected = false; state.ws = null;
      if (e.code === 4403 || e.code === 4404) { sub.textContent = ""; return; } // not allowed here: stay quiet
      schedule();
    };
  }
  function schedule() {
    var delay = Math.min(30000, 500 * Math.pow(2, state.retry++)) * (0.8 + Math.random() * 0.4);
    sub.textContent = t.connecting;
    setTimeout(connect, delay);
  }
  setInterval(function () { send({ type: "ping" }); }, 25000);

  function applyConfig(cfg) {
    state.config = cfg;
    title.textContent = cfg.title;
    host.style.setProperty("--tl-accent", cfg.color);
    host.style.setProperty("--tl-on-accent", cfg.text_color);
    sub.textContent = cfg.online ? "" : (cfg.within_hours ? t.offline : cfg.business_hours_message);
    if (!cfg.online) setNotice(cfg.within_hours ? cfg.offline_message : cfg.business_hours_message, true);
    else setNotice("");
  }

  function handle(d) {
    switch (d.type) {
      case "welcome":
        if (d.token && d.token !== state.token) { state.token = d.token; save("token", d.token); }
        state.emailKnown = !!d.email;
        if (d.strings) {
          useStrings(d.strings);
          save("strings:" + lang, JSON.stringify(d.strings));
          if (d.language) host.setAttribute("lang", d.language);
          relabel();
        }
        applyConfig(d.config);
        if (!Object.keys(state.rendered).length && d.config.greeting && !(d.messages || []).length) {
          log.appendChild(el("li", { cls: "tl-msg tl-agent tl-greeting" }, [el("div", { cls: "tl-bubble", text: d.config.greeting })]));
        }
        (d.messages || []).forEach(function (m) { render(m); });
        state.status = d.status;
        if (d.survey) log.appendChild(el("li", { cls: "tl-msg tl-agent" }, [surveyBlock(d.survey)]));
        Object.keys(state.pending).forEach(function (cid) { send(state.pending[cid]); }); // resend what a drop lost
        showForms();
        if (state.open) markRead();
        break;
      case "sent":
        delete state.pending[d.client_id];
        render(d.message);
        break;
      case "message":
        if (d.message.from === "agent") onAgentMessage(d.message);
        else { delete state.pending[d.message.client_id]; render(d.message); }
        break;
      case "typing":
        typingEl.textContent = d.typing ? ((d.author && d.author.name) || "") + " " + t.typing : "";
        typingEl.hidden = !d.typing;
        clearTimeout(state.agentTypingTimer);
        if (d.typing) state.agentTypingTimer = setTimeout(function () { typingEl.hidden = true; }, 8000);
        break;
      case "seen":
        Object.keys(state.rendered).forEach(function (k) {
          var li = state.rendered[k];
          if (li.msg && li.msg.from === "visitor" && li.msg.id && li.statusEl) li.statusEl.textContent = t.read;
        });
        break;
      case "status":
        state.status = d.status;
        if (d.status === "resolved") {
          log.appendChild(el("li", { cls: "tl-msg tl-system", text: t.resolved }));
          if (d.survey) log.appendChild(el("li", { cls: "tl-msg tl-agent" }, [surveyBlock(d.survey)]));
          scrollDown();
        }
        break;
      case "availability":
        if (state.config) { state.config.online = d.online; applyConfig(state.config); showForms(); }
        break;
      case "email_saved":
        state.emailKnown = true; offlineForm.hidden = true; setNotice(t.saved);
        break;
      case "error":
        if (d.code === "throttled") setNotice(t.throttled);
        else if (d.code === "too_long") setNotice(t.tooLong);
        else if (d.code === "bad_email") setNotice(t.badEmail);
        else if (d.code === "server_error") setNotice(t.error);
        if (d.client_id && d.code !== "throttled") {
          delete state.pending[d.client_id];
          var li = state.rendered["c" + d.client_id]; if (li && li.statusEl) li.statusEl.textContent = t.failed;
        }
        if (d.code === "throttled") {
          Object.keys(state.pending).forEach(function (cid) {
            var l = state.rendered["c" + cid]; if (l && l.statusEl) l.statusEl.textContent = t.failed;
          });
        }
        break;
    }
  }

  // connect at once: a returning visitor sees replies that came while away
  connect();
})();
