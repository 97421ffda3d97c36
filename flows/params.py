"""Typed, validated flow parameters: checked once, at the edge, before any work starts."""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.threads import default_threads
from media.images import DEFAULT_MAX_PIXELS
from miners.embedders import parse_spec
from miners.remote import DEFAULT_PROTOCOLS

DEFAULT_EMBEDDER = "open_clip:ViT-B-32/laion2b_s34b_b79k"

log = logging.getLogger(__name__)


class MineParams(BaseModel):
    """Everything one mining run needs. Units are in each description."""

    model_config = ConfigDict(extra="forbid")

    seeds: str = Field(
        description="Captioned seed images: CC3M TSV, CSV/TSV/parquet/JSONL, a folder of images with .txt captions, or img2dataset tars"
    )
    videos: str = Field(
        description="Videos: a text list (one path or URL a line), CSV/parquet with a url column, or a folder"
    )
    out: str = Field(description="Output folder (OUT): seeds, index, scans, shards, report")
    embedder: str = Field(
        DEFAULT_EMBEDDER,
        description="open_clip:MODEL, open_clip:MODEL/PRETRAINED (an open_clip tag or a checkpoint path) or some.module:factory",
    )
    threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity a frame needs to match a seed; unset: estimated from the seeds at false_match_rate",
    )
    false_match_rate: float = Field(
        0.001,
        gt=0.0,
        lt=1.0,
        description="Share of non-matching pairs allowed above the estimated threshold (used when threshold is unset)",
    )
    index: str = Field(
        "auto",
        pattern="^(auto|flat|ivf)$",
        description="Seed index: flat (exact), ivf (for millions of seeds; see bench/index_recall.py), or auto (flat below 1M seeds)",
    )
    fps: float = Field(1.0, gt=0.0, le=30.0, description="Frames sampled per second of video")
    clip_seconds: float = Field(10.0, gt=0.0, description="Length of each clip window, seconds")
    max_clips_per_seed: int = Field(
        10, ge=1, description="At most this many clips (videos) per seed, best first"
    )
    shard_size: int = Field(1000, ge=1, description="Samples per shard")
    clip_height: int = Field(
        360, ge=16, description="Shorter side of the cut clips at most this many pixels"
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, or cuda[:N]")
    batch_size: int = Field(64, ge=1, description="Frames per embedding batch")
    scan_workers: int | None = Field(
        None,
        ge=1,
        description="Videos scanned at once (the task runner's threads; on Dask, its workers); default: one a core, at least 2, so every core decodes for the embedder",
    )
    cut_workers: int = Field(
        2, ge=1, description="Clips of one shard cut at once (ffmpeg processes)"
    )
    # --- cutting (miners/cut.py): how a clip's video is cut. exact re-encodes (the
    # default: a run's output does not change unless asked); keyframe stream-copies from
    # a key frame near the planned start, which then becomes the clip's start.
    cut: str = Field(
        "exact",
        pattern="^(auto|exact|keyframe)$",
        description="exact (re-encode, frame-accurate), keyframe (stream copy from the key frame nearest the start, inside the shot; a clip that cannot be copied fails) or auto (copy where keyframe can, else re-encode)",
    )
    keyframe_slack: float = Field(
        1.0,
        ge=0.0,
        description="How far a copied clip's key frame may lie from its planned start, seconds (cut keyframe or auto)",
    )
    # --- end of cutting
    seed_workers: int = Field(16, ge=1, description="Seed images loaded at once (threads; URLs)")
    seed_chunk: int = Field(
        10000,
        ge=1,
        description="Seeds embedded per task (chunks run in parallel, on Dask across workers)",
    )
    seed_timeout: float = Field(10.0, gt=0, description="Timeout for one seed image URL, seconds")
    # --- seed reading guards (miners/seeds.py, miners/remote.py): what a seed list may make
    # capmine read. Each refused seed is a failed row of seeds.parquet, never a failed run.
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        description="A seed image declaring more pixels than this is refused from its header, before decoding (decompression bombs)",
    )
    allowed_protocols: list[str] = Field(
        list(DEFAULT_PROTOCOLS),
        min_length=1,
        description="URL schemes and fsspec protocols seed images may use, comma-separated; file covers local paths",
    )
    block_private_addresses: bool = Field(
        False,
        description="Refuse seed URLs that resolve to private, loopback or link-local addresses, also after redirects (for untrusted lists)",
    )
    # --- end of seed reading guards
    # --- frame sampling (miners/frames.py): how the scan decodes the frames it embeds.
    # keyframes trades recall for speed; exact is the reference and the default.
    sampler: str = Field(
        "exact",
        pattern="^(exact|keyframes)$",
        description="Frames the scan decodes: exact (every frame, one per 1/fps kept) or keyframes (key frames only, at most one per 1/fps, each at its exact time; much faster, misses scenes without a key frame)",
    )
    hwaccel: str = Field(
        "auto",
        pattern="^(none|auto|cuda)$",
        description="Video decoding: none (software), cuda (NVDEC through ffmpeg, software again if it fails to start), or auto (cuda where ffmpeg and an NVIDIA device allow)",
    )
    # --- end of frame sampling
    # -- download limits: each bounds every video download, yt-dlp or plain HTTP, while it
    # runs; past either the download stops, its partial file is removed and the video is a
    # failed row (timeout / too_large)
    fetch_timeout: float = Field(
        600.0,
        gt=0,
        description="Wall-clock limit of one video download attempt, seconds (a stalled connect or read gives up after at most 60 s)",
    )
    max_download_mb: float = Field(
        2000.0, gt=0, description="Largest video download, megabytes (10^6 bytes)"
    )
    max_height: int = Field(
        360, ge=16, description="Height cap of downloaded videos (yt-dlp format choice), pixels"
    )
    cache_dir: str | None = Field(None, description="Where downloads go; default OUT/downloads")
    keep_downloads: bool = Field(False, description="Keep downloaded videos after the run")
    filters: str = Field(
        "default",
        description="Filter chain: default, none, or a YAML file (see filters/default.yaml)",
    )
    keep_dropped: bool = Field(
        False,
        description="Also keep the media of clips a filter dropped, in OUT/dropped/NNNNN.tar, so 'capmine filter' with looser bounds can bring them back (costs their disk space)",
    )
    min_clip_seconds: float | None = Field(
        None,
        ge=0,
        description="A window crossing a shot cut is shrunk to the matched shot, or dropped when that shot is shorter than this, seconds (default: the shots filter's, 3)",
    )
    dask: str | None = Field(
        None,
        description="Run tasks on Dask: local[:N] (a LocalCluster of N worker processes) or tcp://HOST:PORT (an existing scheduler)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="torch and faiss threads per worker process (default: cores / workers)",
    )
    decode_threads: int | None = Field(
        None,
        ge=1,
        description="ffmpeg decoder threads per scanned video (default: --threads, else cores / scan_workers)",
    )
    overwrite: bool = Field(
        False,
        description="Start over: remove earlier runs' scans, shards and ledger in OUT (default: mine only new videos)",
    )
    progress: bool = Field(
        False, description="Show progress bars (the CLI turns them on for a terminal)"
    )

    @model_validator(mode="before")
    @classmethod
    def _workers_alias(cls, data: Any) -> Any:
        """``workers`` (deprecated) meant both: it sets whichever of the two is not given."""
        if isinstance(data, dict) and "workers" in data:
            data = dict(data)
            workers = data.pop("workers")
            log.warning("'workers' is deprecated: use scan_workers and cut_workers")
            if workers is not None:
                data.setdefault("scan_workers", workers)
                data.setdefault("cut_workers", workers)
        return data

    @model_validator(mode="after")
    def _scan_workers_default(self) -> MineParams:
        if self.scan_workers is None:
            self.scan_workers = max(2, default_threads(1))  # a video a core
        return self

    @field_validator("allowed_protocols", mode="before")
    @classmethod
    def _protocols_list(cls, v: Any) -> Any:
        """The CLI gives one comma-separated string: ``--allowed-protocols file,https``."""
        if isinstance(v, str):
            v = v.split(",")
        if isinstance(v, list | tuple):
            v = [str(p).strip().lower() for p in v if str(p).strip()]
        return v

    @field_validator("embedder")
    @classmethod
    def _embedder_spelling(cls, v: str) -> str:
        parse_spec(v)
        return v

    @field_validator("filters")
    @classmethod
    def _filters_build(cls, v: str) -> str:
        from filters.registry import build_chain

        build_chain(v)  # an unknown filter or parameter is an error before any work
        return v

    @field_validator("dask")
    @classmethod
    def _dask_spelling(cls, v: str | None) -> str | None:
        if (
            v is None
            or v == "local"
            or re.fullmatch(r"local:[1-9]\d*", v)
            or re.fullmatch(r"tcp://[^\s:]+:\d+", v)
        ):
            return v
        raise ValueError(f"dask must be local, local:N or tcp://HOST:PORT, not {v!r}")

    @field_validator("device")
    @classmethod
    def _device_spelling(cls, v: str) -> str:
        if v not in ("auto", "cpu") and not v.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], not {v!r}")
        return v
