/* Threadline realtime client for agent pages (inbox, conversation view).
 *
 * Include with <script src="{% static 'js/realtime.js' %}" defer></script>; it
 * connects to /ws/agent/ on load (the Django session authenticates it).
 *
 * API
 *   window.ThreadlineRealtime.on(eventName, fn)   fn(payload); "*" receives every event. Returns an unsubscribe function.
 *   window.ThreadlineRealtime.send(obj)           queue a client->server frame (sent when connected)
 *   window.ThreadlineRealtime.state               "connecting" | "open" | "closed" | "unauthorized"
 *   window.ThreadlineRealtime.view(id) / .leave(id) / .typing(id, bool) / .setAvailability(status)   helpers
 * Every server event is also dispatched on `document` as CustomEvent("threadline:<event>", {detail: payload}),
 * e.g. document.addEventListener("threadline:message.created", e => ...). State changes: "threadline:state".
 *
 * Server -> client payloads (conversations/realtime.py); each has "event", "id" (dedupe key) and "at" (server time):
 *   conversation.created  {conversation: {...}, message: {...}}
 *   message.created       {conversation: {id, status, priority, assignee, team, subject, customer, last_message_at,
 *                          updated_at, preview, channel}, message: {id, direction, channel, author, text, created_at,
 *                          delivery_status, automated}}
 *   conversation.updated  {conversation: {...}}          status, assignee, team, priority, tag changes
 *   conversation.deleted  {id}                           merged away
 *   conversation.hidden   {conversation: id}             moved out of your reach while you had it open
 *   message.status        {conversation: id, message: {id, delivery_status, error}}
 *   mention               {message: id}
 *   customer.merged       {survivor, merged}
 *   presence              {conversation: id, viewers: [{id, name, initials, color}], typing: [...]}   collision detection
 *   customer.typing       {conversation: id, typing: bool}   the chat visitor is typing
 *   agent.availability    {agents: [{agent: id, status: "online" | "away" | "offline"}, ...]}   batched: at most
 *                         one frame per 0.25 s per server process (the reply to your own change also has agent, status)
 *   sla.warning / sla.breached  {conversation: {...}, sla: {kind, due_at}}
 *   ready                 {at, user, availability}       after (re)connecting
 *   catch_up.done         {since, at, count, truncated}  truncated: too much changed, reload the list
 *   error                 {code}
 * Client -> server frames:
 *   {type: "viewing", conversation: id}     join the conversation's events (permission checked) and show presence
 *   {type: "leave", conversation: id}
 *   {type: "typing", conversation: id, typing: true|false}
 *   {type: "availability", status: "online"|"away"|"offline"}
 *   {type: "catch_up", since: "<ISO time>"} replayed events carry catch_up: true
 *   {type: "ping"}                          heartbeat, sent every 25 s by this library
 *
 * No silent gaps: after a drop the library reconnects with exponential backoff, re-sends "viewing" for the
 * conversations you had open, then asks for catch_up since the `at` of the last event it saw; the server
 * replays conversation.updated / message.created for what changed meanwhile (dedupe messages by message.id).
 */
(function () {
  "use strict";
  if (window.ThreadlineRealtime) return;
  var listeners = {};
  var queue = [];
  var viewing = {};
  var seen = [];
  var seenSet = {};
  var lastAt = null;
  var ws = null;
  var retry = 0;
  var everConnected = false;

  var api = {
    state: "connecting",
    on: function (name, fn) {
      (listeners[name] = listeners[name] || []).push(fn);
      return function () { listeners[name] = (listeners[name] || []).filter(function (f) { return f !== fn; }); };
    },
    send: function (obj) {
      if (obj && obj.type === "viewing") viewing[obj.conversation] = true;
      if (obj && obj.type === "leave") delete viewing[obj.conversation];
      if (ws && ws.readyState === 1) ws.send(JSON.stringify(obj));
      else if (obj && obj.type !== "typing" && obj.type !== "ping") queue.push(obj);
    },
    view: function (id) { api.send({ type: "viewing", conversation: id }); },
    leave: function (id) { api.send({ type: "leave", conversation: id }); },
    typing: function (id, on) { api.send({ type: "typing", conversation: id, typing: !!on }); },
    setAvailability: function (status) { api.send({ type: "availability", status: status }); },
    lastEventAt: function () { return lastAt; }
  };
  window.ThreadlineRealtime = api;

  function setState(s) {
    api.state = s;
    document.dispatchEvent(new CustomEvent("threadline:state", { detail: { state: s } }));
  }

  function emit(payload) {
    var name = payload.event;
    if (!name) return;
    if (payload.id) {
      if (seenSet[payload.id]) return;
      seenSet[payload.id] = true; seen.push(payload.id);
      if (seen.length > 1000) delete seenSet[seen.shift()];
    }
    if (payload.at && name !== "catch_up.done" && (!lastAt || payload.at > lastAt)) lastAt = payload.at;
    if (name === "catch_up.done" && payload.at) lastAt = payload.at > (lastAt || "") ? payload.at : lastAt;
    (listeners[name] || []).concat(listeners["*"] || []).forEach(function (fn) {
      try { fn(payload); } catch (e) { if (window.console) console.error(e); }
    });
    document.dispatchEvent(new CustomEvent("threadline:" + name, { detail: payload }));
  }

  function connect() {
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/agent/";
    setState("connecting");
    try { ws = new WebSocket(url); } catch (e) { return schedule(); }
    ws.onopen = function () {
      retry = 0;
      setState("open");
      Object.keys(viewing).forEach(function (id) { ws.send(JSON.stringify({ type: "viewing", conversation: Number(id) })); });
      if (everConnected && lastAt) ws.send(JSON.stringify({ type: "catch_up", since: lastAt }));
      everConnected = true;
      var pending = queue; queue = [];
      pending.forEach(function (obj) { if (obj.type !== "viewing") ws.send(JSON.stringify(obj)); });
    };
    ws.onmessage = function (e) {
      var payload;
      try { payload = JSON.parse(e.data); } catch (x) { return; }
      if (payload.event === "ready" && !lastAt) lastAt = payload.at;
      emit(payload);
    };
    ws.onclose = function (e) {
      ws = null;
      if (e.code === 4401 || e.code === 4403 || e.code === 1006 && !everConnected && retry > 5) {
        setState(e.code === 4401 ? "unauthorized" : "closed");
        if (e.code === 4401) return; // logged out: the page will redirect on its next request
      }
      setState("closed");
      schedule();
    };
  }

  function schedule() {
    var delay = Math.min(30000, 500 * Math.pow(2, retry++)) * (0.8 + Math.random() * 0.4);
    setTimeout(connect, delay);
  }

  setInterval(function () { if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "ping" })); }, 25000);
  window.addEventListener("online", function () { if (!ws) { retry = 0; connect(); } });
  connect();
})();
