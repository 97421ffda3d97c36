import numpy as np
import pytest

from miners.matching import Candidate, HitAccumulator, limit_per_seed, place_window, select_clips


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


def _cand(seed, video, t, sim, run=None, shot=None):
    a, b = run or (t, t)
    s0, s1 = shot or (None, None)
    return Candidate(seed_row=seed, video_id=video, peak_time=t, similarity=sim, seg_start=a,
                     seg_end=b, n_frames=1, shot_start=s0, shot_end=s1)  # fmt: skip


@pytest.mark.parametrize(
    "peak,run,shot,duration,expected",
    [
        # no shot known: centred on the peak, kept inside the video
        (17.0, None, None, 60.0, (12.0, 22.0)),
        (2.0, None, None, 60.0, (0.0, 10.0)),
        (58.0, None, None, 60.0, (50.0, 60.0)),
        (3.0, None, None, 6.0, (0.0, 6.0)),
        # the peak is the shot's first frame: the window starts there, not 5 s before
        (20.0, (20.0, 24.0), (20.0, 45.0), 60.0, (20.0, 30.0)),
        # ... and its last frame: the window ends at the cut
        (44.9, (41.0, 44.9), (20.0, 44.96), 60.0, (34.96, 44.96)),
        # a run that fits is centred in the window
        (31.0, (30.0, 36.0), (10.0, 50.0), 60.0, (28.0, 38.0)),
        # a run longer than the window: centred on the peak, inside the run
        (31.0, (30.0, 48.0), (10.0, 50.0), 60.0, (30.0, 40.0)),
        (40.0, (30.0, 48.0), (10.0, 50.0), 60.0, (35.0, 45.0)),
        # a shot shorter than clip_seconds: the whole shot, never padded with the next
        (12.0, (11.0, 13.0), (10.0, 14.5), 60.0, (10.0, 14.5)),
    ],
)
def test_window_holds_the_peak_covers_the_run_and_stays_in_its_shot(
    peak, run, shot, duration, expected
):
    c = _cand(0, "v", peak, 0.9, run=run, shot=shot)
    start, end = place_window(c, 10.0, duration)
    assert (start, end) == pytest.approx(expected)
    assert start <= peak <= end
    if shot:
        assert shot[0] <= start and end <= shot[1]


def test_limit_per_seed_keeps_the_best_videos():
    cands = [_cand(0, f"v{i}", 5.0, 0.5 + i / 100) for i in range(5)] + [_cand(1, "v0", 5.0, 0.6)]
    kept = limit_per_seed(cands, 2)
    assert sorted(c.video_id for c in kept if c.seed_row == 0) == ["v3", "v4"]
    assert [c.video_id for c in kept if c.seed_row == 1] == ["v0"]


def test_matches_in_one_shot_merge_into_one_clip_with_captions_best_first():
    videos = {"v": {"video": "/x/v.mp4", "duration": 100.0, "source": {"fps": 25.0}}}
    seeds = [("s0", "a dog"), ("s1", "a cat"), ("s2", "a car")]
    shot = (20.0, 50.0)
    cands = [_cand(0, "v", 30.0, 0.8, shot=shot), _cand(1, "v", 32.0, 0.9, shot=shot),
             _cand(2, "v", 70.0, 0.7, shot=(60.0, 90.0))]  # fmt: skip
    clips = select_clips(cands, videos=videos, seeds=seeds, clip_seconds=10.0)
    assert [(c.start, c.end) for c in clips] == [(27.0, 37.0), (65.0, 75.0)]
    first = clips[0]
    assert [c.seed_id for c in first.captions] == ["s1", "s0"]
    assert first.caption == "a cat" and first.match_time == 32.0
    assert first.key.startswith("v_") and "." not in first.key
    assert clips[1].captions[0].caption == "a car"


def test_matches_in_adjacent_shots_give_two_clips_with_one_caption_each():
    # a street scene matched at 11 s in the shot [5, 14), a photo at 16 s in [14, 30):
    # centred windows would overlap by 6 s of 10 and once merged into one clip
    videos = {"v": {"video": "v.mp4", "duration": 30.0}}
    seeds = [("street", "a busy street"), ("photo", "a photo of a lake")]
    cands = [_cand(0, "v", 11.0, 0.9, run=(9.0, 13.0), shot=(5.0, 14.0)),
             _cand(1, "v", 16.0, 0.95, run=(14.0, 18.0), shot=(14.0, 30.0))]  # fmt: skip
    clips = select_clips(cands, videos=videos, seeds=seeds, clip_seconds=10.0)
    assert [[c.seed_id for c in r.captions] for r in clips] == [["street"], ["photo"]]
    assert [(r.start, r.end) for r in clips] == [(5.0, 14.0), (14.0, 24.0)]


def test_without_shots_only_overlapping_matching_runs_share_a_clip():
    videos = {"v": {"video": "v.mp4", "duration": 60.0}}
    seeds = [("a", "A"), ("b", "B"), ("c", "C")]
    cands = [_cand(0, "v", 20.0, 0.9, run=(18.0, 22.0)), _cand(1, "v", 21.0, 0.8, run=(21.0, 23.0)),
             _cand(2, "v", 25.0, 0.7, run=(24.0, 26.0))]  # fmt: skip
    clips = select_clips(cands, videos=videos, seeds=seeds, clip_seconds=10.0)
    assert sorted([c.seed_id for c in r.captions] for r in clips) == [["a", "b"], ["c"]]


def test_clips_follow_video_order_and_skip_unknown_videos():
    videos = {
        "b": {"video": "b.mp4", "duration": 50.0},
        "a": {"video": "a.mp4", "duration": 50.0},
    }
    cands = [_cand(0, "a", 20.0, 0.9), _cand(1, "b", 20.0, 0.9), _cand(2, "gone", 20.0, 0.99)]
    clips = select_clips(cands, videos=videos, seeds=[("x", "X"), ("y", "Y"), ("z", "Z")])
    assert [c.video for c in clips] == ["b.mp4", "a.mp4"]
