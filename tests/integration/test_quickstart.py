"""The README's first command brings the service up: sample files announced, cases, results."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ECHO = re.compile(r"^(file announced|case \w+|result|dead letter)\s")
"""The lines that show events flowing (the point of the quickstart), not status or logs."""
QUIET_LIMIT = 30
"""Most other lines on a healthy start: callstream's own status lines, no framework chatter."""
SAMPLES = {
    "2026-11-20_conversations.csv",
    "chats/CHAT-2001.json",
    "recordings/20261120-090112_a-17.wav",
    "recordings/20261120-091503_a-22.wav",
}


def _readme_first_command() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)\n(.*?)```", text, re.DOTALL)
    assert block, "README has no shell block"
    return block.group(1).strip().splitlines()[0].split("#")[0].split()


def test_readme_first_command_announces_the_sample_files(tmp_path: Path) -> None:
    command = _readme_first_command()
    assert command == ["make", "run"]
    env = {
        **os.environ,
        "CALLSTREAM_DATA_DIR": str(tmp_path / "var"),
        "CALLSTREAM_HTTP__PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 240  # may fetch the Kafka jars on a fresh machine
        announced: set[str] = set()
        while announced != SAMPLES:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
            announced = set(
                re.findall(r"file announced\s+demo/local-inbox\s+(\S+)", log.read_text())
            )
        # the sample conversations become cases and results on the feedback topic
        for ext in ("CALL-1001", "CALL-1002", "CALL-1003", "CHAT-2001"):
            while not (
                re.search(rf"case opened\s+demo\s+{ext}\b", log.read_text())
                and re.search(rf"result\s+demo\s+{ext}\s+\d", log.read_text())
            ):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(0.5)
        time.sleep(3)  # let the samples' clean-up and any late log lines show
        healthy_start = log.read_text()
        # a file the user drops into the inbox is announced too
        dropped = tmp_path / "var/inbox/demo/2026-11-21_conversations.csv"
        dropped.write_text("external_interaction_id\nCALL-9\n")
        deadline = time.monotonic() + 30
        while "2026-11-21_conversations.csv" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        proc.wait(60)  # make itself reports the interrupt with a non-zero status, as on a terminal
    text = log.read_text()
    # a healthy start is quiet: no errors, and little besides the events themselves
    assert not [line for line in healthy_start.splitlines() if " ERROR " in line], healthy_start
    other = [line for line in healthy_start.splitlines() if not ECHO.match(line)]
    print(f"healthy start: {len(other)} lines besides the events:\n" + "\n".join(other))
    assert len(other) <= QUIET_LIMIT, healthy_start
    assert not [line for line in text.splitlines() if " ERROR " in line], text[-3000:]
    assert "callstream is running" in text
    assert "stopping Kafka" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert not (tmp_path / "var/kafka/broker.pid").exists(), "the managed broker was left running"
