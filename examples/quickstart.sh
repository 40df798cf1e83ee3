#!/usr/bin/env bash
# Install styleprefs into ./.venv and run the whole loop on the bundled example images, unattended:
# init → propose → select (picks made by this script) → refine → propose → apply, fast and polished.
# Outputs: ./quickstart-session (the session), ./styled (the fast pictures) and ./styled-polished (the finished ones).
set -euo pipefail
cd "$(dirname "$0")/.."
session="$PWD/quickstart-session"
# This script replaces only a session it made itself: a folder without its mark is someone's, and is left alone.
if [ -e "$session" ] && [ ! -f "$session/.made-by-quickstart" ]; then
    echo "quickstart: $session exists and was not made by this script; move it away to run the quickstart" >&2
    exit 2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e .
sp=.venv/bin/styleprefs

$sp init --style examples/paintings/vangogh_starry_night.jpg --content examples/photos --session "$session" --force \
    ${STEPS:+--steps "$STEPS"}
touch "$session/.made-by-quickstart"
$sp propose --n 16 --session "$session"
# A person would look at the contact sheet (or run `styleprefs pick`) and choose; this script picks three for them.
$sp select 2 7 11 --session "$session"
$sp refine --session "$session" ${REFINE_STEPS:+--steps "$REFINE_STEPS"}
$sp propose --n 16 --session "$session"
$sp apply examples/photos --out styled --session "$session"
$sp apply examples/photos --out styled-polished --polish --session "$session"
$sp status --session "$session"
echo "contact sheets: $session/rounds/*/sheet.png   pictures: $PWD/styled (fast), $PWD/styled-polished (finished)"
