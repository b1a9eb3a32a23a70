// Upload a dataset file from the dataset page with a progress bar: the file is the request
// body (streamed by the browser), the CSRF token a header. No inline script: the CSP forbids it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var file = form.querySelector("input[type=file]").files[0];
    if (!file) { status.textContent = "Choose a CSV or Parquet file first."; return; }
    var xhr = new XMLHttpRequest();
    xhr.open("PUT", form.action + "?filename=" + encodeURIComponent(file.name));
    xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        bar.value = Math.round(100 * e.loaded / e.total);
        status.textContent = "Uploading: " + bar.value + "%";
      }
    });
    xhr.upload.addEventListener("load", function () {
      status.textContent = "Uploaded; encrypting and building the views…";
    });
    xhr.addEventListener("load", function () {
      if (xhr.status === 200) { window.location.reload(); return; }
      var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var alert = doc.querySelector("[role=alert]");
      status.textContent = "Upload refused (" + xhr.status + "): " +
        (alert ? alert.textContent : "see the server log");
    });
    xhr.addEventListener("error", function () { status.textContent = "Upload failed."; });
    form.querySelector("button").disabled = true;
    xhr.send(file);
  });
});
