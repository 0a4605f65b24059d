// m365relay admin: small progressive enhancements. Every page works without them.
(function () {
  "use strict";

  // Copy buttons: <button data-copy="ID"> copies the value of the input with that id.
  function copy(button) {
    var input = document.getElementById(button.getAttribute("data-copy"));
    var status = document.getElementById(button.getAttribute("data-copy") + "-status");
    if (!input) { return; }
    function done(ok) {
      if (status) { status.textContent = ok ? "Copied to the clipboard." : "Select the text and copy it (Ctrl+C)."; }
    }
    input.focus();
    input.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(function () { done(true); }, function () { done(false); });
    } else {
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      done(ok);
    }
  }

  // The Custom cloud's fields only matter when Custom is chosen: hide them otherwise.
  function cloudToggle() {
    var select = document.getElementById("f-cloud");
    var custom = document.querySelector("[data-custom-cloud]");
    if (!select || !custom) { return; }
    function update() { custom.hidden = select.value !== "custom"; }
    select.addEventListener("change", update);
    update();
  }

  // After a failed save, move the keyboard focus to the list of errors.
  function focusErrors() {
    var summary = document.getElementById("error-summary");
    if (summary) { summary.focus(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () { copy(button); });
    });
    cloudToggle();
    focusErrors();
  });
})();
