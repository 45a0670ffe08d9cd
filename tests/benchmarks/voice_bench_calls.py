"""Generated calls for the voice benchmark: N stereo calls of 2-5 minutes, cached on disk.

Contract of :func:`bench_calls`: returns ``n`` :class:`BenchCall` (file, format, seconds). Call
``i`` is fully determined by :data:`PARAMS` and ``i`` (a random generator seeded with both):
its length is uniform over 2-5 minutes; the agent (left channel) and the customer (right)
take turns with sentences drawn from the pools below, separated by pauses of
0.3-1.5 s; about one turn in six starts up to a second before the other side stops (overlap);
one or two holds of 12-25 s of silence (longer than ``voice.hold_threshold_seconds``). The
formats cycle wav, flac, ogg, mp3 so decoding covers each. Speech is espeak-ng en-us via
``tests/integration/voice_calls.py`` (on the path via conftest; each distinct sentence is
synthesised once and reused).

Cache: ``$XDG_CACHE_HOME/callstream/voice-bench-<digest of PARAMS>/`` (default
``~/.cache``). A call is written under a temporary name and renamed with its ``.json`` sidecar
written last, so an interrupted run leaves no half call that a later run would trust; calls
already there are reused (a 10-call run reuses the first 10 calls of a 100-call run).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from voice_calls import duration_of, ensure_tools, place_on_channel, run_tool, speak

AGENT_SENTENCES = (
    "Good morning, thank you for calling, how can I help you today",
    "Let me look that up for you",
    "Could you confirm your date of birth please",
    "Your order has been shipped and will arrive tomorrow",
    "I am sorry to hear that, let me check what happened",
    "I will place you on hold for a moment while I check",
    "Thank you for holding, I have the details now",
    "The refund will reach your account within five working days",
    "Is there anything else I can help you with",
    "I have updated your address in our system",
    "The technician can visit on Tuesday between nine and twelve",
    "That charge is the monthly fee for your premium plan",
    "I can offer you a discount of ten percent on your next bill",
    "Please bear with me while the system loads",
    "Thank you for your patience, have a lovely day",
)
CUSTOMER_SENTENCES = (
    "Hello, I would like to check the status of my order please",
    "Yes, it is the twelfth of March nineteen eighty four",
    "I was charged twice for the same item last week",
    "The parcel never arrived and the tracking has not changed",
    "Okay, that sounds fine",
    "Can you tell me when the engineer will come",
    "I moved house last month, so the address is wrong",
    "No, that is everything, thank you",
    "Why is my bill so much higher this month",
    "Sure, I can wait",
    "My internet keeps dropping every evening",
    "I would like to cancel my subscription",
    "Could you send me the confirmation by email",
    "Right, and how long will that take",
    "Great, thanks for your help",
)
FORMATS = ("wav", "flac", "ogg", "mp3")
#: Everything a call depends on; its digest names the cache folder.
PARAMS = {
    "generator": 1,
    "seed": 20261123,
    "minutes": (2.0, 5.0),
    "pause": (0.3, 1.5),
    "overlap_share": 1 / 6,
    "overlap": (0.3, 1.0),
    "hold": (12.0, 25.0),
    "formats": FORMATS,
    "agent": AGENT_SENTENCES,
    "customer": CUSTOMER_SENTENCES,
}


@dataclass(frozen=True)
class BenchCall:
    """One generated call: its file, format and length in seconds."""

    path: Path
    fmt: str
    seconds: float


def cache_dir() -> Path:
    """Return the cache folder of calls built with :data:`PARAMS`."""
    digest = hashlib.sha256(json.dumps(PARAMS, sort_keys=True).encode()).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "callstream" / f"voice-bench-{digest}"


def _sentences(folder: Path) -> dict[str, tuple[Path, float]]:
    """Synthesise each distinct sentence once: text -> (speech file, seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "sentences.json"
    if index.is_file():
        known = json.loads(index.read_text())
        return {t: (folder / f, s) for t, (f, s) in known.items()}
    texts = [*AGENT_SENTENCES, *CUSTOMER_SENTENCES]
    names = [f"s{i:02d}.wav" for i in range(len(texts))]
    with ThreadPoolExecutor(2) as pool:
        lengths = list(pool.map(speak, texts, [folder / n for n in names]))
    tmp = index.with_suffix(".tmp")
    tmp.write_text(json.dumps({t: (n, s) for t, n, s in zip(texts, names, lengths, strict=True)}))
    tmp.rename(index)
    return {t: (folder / n, s) for t, n, s in zip(texts, names, lengths, strict=True)}


Parts = list[tuple[float, Path]]


def _script(index: int, speech: dict[str, tuple[Path, float]]) -> tuple[Parts, Parts, float]:
    """Return the agent's and the customer's (start, file) parts and the call's length."""
    rng = random.Random(f"{PARAMS['seed']}-{index}")
    low, high = PARAMS["minutes"]
    length = rng.uniform(low * 60, high * 60)
    holds = sorted(rng.uniform(0.2, 0.8) * length for _ in range(1 + index % 2))
    pools = (AGENT_SENTENCES, CUSTOMER_SENTENCES)
    parts: tuple[Parts, Parts] = ([], [])
    last_end = [0.0, 0.0]
    side, at = 0, rng.uniform(0.3, 1.0)
    while True:
        path, seconds = speech[rng.choice(pools[side])]
        at = max(at, last_end[side] + 0.1)
        if at + seconds + 0.5 > length:
            break
        parts[side].append((at, path))
        last_end[side] = end = at + seconds
        if holds and end > holds[0]:
            holds.pop(0)
            at = end + rng.uniform(*PARAMS["hold"])
        elif rng.random() < PARAMS["overlap_share"] and seconds > 1.2:
            at = end - rng.uniform(*PARAMS["overlap"])
        else:
            at = end + rng.uniform(*PARAMS["pause"])
        side = 1 - side
    return parts[0], parts[1], length


def _make_call(index: int, folder: Path, speech: dict[str, tuple[Path, float]]) -> BenchCall:
    fmt = FORMATS[index % len(FORMATS)]
    final = folder / f"call-{index:03d}.{fmt}"
    sidecar = final.with_suffix(".json")
    if sidecar.is_file():
        return BenchCall(final, fmt, json.loads(sidecar.read_text())["seconds"])
    agent, customer, length = _script(index, speech)
    work = folder / f"work-{index:03d}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    left, right, both = work / "left.wav", work / "right.wav", work / "call.wav"
    place_on_channel(agent, length, left, work)
    place_on_channel(customer, length, right, work)
    run_tool("sox", "-M", left, right, both)
    out = work / final.name
    if fmt == "wav":
        both.rename(out)
    elif fmt == "mp3":
        run_tool("lame", "--quiet", "-b", "128", both, out)
    else:
        run_tool("sox", both, out)
    seconds = duration_of(both if fmt != "wav" else out)
    out.rename(final)
    shutil.rmtree(work)
    sidecar.write_text(json.dumps({"seconds": seconds, "turns": len(agent) + len(customer)}))
    return BenchCall(final, fmt, seconds)


def bench_calls(n: int) -> list[BenchCall]:
    """Return the first ``n`` benchmark calls, generating the missing ones (see the module doc)."""
    ensure_tools()
    folder = cache_dir()
    speech = _sentences(folder / "sentences")
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(lambda i: _make_call(i, folder, speech), range(n)))
