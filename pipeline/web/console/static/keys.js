// Keyboard: j / k move between the rows of the queue or incident list, Enter opens the
// focused one (a link); on an incident, a focuses "assign to", r the resolution.
// Keys typed into a field are left alone.
(function () {
  "use strict";
  function rowLinks() {
    return Array.prototype.slice.call(
      document.querySelectorAll("#queue tbody tr a[href^='/verdicts/'], " +
                                "#incidents tbody tr a[href^='/incidents/']"));
  }
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey ||
        /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName)) { return; }
    var links = rowLinks();
    var at = links.indexOf(document.activeElement);
    if ((event.key === "j" || event.key === "k") && links.length) {
      var next = event.key === "j" ? Math.min(at + 1, links.length - 1) : Math.max(at - 1, 0);
      links[next].focus();
      links[next].closest("tr").scrollIntoView({ block: "nearest" });
      event.preventDefault();
    } else if (event.key === "a" || event.key === "r") {
      var field = document.querySelector(event.key === "a"
        ? "#assign-form select, #bulk select[name=assignee]"
        : "#resolve-form select, #bulk select[name=resolution]");
      if (field) { field.focus(); event.preventDefault(); }
    }
  });
})();
