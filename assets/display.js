// Wall display, run in the browser every second: clock, data age, stale banner, panel rotation.
window.dash_clientside = window.dash_clientside || {};
window.dash_clientside.fleetDisplay = {
  loadedAt: Date.now(),
  tick: function (n, lastOk, config, tz) {
    var now = Date.now();
    var refreshMs = (config && config.refresh_ms) || 5000;
    var zone = tz || 'UTC';
    var time = function (ms, withSeconds) {
      try {
        return new Intl.DateTimeFormat('en-GB', {timeZone: zone, hour: '2-digit', minute: '2-digit',
          second: withSeconds ? '2-digit' : undefined, hour12: false}).format(new Date(ms));
      } catch (e) { return new Date(ms).toISOString().substr(11, 8); }
    };
    var clock = time(now, true);
    // Stale: no data for more than twice the refresh interval (or none yet, that long after loading).
    var since = lastOk || this.loadedAt;
    var stale = now - since > 2 * refreshMs;
    var age = lastOk ? Math.max(0, Math.round((now - lastOk) / 1000)) : null;
    var updated = lastOk ? 'Updated ' + time(lastOk, true) + (age > 2 ? ' (' + age + ' s ago)' : '') : 'Waiting for data…';
    var banner = stale ? '⚠ DATA IS STALE — no update since ' + (lastOk ? time(lastOk, true) : 'this screen opened') +
      '. Retrying automatically.' : '';

    // Rotation: show one chosen panel at a time.
    var panels = (config && config.panels) || [];
    var rotate = (config && config.rotate) || 0;
    if (rotate > 0 && panels.length) {
      var current = panels[Math.floor(now / 1000 / rotate) % panels.length];
      panels.forEach(function (name) {
        var el = document.getElementById('display-panel-' + name);
        if (el) { el.classList.toggle('d-none', name !== current); }
      });
    }
    return [clock, updated, banner, stale ? 'd-stale' : 'd-stale d-none',
            stale ? 'display-root is-stale' : 'display-root'];
  }
};
