// Fleet overview: draws the robot status grid in the browser from the compact data the server
// sends (components/overview.py, robot_grid_data): one link per robot, grouped by environment,
// status in text, symbol and colour. Cheap for a thousand robots: one DOM write, no component tree.
window.dash_clientside = window.dash_clientside || {};
window.dash_clientside.fleetOverview = (function () {
  var current = null;  // the data last drawn, for tooltips recomputed on hover

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
    });
  }

  // The same wording as components/format.py: duration() and ago().
  function duration(s) {
    if (s < 10) { return s.toFixed(1) + ' s'; }
    if (s < 60) { return Math.round(s) + ' s'; }
    var pad = function (n) { return (n < 10 ? '0' : '') + n; };
    if (s < 3600) { return Math.floor(s / 60) + ' min ' + pad(Math.floor(s % 60)) + ' s'; }
    if (s < 86400) { return Math.floor(s / 3600) + ' h ' + pad(Math.floor(s % 3600 / 60)) + ' min'; }
    return Math.floor(s / 86400) + ' d ' + Math.floor(s % 86400 / 3600) + ' h';
  }

  function ago(epochSeconds) {
    if (epochSeconds === null || epochSeconds === undefined) { return 'never'; }
    return duration(Math.max(0, Date.now() / 1000 - epochSeconds)) + ' ago';
  }

  // row: [robot_id, name, status, hostname, heartbeat (Unix s), heartbeat (local text), workflow]
  function tooltip(row, styles) {
    var label = (styles[row[2]] || [])[1] || row[2];
    return row[1] + ' (' + (row[3] || 'no hostname') + ') — ' + label + '\n' +
      'Last heartbeat: ' + ago(row[4]) + ' (' + row[5] + ')\n' +
      'Current job: ' + (row[6] || 'none');
  }

  function cell(row, styles, index) {
    var style = styles[row[2]] || ['?', row[2], '#8C8C8C'];
    return '<a class="robot-cell robot-' + escapeHtml(row[2]) + '" href="/robots/' +
      escapeHtml(encodeURIComponent(row[0])) + '" data-i="' + index + '" title="' +
      escapeHtml(tooltip(row, styles)) + '" style="--status-color:' + escapeHtml(style[2]) + '">' +
      '<span class="robot-symbol" aria-hidden="true">' + escapeHtml(style[0]) + '</span>' +
      '<span class="robot-name">' + escapeHtml(row[1]) + '</span>' +
      '<span class="robot-status">' + escapeHtml(style[1]) + '</span></a>';
  }

  function rowAt(index) {
    var groups = (current && current.groups) || [];
    for (var g = 0; g < groups.length; g++) {
      if (index < groups[g].robots.length) { return groups[g].robots[index]; }
      index -= groups[g].robots.length;
    }
    return null;
  }

  // Tooltips say "x ago" as of the moment the pointer (or keyboard focus) arrives.
  function freshTooltip(event) {
    var link = event.target.closest && event.target.closest('.robot-cell[data-i]');
    var row = link && rowAt(Number(link.getAttribute('data-i')));
    if (row) { link.title = tooltip(row, current.styles); }
  }

  return {
    renderGrid: function (data) {
      var host = document.getElementById('overview-grid');
      if (!host || !data) { return window.dash_clientside.no_update; }
      current = data;
      var groups = data.groups || [];
      if (!groups.length) {
        host.innerHTML = '<div class="text-muted">No robots registered.</div>';
        return '';
      }
      var html = [], index = 0;
      groups.forEach(function (group) {
        html.push('<div><div class="grid-env">' + escapeHtml(group.env) + ' · ' + group.robots.length +
          ' robots</div><div class="robot-grid">');
        group.robots.forEach(function (row) { html.push(cell(row, data.styles, index++)); });
        html.push('</div></div>');
      });
      host.innerHTML = html.join('');
      if (!host.dataset.tooltips) {
        host.dataset.tooltips = '1';
        host.addEventListener('mouseover', freshTooltip);
        host.addEventListener('focusin', freshTooltip);
      }
      return data.total.toLocaleString('en-US') + ' robots';
    }
  };
})();
