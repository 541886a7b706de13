/* Threadline agent inbox: keyboard, bulk select, composer helpers, live updates.
 * Works without realtime.js (window.ThreadlineRealtime) and without htmx: every
 * action is a plain form too. Events are delegated on document so fragments
 * swapped in by htmx need no re-initialisation. */
(function () {
  "use strict";
  var doc = document;
  function $(sel, root) { return (root || doc).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || doc).querySelectorAll(sel)); }
  function rt() { return window.ThreadlineRealtime || null; }
  var T = { typing: "is typing a reply…", viewing: "is viewing", mention: "You were mentioned in a note.",
            error: "Something went wrong. Please try again.", offline: "Network error: you seem to be offline.",
            merge: "Merge these customers? This cannot be undone.", canned: "Could not load the canned response.",
            gone: "This conversation is no longer available to you.", sla: "SLA", sla_breached: "SLA breached",
            sla_due: "SLA due" };
  try {
    var i18n = doc.getElementById("inbox-i18n");
    if (i18n) { var parsed = JSON.parse(i18n.textContent); for (var key in parsed) { if (parsed[key]) T[key] = parsed[key]; } }
  } catch (err) { /* keep the English defaults */ }
  function say(text) { var el = $("#live-status"); if (el) { el.textContent = text; } }
  function typingTarget(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }
  function convPage() { var el = $("[data-conversation]"); return el ? parseInt(el.getAttribute("data-conversation"), 10) : null; }
  function me() { var el = $("[data-me]"); return el ? parseInt(el.getAttribute("data-me"), 10) : null; }

  /* ---------------------------------------------------------------- small UI bits */
  doc.addEventListener("change", function (e) {
    var t = e.target;
    if (t.matches && t.matches("[data-autosubmit]") && t.form) {
      if (t.form.requestSubmit) { t.form.requestSubmit(); } else { t.form.submit(); }
    }
    if (t.matches && (t.matches("[data-row-check]") || t.matches("[data-check-all]"))) {
      if (t.matches("[data-check-all]")) {
        $all("[data-row-check]").forEach(function (c) { c.checked = t.checked; });
      }
      updateBulk();
    }
    if (t.matches && t.matches("[data-canned]")) { insertCanned(t); }
    if (t.matches && (t.matches("[data-kind-note]") || t.matches("[data-kind-reply]"))) { composerKind(); }
  });

  doc.addEventListener("click", function (e) {
    var t = e.target.closest ? e.target : null;
    if (!t) return;
    var btn;
    if ((btn = t.closest("[data-nav-toggle]"))) {
      var side = $("#sidebar");
      var open = side.classList.toggle("open");
      btn.setAttribute("aria-expanded", open ? "true" : "false");
    } else if ((btn = t.closest("[data-filters-toggle]"))) {
      var f = $("#filters");
      var isOpen = f.classList.toggle("open");
      btn.setAttribute("aria-expanded", isOpen ? "true" : "false");
    } else if ((btn = t.closest("[data-shortcuts]"))) {
      showShortcuts();
    } else if ((btn = t.closest("[data-load-remote]"))) {
      var body = btn.parentNode.querySelector("[data-html-body]");
      if (body) {
        $all("img[data-remote-src]", body).forEach(function (img) {
          img.setAttribute("src", img.getAttribute("data-remote-src"));
          img.removeAttribute("data-remote-src");
        });
      }
      btn.remove();
    } else if ((btn = t.closest("[data-toggle-quote]"))) {
      var b = btn.parentNode.querySelector("[data-html-body]");
      if (b) {
        var folded = b.classList.toggle("folded");
        btn.setAttribute("aria-expanded", folded ? "false" : "true");
      }
    } else if ((btn = t.closest("[data-copy]"))) {
      var src = doc.getElementById(btn.getAttribute("data-copy"));
      if (src) {
        var text = src.value !== undefined ? src.value : src.textContent;
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(text).then(function () { say(btn.textContent + " ✓"); }, function () {});
        } else if (src.select) { src.select(); doc.execCommand("copy"); }
        btn.classList.add("copied");
      }
    } else if ((btn = t.closest("[data-confirm-merge]"))) {
      if (!window.confirm(T.merge)) {
        e.preventDefault();
      }
    } else {
      var row = t.closest(".conv");
      if (row && !t.closest("a, input, button, label")) { select(row); }
    }
  });

  function updateBulk() {
    var n = $all("[data-row-check]:checked").length;
    var c = $("[data-selected-count]");
    if (c) c.textContent = String(n);
    var bar = $("[data-bulk-bar]");
    if (bar) bar.classList.toggle("active", n > 0);
  }

  function composerKind() {
    var note = $("[data-kind-note]");
    var form = $("#composer");
    if (!form || !note) return;
    form.classList.toggle("is-note", note.checked);
    var pick = $("[data-channel-pick]");
    if (pick) pick.hidden = note.checked;
  }

  function insertCanned(select) {
    var id = select.value;
    if (!id) return;
    var url = select.getAttribute("data-canned-url").replace(/\/0\/$/, "/" + encodeURIComponent(id) + "/");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        var ta = $("[data-composer]");
        if (!ta) return;
        var start = ta.selectionStart || ta.value.length;
        ta.value = ta.value.slice(0, start) + data.text + ta.value.slice(ta.selectionEnd || start);
        ta.focus();
        select.value = "";
      })
      .catch(function () { say(T.canned); });
  }

  function showShortcuts() {
    var d = $("#shortcuts");
    if (d && d.showModal && !d.open) d.showModal();
  }

  /* ---------------------------------------------------------------- keyboard */
  function rows() { return $all(".conv-list .conv"); }
  function select(row) {
    rows().forEach(function (r) { r.classList.remove("selected"); r.removeAttribute("aria-selected"); });
    if (!row) return;
    row.classList.add("selected");
    row.setAttribute("aria-selected", "true");
    var link = row.querySelector(".conv-link");
    if (link) link.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
  }
  function move(delta) {
    var list = rows();
    if (!list.length) return;
    var i = list.findIndex(function (r) { return r.classList.contains("selected"); });
    i = i < 0 ? 0 : Math.max(0, Math.min(list.length - 1, i + delta));
    select(list[i]);
  }

  doc.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var active = doc.activeElement;
    if (e.key === "Escape") {
      var sb = $("#sidebar.open");
      if (sb) {
        sb.classList.remove("open");
        var tg = $("[data-nav-toggle]");
        if (tg) { tg.setAttribute("aria-expanded", "false"); tg.focus(); }
        return;
      }
      if (typingTarget(active)) { active.blur(); return; }
      var back = $("[data-back]");
      if (back && convPage()) { window.location.href = back.href; }
      return;
    }
    if (typingTarget(active)) return;
    var k = e.key;
    var handled = true;
    if (k === "j") { move(1); }
    else if (k === "k") { move(-1); }
    else if (k === "Enter") {
      var sel = $(".conv.selected");
      if (sel) { window.location.href = sel.getAttribute("data-href"); } else { handled = false; }
    } else if (k === "x") {
      var s = $(".conv.selected [data-row-check]");
      if (s) { s.checked = !s.checked; updateBulk(); }
    } else if (k === "/") { var q = $("#global-search"); if (q) { q.focus(); q.select(); } }
    else if (k === "?") { showShortcuts(); }
    else if (k === "r" || k === "n") {
      var radio = $(k === "r" ? "[data-kind-reply]" : "[data-kind-note]");
      var ta = $("[data-composer]");
      if (radio && ta) { radio.checked = true; composerKind(); ta.focus(); } else { handled = false; }
    } else if (k === "e") {
      var btn = $("[data-resolve]");
      if (btn) { btn.click(); }
      else if ($(".conv.selected [data-row-check]") || $all("[data-row-check]:checked").length) {
        var cur = $(".conv.selected [data-row-check]");
        if (cur && !$all("[data-row-check]:checked").length) cur.checked = true;
        var bulkResolve = $("[data-bulk-resolve]");
        if (bulkResolve) bulkResolve.click();
      } else { handled = false; }
    } else if (k === "a") {
      var assign = $("[data-assign]") || $("#bulk-agent");
      if (assign) { assign.focus(); } else { handled = false; }
    } else { handled = false; }
    if (handled) e.preventDefault();
  });

  /* ---------------------------------------------------------------- live: waiting timers */
  function fmt(seconds) {
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h";
    return Math.floor(seconds / 86400) + " d";
  }
  function tick() {
    var now = Date.now();
    $all(".conv-list [data-since]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("data-since"));
      var text = el.querySelector("[data-since-text]");
      if (!isNaN(t) && text) text.textContent = fmt(Math.max(0, Math.round((now - t) / 1000)));
    });
  }
  setInterval(tick, 30000);

  /* ---------------------------------------------------------------- live: realtime events */
  var refreshTimer = null;
  function refreshList() {
    var list = $("#inbox-list");
    if (!list || !window.htmx) return;
    if ($all("[data-row-check]:checked").length || new URLSearchParams(location.search).get("cursor")) {
      list.classList.add("stale");
      return;
    }
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () {
      window.htmx.ajax("GET", location.pathname + location.search, { target: "#inbox-list", swap: "innerHTML" });
    }, 400);
  }
  function refreshTimeline() {
    var tl = $("#timeline");
    if (!tl || !window.htmx) return;
    window.htmx.ajax("GET", location.pathname, { target: "#timeline", swap: "innerHTML" }).then(function () {
      tl.scrollTop = tl.scrollHeight;
    });
  }
  function convId(detail) {
    if (!detail) return null;
    var c = detail.conversation;
    return typeof c === "object" && c ? c.id : c;
  }
  doc.addEventListener("threadline:message.created", function (e) {
    if (convPage() && convId(e.detail) === convPage()) { refreshTimeline(); } else { refreshList(); }
  });
  doc.addEventListener("threadline:conversation.created", refreshList);
  doc.addEventListener("threadline:conversation.updated", function (e) {
    var id = convPage();
    if (!id) { refreshList(); return; }
    if (convId(e.detail) !== id || !window.htmx) return;
    // status, assignee, priority or tags changed elsewhere: refresh the header and the
    // timeline (system lines), never the composer (it may hold a draft)
    window.htmx.ajax("GET", location.pathname, { target: ".conv-head", select: ".conv-head", swap: "outerHTML" });
    refreshTimeline();
  });
  function gone(e) {
    var id = convPage();
    var d = e.detail || {};
    var target = d.conversation !== undefined ? convId(d) : d.id;
    if (id && target === id) {
      say(T.gone);
      var back = $("[data-back]");
      window.location.href = back ? back.href : "/";
    } else if (!id) { refreshList(); }
  }
  doc.addEventListener("threadline:conversation.hidden", gone);
  doc.addEventListener("threadline:conversation.deleted", gone);
  doc.addEventListener("threadline:message.status", function (e) {
    var d = e.detail || {};
    var m = d.message || {};
    var item = doc.getElementById("m" + m.id);
    var badge = item && item.querySelector("[data-delivery]");
    if (badge) { badge.textContent = m.delivery_status; badge.className = "delivery ds-" + m.delivery_status; }
    if (m.delivery_status === "failed") refreshTimeline();
  });
  doc.addEventListener("threadline:mention", function () {
    var c = $("[data-notif-count]");
    if (c) { c.textContent = String((parseInt(c.textContent, 10) || 0) + 1); }
    else {
      var link = $(".notif");
      if (link) { var s = doc.createElement("span"); s.className = "count"; s.setAttribute("data-notif-count", ""); s.textContent = "1"; link.appendChild(s); }
    }
    say(T.mention);
  });
  doc.addEventListener("threadline:presence", function (e) {
    var d = e.detail || {};
    if (!convPage() || d.conversation !== convPage()) return;
    var mine = me();
    var box = $("[data-presence]");
    if (box) {
      box.textContent = "";
      (d.viewers || []).forEach(function (v) {
        if (v.id === mine) return;
        var s = doc.createElement("span");
        s.className = "avatar sm";
        s.style.background = /^#[0-9a-fA-F]{3,8}$/.test(v.color || "") ? v.color : "#64748b";
        s.title = (v.name || "") + " " + T.viewing;
        s.textContent = v.initials || "?";
        box.appendChild(s);
      });
    }
    var warn = $("[data-typing-warning]");
    if (warn) {
      var others = (d.typing || []).filter(function (t) { return t.id !== mine; });
      warn.hidden = others.length === 0;
      if (others.length) {
        warn.textContent = others.map(function (t) { return t.name; }).join(", ") + " " + T.typing;
      }
    }
  });

  /* SLA warnings pushed by the server (metrics.sla_tasks): sla.warning / sla.breached
   * {conversation: {...}, sla: {kind, due_at}}. The inbox row's badge and the open
   * conversation's header change in place; the list is not reloaded. */
  function slaBadge(el, breached, dueAt) {
    el.classList.add("sla");
    el.classList.toggle("breached", breached);
    el.classList.toggle("warning", !breached);
    el.setAttribute("data-sla-due", dueAt || "");
    el.setAttribute("data-sla-state", breached ? "breached" : "warning");
    var due = Date.parse(dueAt);
    if (!isNaN(due)) el.title = T.sla_due + " " + new Date(due).toLocaleString();
    el.textContent = breached ? T.sla_breached
      : T.sla + " " + (isNaN(due) ? "" : fmt(Math.max(0, Math.round((due - Date.now()) / 1000))));
  }
  function onSla(e) {
    var d = e.detail || {};
    var id = convId(d);
    var breached = d.event === "sla.breached";
    var dueAt = d.sla && d.sla.due_at;
    if (!id) return;
    $all('.conv-list .conv[data-conv-id="' + id + '"]').forEach(function (row) {
      var badge = row.querySelector(".sla");
      if (!badge) {
        var meta = row.querySelector(".meta");
        if (!meta) return;
        badge = doc.createElement("span");
        meta.insertBefore(badge, meta.querySelector("time"));
      }
      slaBadge(badge, breached, dueAt);
    });
    if (convPage() === id) {
      var state = $(".conv-head .conv-state");
      if (!state) return;
      var head = state.querySelector("[data-sla-head]");
      if (!head) {
        head = doc.createElement("span");
        head.setAttribute("data-sla-head", "");
        state.appendChild(head);
      }
      slaBadge(head, breached, dueAt);
    }
    say(breached ? T.sla_breached + " #" + id : T.sla + " #" + id);
  }
  doc.addEventListener("threadline:sla.warning", onSla);
  doc.addEventListener("threadline:sla.breached", onSla);
  function tickSla() {
    var now = Date.now();
    $all(".sla.warning[data-sla-due]").forEach(function (el) {
      var due = Date.parse(el.getAttribute("data-sla-due"));
      if (!isNaN(due) && el.getAttribute("data-sla-state")) el.textContent = T.sla + " " + fmt(Math.max(0, Math.round((due - now) / 1000)));
    });
  }
  setInterval(tickSla, 30000);

  /* presence: tell the server what we are viewing and when we type */
  var typingSent = false;
  var typingTimer = null;
  function sendTyping(on) {
    var r = rt();
    var id = convPage();
    if (!r || !id || typingSent === on) return;
    typingSent = on;
    try { r.send({ type: "typing", conversation: id, typing: on }); } catch (err) { /* optional */ }
  }
  doc.addEventListener("input", function (e) {
    if (!e.target.matches || !e.target.matches("[data-composer]")) return;
    var note = $("[data-kind-note]");
    if (note && note.checked) return;  // notes are internal: no collision warning needed
    sendTyping(true);
    clearTimeout(typingTimer);
    typingTimer = setTimeout(function () { sendTyping(false); }, 4000);
  });
  doc.addEventListener("submit", function (e) {
    if (e.target.id === "composer") { clearTimeout(typingTimer); sendTyping(false); }
  });
  function startViewing() {
    var r = rt();
    var id = convPage();
    if (!r || !id) return;
    try { r.send({ type: "viewing", conversation: id }); } catch (err) { /* optional */ }
    window.addEventListener("pagehide", function () {
      try { r.send({ type: "leave", conversation: id }); } catch (err) { /* optional */ }
    });
  }
  doc.addEventListener("htmx:afterSwap", function (e) {
    composerKind();
    if (e.detail && e.detail.target && e.detail.target.id === "conv-main") {
      var tl = $("#timeline"); if (tl) tl.scrollTop = tl.scrollHeight;
    }
    updateBulk();
  });
  doc.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail && e.detail.xhr;
    say(T.error);
    var flash = doc.createElement("p");
    flash.className = "msg msg-error";
    flash.setAttribute("role", "alert");
    flash.textContent = T.error + (xhr ? " (" + xhr.status + ")" : "");
    var main = $("#main");
    if (main) main.insertBefore(flash, main.firstChild);
  });
  doc.addEventListener("htmx:sendError", function () { say(T.offline); });

  function init() {
    composerKind();
    updateBulk();
    var tl = $("#timeline");
    if (tl) tl.scrollTop = tl.scrollHeight;
    startViewing();
    var first = rows()[0];
    if (first && !convPage()) first.classList.add("selected");
  }
  if (doc.readyState === "loading") { doc.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
