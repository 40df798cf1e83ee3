"""The picking page: one self-contained ``index.html`` per round, beside its sheet.

The page needs no server and no network: the candidates are linked by relative paths, the style and the script are
inline, and fonts are the system's. Clicking a candidate toggles it and shows the ``styleprefs select …`` command
that records the same picks. Served by ``styleprefs pick`` (``server.py``) the same page also gets two buttons, which
ask the server to run that command, or ``refine`` then ``propose``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from PIL import Image

from .files import atomic_write

PAGE = "index.html"


def write(folder: Path, index: int, candidates: list[str], session: Path) -> Path:
    """Write round ``index``'s page into its ``folder`` (which holds ``candidates`` and ``sheet.png``)."""
    text = render(folder, index, candidates, session)
    atomic_write(folder / PAGE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return folder / PAGE


def render(folder: Path, index: int, candidates: list[str], session: Path) -> str:
    """Round ``index``'s page as HTML: a grid of its ``candidates`` (file names in ``folder``), numbered from 1."""
    cells = []
    for number, name in enumerate(candidates, 1):
        with Image.open(folder / name) as image:  # the header only: width and height keep the grid from jumping
            width, height = image.size
        cells.append(f'<button type="button" class="candidate" data-number="{number}" aria-pressed="false">'
                     f'<img src="{html.escape(name)}" width="{width}" height="{height}" alt="candidate {number}">'
                     f'<span class="number">{number}</span></button>')
    data = {"round": index, "n": len(candidates), "session": str(Path(session).resolve())}
    return (_TEMPLATE
            .replace("__ROUND__", str(index))
            .replace("__DATA__", json.dumps(data).replace("<", "\\u003c"))
            .replace("__CANDIDATES__", "\n".join(cells)))


_TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>styleprefs: round __ROUND__</title>
<style>
[hidden] { display: none !important; }
:root { color-scheme: dark; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
html { scroll-padding-bottom: 12rem; }  /* a candidate scrolled to (by keyboard focus) clears the sticky footer */
body { margin: 0; background: #181818; color: #eee; }
header, footer { padding: .75rem 1rem; }
h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
header p { margin: 0; color: #bbb; }
a { color: #8cf; }
.grid { display: grid; gap: .6rem; padding: 0 1rem 1rem;
        grid-template-columns: repeat(auto-fill, minmax(min(15rem, calc(50% - .3rem)), 1fr)); }
.candidate { position: relative; padding: 0; border: 5px solid transparent; border-radius: 8px;
             background: #000; cursor: pointer; overflow: hidden; }
.candidate:focus-visible { outline: 3px solid #8cf; }
.candidate img { display: block; width: 100%; height: auto; }
.number { position: absolute; top: .35rem; left: .35rem; padding: .05rem .55rem; border-radius: .4rem;
          background: rgba(0, 0, 0, .75); color: #ffeb3b; font-size: 1.8rem; font-weight: 700; line-height: 1.3; }
.candidate[aria-pressed="true"] { border-color: #ffb300; }
.candidate[aria-pressed="true"]::after { content: "\2713"; position: absolute; top: .35rem; right: .35rem;
          width: 2.2rem; height: 2.2rem; border-radius: 50%; background: #ffb300; color: #000;
          font-size: 1.5rem; font-weight: 700; line-height: 2.2rem; text-align: center; }
footer { position: sticky; bottom: 0; background: #222; border-top: 1px solid #444; }
.row { display: flex; flex-wrap: wrap; align-items: center; column-gap: .6rem; }
#command { flex: 1 1 20rem; margin: .25rem 0; padding: .5rem .6rem; background: #000; border-radius: 6px;
           font: 1rem ui-monospace, Menlo, Consolas, monospace; color: #cfc; overflow-wrap: anywhere; }
button.action { font: inherit; font-size: 1rem; padding: .45rem .9rem; margin: .25rem .4rem .25rem 0;
                border-radius: 6px; border: 1px solid #777; background: #333; color: #eee; cursor: pointer; }
button.action:disabled { opacity: .45; cursor: default; }
#message { min-height: 1.3em; }
#message.error { color: #ff8a80; }
</style>
</head>
<body>
<header>
<h1>Round __ROUND__</h1>
<p>Click the candidates you like; click again to leave one out.
<a href="sheet.png">The contact sheet</a> has the same numbers.</p>
</header>
<main class="grid">
__CANDIDATES__
</main>
<footer>
<div id="prompt">No candidate chosen yet.</div>
<div class="row"><code id="command" hidden></code>
<button type="button" class="action" id="copy" hidden>Copy the command</button></div>
<div class="row"><span id="actions" hidden>
<button type="button" class="action" id="use">Use these</button>
<button type="button" class="action" id="refine">Refine and show the next round</button>
</span><span id="message" role="status"></span></div>
</footer>
<script id="round-data" type="application/json">__DATA__</script>
<script>
"use strict";
const round = JSON.parse(document.getElementById("round-data").textContent);
const picked = new Set();
const $ = (id) => document.getElementById(id);
let served = null;  // the server's state when `styleprefs pick` serves this page
let timer = null;
function schedule(ms) { clearTimeout(timer); timer = setTimeout(poll, ms); }

function picks() { return [...picked].sort((a, b) => a - b); }

// --session names the session by its absolute path, so the command works from any folder. Opened as a file, the
// page finds the session from its own place (rounds/NNN/index.html in it), so a copied or moved session's page
// names where it is now; served, the server wrote the path in.
function sessionPath() {
  const own = decodeURIComponent(location.pathname).match(/^(.*)\/rounds\/[^\/]+\/[^\/]+$/);
  return location.protocol === "file:" && own ? own[1] : round.session;
}

function quoted(text) {  // as Python's shlex.quote
  return /^[\w@%+=:,.\/-]+$/.test(text) ? text : "'" + text.replace(/'/g, "'\"'\"'") + "'";
}

function command() {
  return "styleprefs select " + picks().join(" ") + " --session " + quoted(sessionPath());
}

function say(text, isError) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

function update() {
  const chosen = picks();
  $("prompt").textContent = chosen.length
    ? "Chosen: " + chosen.join(", ") + ". To record them from a terminal:"
    : "No candidate chosen yet.";
  $("command").hidden = $("copy").hidden = !chosen.length;
  $("command").textContent = chosen.length ? command() : "";
  if (served) {
    const busy = Boolean(served.job.phase);
    const recorded = JSON.stringify(served.selection || []) === JSON.stringify(chosen);
    $("use").disabled = busy || !chosen.length || served.round !== round.round;
    $("refine").disabled = busy || !chosen.length || !recorded || served.round !== round.round;
    $("refine").title = recorded ? "" : "Use these first: refine learns from the recorded picks";
  }
}

for (const cell of document.querySelectorAll(".candidate")) {
  cell.addEventListener("click", () => {
    const number = Number(cell.dataset.number);
    if (picked.has(number)) picked.delete(number); else picked.add(number);
    cell.setAttribute("aria-pressed", String(picked.has(number)));
    update();
  });
}

$("copy").addEventListener("click", () => {
  const text = command();
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => say("Copied."), () => say("Select the command and copy it."));
  } else {
    const range = document.createRange();
    range.selectNodeContents($("command"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    say("Selected: copy it with Ctrl-C (or Cmd-C).");
  }
});

// Served by `styleprefs pick`: the page can ask the server to run the commands it shows.
async function poll() {
  let state;
  try {
    state = await (await fetch("/api/state", {cache: "no-store"})).json();
  } catch (e) {
    if (served) say("The pick server has stopped; the command above still works.", true);
    served = null;
    $("actions").hidden = true;
    return;
  }
  const first = served === null;
  served = state;
  $("actions").hidden = false;
  if (first && state.round === round.round && state.selection) {
    for (const number of state.selection) picked.add(number);
    for (const cell of document.querySelectorAll(".candidate")) {
      cell.setAttribute("aria-pressed", String(picked.has(Number(cell.dataset.number))));
    }
  }
  const job = state.job;
  if (job.phase) {
    say(job.message + (job.total ? " (step " + job.step + " of " + job.total + ")" : "") + "…");
  } else if (job.error) {
    say(job.error, true);
  } else if (state.round !== round.round) {
    location.href = state.page;  // a newer round: show it
    return;
  }
  update();
  schedule(job.phase ? 500 : 2000);
}

async function post(path, body) {
  const response = await fetch(path, {method: "POST", cache: "no-store",
    headers: {"Content-Type": "application/json", "X-Styleprefs-Token": served.token},
    body: JSON.stringify(body)});
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

$("use").addEventListener("click", async () => {
  const chosen = picks();
  say("Recording " + chosen.join(", ") + "…");
  $("use").disabled = true;
  try {
    const answer = await post("/api/select", {picks: chosen});
    served.selection = answer.chosen;
    say("Round " + answer.round + ": chose " + answer.chosen.join(" ") + " (as `" + command() + "`).");
  } catch (e) {
    say(e.message, true);
  }
  update();
});

$("refine").addEventListener("click", async () => {
  $("refine").disabled = true;
  try {
    served.job = (await post("/api/refine", {})).job;
    say(served.job.message + "…");
    schedule(300);
  } catch (e) {
    say(e.message, true);
    update();
  }
});

if (location.protocol === "http:" || location.protocol === "https:") poll();
update();
</script>
</body>
</html>
"""
