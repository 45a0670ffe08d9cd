// callstream console: small progressive enhancements (the pages work without them).
(function () {
  "use strict";
  // Copy buttons: <button data-copy="#id"> copies the value or text of the element it names.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = "value" in source ? source.value : source.textContent;
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { source.select && source.select(); });
    } else if (source.select) {
      source.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected */ }
    }
  });
  // "Pin this key": <button data-pin="value" data-target="#host_key"> fills the host-key field.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-pin]");
    if (!button) return;
    var field = document.querySelector(button.getAttribute("data-target"));
    if (!field) return;
    field.value = button.getAttribute("data-pin");
    field.focus();
  });
  // Show only the inputs of the current choices: an element with data-when-<switch>="a b" shows
  // while the <select data-switch="<switch>"> has value a or b; inputs of hidden parts are
  // disabled so they are not sent (the server ignores them anyway).
  function syncAll() {
    document.querySelectorAll("select[data-switch]").forEach(function (select) {
      var group = select.getAttribute("data-switch");
      document.querySelectorAll("[data-when-" + group + "]").forEach(function (el) {
        el.hidden = el.getAttribute("data-when-" + group).split(" ").indexOf(select.value) < 0;
      });
    });
    document.querySelectorAll(".switched input, .switched select, .switched textarea")
      .forEach(function (input) {
      input.disabled = input.closest("[hidden]") !== null;
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-switch]")) syncAll();
  });
  document.addEventListener("DOMContentLoaded", syncAll);
  document.addEventListener("htmx:afterSwap", syncAll);
})();
