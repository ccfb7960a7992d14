// Keep a signed-in session alive: when a callback answers 401 because the access token expired,
// renew it once from the refresh cookie and repeat the request; if that fails, go to sign-in.
(function () {
  if (window.__fleetSessionHook) { return; }
  window.__fleetSessionHook = true;
  var originalFetch = window.fetch.bind(window);

  function cookie(name) {
    var match = document.cookie.match(new RegExp('(?:^|; )' + name + '=([^;]*)'));
    return match ? decodeURIComponent(match[1]) : '';
  }

  function toLogin() {
    var here = window.location.pathname + window.location.search;
    window.location.assign('/login?next=' + encodeURIComponent(here));
  }

  var refreshing = null;
  function refresh() {
    if (!refreshing) {
      refreshing = originalFetch('/auth/refresh', {
        method: 'POST', credentials: 'same-origin',
        headers: {'X-CSRF-TOKEN': cookie('csrf_refresh_token')}
      }).then(function (r) { refreshing = null; return r.ok; },
              function () { refreshing = null; return false; });
    }
    return refreshing;
  }

  window.fetch = function (input, init) {
    var url = typeof input === 'string' ? input : (input && input.url) || '';
    return originalFetch(input, init).then(function (response) {
      if (response.status !== 401 || url.indexOf('/_dash-') === -1) { return response; }
      return refresh().then(function (ok) {
        if (!ok) { toLogin(); return response; }
        var retry = Object.assign({}, init || {});
        var headers = new Headers((init && init.headers) || {});
        headers.set('X-CSRF-TOKEN', cookie('csrf_access_token'));
        retry.headers = headers;
        return originalFetch(input, retry);
      });
    });
  };
})();
