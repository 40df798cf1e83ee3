"""The picking page propose writes beside each round's sheet."""

import json
import re
import shutil

from styleprefs import page


def test_propose_writes_a_self_contained_page_beside_the_sheet(one_round):
    folder = one_round / "rounds" / "001"
    text = (folder / "index.html").read_text(encoding="utf-8")
    # Every candidate, numbered from 1 as on the sheet, by a path relative to the page.
    assert re.findall(r'<img src="([^"]+)"', text) == [f"candidate-0{i}.png" for i in range(1, 7)]
    assert re.findall(r'<span class="number">(\d+)</span>', text) == [str(i) for i in range(1, 7)]
    assert 'href="sheet.png"' in text
    # Nothing from elsewhere: no external scripts, styles, fonts or addresses.
    assert not re.search(r"<script[^>]+src=|<link|@import|url\(|https?://|//[a-z]", text, re.IGNORECASE)
    # The page is one of the session's recorded files, like the sheet.
    assert "rounds/001/index.html" in json.loads((one_round / "state.json").read_text())["files"]


def test_the_page_names_the_session_for_its_command_and_escapes_odd_paths(one_round, tmp_path):
    odd = tmp_path / "a <b> & 'c'" / "session"
    shutil.copytree(one_round, odd)
    folder = odd / "rounds" / "001"
    text = page.render(folder, 1, [f"candidate-0{i}.png" for i in range(1, 7)], odd)
    data = json.loads(re.search(r'<script id="round-data" type="application/json">(.*?)</script>', text).group(1))
    assert data == {"round": 1, "n": 6, "session": str(odd.resolve())}
    assert "<b>" not in text  # the path appears only inside the JSON, with "<" escaped
