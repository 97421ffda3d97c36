"""The runner: one error type that names the input, and a deadline on every call."""

from __future__ import annotations

import time

import numpy as np
import pytest

from media.ffmpeg import FFMPEG, FilterLog, MediaError, Pipe, file_arg, run, stderr_tail


def test_a_failure_names_the_input_and_quotes_ffmpeg(tmp_path):
    missing = tmp_path / "nowhere.mp4"
    with pytest.raises(MediaError, match=r"clip 7: ffmpeg failed: .*nowhere\.mp4") as err:
        run([FFMPEG, "-v", "error", "-i", str(missing), "-f", "null", "-"], what="clip 7")
    assert "No such file" in str(err.value)


def test_every_call_has_a_deadline():
    # lavfi's nullsrc never ends on its own: only the deadline stops it
    t0 = time.monotonic()
    with pytest.raises(MediaError, match=r"slow input: ffmpeg timed out after 1 s"):
        run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "nullsrc", "-f", "null", "-"],
            what="slow input", timeout=1.0)  # fmt: skip
    assert time.monotonic() - t0 < 10


def test_a_missing_binary_is_a_media_error():
    with pytest.raises(MediaError, match="x.mp4: cannot run no-such-ffmpeg"):
        run(["no-such-ffmpeg", "-i", "x.mp4"], what="x.mp4")


def test_stdin_is_fed_and_stdout_returned():
    wave = np.linspace(-0.5, 0.5, 1600, dtype="<f4")
    cmd = [FFMPEG, "-v", "error", "-f", "f32le", "-ar", "16000", "-ac", "1", "-i", "pipe:0"]
    out = run([*cmd, "-f", "f32le", "pipe:1"], what="samples", stdin=wave.tobytes())
    np.testing.assert_array_equal(np.frombuffer(out, "<f4"), wave)


def test_a_pipe_streams_frames_and_hands_stderr_lines_over():
    """Ten 2x2 grey frames, levels 0, 10, ...; showinfo's lines go to the handler, in order."""
    lines: list[str] = []
    src = "color=c=black:s=2x2:r=10:d=1,format=gray,geq=lum='10*N',showinfo"
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "info", "-f", "lavfi", "-i", src,
           "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"]  # fmt: skip
    frames = []
    with Pipe(cmd, what="grey", timeout=30,
              on_line=lambda line: "Parsed_showinfo" in line and not lines.append(line)) as pipe:  # fmt: skip
        buf = np.empty(4, np.uint8)
        while pipe.read_into(memoryview(buf)):
            frames.append(int(buf[0]))
        pipe.finish()
    assert frames == [10 * i for i in range(10)]
    assert sum(" n:" in line for line in lines) == 10
    assert "Parsed_showinfo" not in pipe.tail()


def test_a_pipe_past_its_deadline_is_killed_and_says_so():
    cmd = [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "nullsrc=s=2x2", "-f", "rawvideo", "pipe:1"]
    with Pipe(cmd, what="endless", timeout=1.0) as pipe:
        buf = np.empty(1 << 16, np.uint8)
        while pipe.read_into(memoryview(buf)):
            pass
        with pytest.raises(MediaError, match="endless: ffmpeg timed out after 1 s"):
            pipe.finish()


def test_stderr_tail_keeps_the_last_non_empty_lines():
    assert stderr_tail(b"a\n\n b \nc\nd\ne\nf\n", lines=3) == "d | e | f"
    assert stderr_tail(None) == ""


def test_filter_log_takes_only_its_own_instance_lines() -> None:
    showinfo = FilterLog("showinfo")
    assert showinfo.name.startswith("showinfo@capmine") and showinfo.name != FilterLog("x").name
    own = f"[{showinfo.name} @ 0x55d0c0ffee00] [info] n:   0 pts:  0 pts_time:0"
    assert showinfo.body(own) == "n:   0 pts:  0 pts_time:0"
    assert showinfo.body(own.replace(" [info]", "")) == "n:   0 pts:  0 pts_time:0"
    for forged in (
        "[Parsed_showinfo_1 @ 0x1] [info] n:0 pts:0 pts_time:0",
        f"[info]     title           : [{showinfo.filter}@capmine0 @ 0x1] n:0",
        f"                    : x [{showinfo.name} @ 0x1] n:0",  # not at the line's start
    ):
        assert showinfo.body(forged) is None


def test_file_arg_is_never_an_option(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert file_arg("-report") == f"file:{tmp_path}/-report"
    assert file_arg(tmp_path / "a:b.mp4") == f"file:{tmp_path}/a:b.mp4"
