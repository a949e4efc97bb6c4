// Show each last ping as "N minutes ago" next to its UTC timestamp.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var seconds = Math.round((Date.now() - Date.parse(el.getAttribute("datetime"))) / 1000);
    if (isNaN(seconds)) return;
    var ago = seconds < 120 ? seconds + " s ago" : Math.round(seconds / 60) + " min ago";
    el.title = el.textContent;
    el.textContent = el.textContent + " (" + ago + ")";
  });
});
