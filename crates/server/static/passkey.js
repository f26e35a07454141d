// carevault passkeys: WebAuthn registration and sign-in for forms marked data-passkey.
// A marked form asks the server for options (POST to data-start with the form's CSRF token in
// X-CSRF-Token), runs navigator.credentials.create() or .get(), puts the response (JSON with
// base64url fields) in the form's "response" field, and submits the form normally.
"use strict";

(function () {
  function toBytes(base64url) {
    var base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) { base64 += "="; }
    var text = atob(base64);
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) { bytes[i] = text.charCodeAt(i); }
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var text = "";
    for (var i = 0; i < bytes.length; i++) { text += String.fromCharCode(bytes[i]); }
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(options) {
    var key = options.publicKey;
    key.challenge = toBytes(key.challenge);
    key.user.id = toBytes(key.user.id);
    (key.excludeCredentials || []).forEach(function (credential) {
      credential.id = toBytes(credential.id);
    });
    return { publicKey: key };
  }

  function requestOptions(options) {
    var key = options.publicKey;
    key.challenge = toBytes(key.challenge);
    (key.allowCredentials || []).forEach(function (credential) {
      credential.id = toBytes(credential.id);
    });
    return { publicKey: key };
  }

  function registration(credential) {
    var response = credential.response;
    var transports = typeof response.getTransports === "function" ? response.getTransports() : undefined;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: toBase64url(response.attestationObject),
        clientDataJSON: toBase64url(response.clientDataJSON),
        transports: transports
      },
      extensions: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {}
    };
  }

  function assertion(credential) {
    var response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toBase64url(response.authenticatorData),
        clientDataJSON: toBase64url(response.clientDataJSON),
        signature: toBase64url(response.signature),
        userHandle: response.userHandle ? toBase64url(response.userHandle) : null
      },
      extensions: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {}
    };
  }

  function showError(form, text) {
    var box = form.querySelector("[data-passkey-error]");
    if (box) {
      box.textContent = text;
      box.hidden = false;
    }
  }

  function run(form) {
    var creating = form.getAttribute("data-passkey") === "create";
    var csrf = form.querySelector("input[name=csrf]");
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; }
    fetch(form.getAttribute("data-start"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf ? csrf.value : "", "Accept": "application/json" }
    })
      .then(function (reply) {
        if (!reply.ok) { throw new Error("start"); }
        return reply.json();
      })
      .then(function (options) {
        return creating
          ? navigator.credentials.create(creationOptions(options))
          : navigator.credentials.get(requestOptions(options));
      })
      .then(function (credential) {
        if (!credential) { throw new Error("none"); }
        var json = creating ? registration(credential) : assertion(credential);
        form.querySelector("input[name=response]").value = JSON.stringify(json);
        form.submit();
      })
      .catch(function () {
        if (button) { button.disabled = false; }
        showError(form, creating
          ? "Your passkey was not registered. Try again, and confirm with your fingerprint, face or PIN when asked."
          : "Your passkey did not sign you in. Try again, or use your password.");
      });
  }

  function start() {
    var forms = document.querySelectorAll("form[data-passkey]");
    Array.prototype.forEach.call(forms, function (form) {
      if (!window.PublicKeyCredential) {
        showError(form, "This browser cannot use passkeys.");
        return;
      }
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        run(form);
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
