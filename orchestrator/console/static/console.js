// Progressive touches only: every page works without this file.
(function () {
  "use strict";
  // Pause the overview's polling while the tab is hidden.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var source = event.detail && event.detail.elt;
    if (document.hidden && source && source.hasAttribute("data-poll")) {
      event.preventDefault();
    }
  });
  // "Select every job shown" toggles the row checkboxes of its table (rows loaded later too).
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box || !box.matches || !box.matches("input[data-select-all]")) return;
    var form = box.closest("form");
    if (!form) return;
    var name = box.getAttribute("data-select-all");
    form.querySelectorAll('input[type="checkbox"][name="' + name + '"]').forEach(function (row) {
      row.checked = box.checked;
    });
  });
})();
