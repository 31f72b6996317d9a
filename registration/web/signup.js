// Sends the signup form as JSON and shows the outcome in place. Without
// this script the form posts itself and the server answers with a page.
(function () {
  "use strict";
  var form = document.getElementById("signup");
  var button = document.getElementById("submit");
  var status = document.getElementById("status");
  // The same words for a new and a known email: the page never tells
  // whether an address was already on the list.
  var thanks = "Thanks — you're on the waiting list. We'll email your key when you're approved.";

  function show(text, kind) {
    status.textContent = text;
    status.className = "status " + kind;
  }

  function value(id) {
    return document.getElementById(id).value;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    var signup = {
      name: value("name"),
      email: value("email"),
      building: value("building"),
      calls: Number(value("calls"))
    };
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    show("Sending…", "pending");
    try {
      var response = await fetch(form.getAttribute("action"), {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(signup),
        credentials: "same-origin",
        signal: AbortSignal.timeout ? AbortSignal.timeout(20000) : undefined
      });
      if (response.status === 201 || response.status === 202) {
        form.reset();
        show(thanks, "ok");
        return;
      }
      var message = "";
      try {
        message = (await response.json()).message;
      } catch (ignored) {
        // not JSON: fall through to the generic message
      }
      if (typeof message !== "string" || message === "") {
        message = "Something went wrong (HTTP " + response.status + "). Please try again in a moment.";
      }
      show(message, "error");
    } catch (err) {
      show("Could not reach the server. Check your connection and try again.", "error");
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
})();
