// Dashboard charts (Chart.js vendored under static/vendor/chartjs, no CDN).
(function () {
  "use strict";
  var el = document.getElementById("dash-data");
  if (!el || typeof Chart === "undefined") return;
  var data = JSON.parse(el.textContent);
  function chart(id, cfg) {
    var canvas = document.getElementById(id);
    if (canvas) new Chart(canvas, cfg);
  }
  var labels = data.trend.map(function (r) { return r.key; });
  var opts = { responsive: true, animation: false, plugins: { legend: { position: "bottom" } } };
  chart("chart-volume", { type: "line", options: opts, data: { labels: labels, datasets: [
    { label: "created", data: data.trend.map(function (r) { return r.created; }), borderColor: "#2563eb" },
    { label: "resolved", data: data.trend.map(function (r) { return r.resolved; }), borderColor: "#059669" }] } });
  chart("chart-frt", { type: "bar", options: opts, data: { labels: labels, datasets: [
    { label: "median FRT (s)", data: data.trend.map(function (r) { return r.frt; }), backgroundColor: "#6366f1" }] } });
  chart("chart-dist", { type: "bar", options: opts, data: {
    labels: data.distribution.map(function (r) { return r.bucket; }),
    datasets: [{ label: "conversations", data: data.distribution.map(function (r) { return r.count; }), backgroundColor: "#0ea5e9" }] } });
  chart("chart-csat", { type: "line", options: opts, data: { labels: labels, datasets: [
    { label: "CSAT %", data: data.trend.map(function (r) { return r.csat; }), borderColor: "#f59e0b", spanGaps: true }] } });
})();
