import numpy as np
import pytest

from miners.matching import Candidate, HitAccumulator, clip_window, limit_per_seed, select_clips


def _acc(hits, n_frames=30, fps=1.0):
    """hits: (frame, seed, sim) triples; frame f is at time f / fps."""
    acc = HitAccumulator()
    times = np.arange(n_frames) / fps
    f, s, v = (np.array(x) for x in zip(*hits, strict=True))
    acc.add(f, times, s, v.astype(np.float32))
    return acc


def test_consecutive_frames_form_a_segment_with_its_peak():
    acc = _acc([(4, 0, 0.7), (5, 0, 0.9), (6, 0, 0.8), (20, 0, 0.75)])
    (c,) = acc.candidates("v")
    assert (c.seg_start, c.seg_end, c.n_frames) == (4.0, 6.0, 3)
    assert c.peak_time == 5.0 and c.similarity == pytest.approx(0.9)


def test_best_segment_wins_even_when_shorter():
    acc = _acc([(1, 3, 0.6), (2, 3, 0.6), (3, 3, 0.6), (10, 3, 0.95)])
    (c,) = acc.candidates("v")
    assert c.peak_time == 10.0 and c.n_frames == 1


def test_hits_across_batches_use_global_frame_numbers():
    acc = HitAccumulator()
    times = np.arange(10, dtype=float) * 0.5
    acc.add(np.array([3]), times, np.array([1]), np.array([0.8], np.float32))
    acc.add(np.array([4]), times, np.array([1]), np.array([0.9], np.float32))
    (c,) = acc.candidates("v")
    assert (c.seg_start, c.peak_time, c.n_frames) == (1.5, 2.0, 2)


@pytest.mark.parametrize(
    "peak,duration,expected",
    [
        (17.0, 60.0, (12.0, 22.0)),
        (2.0, 60.0, (0.0, 10.0)),
        (58.0, 60.0, (50.0, 60.0)),
        (3.0, 6.0, (0.0, 6.0)),
    ],
)
def test_clip_window_is_centred_and_kept_inside(peak, duration, expected):
    assert clip_window(peak, 10.0, duration) == expected


def _cand(seed, video, t, sim):
    return Candidate(
        seed_row=seed,
        video_id=video,
        peak_time=t,
        similarity=sim,
        seg_start=t,
        seg_end=t,
        n_frames=1,
    )


def test_limit_per_seed_keeps_the_best_videos():
    cands = [_cand(0, f"v{i}", 5.0, 0.5 + i / 100) for i in range(5)] + [_cand(1, "v0", 5.0, 0.6)]
    kept = limit_per_seed(cands, 2)
    assert sorted(c.video_id for c in kept if c.seed_row == 0) == ["v3", "v4"]
    assert [c.video_id for c in kept if c.seed_row == 1] == ["v0"]


def test_overlapping_windows_merge_into_one_clip_with_captions_best_first():
    videos = {"v": {"video": "/x/v.mp4", "duration": 100.0, "source": {"fps": 25.0}}}
    seeds = [("s0", "a dog"), ("s1", "a cat"), ("s2", "a car")]
    cands = [_cand(0, "v", 30.0, 0.8), _cand(1, "v", 32.0, 0.9), _cand(2, "v", 70.0, 0.7)]
    clips = select_clips(cands, videos=videos, seeds=seeds, clip_seconds=10.0)
    assert [(c.start, c.end) for c in clips] == [(27.0, 37.0), (65.0, 75.0)]
    first = clips[0]
    assert [c.seed_id for c in first.captions] == ["s1", "s0"]
    assert first.caption == "a cat" and first.match_time == 32.0
    assert first.key.startswith("v_") and "." not in first.key
    assert clips[1].captions[0].caption == "a car"


def test_clips_follow_video_order_and_skip_unknown_videos():
    videos = {
        "b": {"video": "b.mp4", "duration": 50.0},
        "a": {"video": "a.mp4", "duration": 50.0},
    }
    cands = [_cand(0, "a", 20.0, 0.9), _cand(1, "b", 20.0, 0.9), _cand(2, "gone", 20.0, 0.99)]
    clips = select_clips(cands, videos=videos, seeds=[("x", "X"), ("y", "Y"), ("z", "Z")])
    assert [c.video for c in clips] == ["b.mp4", "a.mp4"]
