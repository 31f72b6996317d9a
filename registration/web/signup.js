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

  // The proof of work (registration/internal/proof): when many signups
  // arrive at once the server answers 429 with a challenge, and a request
  // that carries its answer passes. The answer is the challenge, a dot and
  // the first counter whose SHA-256 (of the whole) begins with the number
  // of zero bits the challenge's first field says: about a second here.
  var K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ];
  var W = new Int32Array(64), M = new Int32Array(64), H = new Int32Array(8);

  // sha256 leaves in H the SHA-256 of the ASCII text s (up to 247 bytes).
  function sha256(s) {
    var n = s.length, blocks = ((n + 8) >> 6) + 1, i;
    M.fill(0, 0, blocks * 16);
    for (i = 0; i < n; i++) M[i >> 2] |= s.charCodeAt(i) << (24 - 8 * (i & 3));
    M[n >> 2] |= 0x80 << (24 - 8 * (n & 3));
    M[blocks * 16 - 1] = n * 8;
    var h0 = 0x6a09e667, h1 = 0xbb67ae85 | 0, h2 = 0x3c6ef372, h3 = 0xa54ff53a | 0,
      h4 = 0x510e527f, h5 = 0x9b05688c | 0, h6 = 0x1f83d9ab, h7 = 0x5be0cd19;
    for (var b = 0; b < blocks; b++) {
      for (i = 0; i < 16; i++) W[i] = M[b * 16 + i];
      for (i = 16; i < 64; i++) {
        var x = W[i - 15], y = W[i - 2];
        W[i] = (((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3)) + W[i - 7] +
          (((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10)) + W[i - 16];
      }
      var a = h0, bb = h1, c = h2, d = h3, e = h4, f = h5, g = h6, k = h7;
      for (i = 0; i < 64; i++) {
        var t1 = (k + (((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))) +
          ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
        var t2 = ((((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))) +
          ((a & bb) ^ (a & c) ^ (bb & c))) | 0;
        k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = bb; bb = a; a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0; h1 = (h1 + bb) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + k) | 0;
    }
    H[0] = h0; H[1] = h1; H[2] = h2; H[3] = h3; H[4] = h4; H[5] = h5; H[6] = h6; H[7] = h7;
  }

  // solve finds the answer to challenge, a slice at a time so that the page
  // stays responsive.
  function solve(challenge) {
    var bits = parseInt(challenge, 10);
    return new Promise(function (resolve, reject) {
      if (!(bits > 0 && bits <= 40)) {
        reject(new Error("bad challenge"));
        return;
      }
      var counter = 0;
      (function slice() {
        for (var end = counter + 20000; counter < end; counter++) {
          var proof = challenge + "." + counter;
          sha256(proof);
          var zeros = H[0] === 0 ? 32 + Math.clz32(H[1]) : Math.clz32(H[0]);
          if (zeros >= bits) {
            resolve(proof);
            return;
          }
        }
        setTimeout(slice, 0);
      })();
    });
  }

  function post(signup, proof) {
    var headers = { "Content-Type": "application/json", "Accept": "application/json" };
    if (proof) headers["X-Pesto-Proof"] = proof;
    return fetch(form.getAttribute("action"), {
      method: "POST",
      headers: headers,
      body: JSON.stringify(signup),
      credentials: "same-origin",
      signal: AbortSignal.timeout ? AbortSignal.timeout(20000) : undefined
    });
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
      var response = await post(signup);
      var challenge = response.headers.get("X-Pesto-Challenge");
      if (response.status === 429 && challenge) {
        show("Many signups are arriving right now: a moment…", "pending");
        response = await post(signup, await solve(challenge));
      }
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
