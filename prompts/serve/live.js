// The live page: turns as they stream (server-sent events), the stance chart from the
// record after each turn. Model text goes in as textContent: it stays text.
"use strict";
(function () {
  const turns = document.getElementById("turns");
  const runId = turns.dataset.run;
  const state = document.getElementById("state");
  const chart = document.getElementById("chart");
  const shadow = chart.attachShadow({ mode: "open" });
  shadow.innerHTML = "<p style='color:#66707b'>Fills in as the rounds end.</p>";
  const cards = new Map();

  function card(e) {
    const key = e.stage + "/" + e.round + "/" + e.panelist;
    let c = cards.get(key);
    if (!c) {
      c = document.createElement("article");
      c.className = "turn generating";
      c.dataset.stage = e.stage;
      const h = document.createElement("h3");
      const what = e.stage === "turn" ? "Round " + e.round : e.stage === "labels" ? "Labels of round " + e.round : e.stage === "sample" ? "Sample of round 1" : "Summary";
      h.textContent = what + " · " + e.panelist;
      const pre = document.createElement("pre");
      pre.className = "text";
      c.append(h, pre);
      turns.append(c);
      cards.set(key, c);
    }
    return c;
  }

  async function refreshChart() {
    try {
      const answer = await fetch("/runs/" + runId, { credentials: "same-origin" });
      if (!answer.ok) return;
      const doc = new DOMParser().parseFromString(await answer.text(), "text/html");
      const svg = doc.getElementById("stance-chart");
      if (!svg) return;
      shadow.replaceChildren();
      for (const style of doc.querySelectorAll("style")) {
        const own = document.createElement("style");  // the report's colours, here
        own.textContent = style.textContent.replace(/:root|\bbody\b/g, ":host");
        shadow.append(own);
      }
      shadow.append(document.importNode(svg, true));
    } catch (err) { /* the next event tries again */ }
  }

  const source = new EventSource("/live/" + runId + "/events");
  let opened = 0;
  source.onopen = function () {  // a reconnection replays the debate from its start
    if (opened++) { cards.clear(); turns.replaceChildren(); }
  };
  source.onmessage = function (message) {
    const e = JSON.parse(message.data);
    if (e.kind === "queued") {
      state.textContent = e.ahead
        ? "Waiting: debate " + e.ahead + " is running (" + e.position + " in the queue). One debate runs at a time."
        : "Waiting to start…";
    } else if (e.kind === "started") {
      state.textContent = "Loading the models…";
    } else if (e.kind === "note") {
      state.textContent = e.text;
    } else if (e.kind === "progress") {
      const c = card(e);
      if (e.status === "generating") {
        state.textContent = "Generating: " + c.querySelector("h3").textContent;
      } else {
        c.classList.remove("generating");
        c.classList.add(e.status === "ok" ? "ok" : "failed");
        c.dataset.done = "1";
        refreshChart();
      }
    } else if (e.kind === "text") {
      const pre = card(e).querySelector("pre");
      if (e.restart) pre.textContent = e.text;
      else pre.textContent += e.text;
    } else if (e.kind === "end") {
      source.close();
      state.textContent = "Ended: " + e.status + (e.error ? " (" + e.error + ")" : "");
      state.dataset.ended = e.status;
      document.getElementById("stop").hidden = true;
      for (const c of turns.querySelectorAll(".turn.generating")) {  // stopped mid-turn
        c.classList.replace("generating", "stopped");
      }
      if (e.status !== "cancelled" && e.status !== "error") document.getElementById("done").hidden = false;
      refreshChart();
    }
  };
  source.onerror = function () {
    if (!state.dataset.ended) state.textContent = "Connection lost; reload the page to follow the run.";
  };
})();
