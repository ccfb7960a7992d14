// Tell live pages whether the tab is visible, so they pause refreshing while it is hidden.
document.addEventListener('visibilitychange', function () {
  if (window.dash_clientside && window.dash_clientside.set_props) {
    window.dash_clientside.set_props('page-visible', {data: !document.hidden});
  }
});
