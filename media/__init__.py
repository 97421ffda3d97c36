"""The media layer: every ffmpeg/ffprobe call, image decode and tar grouping of capmine.

A leaf: it imports nothing of the project, and ``miners``, ``filters``,
``shards`` and ``trainer`` all reach media through it, so a timeout, an error
type or a resize rule is decided once.

* :mod:`media.ffmpeg`: the runner (a deadline on every call, :class:`MediaError`);
* :mod:`media.probe`: what a video holds and where its time 0 lies;
* :mod:`media.keyframes`: packets and key frames near a time, and a stream copy's plan;
* :mod:`media.images`: image decoding and the one resize rule (shorter side, centre crop);
* :mod:`media.audio`: any audio as mono float samples at 16 kHz;
* :mod:`media.video`: frames of a short clip, and trimming one;
* :mod:`media.cuts`: hard cuts in a stretch of video, busy footage or not;
* :mod:`media.tars`: WebDataset samples grouped from a tar.
"""

from media.ffmpeg import MediaError

__all__ = ["MediaError"]
