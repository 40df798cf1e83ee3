#!/usr/bin/env bash
# Install styleprefs into ./.venv and run the whole loop on the bundled example images, unattended:
# init → propose → select (picks made by this script) → refine → propose → apply.
# Outputs: ./styleprefs-session (the session) and ./styled (the stylised photos).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e .
sp=.venv/bin/styleprefs
export STYLEPREFS_SESSION="${STYLEPREFS_SESSION:-$PWD/styleprefs-session}"

$sp init --style examples/paintings/vangogh_starry_night.jpg --content examples/photos --force ${STEPS:+--steps "$STEPS"}
$sp propose --n 16
# A person would look at the contact sheet and pick; this script picks three for them.
$sp select 2 7 11
$sp refine ${REFINE_STEPS:+--steps "$REFINE_STEPS"}
$sp propose --n 16
$sp apply examples/photos --out styled
$sp status
echo "contact sheets: $STYLEPREFS_SESSION/rounds/*/sheet.png   stylised photos: $PWD/styled"
