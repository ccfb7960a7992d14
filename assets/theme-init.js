// Apply the remembered theme before the page paints (no flash of the wrong theme).
(function () {
  try {
    var theme = JSON.parse(window.localStorage.getItem('theme') || 'null');
    if (theme === 'dark' || theme === 'light') {
      document.documentElement.setAttribute('data-bs-theme', theme);
    }
  } catch (e) { /* storage blocked: keep the default */ }
})();
