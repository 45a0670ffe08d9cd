"""Real test calls for the voice metrics: espeak-ng speech placed on stereo channels with sox.

:func:`make_call` writes one stereo call (agent left, customer right) with known timings: a
silence of :data:`GAP` seconds between the customer's first line and the agent's second, and the
customer's second line starting :data:`OVERLAP` seconds before the agent's second line ends;
then the same call as flac, ogg and mp3 (:data:`FORMATS`); :func:`av_files` adds it as m4a (aac)
and wma (wmav2 in asf), written with PyAV (:func:`transcode`). The timings are measured
from the generated parts (``soxi -D`` of each trimmed speech segment). The Debian packages
(espeak-ng, sox, libsox-fmt-all, lame) are installed with apt-get when missing
(scripts/bootstrap.sh installs them too); if they cannot be had the caller fails.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av

#: The lines are spoken by espeak-ng's en-us voice, which PocketSphinx's en-us model hears
#: reliably for these phrases: "good morning" (the greeting rule's phrase), "order please" and a
#: card number spoken as digits (4111 1111 1111 1111 passes the Luhn check).
AGENT_LINES = (
    "Good morning, how can I help you",
    "Let me look that up for you, your order has been shipped and will arrive tomorrow",
)
CUSTOMER_LINES = (
    "I would like to check the status of my order please",
    "my card number is four one one one one one one one one one one one one one one one",
)
#: What PocketSphinx hears of the card number (the digits, as words).
SPOKEN_CARD = "four one one one one one one one one one one one one one one one"
CARD_DIGITS = "4111111111111111"
LEAD = 0.5  # silence before the first line
REPLY = 0.8  # pause before the customer answers
GAP = 3.0  # the known silence: nobody speaks
OVERLAP = 1.0  # the customer starts this long before the agent's second line ends
TAIL = 0.5
RATE = 22050
FORMATS = ("wav", "flac", "ogg", "mp3")
#: Formats written with PyAV: extension -> (FFmpeg muxer, encoder).
AV_FORMATS = {"m4a": ("ipod", "aac"), "wma": ("asf", "wmav2")}


@dataclass(frozen=True)
class Call:
    """One generated call: its files per format and the timings it was built with."""

    files: dict[str, Path]
    agent_talk: float
    customer_talk: float
    longest_silence: float
    overtalk: float
    duration: float


def ensure_tools() -> None:
    """Install espeak-ng, sox and lame from Debian when missing (raises if that fails)."""
    if all(shutil.which(t) for t in ("espeak-ng", "sox", "soxi", "lame")):
        return
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    packages = ["espeak-ng", "sox", "libsox-fmt-all", "lame"]
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
    )


def run_tool(*args: str | Path) -> str:
    """Run a command line; return its stdout (raises if it fails)."""
    return subprocess.run(
        [str(a) for a in args], check=True, capture_output=True, text=True
    ).stdout.strip()


def duration_of(path: Path) -> float:
    """Return the length of an audio file in seconds (soxi)."""
    return float(run_tool("soxi", "-D", path))


def speak(text: str, out: Path) -> float:
    """Speak ``text`` to ``out`` (mono, RATE), without leading/trailing silence; its length."""
    raw = out.with_suffix(".raw.wav")
    run_tool("espeak-ng", "-v", "en-us", "-s", "160", "-w", raw, text)
    trim = ("silence", "1", "0.02", "1%")
    run_tool(
        "sox", raw, "-r", str(RATE), "-c", "1", "-b", "16", out, *trim, "reverse", *trim, "reverse"
    )
    return duration_of(out)


def place_on_channel(parts: list[tuple[float, Path]], length: float, out: Path, work: Path) -> None:
    """Place speech files at their start times on one silent channel of ``length`` seconds."""
    pieces: list[Path] = []
    at = 0.0
    for i, (start, path) in enumerate(parts):
        silence = work / f"{out.stem}-sil{i}.wav"
        run_tool(
            "sox",
            "-n",
            "-r",
            str(RATE),
            "-c",
            "1",
            "-b",
            "16",
            silence,
            "trim",
            "0",
            f"{start - at:.4f}",
        )
        pieces += [silence, path]
        at = start + duration_of(path)
    run_tool("sox", *pieces, out, "pad", "0", f"{length - at:.4f}")


def make_call(work: Path) -> Call:
    """Generate the call in every format under ``work`` (see the module doc)."""
    ensure_tools()
    work.mkdir(parents=True, exist_ok=True)
    a1, a2 = (speak(t, work / f"agent{i}.wav") for i, t in enumerate(AGENT_LINES, 1))
    c1, c2 = (speak(t, work / f"customer{i}.wav") for i, t in enumerate(CUSTOMER_LINES, 1))
    t_c1 = LEAD + a1 + REPLY
    t_a2 = t_c1 + c1 + GAP
    t_c2 = t_a2 + a2 - OVERLAP
    length = max(t_a2 + a2, t_c2 + c2) + TAIL
    left, right = work / "left.wav", work / "right.wav"
    place_on_channel([(LEAD, work / "agent1.wav"), (t_a2, work / "agent2.wav")], length, left, work)
    place_on_channel(
        [(t_c1, work / "customer1.wav"), (t_c2, work / "customer2.wav")], length, right, work
    )
    files = {"wav": work / "call.wav"}
    run_tool("sox", "-M", left, right, files["wav"])
    for fmt in FORMATS[1:]:
        files[fmt] = work / f"call.{fmt}"
        if fmt == "mp3":
            run_tool("lame", "--quiet", "-b", "128", files["wav"], files[fmt])
        else:
            run_tool("sox", files["wav"], files[fmt])
    return Call(files, a1 + a2, c1 + c2, GAP, OVERLAP, duration_of(files["wav"]))


def av_files(call: Call, work: Path) -> dict[str, Path]:
    """Write ``call`` in the :data:`AV_FORMATS` under ``work``; the files per format."""
    return {
        fmt: transcode(call.files["wav"], work / f"call.{fmt}", muxer, codec)
        for fmt, (muxer, codec) in AV_FORMATS.items()
    }


def transcode(source: Path, out: Path, muxer: str, codec: str, rate: int | None = None) -> Path:
    """Re-encode the first audio stream of ``source`` into ``out`` with PyAV: FFmpeg's
    ``muxer`` and ``codec`` encoder at 128 kbit/s, at ``rate`` (default: the source's), mono
    or stereo as the source. Returns ``out``."""
    with av.open(str(source)) as src, av.open(str(out), mode="w", format=muxer) as dst:
        audio = src.streams.audio[0]
        layout = "mono" if audio.channels == 1 else "stereo"
        enc = dst.add_stream(codec, rate=rate or audio.rate, layout=layout)
        ctx = enc.codec_context
        ctx.bit_rate = 128_000
        ctx.open()  # sets frame_size
        resampler = av.AudioResampler(
            format=ctx.format.name, layout=layout, rate=ctx.rate, frame_size=ctx.frame_size or None
        )
        for frame in [*src.decode(audio), None]:
            for piece in resampler.resample(frame):
                dst.mux(enc.encode(piece))
        dst.mux(enc.encode(None))
    return out
