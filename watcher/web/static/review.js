// The review grid: a click or a key press records a review through the JSON API, without leaving
// the page. Without JavaScript the buttons still work as plain form posts.
"use strict";
(function () {
  const grid = document.getElementById("review-grid");
  if (!grid) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const keys = { f: "female", m: "male", u: "unsure" };

  async function record(tile, label) {
    const response = await fetch(`/api/results/${tile.dataset.id}/review`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ label: label }),
      credentials: "same-origin",
    });
    if (!response.ok) {
      tile.title = `not recorded (${response.status})`;
      tile.classList.add("error");
      return;
    }
    tile.dataset.review = label;
    tile.classList.add("reviewed");
    for (const button of tile.querySelectorAll("button")) {
      button.classList.toggle("chosen", button.value === label);
    }
    const next = tile.nextElementSibling;
    if (next) next.focus();
  }

  grid.addEventListener("click", (event) => {
    const button = event.target.closest("button[name=label]");
    if (!button) return;
    event.preventDefault();
    record(button.closest(".tile"), button.value);
  });

  grid.addEventListener("keydown", (event) => {
    const tile = event.target.closest(".tile");
    if (!tile || event.ctrlKey || event.metaKey || event.altKey) return;
    if (keys[event.key]) {
      event.preventDefault();
      record(tile, keys[event.key]);
    } else if (event.key === "ArrowRight" && tile.nextElementSibling) {
      tile.nextElementSibling.focus();
    } else if (event.key === "ArrowLeft" && tile.previousElementSibling) {
      tile.previousElementSibling.focus();
    }
  });

  const first = grid.querySelector(".tile:not(.reviewed)") || grid.querySelector(".tile");
  if (first) first.focus();
})();
