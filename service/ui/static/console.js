// Draws every figure of the page (JSON in #figures, keyed by the id of its element).
(function () {
  var data = document.getElementById("figures");
  if (!data || !window.Plotly) { return; }
  var figures = JSON.parse(data.textContent);
  Object.keys(figures).forEach(function (id) {
    var el = document.getElementById(id);
    if (!el) { return; }
    var fig = figures[id];
    Plotly.newPlot(el, fig.data, fig.layout, { responsive: true, displaylogo: false })
      .then(function () { el.setAttribute("data-rendered", "1"); });
  });
})();
