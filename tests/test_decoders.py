"""The decoding layer on real audio: every format against the PCM it was encoded from.

Real recordings (two bundled clips as a stereo pair, 5.5 s at 32 kHz) are encoded at
test time (chirpid_io.encoding: libsndfile and FFmpeg, both dependencies) into each
format, then decoded through ``open_audio`` and compared with that source PCM:

- time alignment: the cross-correlation peak between decode and source sits at the lag
  the codec is known to give (0 for all but WMA, which FFmpeg decodes one 2048-sample
  frame early, and raw ADTS, which carries no priming information: 1024 samples late);
- length: equal, or within the codec's frame padding, stated per format below;
- waveform: a signal-to-error ratio floor per codec and bit rate (lossless: exact to
  the 16-bit step);
- mel image: the recipe's dB image (float64 reference) of the decode against the
  source's, mean absolute difference over the bins within 60 dB of the clip's peak
  (the codec's error, not the decoder's: a lag of a few ms alone gives > 5 dB).

And: libsndfile's formats stay bit-identical to ``librosa.load``; blocks concatenate to
``read()`` bit for bit at any block size; the backend rule; hostile inputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from chirpid_io import audio, decoders
from chirpid_io.config import SpectrogramConfig
from chirpid_io.decoders import AUDIO_EXTENSIONS, open_audio
from chirpid_io.encoding import FORMATS, encode
from chirpid_io.errors import AudioDecodeError
from chirpid_io.kernels import mel_spectrogram

SAMPLES = Path(__file__).resolve().parents[1] / "chirpid_io" / "data" / "samples"
RATE = 32_000
DB = SpectrogramConfig(scaling="db")
LSB16 = 2.0**-15

# format: (backend auto picks, expected lag in samples (decode vs source), length rule,
#          SNR floor in dB, mean mel dB bound on bins within 60 dB of the peak)
# length rules: "exact"; ("pad", n): 0 <= extra < n at the end; ("short", n): 0 <= missing < n
CODECS = {
    "wav": ("soundfile", 0, "exact", 60.0, 0.05),
    "flac": ("soundfile", 0, "exact", 60.0, 0.05),
    "aiff": ("soundfile", 0, "exact", 60.0, 0.05),
    "aifc-sowt": ("soundfile", 0, "exact", 60.0, 0.05),
    "aifc-float": ("soundfile", 0, "exact", 200.0, 0.001),
    "aifc-alaw": ("soundfile", 0, "exact", 30.0, 0.5),
    "aifc-ima4": ("soundfile", 0, ("pad", 64), 15.0, 2.0),
    "ogg-vorbis": ("soundfile", 0, "exact", 15.0, 1.5),
    "mp3": ("soundfile", 0, "exact", 18.0, 1.5),
    "caf-alac": ("pyav", 0, ("short", 4096), 100.0, 0.001),
    "m4a-aac": ("pyav", 0, ("pad", 1024), 15.0, 1.5),
    "opus": ("pyav", 0, "exact", 12.0, 2.0),
    "webm-opus": ("pyav", 0, "exact", 12.0, 2.0),
    "wma": ("pyav", -2048, ("short", 2048), 15.0, 3.0),
    "aac-adts": ("pyav", 1024, ("pad", 2048), 15.0, 1.5),
}


@cache
def source() -> np.ndarray:
    """(176000, 2) float32 at 32 kHz: two real recordings, peak 0.9."""
    left = sf.read(SAMPLES / "mixed_birds" / "birds_10s.wav", dtype="float32")[0]
    right = sf.read(SAMPLES / "bengalese_finch" / "bl26lb16.wav", dtype="float32")[0]
    n = int(5.5 * RATE)
    pair = np.stack([left[:n], right[:n]], axis=1)
    return (pair * (0.9 / np.abs(pair).max())).astype(np.float32)


@cache
def source_at(rate: int) -> np.ndarray:
    if rate == RATE:
        return source()
    return np.stack([audio.resample(source()[:, c], RATE, rate) for c in range(2)], axis=1)


def rate_for(fmt: str) -> int:
    rates = FORMATS[fmt].rates
    return RATE if rates is None or RATE in rates else 48_000


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoded")
    made = {}

    def get(fmt: str) -> Path:
        if fmt not in made:
            rate = rate_for(fmt)
            made[fmt] = encode(folder / f"clip_{fmt}{FORMATS[fmt].extension}", source_at(rate), rate, fmt)
        return made[fmt]

    return get


def lag_of(decoded: np.ndarray, reference: np.ndarray, search: int = 3000) -> int:
    """L in [-search, search] such that decoded[k] best matches reference[k - L]
    (the peak of their cross-correlation, computed by FFT)."""
    size = 1 << int(np.ceil(np.log2(len(decoded) + len(reference))))
    spectrum = np.fft.rfft(decoded.astype(np.float64), size) * np.conj(np.fft.rfft(reference.astype(np.float64), size))
    correlation = np.fft.irfft(spectrum, size)
    lags = np.r_[0:search + 1, -search:0]
    return int(lags[np.argmax(correlation[lags])])


def db_image(stereo: np.ndarray, rate: int) -> np.ndarray:
    mono = stereo.mean(axis=1, dtype=np.float32)
    wave = audio.resample(mono, rate, RATE)[: DB.n_samples]
    wave = np.pad(wave, (0, DB.n_samples - len(wave)))
    return mel_spectrogram(wave[None], DB, backend="reference").numpy()[0]


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", sorted(CODECS))
def test_each_format_decodes_to_its_source(encoded, fmt):
    backend, expected_lag, length_rule, snr_floor, mel_bound = CODECS[fmt]
    rate = rate_for(fmt)
    src = source_at(rate)
    with open_audio(encoded(fmt)) as f:
        info, decoded = f.info, f.read()
    assert info.backend == backend
    assert (info.sample_rate, info.channels) == (rate, 2)
    assert decoded.dtype == np.float32 and decoded.shape[1] == 2

    extra = len(decoded) - len(src)
    if length_rule == "exact":
        assert extra == 0
    elif length_rule[0] == "pad":
        assert 0 <= extra < length_rule[1] + max(expected_lag, 0)
    else:
        assert -length_rule[1] < extra <= 0
    if info.frames_exact:
        assert info.frames == len(decoded)

    lag = lag_of(decoded[:, 0], src[:, 0])
    assert lag == expected_lag
    # both channels, in order: the right channel matches the right source, not the left
    right = decoded[max(lag, 0):, 1][: len(src) - max(-lag, 0)]
    against = src[max(-lag, 0):, :][: len(right)]
    assert np.corrcoef(right, against[:, 1])[0, 1] > 0.9 > abs(np.corrcoef(right, against[:, 0])[0, 1])

    aligned = decoded[max(lag, 0):][: len(src) - max(-lag, 0)]
    reference = src[max(-lag, 0):][: len(aligned)]
    error = aligned.astype(np.float64) - reference
    snr = 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(np.sum(error**2), 1e-30))
    assert snr >= snr_floor
    if snr_floor >= 60:  # 16-bit PCM: within one step of the float source
        assert np.abs(error).max() <= LSB16 * 1.01

    if expected_lag == 0:  # the image of the decode as it comes, no realignment
        ours, theirs = db_image(decoded, rate), db_image(src, rate)
        near_peak = theirs > -60.0
        assert np.abs(ours - theirs)[near_peak].mean() <= mel_bound


def test_lossless_fallback_formats_are_exact(encoded):
    # ALAC in CAF, which libsndfile refuses: 24-bit samples, decoded exactly
    with open_audio(encoded("caf-alac")) as f:
        assert f.info.backend == "pyav" and not f.info.frames_exact  # see _EXACT_FFMPEG_CODECS
        decoded = f.read()
    src = source()[: len(decoded)]
    assert np.abs(decoded - src).max() <= 2.0**-23
    # and the same AIFF PCM through both backends: the same float32 numbers
    path = encoded("aiff")
    with open_audio(path, backend="soundfile") as a, open_audio(path, backend="pyav") as b:
        np.testing.assert_array_equal(a.read(), b.read())


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg-vorbis", "mp3", "aiff"])
def test_libsndfile_formats_stay_bit_identical_to_librosa(encoded, fmt):
    librosa = pytest.importorskip("librosa")
    path = encoded(fmt)
    theirs, _ = librosa.load(path, sr=RATE)
    np.testing.assert_array_equal(audio.load(path, RATE), theirs)
    theirs_44k, _ = librosa.load(path, sr=44_100)
    np.testing.assert_array_equal(audio.load(path, 44_100), theirs_44k)


@pytest.mark.parametrize("name", ["duck/duck.mp3", "owl/owl.mp3", "rooster/rooster.mp3",
                                  "zebra_finch/WhiLbl0010_110411-DC-01.wav"])
def test_bundled_recordings_stay_bit_identical_to_librosa(name):
    librosa = pytest.importorskip("librosa")
    theirs, _ = librosa.load(SAMPLES / name, sr=RATE)
    np.testing.assert_array_equal(audio.load(SAMPLES / name, RATE), theirs)


def test_opus_goes_to_ffmpegs_libopus_within_bounds_of_libsndfile(encoded):
    # the measured choice (benchmarks/decode_formats.py): FFmpeg's libopus is faster
    # than libsndfile's and within 0.01 dB of its images; FFmpeg's own decoder is not
    path = encoded("opus")
    assert "OPUS" in decoders.FFMPEG_PREFERRED_CODECS
    with open_audio(path) as ffmpeg, open_audio(path, backend="soundfile") as libsndfile:
        assert (ffmpeg.info.backend, ffmpeg.info.codec) == ("pyav", "libopus")
        assert libsndfile.info.codec == "OPUS"
        a, b = ffmpeg.read(), libsndfile.read()
    assert a.shape == b.shape and np.abs(a - b).max() <= 2e-6
    assert np.abs(db_image(a, 48_000) - db_image(b, 48_000)).max() <= 0.01
    native = decoders._PyAVFile(path, decoders={})
    assert native.info.codec == "opus" and np.abs(native.read() - b).max() > 1e-3


def test_mp3_through_libsndfile_decodes_whole_and_streams_through_ffmpeg():
    path = SAMPLES / "owl" / "owl.mp3"
    with open_audio(path) as f:
        assert (f.info.backend, f.bounded_memory, f.info.frames_exact) == ("soundfile", False, False)
        whole = f.read()
        np.testing.assert_array_equal(np.concatenate(list(f.blocks(1000))), whole)
    with open_audio(path, streaming=True) as f:
        assert (f.info.backend, f.bounded_memory) == ("pyav", True)
        streamed = f.read()
    assert streamed.shape == whole.shape and np.abs(streamed - whole).max() <= 1e-5
    # why: libsndfile's own MP3 decode depends on how it is split into reads
    if sf.__libsndfile_version__ == "1.2.2":
        with sf.SoundFile(path) as f:
            split = np.concatenate([f.read(1000, dtype="float32", always_2d=True) for _ in range(408)])
        assert not np.array_equal(split[: len(whole)], whole)


# --------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("fmt", sorted(CODECS))
def test_blocks_concatenate_to_read_bit_for_bit(encoded, fmt):
    with open_audio(encoded(fmt)) as f:
        whole = f.read()
        for size in (1_000, 4_097, 65_536, 1 << 20):
            parts = list(f.blocks(size))
            assert all(len(p) == size for p in parts[:-1]) and 0 < len(parts[-1]) <= size
            assert all(p.dtype == np.float32 and p.shape[1] == 2 for p in parts)
            np.testing.assert_array_equal(np.concatenate(parts), whole)
        np.testing.assert_array_equal(f.read(), whole)  # a second pass decodes the same


def test_tiny_blocks_and_abandoned_passes(encoded):
    for fmt in ("wav", "m4a-aac"):
        with open_audio(encoded(fmt)) as f:
            whole = f.read()
            first = f.blocks(7)
            head = [next(first) for _ in range(3)]
            np.testing.assert_array_equal(np.concatenate(head), whole[:21])
            kept = head[0].copy()
            np.testing.assert_array_equal(np.concatenate(list(f.blocks(7))), whole)  # ends the first
            np.testing.assert_array_equal(head[0], kept)  # yielded arrays are not reused
        with pytest.raises(ValueError, match="closed"):
            f.read()
        with pytest.raises(ValueError, match="positive"):
            open_audio(encoded(fmt)).blocks(0)


def test_info_of_a_few_formats(encoded):
    with open_audio(encoded("wav")) as f:
        assert f.info == decoders.AudioInfo(RATE, 2, len(source()), True, len(source()) / RATE,
                                            "WAV", "PCM_16", "soundfile")
    with open_audio(encoded("m4a-aac")) as f:
        info = f.info
        assert (info.backend, info.codec, info.frames_exact) == ("pyav", "aac", False)
        assert abs(info.frames - len(source())) < 1024
        assert info.duration_seconds == pytest.approx(5.5, abs=0.04)
        assert info.container.startswith("mov,mp4,m4a")


def test_audio_extensions_cover_every_written_format():
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)
    assert len(set(AUDIO_EXTENSIONS)) == len(AUDIO_EXTENSIONS)
    assert {spec.extension for spec in FORMATS.values()} <= set(AUDIO_EXTENSIONS)
    assert {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".wma"} <= set(AUDIO_EXTENSIONS)


# --------------------------------------------------------------------------- the rule


def test_content_decides_not_the_name(encoded, tmp_path):
    m4a_named_wav = tmp_path / "really_m4a.wav"
    m4a_named_wav.write_bytes(encoded("m4a-aac").read_bytes())
    wav_named_m4a = tmp_path / "really_wav.m4a"
    wav_named_m4a.write_bytes(encoded("wav").read_bytes())
    with open_audio(m4a_named_wav) as f:
        assert (f.info.backend, f.info.codec) == ("pyav", "aac")
    with open_audio(wav_named_m4a) as f:
        assert (f.info.backend, f.info.codec) == ("soundfile", "PCM_16")


def test_forced_backends(encoded):
    with pytest.raises(AudioDecodeError, match="libsndfile: Format not recognised"):
        open_audio(encoded("m4a-aac"), backend="soundfile")
    with open_audio(encoded("flac"), backend="pyav") as f:
        assert (f.info.backend, f.info.codec, f.info.frames_exact) == ("pyav", "flac", True)
    with pytest.raises(ValueError, match="backend"):
        open_audio(encoded("wav"), backend="ffmpeg")


# --------------------------------------------------------------------------- hostile


def _reason(path, **kw) -> str:
    with pytest.raises(AudioDecodeError) as info:
        with open_audio(path, **kw) as f:
            f.read()
    reason = info.value.reason
    assert "\n" not in reason and reason.isprintable()
    assert str(info.value).startswith(str(path))
    return reason


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_named_like_audio(tmp_path, seed):
    for ext in (".m4a", ".opus", ".wma", ".mp3", ".flac"):
        path = tmp_path / f"random_{seed}{ext}"
        path.write_bytes(np.random.default_rng(seed).bytes(3000 + 1000 * seed))
        assert "not decodable" in _reason(path)


def test_empty_directory_missing_and_special_files(tmp_path):
    (tmp_path / "empty.m4a").write_bytes(b"")
    assert "0 bytes" in _reason(tmp_path / "empty.m4a")
    (tmp_path / "folder.m4a").mkdir()
    assert "directory" in _reason(tmp_path / "folder.m4a")
    assert "no such file" in _reason(tmp_path / "missing.opus")
    assert "a device" in _reason(Path("/dev/zero"))


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    # in a child process with a time limit, so that a regression hangs nothing
    code = ("import sys; from chirpid_io.decoders import open_audio\n"
            "from chirpid_io.errors import AudioDecodeError\n"
            "try:\n    open_audio(sys.argv[1])\nexcept AudioDecodeError as e:\n    print(e.reason)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert "not a regular file (a FIFO)" in done.stdout, done.stderr


def test_video_without_audio(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "camera_trap.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    assert _reason(path) == "has no audio stream (streams: video)"


def test_truncated_and_damaged_streams(encoded, tmp_path):
    data = encoded("m4a-aac").read_bytes()  # FFmpeg writes the sample table last
    (tmp_path / "cut.m4a").write_bytes(data[: len(data) // 2])
    assert "not decodable" in _reason(tmp_path / "cut.m4a")

    faststart = tmp_path / "faststart.m4a"  # sample table first: the cut shows mid-stream
    encode(faststart, source(), RATE, "m4a-aac")
    import av

    with av.open(str(faststart)) as check:
        assert check.format.name.startswith("mov")
    remux = tmp_path / "remux.m4a"
    with av.open(str(faststart)) as inp, av.open(str(remux), "w", format="mp4",
                                                 options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.audio[0])
        for packet in inp.demux(inp.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = remux.read_bytes()
    (tmp_path / "cut_faststart.m4a").write_bytes(data[: len(data) // 2])
    with open_audio(tmp_path / "cut_faststart.m4a") as f:
        got = []
        with pytest.raises(AudioDecodeError, match="truncated or damaged"):
            for block in f.blocks(4096):
                got.append(block)
        assert len(got) > 0  # what came before the damage was delivered first

    data = encoded("webm-opus").read_bytes()  # matroska states its duration
    (tmp_path / "cut.webm").write_bytes(data[: len(data) // 2])
    assert "truncated or damaged: decoded" in _reason(tmp_path / "cut.webm")

    data = bytearray(encoded("opus").read_bytes())  # a lost Ogg page in the middle
    middle = len(data) // 2
    data[middle:middle + 4000] = np.random.default_rng(5).bytes(4000)
    (tmp_path / "damaged.opus").write_bytes(bytes(data))
    assert "truncated or damaged" in _reason(tmp_path / "damaged.opus")

    good = encoded("wav").read_bytes()  # libsndfile's formats decode what is there, as before
    (tmp_path / "cut.wav").write_bytes(good[: 44 + 4 * 1000])
    with open_audio(tmp_path / "cut.wav") as f:
        assert len(f.read()) == 1000


def test_files_that_name_other_files_are_refused(encoded, tmp_path):
    target = encoded("wav")
    playlist = tmp_path / "list.m4a"  # FFmpeg's concat demuxer would read the file it names
    playlist.write_text(f"ffconcat version 1.0\nfile '{target}'\n")
    assert "not decodable" in _reason(playlist)
    hls = tmp_path / "stream.m4a"
    hls.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:{target}\n#EXT-X-ENDLIST\n")
    assert "not decodable" in _reason(hls)


def test_names_with_control_characters_and_url_look_alikes(encoded, tmp_path):
    not_utf8 = os.fsdecode(b"latin1_\xe9\xff.m4a")
    for name in ("bird\nsong\x07\t.m4a", "concat:a.m4a|b.m4a", "http:x.m4a", "file:y.opus", "ü ?#%.wma", not_utf8):
        fmt = {".m4a": "m4a-aac", ".opus": "opus", ".wma": "wma"}[Path(name).suffix]
        path = tmp_path / name
        path.write_bytes(encoded(fmt).read_bytes())
        with open_audio(path) as f:
            assert f.info.backend == "pyav" and len(f.read()) > RATE
        broken = tmp_path / ("broken\r\n\x1b" + name)
        broken.write_bytes(b"\x00" * 5000)
        reason = _reason(broken)
        assert "broken" not in reason  # the reason names no file (the message does)


def test_zero_channels_and_nonfinite_samples(tmp_path):
    header = bytearray(Path(SAMPLES / "zebra_finch" / "WhiLbl0010_110411-DC-01.wav").read_bytes())
    header[22:24] = (0).to_bytes(2, "little")  # the fmt chunk's channel count
    (tmp_path / "zero.wav").write_bytes(bytes(header))
    assert "not decodable" in _reason(tmp_path / "zero.wav")

    wave = source().copy()
    wave[RATE * 3, 1] = np.inf
    for fmt in ("aifc-float", "wav"):
        path = tmp_path / f"inf{FORMATS[fmt].extension}"
        if fmt == "wav":
            sf.write(path, wave, RATE, subtype="FLOAT")
        else:
            encode(path, wave, RATE, fmt)
        for backend in ("soundfile", "pyav"):
            with open_audio(path, backend=backend) as f:
                blocks = f.blocks(RATE)
                head = [next(blocks) for _ in range(3)]  # the first 3 s are fine
                assert len(head) == 3
                with pytest.raises(AudioDecodeError, match=r"NaN or infinite samples \(the first at 3.00 s\)"):
                    next(blocks)
        with pytest.raises(AudioDecodeError, match="NaN or infinite"):
            audio.load(path, RATE)


def test_a_stream_that_changes_channels_never_mixes_shapes(tmp_path):
    mono = encode(tmp_path / "a.opus", source_at(48_000)[:, :1], 48_000, "opus")
    stereo = encode(tmp_path / "b.opus", source_at(48_000), 48_000, "opus")
    chained = tmp_path / "chained.opus"  # a chained Ogg stream: mono, then stereo
    chained.write_bytes(mono.read_bytes() + stereo.read_bytes())
    with open_audio(chained) as f:
        assert f.info.channels == 1
        got = []
        try:
            for block in f.blocks(48_000):
                got.append(block)
        except AudioDecodeError as exc:  # FFmpeg 8 (PyAV 18): stops where the stream changes
            assert "mid-stream near 5.50 s" in exc.reason
        # (FFmpeg 7.1, PyAV 14, decodes the stereo part to mono through the first header)
    assert all(block.shape[1] == 1 for block in got)
    assert sum(map(len, got)) >= int(5.5 * 48_000)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_both_backends_scale_every_pcm_width_alike(tmp_path, subtype):
    # FFmpeg hands u8, s16, s32 or float frames; they are scaled as libsndfile scales them
    path = tmp_path / f"pcm_{subtype}.wav"
    rng = np.random.default_rng(7)
    sf.write(path, np.clip(rng.standard_normal((9_001, 3)) * 0.3, -1, 1), RATE, subtype=subtype)
    with open_audio(path, backend="soundfile") as a, open_audio(path, backend="pyav") as b:
        assert b.info.frames_exact and b.info.frames == 9_001 and b.info.channels == 3
        np.testing.assert_array_equal(b.read(), a.read())
