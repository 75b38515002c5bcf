// The reviewer inbox's passkey ceremonies (WebAuthn).
//
// A form marked data-passkey (a decision, a stop) is signed by the user's
// passkey before it is sent: the form goes to <action>/prepare, whose answer
// holds the act's challenge and a token for the prepared act; the passkey
// signs the challenge, and the form is then submitted as usual with the token
// and the passkey's answer. The run verifies the signature itself. Each such
// form holds a [data-passkey-error] box for this script's messages.
//
// A form marked data-passkey-register registers a new passkey: the create
// ceremony's answer is submitted in the form's `credential` field.
"use strict";

(() => {
  const ADDED = "data-passkey-field";

  function toBase64url(buffer) {
    let text = "";
    for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function fromBase64url(text) {
    const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  }

  // The inbox answers JSON, with {error} when it cannot go on.
  async function postForm(url, body) {
    const response = await fetch(url, { method: "POST", body, credentials: "same-origin" });
    const type = response.headers.get("content-type") || "";
    if (!type.startsWith("application/json")) {
      throw new Error(
        `the inbox answered ${response.status} ${response.statusText}: reload the page and try again`
      );
    }
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error);
    return answer;
  }

  function available() {
    if (!window.PublicKeyCredential || !navigator.credentials) {
      throw new Error(
        "this browser offers no passkeys on this page: open the inbox over HTTPS or on http://localhost"
      );
    }
  }

  // The browser's own words when the person cancels or the authenticator fails.
  async function ceremony(run) {
    try {
      return await run();
    } catch (err) {
      throw new Error(`the passkey did not answer (${err.name}: ${err.message}); nothing was sent`);
    }
  }

  function setFields(form, fields) {
    for (const input of form.querySelectorAll(`input[${ADDED}]`)) input.remove();
    for (const [name, value] of Object.entries(fields)) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value;
      input.setAttribute(ADDED, "");
      form.append(input);
    }
  }

  async function signAndSubmit(form, submitter) {
    available();
    const prepared = await postForm(`${form.action}/prepare`, new FormData(form, submitter));
    const credential = await ceremony(() =>
      navigator.credentials.get({
        publicKey: {
          challenge: fromBase64url(prepared.challenge),
          rpId: prepared.rp_id,
          allowCredentials: prepared.credentials.map((id) => ({
            type: "public-key",
            id: fromBase64url(id),
          })),
          userVerification: "required",
          timeout: prepared.timeout,
        },
      })
    );
    const fields = {
      token: prepared.token,
      credential_id: toBase64url(credential.rawId),
      authenticator_data: toBase64url(credential.response.authenticatorData),
      client_data_json: toBase64url(credential.response.clientDataJSON),
      signature: toBase64url(credential.response.signature),
    };
    // form.submit() sends no submitter: the button pressed (the outcome) goes as a field.
    if (submitter && submitter.name) fields[submitter.name] = submitter.value;
    setFields(form, fields);
    form.submit();
  }

  async function registerAndSubmit(form) {
    available();
    const options = await postForm("/passkeys/options", new FormData(form));
    options.challenge = fromBase64url(options.challenge);
    options.user.id = fromBase64url(options.user.id);
    for (const excluded of options.excludeCredentials || []) excluded.id = fromBase64url(excluded.id);
    const credential = await ceremony(() => navigator.credentials.create({ publicKey: options }));
    form.elements.credential.value = JSON.stringify({
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment,
      response: {
        clientDataJSON: toBase64url(credential.response.clientDataJSON),
        attestationObject: toBase64url(credential.response.attestationObject),
        transports: credential.response.getTransports ? credential.response.getTransports() : [],
      },
      clientExtensionResults: credential.getClientExtensionResults(),
    });
    form.submit();
  }

  function showError(form, message) {
    const box = form.querySelector("[data-passkey-error]");
    box.textContent = message;
    box.hidden = false;
  }

  // A page restored from the back/forward cache may hold a form left busy.
  window.addEventListener("pageshow", () => {
    for (const form of document.querySelectorAll("form[data-busy]")) delete form.dataset.busy;
  });

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    const signing = form.matches("form[data-passkey]");
    if (!signing && !form.matches("form[data-passkey-register]")) return;
    event.preventDefault();
    // One ceremony at a time: a second click would prepare a second act.
    if (form.dataset.busy) return;
    form.dataset.busy = "yes";
    form.querySelector("[data-passkey-error]").hidden = true;
    try {
      await (signing ? signAndSubmit(form, event.submitter) : registerAndSubmit(form));
    } catch (err) {
      showError(form, err.message);
      delete form.dataset.busy;
    }
  });

  // The signed forms' buttons come disabled: sent before this script listens,
  // a form would go out unsigned and be refused. From here on it listens.
  for (const button of document.querySelectorAll("button[data-awaits-passkey-script]")) {
    button.disabled = false;
  }
})();
