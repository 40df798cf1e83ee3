"""The pretrained starting point: what it may see, that folding it into G is exact, and what ships."""

import hashlib
import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from styleprefs import controls, start
from styleprefs.config import ConfigError, TrainSettings
from styleprefs.device import resolve
from styleprefs.networks import Generator
from tests.conftest import ROOT, make_photo

sys.path.insert(0, str(ROOT / "tools"))
import pretrain as tool  # noqa: E402  (tools/pretrain.py, the maintainer's tool; not in the package)

DATA = ROOT / ".." / "shared" / "data"
TINY = TrainSettings(size=32, batch=1, generator_width=4, generator_blocks=1, style_size=64)


def test_folding_the_code_shift_into_the_norms_is_exact():
    torch.manual_seed(0)
    g = Generator(3, 4, 1)
    for p in g.parameters():  # FiLM starts at zero: give it weights so the shift matters
        torch.nn.init.normal_(p, std=0.2)
    x, z, shift = torch.rand(2, 3, 24, 20), torch.randn(2, 3), torch.randn(g.code_dim)
    with torch.no_grad():
        shifted = g(x, z, code_shift=shift.expand(2, -1))
        start.fold_code_shift(g, shift)
        assert torch.allclose(g(x, z), shifted, atol=1e-5)


@pytest.fixture(scope="module")
def shipped_tiny(tmp_path_factory):
    """A real (tiny) pretraining run on made-up paintings and photos, exported like the shipped file."""
    root = tmp_path_factory.mktemp("pretrain")
    for k in range(3):
        make_photo(root / "data" / "style" / f"painting{k}.png", seed=10 + k, size=(64, 48))
    for k in range(4):
        make_photo(root / "data" / "content" / f"photo{k}.png", seed=20 + k)
    make_photo(root / "data" / "content" / f"{tool.HELD_OUT_PHOTOS[0]}.png", seed=30)
    state = tool.pretrain(root / "data", root / "run", minutes=5, settings=TINY, runtime=resolve("cpu"),
                          max_steps=6, log=lambda *_: None)
    tool.export(state, root / "shipped.safetensors")
    return root, root / "shipped.safetensors"


def test_pretraining_resumes_and_never_sees_held_out_files(shipped_tiny):
    root, path = shipped_tiny
    meta = json.loads(bytes(load_file(path)["meta"].tolist()).decode())
    assert meta["steps"] == 6 and meta["paintings"] == ["painting0", "painting1", "painting2"]
    assert tool.HELD_OUT_PHOTOS[0] not in meta["photos"] and len(meta["photos"]) == 4
    state = tool.pretrain(root / "data", root / "run", minutes=5, settings=TINY, runtime=resolve("cpu"),
                          max_steps=8, log=lambda *_: None)
    assert int(load_file(state)["step"]) == 8  # continued from step 6, not from zero


def test_pretraining_continues_from_an_exported_file_on_the_same_paintings_only(shipped_tiny, tmp_path):
    root, path = shipped_tiny
    shipped = load_file(path)
    # Seeded from the export: its weights and embeddings exactly, its step count carried on.
    state = tool.pretrain(root / "data", tmp_path / "more", minutes=5, settings=TINY, runtime=resolve("cpu"),
                          max_steps=6, log=lambda *_: None, start_from=path)
    seeded = load_file(state)
    assert int(seeded["step"]) == 6
    assert torch.equal(seeded["g.embedding.weight"], shipped["embeddings"])
    assert all(torch.equal(seeded[f"g.g.{k[2:]}"], v) for k, v in shipped.items() if k.startswith("g."))
    state = tool.pretrain(root / "data", tmp_path / "more", minutes=5, settings=TINY, runtime=resolve("cpu"),
                          max_steps=7, log=lambda *_: None, start_from=path)
    trained = load_file(state)
    assert int(trained["step"]) == 7 and not torch.equal(trained["g.embedding.weight"], shipped["embeddings"])
    # A file pretrained on other paintings cannot be continued on these: one clear error, nothing written.
    (root / "other" / "style").mkdir(parents=True)
    (root / "other" / "content").symlink_to(root / "data" / "content")
    make_photo(root / "other" / "style" / "another.png", seed=40, size=(64, 48))
    with pytest.raises(ConfigError, match="cannot continue pretraining from it"):
        tool.pretrain(root / "other", tmp_path / "other", minutes=5, settings=TINY, runtime=resolve("cpu"),
                      max_steps=7, log=lambda *_: None, start_from=path)
    assert not (tmp_path / "other").exists()


def test_a_state_is_resumed_only_on_its_own_paintings_and_exported_anywhere(shipped_tiny, tmp_path, capsys):
    root, _ = shipped_tiny
    run = tmp_path / "run"
    tool.pretrain(root / "data", run, minutes=5, settings=TINY, runtime=resolve("cpu"), max_steps=2,
                  log=lambda *_: None)
    before = (run / tool.STATE).read_bytes()
    # One painting more in the data: row k of the embedding table would be another painting's code. Refused, with
    # the name of what changed, and the state left as it was.
    (tmp_path / "more" / "style").mkdir(parents=True)
    for k in range(3):
        (tmp_path / "more" / "style" / f"painting{k}.png").symlink_to(root / "data" / "style" / f"painting{k}.png")
    make_photo(tmp_path / "more" / "style" / "painting00.png", seed=41, size=(64, 48))
    (tmp_path / "more" / "content").symlink_to(root / "data" / "content")
    with pytest.raises(ConfigError, match="cannot resume pretraining from it.*new here: painting00"):
        tool.pretrain(tmp_path / "more", run, minutes=5, settings=TINY, runtime=resolve("cpu"), max_steps=4,
                      log=lambda *_: None)
    # Other style layers: the Gram targets would be another loss's.
    with pytest.raises(ConfigError, match="style layers"):
        tool.pretrain(root / "data", run, minutes=5, settings=TrainSettings(**{**TINY.to_dict(),
                      "style_layers": TINY.style_layers[:2]}), runtime=resolve("cpu"), max_steps=4,
                      log=lambda *_: None)
    # A damaged state: one line, exit status 2, through the command line.
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / tool.STATE).write_bytes(before[:100])
    assert tool.main(["--data", str(root / "data"), "--out", str(tmp_path / "bad"), "--max-steps", "4"]) == 2
    assert "cannot resume pretraining from it" in capsys.readouterr().err
    assert (run / tool.STATE).read_bytes() == before
    # --export-to writes a start outside the package (the shipped file untouched), with its data list beside it.
    shipped = start.shipped_path().read_bytes()
    target = tmp_path / "starts" / "start.safetensors"
    assert tool.main(["--data", str(root / "data"), "--out", str(run), "--export-to", str(target)]) == 0
    assert json.loads(bytes(load_file(target)["meta"].tolist()).decode())["steps"] == 2
    assert (target.parent / "PRETRAINING.md").is_file() and start.shipped_path().read_bytes() == shipped
    # Exporting has no default target: a bare --export (once the package's own file) is refused, nothing written.
    with pytest.raises(SystemExit) as refused:
        tool.main(["--data", str(root / "data"), "--out", str(run), "--export"])
    assert refused.value.code == 2 and "expected one argument" in capsys.readouterr().err
    assert start.shipped_path().read_bytes() == shipped
    assert tool.main(["--data", str(root / "data"), "--out", str(tmp_path / "none"), "--export-to",
                          str(target)]) == 2
    assert "no pretraining state" in capsys.readouterr().err


def test_a_new_session_starts_from_its_nearest_pretraining_painting(shipped_tiny):
    root, path = shipped_tiny
    shipped = load_file(path)
    net_settings = TINY
    from styleprefs.images import load_image
    from styleprefs.training import gram_stats, loss_network
    rt = resolve("cpu")
    painting = load_image(root / "data" / "style" / "painting1.png", max_side=64)
    grams = gram_stats(loss_network(rt, net_settings.style_layers), [painting], rt, net_settings.style_layers)
    g = Generator(controls.z_dim(1), 4, 1)
    assert start.load_start(g, grams, path) == "painting1"
    # It is the pretrained network at that painting's embedding, exactly.
    multi = tool.MultiStyle(Generator(controls.z_dim(1), 4, 1), 3)
    multi.g.load_state_dict({k[2:]: v for k, v in shipped.items() if k.startswith("g.")})
    multi.embedding.weight.data = shipped["embeddings"]
    x, z = torch.rand(1, 3, 32, 32), torch.randn(1, 3)
    with torch.no_grad():
        assert torch.allclose(g(x, z), multi(x, torch.cat([z, torch.ones(1, 1)], 1)), atol=1e-5)
    # Two paintings: the blend dimensions start at zero and the rest loads.
    two = Generator(controls.z_dim(2), 4, 1)
    assert start.load_start(two, {k: v.expand(2, -1, -1) for k, v in grams.items()}, path) == "painting1"
    assert torch.equal(two.mapping[0].weight[:, 3:], torch.zeros(64, 2))
    # A generator of another shape is left alone.
    wide = Generator(controls.z_dim(1), 8, 1)
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    assert start.load_start(wide, grams, path) is None
    assert all(torch.equal(before[k], v) for k, v in wide.state_dict().items())


def test_held_out_files_are_the_quality_benchmarks():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    quality = pytest.importorskip("quality")
    assert set(quality.PAINTINGS) == set(tool.HELD_OUT_PAINTINGS)
    assert set(quality.EXCLUDED_PHOTOS) == set(tool.SKIPPED_PHOTOS)
    if not (DATA / "content").is_dir():
        pytest.skip("no shared data")
    _, evaluation = quality.split_photos(DATA / "content", 8, 8, seed=0)
    assert {p.stem for p in evaluation} == set(tool.HELD_OUT_PHOTOS)
    paintings, photos = tool.pretraining_data(DATA)
    assert not {p.stem for p in paintings} & set(quality.PAINTINGS)
    assert not {p.stem for p in photos} & {p.stem for p in evaluation}


def test_several_data_folders_are_one_name_sorted_set_with_every_licence_listed(tmp_path):
    shared, extra = tmp_path / "shared", tmp_path / "extra"
    make_photo(shared / "style" / "painting.png", seed=1)
    make_photo(shared / "style" / f"{tool.HELD_OUT_PAINTINGS[0]}.png", seed=2)
    for name, folder in (("b_photo", shared), ("d_photo", shared), ("a_photo", extra), ("c_photo", extra)):
        make_photo(folder / "content" / f"{name}.png", seed=len(name))
    make_photo(extra / "content" / f"{tool.HELD_OUT_PHOTOS[0]}.png", seed=3)
    (shared / "SOURCES.md").write_text("| `style/painting.png` | a painting | pkg-a | /p | 64x48 | CC0-1.0 |\n"
                                       "| `content/b_photo.png` | a photo | pkg-a | /b | 64x48 | CC-BY-4.0 |\n")
    (extra / "SOURCES.md").write_text("| `content/a_photo.png` | a photo | pkg-b | /a | 64x48 | Public domain | x |\n")
    paintings, photos = tool.pretraining_data([shared, extra])
    assert [p.stem for p in paintings] == ["painting"]  # held-out ones left out of every folder
    assert [p.stem for p in photos] == ["a_photo", "b_photo", "c_photo", "d_photo"]
    listed = tool.data_list([shared, extra], {"steps": 5, "paintings": ["painting"],
                                              "photos": [p.stem for p in photos]})
    assert "| photo | `content/a_photo.png` | a photo | pkg-b | /a | Public domain |" in listed
    assert "| painting | `style/painting.png` | a painting | pkg-a | /p | CC0-1.0 |" in listed
    assert "`c_photo` | ? | ? | ? | not listed in SOURCES.md |" in listed  # a gap is shown, not hidden


def test_the_shipped_file_is_the_pinned_one():
    path = start.shipped_path()
    if tool.SHIPPED_SHA256 is None:
        pytest.skip("no pretrained generator shipped")
    assert path.stat().st_size <= 20 * 2**20
    assert hashlib.sha256(path.read_bytes()).hexdigest() == tool.SHIPPED_SHA256
    meta = json.loads(bytes(load_file(path)["meta"].tolist()).decode())
    assert not set(meta["paintings"]) & set(tool.HELD_OUT_PAINTINGS)
    assert not set(meta["photos"]) & set(tool.HELD_OUT_PHOTOS)
    g = Generator(controls.z_dim(1), TrainSettings().generator_width, TrainSettings().generator_blocks)
    channels = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}  # by VGG block: relu4_1's block is "4"
    grams = {k: torch.eye(channels[k[4]])[None] for k in TrainSettings().style_layers}
    assert start.load_start(g, grams) in meta["paintings"]
