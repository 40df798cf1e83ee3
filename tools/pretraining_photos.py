"""Extra pretraining photos from Debian's ``gcompris-qt-data``, each with the licence GCompris gives it.

Pretraining (``tools/pretrain.py``) learns how to encode a photo from ``../shared/data/content``, which has
only 44 photos. GCompris ships about a hundred more real photographs (animals, monuments, musicians, castles,
underwater scenes), nearly all from Wikimedia Commons with a per-file credit in a README beside them. This
script finds them and writes them out in the layout of the shared data folder, so ``--data`` can point at it:

    OUT/content/gcx_<activity>_<name>.jpg   RGB JPEG q95 4:4:4, long side at most 1024 px, no metadata
    OUT/SOURCES.md                          one row per file: package, path inside it, size, licence, credit

The package keeps its images in Qt resource files (``/usr/share/gcompris-qt/rcc/*.rcc``), read here by
``read_rcc``. A resource is taken when all of these hold:

* it is a raster image at least 400 px on its short side, in colour, with no transparency (cut-outs, such as
  the planets of ``solar_system``, are not photos of a scene);
* a README in its folder or above lists it, under a licence that is CC0, public domain, CC-BY or CC-BY-SA
  (the exact string is copied into SOURCES.md with the credited author and source URL), and the credit names
  a source URL but no painting (the Van Gogh backgrounds of ``details`` are paintings);
* it is not already in the shared data (``CURATED``) and is not one of the quality benchmark's held-out photos
  or another photo of the same landmark (``HELD_OUT``): pretraining must never see what quality scores.

Everything else big enough is listed in SOURCES.md under "Skipped", with the reason. Output depends only on
the .deb (version pinned below) and Pillow (its WebP decoder and JPEG encoder); a rerun rewrites nothing that
is already right and removes ``gcx_*.jpg`` files that are no longer selected.

    python tools/pretraining_photos.py --deb /tmp/gcompris-qt-data_3.1-2_all.deb
    python tools/pretraining_photos.py          # downloads the pinned .deb with apt-get first
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote

from PIL import Image, ImageStat

from styleprefs.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
PACKAGE, VERSION, RELEASE = "gcompris-qt-data", "3.1-2", "bookworm"
RCC_DIR = "usr/share/gcompris-qt/rcc"
ACTIVITIES = "/gcompris/src/activities/"  # resource paths below are relative to this
MIN_SHORT_SIDE, MAX_LONG_SIDE, JPEG_QUALITY = 400, 1024, 95
RASTER = (".webp", ".png", ".jpg", ".jpeg")

# The quality benchmark's held-out photos (pretrain.py's HELD_OUT_PHOTOS), by where they come from, and
# other photos of the same landmark: a second view of Neuschwanstein would leak the held-out one.
HELD_OUT = {
    "explore_monuments/resource/wonders/greatWallofChina.webp": "gc_monument_greatWallofChina",
    "explore_monuments/resource/germany/neuschwansteinCastle.webp": "gc_monument_neuschwansteinCastle",
    "explore_farm_animals/resource/animals/dog.webp": "gc_farm_dog",
    "erase/resource/horse.webp": "gc_erase_horse",
    "erase/resource/alpaca.webp": "gc_erase_alpaca",
    "details/resource/image/TowerBridgeLondon_background.webp": "gc_TowerBridgeLondon",
    "explore_monuments/resource/usa/statueofLiberty.webp": "gc_monument_statueofLiberty",
    "explore_monuments/resource/usa/cabrillo.webp": "gc_monument_cabrillo",
    "details/resource/image/Neuschwanstein_background.webp": "the same castle as gc_monument_neuschwansteinCastle",
}
# Already in ../shared/data/content (its SOURCES.md, rows `content/gc_*`), other than the held-out ones.
CURATED = {
    "erase/resource/kitten.webp": "gc_erase_kitten",
    "erase/resource/red_panda.webp": "gc_erase_red_panda",
    "erase/resource/meerkats.webp": "gc_erase_meerkats",
    "erase/resource/penguin.webp": "gc_erase_penguin",
    "erase/resource/swans.webp": "gc_erase_swans",
    "explore_monuments/resource/france/eiffelTower.webp": "gc_monument_eiffelTower",
    "explore_monuments/resource/france/montStMichel.webp": "gc_monument_montStMichel",
    "explore_monuments/resource/france/pontduGard.webp": "gc_monument_pontduGard",
    "explore_monuments/resource/india/hawaMahal.webp": "gc_monument_hawaMahal",
    "explore_monuments/resource/germany/brandenburgGate.webp": "gc_monument_brandenburgGate",
    "explore_monuments/resource/usa/canyondeChelly.webp": "gc_monument_canyondeChelly",
    "explore_world_music/resource/music/australia.webp": "gc_people_australia",
    "explore_world_music/resource/music/mexico.webp": "gc_people_mexico",
    "explore_world_music/resource/music/italy.webp": "gc_people_italy",
    "explore_world_animals/resource/animals/koala.webp": "gc_animal_koala",
    "explore_world_animals/resource/animals/scarlet_macaw.webp": "gc_animal_scarlet_macaw",
    "explore_world_animals/resource/animals/jaguar.webp": "gc_animal_jaguar",
    "explore_farm_animals/resource/animals/sheep.webp": "gc_farm_sheep",
    "details/resource/image/Louvre_2007_02_24_c_background.webp": "gc_Louvre_2007_02_24_c",
}
# A README entry misspelt in 3.1-2: the stanza for the Trier Konstantinbasilika (the Aula Palatina) says
# "germany/audaPalatina.webp"; no other file is called so. Each resource, and the path the README gives it.
README_TYPOS = {"explore_monuments/resource/germany/aulaPalatina.webp":
                "explore_monuments/resource/germany/audaPalatina.webp"}
# The first cell of the subject column, by activity.
KINDS = {"erase": "animal", "explore_farm_animals": "animal", "explore_world_animals": "animal",
         "explore_monuments": "building/landscape", "details": "building/landscape",
         "explore_world_music": "people/music", "clickgame": "underwater"}


# --- Qt resource files ------------------------------------------------------------------------------------

def read_rcc(blob: bytes) -> dict[str, bytes]:
    """Every file in a Qt .rcc resource file, by its path (``/gcompris/src/...``), uncompressed.

    Layout (qtbase src/tools/rcc/rcc.cpp, read back by src/corelib/io/qresource.cpp): a header ``qres``,
    version, then offsets of the tree, data and names sections (big-endian uint32; version 3 adds a flags
    word). The tree is an array of nodes, the root first; a node is name offset (u32), flags (u16), then for a
    directory child count and index of its first child (u32, u32), for a file country, language (u16, u16) and
    data offset (u32); from version 2 an 8-byte modification time follows. A name is a u16 length, a u32 hash
    and UTF-16BE text. Data is a u32 length and the bytes: zlib ones (flag 1) after their own u32 length, zstd
    ones (flag 4) as a zstd frame.
    """
    if blob[:4] != b"qres":
        raise ValueError("not a Qt resource file (no 'qres' magic)")
    version, tree, data, names = struct.unpack_from(">4I", blob, 4)
    node_size = 14 if version < 2 else 22

    def name(offset: int) -> str:
        (length,) = struct.unpack_from(">H", blob, names + offset)
        start = names + offset + 6  # past the length and the hash
        return blob[start:start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}
    pending = [(0, "")]  # (node index, its path)
    while pending:
        index, path = pending.pop()
        at = tree + index * node_size
        (flags,) = struct.unpack_from(">H", blob, at + 4)  # after the u32 name offset
        if flags & 0x2:  # directory
            count, first = struct.unpack_from(">II", blob, at + 6)
            for child in range(first, first + count):
                child_name = name(struct.unpack_from(">I", blob, tree + child * node_size)[0])
                pending.append((child, f"{path}/{child_name}"))
        else:
            (offset,) = struct.unpack_from(">I", blob, at + 10)
            (length,) = struct.unpack_from(">I", blob, data + offset)
            files[path] = uncompress(blob[data + offset + 4:data + offset + 4 + length], flags)
    return files


def uncompress(payload: bytes, flags: int) -> bytes:
    """A resource's bytes as stored, given its node flags (1: zlib, 4: zstd, neither: raw)."""
    if flags & 0x1:
        return zlib.decompress(payload[4:])  # the first 4 bytes are the uncompressed length
    if flags & 0x4:
        try:
            import zstandard  # only newer GCompris builds use zstd; 3.1-2 uses zlib throughout
        except ImportError as error:
            raise SystemExit("this package's .rcc files use zstd: pip install zstandard") from error
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 30)
    return payload


# --- The credits in GCompris' READMEs -----------------------------------------------------------------------

@dataclass(frozen=True)
class Credit:
    licence: str    # the README's License field, verbatim
    copyright: str
    source: str     # the Source field, or the comment's "source at URL"
    comment: str
    readme: str     # relative to ACTIVITIES

    def cell(self) -> str:
        """The licence cell of SOURCES.md: licence (© who; source; comment; from which README)."""
        who = self.copyright if self.copyright.startswith("©") else f"© {self.copyright}"
        # A comment that already carries the source URL (details' "based on a photo by ...") stands for both.
        where = [self.comment] if self.source in self.comment else [self.source, self.comment]
        parts = [who, *where, f"from {self.readme}"]
        return f"{self.licence} ({'; '.join(p for p in parts if p)})".replace("|", "/")


FIELD = re.compile(r"^(Copyright|License|Source|Files|Comments?):\s*(.*)$")
FILE_NAME = re.compile(r"^[^\s:]+\.[A-Za-z0-9]{2,4}$")  # a bare file name line, as in details' README


def parse_readme(text: str, readme: str) -> dict[str, Credit | None]:
    """Each file a README names, with its credit (None where two stanzas disagree).

    The READMEs are stanzas of ``Key: value`` lines in the manner of debian/copyright; a value may go on in
    indented lines, and some stanzas list their files as bare lines without a ``Files:`` key.
    """
    credits: dict[str, Credit | None] = {}
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        files: list[str] = []
        key = None
        for line in stanza.splitlines():
            line = line.strip()
            if match := FIELD.match(line):
                key = match[1].replace("Comments", "Comment")
                fields.setdefault(key, []).append(match[2])
            elif line and (FILE_NAME.match(line) or key == "Files"):
                files.append(line)
            elif key is not None and line:
                fields[key].append(line)
        files += " ".join(fields.get("Files", [])).split()
        joined = {key: ", ".join(v for v in fields.get(key, []) if v)
                  for key in ("License", "Copyright", "Source", "Comment")}
        source = joined["Source"] or next(iter(re.findall(r"https?://\S+", joined["Comment"])), "")
        credit = Credit(joined["License"], joined["Copyright"], source, joined["Comment"], readme)
        for file in files:
            credits[file] = credit if credits.get(file, credit) == credit else None
    return credits


def free_licence(text: str) -> bool:
    """CC0, public domain, CC-BY or CC-BY-SA (any version); no NC, no ND."""
    flat = re.sub(r"[\s_.-]", "", text.upper())
    return re.fullmatch(r"CC0(10)?|PUBLICDOMAIN|CCBY(SA)?\d*", flat) is not None


# --- Choosing the photos ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Photo:
    activity: str   # the .rcc file's stem
    stem: str       # the resource's file name, less its suffix (and details' "_background")
    resource: str   # relative to ACTIVITIES
    data: bytes     # as stored in the package
    credit: Credit

    @property
    def name(self) -> str:
        return f"gcx_{self.activity}_{self.stem}"


def credit_for(resource: str, readmes: dict[str, dict[str, Credit | None]]) -> Credit | None:
    """The credit of the nearest README (in the resource's folder or above) that names it."""
    spelled = README_TYPOS.get(resource, resource)
    folder = resource
    while "/" in folder:
        folder = folder.rsplit("/", 1)[0]
        listed = readmes.get(f"{folder}/README")
        if listed is not None:
            relative = spelled[len(folder) + 1:]
            if relative in listed:
                credit = listed[relative]
                if credit is not None and spelled != resource:  # say so where the README was misspelt
                    credit = replace(credit, readme=f"{credit.readme}, which spells it {relative}")
                return credit
    return None


def greyscale(image: Image.Image) -> bool:
    """True when the image has no colour to speak of: its chroma channels (Cb, Cr) are flat at neutral."""
    stats = ImageStat.Stat(image.convert("YCbCr"))
    return all(abs(stats.mean[c] - 128) < 2 and stats.stddev[c] < 2 for c in (1, 2))


def why_not(resource: str, image: Image.Image, credit: Credit | None) -> str | None:
    """Why a big-enough image is not taken, or None when it is."""
    if resource in HELD_OUT:
        return f"held out for the quality benchmark: {HELD_OUT[resource]}"
    if resource in CURATED:
        return f"already in ../shared/data as {CURATED[resource]}"
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        if image.convert("RGBA").getchannel("A").getextrema()[0] < 255:
            return "has transparency (a cut-out or overlay, not a photo of a scene)"
    if greyscale(image):
        return "black and white (pretraining skips photos without colour, as pretrain.py's SKIPPED_PHOTOS)"
    if credit is None:
        return "no README credit names it (licence unknown)"
    if not free_licence(credit.licence):
        return f"licence {credit.licence!r} is not CC0, public domain, CC-BY or CC-BY-SA"
    upstream = re.findall(r"licen[cs]e\s+(CC[\w .-]*?\d(?:\.\d)?)\b", credit.comment)
    if not all(free_licence(u) for u in upstream):
        return f"the original's licence ({', '.join(upstream)}) is not CC0, public domain, CC-BY or CC-BY-SA"
    if "painting" in credit.comment.lower():
        return "a painting, not a photograph (per its README comment)"
    if not credit.source:
        return "its credit names no source URL"
    return None


def select(rcc_dir: Path) -> tuple[list[Photo], list[tuple[str, str, str]], Counter]:
    """The photos to take, the big-enough images passed over (resource, size, reason), and how many raster
    images per activity were too small to consider."""
    photos, skipped, small = [], [], Counter()
    for rcc in sorted(rcc_dir.glob("*.rcc")):
        files = {path.removeprefix(ACTIVITIES): data for path, data in read_rcc(rcc.read_bytes()).items()
                 if path.startswith(ACTIVITIES)}
        readmes = {path: parse_readme(data.decode("utf-8", "replace"), path)
                   for path, data in files.items() if path.endswith("/README")}
        for resource in sorted(p for p in files if p.lower().endswith(RASTER)):
            image = Image.open(io.BytesIO(files[resource]))
            if min(image.size) < MIN_SHORT_SIDE:
                small[rcc.stem] += 1
                continue
            credit = credit_for(resource, readmes)
            size = f"{image.width}x{image.height} {image.mode}"
            if reason := why_not(resource, image, credit):
                skipped.append((f"{rcc.name} → :{ACTIVITIES}{resource}", size, reason))
                continue
            stem = Path(resource).stem.removesuffix("_background")  # details' full pictures
            photos.append(Photo(rcc.stem, stem, resource, files[resource], credit))
    names = Counter(p.name for p in photos)
    if clashes := [n for n, count in names.items() if count > 1]:
        raise SystemExit(f"two resources would be written to the same file: {clashes}")
    return sorted(photos, key=lambda p: p.name), skipped, small


# --- Writing ---------------------------------------------------------------------------------------------

def jpeg(stored: bytes) -> tuple[bytes, tuple[int, int], str]:
    """The photo as RGB JPEG bytes (long side capped), its size, and a note of what was done to it."""
    image = Image.open(io.BytesIO(stored))
    rgb = image.convert("RGB")
    note = f"{image.format.replace('WEBP', 'WebP')} decoded"
    if max(rgb.size) > MAX_LONG_SIDE:
        scale = MAX_LONG_SIDE / max(rgb.size)
        size = (round(rgb.width * scale), round(rgb.height * scale))
        note += f", {rgb.width}x{rgb.height} downscaled (Lanczos) to {size[0]}x{size[1]}"
        rgb = rgb.resize(size, Image.LANCZOS)
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0)  # 4:4:4, like the shared data
    return buffer.getvalue(), rgb.size, f"{note}, saved as JPEG q{JPEG_QUALITY} 4:4:4"


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically unless the file already holds exactly ``data``; True when written."""
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return True


def subject(photo: Photo) -> str:
    """e.g. "animal: northern harrier (Female northern harrier in flight-1142)": kind, name, Commons title."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])|_", " ", photo.stem)
    title = re.search(r"/wiki/File:([^/?#]+)\.\w+$", photo.credit.source)
    text = f"{KINDS.get(photo.activity, 'photo')}: {words.lower()}"
    return text + (f" ({unquote(title[1]).replace('_', ' ')})" if title else "")


def sources_md(package: str, deb_sha: str, rows: list[str], skipped: list[tuple[str, str, str]],
               small: Counter, licences: Counter) -> str:
    header = ["| file | subject | package (registry) | path inside package | resolution | licence | processing"
              " | KiB | sha256[:12] |", "|---|---|---|---|---|---|---|---|---|"]
    lines = [
        "# Extra pretraining photos from GCompris", "",
        f"{len(rows)} photographs from {package} (.deb sha256 {deb_sha[:16]}…), written by",
        "`tools/pretraining_photos.py` (its docstring gives the rules). Each licence is copied verbatim from",
        "the README beside the image inside the `.rcc` file, with the credited author and source. CC-BY and",
        "CC-BY-SA need attribution; derivatives of CC-BY-SA images must keep the same licence.", "",
        "Licences: " + ", ".join(f"{name} × {count}" for name, count in sorted(licences.items())) + ".", "",
        f"## Content images (photographs) — {len(rows)} files", "", *header, *rows, "",
        f"## Skipped — {len(skipped)} images at least {MIN_SHORT_SIDE} px on the short side", "",
        "| resource | size | reason |", "|---|---|---|",
        *(f"| `{resource}` | {size} | {reason} |" for resource, size, reason in skipped), "",
        f"Not considered: raster images under {MIN_SHORT_SIDE} px on the short side ("
        + ", ".join(f"{activity} {count}" for activity, count in sorted(small.items()))
        + "), and all SVG drawings.", ""]
    return "\n".join(lines)


def fetch_deb(folder: Path) -> Path:
    """Download the pinned package with apt-get into ``folder``."""
    subprocess.run(["apt-get", "download", f"{PACKAGE}={VERSION}"], cwd=folder, check=True)
    return next(folder.glob(f"{PACKAGE}_*.deb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deb", type=Path, help=f"the {PACKAGE} .deb (default: apt-get download {VERSION})")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "gcompris", help="the output folder")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        deb = args.deb or fetch_deb(Path(scratch))
        fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version"], check=True,
                                capture_output=True, text=True).stdout
        info = dict(line.split(": ", 1) for line in fields.splitlines())
        release = f"Debian {RELEASE}" if info["Version"] == VERSION else "Debian"
        package = f"{info['Package']}=={info['Version']} ({release})"
        deb_sha = hashlib.sha256(deb.read_bytes()).hexdigest()
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{scratch}/root"], check=True)
        photos, skipped, small = select(Path(scratch, "root", RCC_DIR))

        content = args.out / "content"
        content.mkdir(parents=True, exist_ok=True)
        rows, licences, written = [], Counter(), 0
        for photo in photos:
            data, (width, height), processing = jpeg(photo.data)
            target = content / f"{photo.name}.jpg"
            written += write_if_changed(target, data)
            where = f"/{RCC_DIR}/{photo.activity}.rcc → :{ACTIVITIES}{photo.resource}"
            cells = [f"`content/{target.name}`", subject(photo), package, f"`{where}`", f"{width}x{height} RGB",
                     photo.credit.cell(), processing, str(round(len(data) / 1024)),
                     hashlib.sha256(data).hexdigest()[:12]]
            rows.append(f"| {' | '.join(cells)} |")
            licences[photo.credit.licence] += 1
    stale = [p for p in content.glob("gcx_*.jpg") if p.stem not in {photo.name for photo in photos}]
    for path in stale:
        path.unlink()
    text = sources_md(package, deb_sha, rows, skipped, small, licences)
    write_if_changed(args.out / "SOURCES.md", text.encode("utf-8"))
    per_activity = Counter(photo.activity for photo in photos)
    print(f"{len(photos)} photos in {content} ({written} written, {len(stale)} stale removed): "
          + ", ".join(f"{activity} {count}" for activity, count in sorted(per_activity.items())))
    print(f"{len(skipped)} skipped; see {args.out / 'SOURCES.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
